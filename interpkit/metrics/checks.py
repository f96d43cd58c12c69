"""The checks that explain again, registered beside the metrics: each runs the explainer on
perturbed inputs or on randomised copies of the model, so it takes the explainer's factory (its
class, or ``lambda model: ...``) instead of finished maps:
``check(make_explainer, model, inputs, targets=None)`` returns a ``MetricResult``.

Each class is the registered form of one function of ``interpkit.metrics``; its options are the
function's keyword options: their names are checked when the check is made, their values when it
runs (by the function)."""

from __future__ import annotations

import inspect
from typing import Any, Callable, ClassVar

import torch
from torch import nn

from ..core import Explainer
from ..errors import InputError
from .axiomatic import input_invariance
from .base import MetricResult, check_model
from .continuity import continuity
from .random_logit import random_logit
from .sanity import RandomisationResult, efficient_randomisation_check, explained_by, randomisation_check
from .sensitivity import avg_sensitivity, local_lipschitz_estimate, max_sensitivity
from .stability import relative_input_stability, relative_output_stability, relative_representation_stability

Factory = Callable[[nn.Module], Explainer]


class ExplainerCheck:
    """Base of the registered checks: subclasses name the ``function`` they run and whether it
    ``randomises`` the model (it then takes the factory and the model, else one explainer)."""

    name: ClassVar[str] = ""
    higher_is_better: ClassVar[bool] = False
    needs_masks: ClassVar[bool] = False
    function: ClassVar[Callable[..., Any]]
    randomises: ClassVar[bool] = False
    #: options whose default here differs from the function's
    defaults: ClassVar[dict[str, Any]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if callable(getattr(cls, "function", None)):  # a class naming no function is a base, made by nobody
            options = [p.replace(default=cls.defaults.get(p.name, p.default))
                       for p in inspect.signature(cls.function).parameters.values() if p.kind is p.KEYWORD_ONLY]
            cls.__signature__ = inspect.Signature(options)  # type: ignore[attr-defined]  # what check_metric reads

    def __init__(self, *positional: Any, **options: Any) -> None:
        if not callable(getattr(self, "function", None)):
            raise InputError(f"{type(self).__name__} names no function to run: an ExplainerCheck subclass sets "
                             "function = staticmethod(the check's function)")
        known = inspect.signature(type(self)).parameters
        if positional:
            raise InputError(f"{self.name} takes its options by name ({', '.join(known)}), not {positional!r}")
        unknown = sorted(set(options) - set(known))
        if unknown:
            raise InputError(f"{self.name} takes no option {', '.join(unknown)}; its options: {', '.join(known)}")
        self.options = {**self.defaults, **options}

    def __call__(self, make_explainer: Factory, model: nn.Module, inputs: torch.Tensor, targets: Any = None
                 ) -> MetricResult:
        """Score the explainer that ``make_explainer(model)`` builds on ``inputs`` for ``targets``."""
        check_model(model)
        if self.randomises:  # the function builds (and checks) the explainers of its model copies
            return self.scored(self.function(make_explainer, model, inputs, targets, **self.options))
        return self.scored(self.function(explained_by(make_explainer, model), inputs, targets, **self.options))

    def scored(self, result: Any) -> MetricResult:
        """The function's result as a ``MetricResult`` named after the check."""
        return MetricResult(self.name, result.scores, result.curves, result.fractions)


class MaxSensitivity(ExplainerCheck):
    name = "max_sensitivity"
    function = staticmethod(max_sensitivity)


class AvgSensitivity(ExplainerCheck):
    name = "avg_sensitivity"
    function = staticmethod(avg_sensitivity)


class LocalLipschitzEstimate(ExplainerCheck):
    name = "local_lipschitz_estimate"
    function = staticmethod(local_lipschitz_estimate)


class Continuity(ExplainerCheck):
    name = "continuity"
    function = staticmethod(continuity)


class RelativeInputStability(ExplainerCheck):
    name = "relative_input_stability"
    function = staticmethod(relative_input_stability)


class RelativeOutputStability(ExplainerCheck):
    name = "relative_output_stability"
    function = staticmethod(relative_output_stability)


class RelativeRepresentationStability(ExplainerCheck):
    name = "relative_representation_stability"
    function = staticmethod(relative_representation_stability)


class RandomLogit(ExplainerCheck):
    name = "random_logit"
    function = staticmethod(random_logit)


class InputInvariance(ExplainerCheck):
    name = "input_invariance"
    higher_is_better = True
    function = staticmethod(input_invariance)
    randomises = True  # it builds a shifted copy of the model, so it needs the factory


class MPRT(ExplainerCheck):
    """``randomisation_check``: the score is each sample's mean absolute-map rank correlation over
    the randomisation steps (lower is better), the curve the correlation after each step."""

    name = "mprt"
    function = staticmethod(randomisation_check)
    randomises = True

    def scored(self, result: RandomisationResult) -> MetricResult:
        steps = result.spearman_abs.shape[1]
        fractions = torch.arange(1, steps + 1, device=result.spearman_abs.device) / steps
        return MetricResult(self.name, result.mean_spearman_abs, result.spearman_abs, fractions)


class SmoothMPRT(MPRT):
    """The same over explanations averaged on 50 noisy copies (Hedström et al., 2023)."""

    name = "smooth_mprt"
    defaults = {"smooth": 50}


class EfficientMPRT(ExplainerCheck):
    name = "efficient_mprt"
    higher_is_better = True
    function = staticmethod(efficient_randomisation_check)
    randomises = True


BUILTIN_CHECKS = (MaxSensitivity, AvgSensitivity, LocalLipschitzEstimate, Continuity, RelativeInputStability,
                  RelativeOutputStability, RelativeRepresentationStability, RandomLogit, InputInvariance, MPRT,
                  SmoothMPRT, EfficientMPRT)
