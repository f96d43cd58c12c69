"""Axioms an attribution method should satisfy. Completeness (Sundararajan et al., 2017): an
attribution's total is the change of the score from the baseline to the input, ``sum_i a_i =
f(x) - f(x0)``; Integrated Gradients, DeepLift with its rescale rule and exact Shapley values
satisfy it by construction. Input invariance (Kindermans et al., 2017): a constant shift of the
input that the model takes back out does not change the explanation."""

from __future__ import annotations

import math
import numbers
from typing import Any, Callable

import torch
from torch import nn

from ..core import Explainer, Explanation, TargetLike, check_baseline, check_number, check_tensor
from ..errors import InputError
from .base import Metric, MetricResult, aligned_saliency, check_model, model_copy
from .perturbation import Baseline, baseline_of
from .sanity import explained_by


class Completeness(Metric):
    """``|sum_i a_i - (f(x) - f(x0))|`` per sample (lower is better; 0 for a complete
    attribution), summing the map's every element with its sign, channels included. ``f`` is the
    target's logit by default (``score="probability"`` for the probability); ``x0`` the baseline
    ("zero", "blur", a number or a tensor). Quantus' ``Completeness`` instead returns whether the
    two are exactly equal as floats, after rescaling the attribution by its batch's largest
    value by default, so a complete attribution fails it (a test shows it)."""

    name = "completeness"
    higher_is_better = False

    def __init__(self, *, baseline: Baseline = "zero", max_batch: int | None = None, score: str = "logit") -> None:
        super().__init__(max_batch=max_batch, score=score)
        self.baseline = check_baseline(baseline, ("zero", "blur"))

    def prepare(self, maps: Explanation | torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        """The map summed over its channels with their signs (completeness sums every element)."""
        tensor = maps.maps[:, 0] if isinstance(maps, Explanation) and maps.maps.shape[1] == 1 else maps
        if isinstance(tensor, torch.Tensor) and tensor.dim() == inputs.dim() and tensor.shape[1] == inputs.shape[1] > 1:
            tensor = tensor.sum(dim=1)
        return aligned_saliency(tensor, inputs, keep_float64=True)

    def compute(self, model: nn.Module, inputs: torch.Tensor, saliency: torch.Tensor,
                score: Callable[..., Any]) -> MetricResult:
        samples = torch.arange(len(inputs), device=inputs.device)
        before = score(inputs, samples)  # float64 for a float64 model, else float32
        change = before.double() - score(baseline_of(inputs, self.baseline), samples).double()
        return MetricResult(self.name, (saliency.flatten(1).double().sum(dim=1) - change).abs().to(before.dtype))


def input_invariance(make_explainer: Callable[[nn.Module], Explainer], model: nn.Module, inputs: torch.Tensor,
                     target: TargetLike = None, *, shift: float = -1.0, atol: float = 1e-4) -> MetricResult:
    """Kindermans et al.'s (2017) input invariance: a second model that sees every input shifted by
    ``shift`` and takes the shift back out before its first layer computes the same function on
    x + shift as the model on x; an explanation method is input invariant when it explains both
    alike. 1 where every value of the two explanations agrees within ``atol``, else 0 (higher is
    better). The second model is a copy with the shift taken out by a forward pre-hook on its
    whole forward (exact whatever the first layer and its padding); the model is left unchanged."""
    check_model(model)
    offset = _finite("shift", shift)
    tolerance = check_number("atol", atol)
    inputs = check_tensor(inputs, model)
    original = explained_by(make_explainer, model)(inputs, target)
    pinned = original.targets if original.class_targets else target
    shifted_model = model_copy(model, "input_invariance")
    shifted_model.register_forward_pre_hook(lambda _m, args: (args[0] - offset, *args[1:]))
    shifted = explained_by(make_explainer, shifted_model)(inputs + offset, pinned)
    agree = ((original.maps - shifted.maps).abs() <= tolerance).flatten(1).all(dim=1)
    return MetricResult("input_invariance", agree.float())


def _finite(name: str, value: Any) -> float:
    """A finite number of either sign (never a bool), or an InputError."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise InputError(f"{name} must be a finite number, got {value!r}")
    return float(value)
