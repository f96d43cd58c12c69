"""A kit for testing explainers: hard-case models, hypothesis strategies, a conformance suite.

``check_explainer(MyExplainer)`` checks the core contract; the pytest plugin (entry point
``pytest11``) adds the fixtures ``interpkit_models``, ``interpkit_images`` and
``interpkit_explainer`` (parametrised over every registered explainer).
"""

from .conformance import ConformanceReport, check_explainer
from .fingerprint import ModelFingerprint, assert_model_unchanged
from .models import BatchNormDropout, ConvStack, DictOutput, FunctionalReLU, ResidualReusedReLU, hard_case_models

__all__ = [
    "BatchNormDropout", "ConformanceReport", "ConvStack", "DictOutput", "FunctionalReLU", "ModelFingerprint",
    "ResidualReusedReLU", "assert_model_unchanged", "check_explainer", "hard_case_models",
]
