"""Complexity metrics: how concentrated an explanation is, from the map alone (the model is not
run). Each reads the map per sample in absolute value, scaled by its own largest value (Quantus
0.6 scales a whole batch by the batch's largest value instead, so that a sample's effective
complexity changes with the rest of its batch; see the tests).

- ``Sparseness`` (Chalasani et al., 2020): the Gini index of the map's absolute values (higher is sparser).
- ``Complexity`` (Bhatt et al., 2020): the entropy of the absolute values as a distribution (lower is simpler).
- ``EffectiveComplexity`` (Nguyen and Martinez, 2020): how many positions exceed ``eps`` of the
  map's largest absolute value (lower is simpler).

A map that is 0 everywhere has none of these: it scores NaN.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..core import Explanation, check_finite, check_number, check_tensor
from ..errors import InputError
from .base import Metric, MetricResult, aligned_saliency, check_model, class_indices


class MapMetric(Metric):
    """A metric of the maps alone; subclasses implement ``measure`` on each sample's absolute
    values scaled to a largest value of 1."""

    def __init__(self) -> None:
        super().__init__()

    def _scored(self, model: nn.Module, inputs: torch.Tensor, maps: Explanation | torch.Tensor, targets: Any,
                scorers: Any) -> MetricResult:
        """Score ``maps`` of ``inputs`` (the model is not run, so ``targets`` are only checked
        for their form, not against the model's classes)."""
        check_model(model)
        inputs = check_tensor(inputs, model, finite=False)
        if targets is not None:
            class_indices(targets, len(inputs), inputs.device)
        if inputs.dim() < 3:
            raise InputError(f"{self.name} scores maps on the input's grid: inputs {tuple(inputs.shape)} have none")
        saliency = self.prepare(maps, inputs)
        check_finite(inputs=inputs, maps=saliency)
        return self.compute(model, inputs, saliency, None)

    def prepare(self, maps: Explanation | torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        """The maps with float64 kept (a tiny or huge float64 map is not lost in float32)."""
        return aligned_saliency(maps, inputs, keep_float64=True)

    def compute(self, model: nn.Module, inputs: torch.Tensor, saliency: torch.Tensor, score: Any) -> MetricResult:
        values = saliency.flatten(1).double().abs()
        peak = values.amax(dim=1, keepdim=True)
        scores = self.measure(values / torch.where(peak > 0, peak, 1.0))
        return MetricResult(self.name, torch.where(peak[:, 0] > 0, scores, torch.nan).float())

    def measure(self, values: torch.Tensor) -> torch.Tensor:
        """Scores (N,) of non-negative flat maps (N, P) whose largest value is 1."""
        raise NotImplementedError


class Sparseness(MapMetric):
    """The Gini index ``sum_i (2 i - P - 1) a_(i) / (P sum a)`` of the sorted absolute values
    ``a_(1) <= ... <= a_(P)``: 0 for a uniform map, ``1 - 1/P`` for a single peak."""

    name = "sparseness"

    def measure(self, values: torch.Tensor) -> torch.Tensor:
        ordered = values.sort(dim=1).values
        p = values.shape[1]
        weights = 2 * torch.arange(1, p + 1, device=values.device, dtype=values.dtype) - p - 1
        return (ordered * weights).sum(dim=1) / (p * ordered.sum(dim=1))


class Complexity(MapMetric):
    """The entropy ``-sum_i p_i log p_i`` of ``p = |a| / sum |a|`` (natural log, 0 log 0 = 0)."""

    name = "complexity"
    higher_is_better = False

    def measure(self, values: torch.Tensor) -> torch.Tensor:
        p = values / values.sum(dim=1, keepdim=True)
        return -torch.where(p > 0, p * p.log(), 0.0).sum(dim=1)


class EffectiveComplexity(MapMetric):
    """How many positions have an absolute value above ``eps`` times the map's largest."""

    name = "effective_complexity"
    higher_is_better = False

    def __init__(self, *, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = check_number("eps", eps)

    def measure(self, values: torch.Tensor) -> torch.Tensor:
        return (values > self.eps).sum(dim=1).to(values.dtype)
