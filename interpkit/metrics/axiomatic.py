"""Completeness (Sundararajan et al., 2017): an attribution's total is the change of the score
from the baseline to the input, ``sum_i a_i = f(x) - f(x0)``. Integrated Gradients, DeepLift
with its rescale rule and exact Shapley values satisfy it by construction."""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from ..core import Explanation, check_baseline
from .base import Metric, MetricResult, aligned_saliency
from .perturbation import Baseline, baseline_of


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
        return aligned_saliency(tensor, inputs, signed=True)

    def compute(self, model: nn.Module, inputs: torch.Tensor, saliency: torch.Tensor,
                score: Callable[..., Any]) -> MetricResult:
        samples = torch.arange(len(inputs), device=inputs.device)
        change = score(inputs, samples).double() - score(baseline_of(inputs, self.baseline), samples).double()
        return MetricResult(self.name, (saliency.flatten(1).double().sum(dim=1) - change).abs().float())
