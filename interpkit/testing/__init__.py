"""A kit for testing explainers: hard-case models, hypothesis strategies, a conformance suite.

``check_explainer(MyExplainer)`` checks the core contract; the pytest plugin (entry point
``pytest11``) adds the fixtures ``interpkit_models``, ``interpkit_images`` and
``interpkit_explainer`` (parametrised over every registered explainer).
"""

from .conformance import ConformanceReport, check_explainer, supported_hard_cases
from .fingerprint import ModelFingerprint, assert_model_unchanged
from .metrics import check_metric
from .models import (
    BatchNormDropout,
    Conv1dNet,
    Conv3dNet,
    ConvStack,
    DictOutput,
    FunctionalReLU,
    ResidualReusedReLU,
    TinyTokens,
    TwoInputs,
    example_inputs,
    hard_case_models,
    input_kind,
)

__all__ = [
    "BatchNormDropout", "ConformanceReport", "Conv1dNet", "Conv3dNet", "ConvStack", "DictOutput", "FunctionalReLU",
    "ModelFingerprint", "ResidualReusedReLU", "TinyTokens", "TwoInputs", "assert_model_unchanged", "check_explainer", "check_metric",
    "example_inputs", "hard_case_models", "input_kind", "supported_hard_cases",
]
