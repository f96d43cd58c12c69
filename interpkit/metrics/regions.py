"""Region perturbation (Samek et al., 2017): the fall of the target's score as square regions,
ranked by the explanation, are replaced one after another."""

from __future__ import annotations

import math
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..core import check_baseline, check_int
from ..errors import InputError
from .base import Metric, MetricResult, chunks
from .perturbation import baseline_of


class RegionPerturbation(Metric):
    """Non-overlapping ``patch_size`` squares (the grid padded evenly on both sides, the odd pixel
    after, when it does not divide, as Quantus), ranked by the sum of the map inside them, most relevant first (``"morf"``)
    or least (``"lerf"``), ties to the earlier region in row-major order. The first ``regions``
    are replaced cumulatively by the baseline: ``"black"`` (each sample's minimum over all its
    values, as Quantus), a value, ``"blur"`` or a tensor. ``curves`` (N, regions) hold
    ``f(x) - f(x with k regions replaced)``; ``scores`` the AOPC of Samek et al.,
    ``sum_{k=0..L} (f(x) - f(x_k)) / (L + 1)``, whose ``k = 0`` term is zero."""

    name = "region_perturbation"

    def __init__(self, *, patch_size: int = 8, regions: int = 100, order: str = "morf", baseline: Any = "black",
                 max_batch: int | None = None, score: str = "probability") -> None:
        super().__init__(max_batch=max_batch, score=score)
        for label, value in (("patch_size", patch_size), ("regions", regions)):
            check_int(label, value)
        if order not in ("morf", "lerf"):
            raise InputError(f"order must be 'morf' (most relevant first) or 'lerf', not {order!r}")
        self.patch_size, self.regions, self.order = patch_size, regions, order
        self.baseline = check_baseline(baseline, ("black", "zero", "blur"))

    @property
    def higher_is_better(self) -> bool:  # type: ignore[override]
        """A faithful map makes the score fall fast when its most relevant regions go first."""
        return self.order == "morf"

    def compute(self, model: nn.Module, inputs: torch.Tensor, saliency: torch.Tensor,
                score: Callable[..., Any]) -> MetricResult:
        before, after, fractions = self.removed(inputs, saliency, score, self.regions)
        curves = before.unsqueeze(1) - after
        return MetricResult(self.name, curves.sum(dim=1) / (curves.shape[1] + 1), curves, fractions)

    def removed(self, inputs: torch.Tensor, saliency: torch.Tensor, score: Callable[..., Any], regions: int
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The target's score on the inputs (N,), after each of the first ``regions`` ranked regions
        is replaced, cumulatively (N, steps), and the fraction of the grid's regions gone (steps,)."""
        if inputs.dim() != 4:
            raise InputError("region perturbation is defined for images (N, C, H, W)")
        n, (height, width), size = len(inputs), inputs.shape[2:], self.patch_size
        rows, cols = math.ceil(height / size), math.ceil(width / size)
        top, left = (rows * size - height) // 2, (cols * size - width) // 2
        padded = F.pad(saliency, (left, cols * size - width - left, top, rows * size - height - top))
        sums = padded.reshape(n, rows, size, cols, size).sum(dim=(2, 4)).flatten(1)  # (N, regions in the grid)
        order = torch.sort(sums, dim=1, descending=self.order == "morf", stable=True).indices
        steps = min(regions, rows * cols)
        region_of = ((torch.arange(height, device=inputs.device)[:, None] + top) // size * cols
                     + (torch.arange(width, device=inputs.device)[None, :] + left) // size)  # (H, W) region index
        rank = torch.argsort(order, dim=1)[:, region_of]  # (N, H, W): when each pixel's region goes
        base = self._baseline(inputs)
        samples = torch.arange(n, device=inputs.device).repeat_interleave(steps)
        counts = torch.arange(1, steps + 1, device=inputs.device).repeat(n)
        values = []
        for part in chunks(len(samples), self.max_batch or n):
            gone = (rank[samples[part]] < counts[part, None, None]).unsqueeze(1)
            values.append(score(torch.where(gone, base[samples[part]], inputs[samples[part]]), samples[part]))
        before = score(inputs, torch.arange(n, device=inputs.device))
        fractions = torch.arange(1, steps + 1, device=inputs.device).float() / (rows * cols)
        return before, torch.cat(values).reshape(n, steps), fractions

    def _baseline(self, inputs: torch.Tensor) -> torch.Tensor:
        if isinstance(self.baseline, str) and self.baseline == "black":
            return inputs.flatten(1).amin(dim=1).view(-1, 1, 1, 1).expand_as(inputs)
        return baseline_of(inputs, self.baseline)


class Selectivity(RegionPerturbation):
    """Montavon et al.'s (2018) selectivity: every ``patch_size`` square, ranked by the sum of the
    map inside it, most relevant first, replaced cumulatively by the baseline; ``curves`` (N,
    regions) hold the target's probability after each, ``scores`` the area under them with unit
    spacing, as Quantus' ``Selectivity`` (lower is better: the evidence goes first)."""

    name = "selectivity"

    def __init__(self, *, patch_size: int = 8, baseline: Any = "black", max_batch: int | None = None,
                 score: str = "probability") -> None:
        super().__init__(patch_size=patch_size, order="morf", baseline=baseline, max_batch=max_batch, score=score)

    @property
    def higher_is_better(self) -> bool:  # type: ignore[override]
        """The probability should fall as fast as the map says."""
        return False

    def compute(self, model: nn.Module, inputs: torch.Tensor, saliency: torch.Tensor,
                score: Callable[..., Any]) -> MetricResult:
        _, after, fractions = self.removed(inputs, saliency, score, inputs.shape[-1] * inputs.shape[-2])
        return MetricResult(self.name, torch.trapezoid(after, dim=1), after, fractions)
