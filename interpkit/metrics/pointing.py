"""The pointing game (Zhang et al., 2016) and its energy-based variant (Wang et al., 2020):
does the explanation point at the object a ground-truth mask marks?"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..core import check_flag, check_number
from .base import MetricResult
from .localisation import MaskMetric


class PointingGame(MaskMetric):
    """1 when the map's maximum (the first in row-major order) lies within ``tolerance`` pixels
    (Euclidean) of the mask, else 0; with ``energy=True`` the share of the map's positive mass
    inside the mask. A sample whose mask is empty scores NaN and is left out of the mean.
    A map without positive mass scores 0 in the energy variant. Call with ``masks=`` (N, *grid)
    booleans; the model is not run."""

    name = "pointing_game"

    def __init__(self, *, tolerance: float = 15.0, energy: bool = False) -> None:
        super().__init__()
        self.tolerance = check_number("tolerance", tolerance, unit=" of pixels")
        self.energy = check_flag("energy", energy)

    def compute(self, model: nn.Module, inputs: torch.Tensor, saliency: torch.Tensor, masks: Any) -> MetricResult:
        empty = ~masks.flatten(1).any(dim=1)
        if self.energy:
            positive = saliency.clamp_min(0).flatten(1)
            inside, total = (positive * masks.flatten(1)).sum(1), positive.sum(1)
            scores = torch.where(total > 0, inside / torch.where(total > 0, total, 1.0), 0.0)  # no mass: none inside
        else:
            scores = torch.stack([self._hit(s, m) for s, m in zip(saliency, masks)])
        return MetricResult(self.name, torch.where(empty, torch.nan, scores))

    def _hit(self, saliency: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if not mask.any():
            return saliency.new_tensor(float("nan"))
        grid = saliency.shape
        peak = torch.tensor(torch.unravel_index(saliency.flatten().argmax(), grid), device=saliency.device)
        inside = mask.nonzero()
        distance = (inside - peak).float().norm(dim=1).min()
        return (distance <= self.tolerance).float()


