"""Deletion and insertion (Petsiuk et al., 2018) and average drop / increase in confidence
(Chattopadhyay et al., 2018): how the target's score moves as the explanation's pixels go."""

from __future__ import annotations

import math
from typing import Any, Callable

import torch
from torch import nn

from ..core import check_baseline, check_flag, check_int
from ..errors import InputError
from .base import Metric, MetricResult, chunks

Baseline = Any  # "zero", "blur", a number, or a tensor broadcastable to the inputs


def baseline_of(inputs: torch.Tensor, baseline: Baseline) -> torch.Tensor:
    """What removed pixels become: zeros, the image blurred (Gaussian, kernel 11, sigma 5, as
    Petsiuk et al.), a constant, or a given tensor."""
    if isinstance(baseline, str):
        if baseline == "zero":
            return torch.zeros_like(inputs)
        if baseline == "blur":
            if inputs.dim() != 4 or min(inputs.shape[-2:]) < 6:
                raise InputError("the blurred baseline (kernel 11) is defined for images (N, C, H, W) of at least 6 "
                                 "pixels a side; give a value or a tensor")
            from torchvision.transforms.functional import gaussian_blur

            return gaussian_blur(inputs, kernel_size=[11, 11], sigma=[5.0, 5.0])
        raise InputError(f"unknown baseline {baseline!r}; use 'zero', 'blur', a number or a tensor")
    value = torch.as_tensor(baseline, dtype=inputs.dtype, device=inputs.device)
    try:
        return torch.broadcast_to(value, inputs.shape).clone()
    except RuntimeError:
        raise InputError(f"a baseline of shape {tuple(value.shape)} does not broadcast to the inputs "
                         f"{tuple(inputs.shape)}") from None


class _RankedRemoval(Metric):
    """Pixels (all channels of a grid position together) ranked by saliency, most relevant
    first; ties go to the lower position in row-major order (a stable sort). ``steps`` points
    remove (or restore) ``ceil(P / steps)`` positions each, the last point all P."""

    restore: bool = False  # insertion restores the input onto the baseline

    def __init__(self, *, steps: int = 20, baseline: Baseline = "zero", max_batch: int | None = None,
                 score: str = "probability") -> None:
        super().__init__(max_batch=max_batch, score=score)
        self.steps = check_int("steps", steps)
        self.baseline = check_baseline(baseline, ("zero", "blur"))

    def compute(self, model: nn.Module, inputs: torch.Tensor, saliency: torch.Tensor,
                score: Callable[..., Any]) -> MetricResult:
        n, positions = len(inputs), saliency[0].numel()
        order = torch.argsort(saliency.flatten(1), dim=1, descending=True, stable=True)
        ranks = torch.argsort(order, dim=1)  # rank of every position, 0 = most relevant
        step = math.ceil(positions / self.steps)
        counts = torch.tensor([*range(0, positions, step), positions], device=inputs.device)
        base = baseline_of(inputs, self.baseline)
        flat_inputs, flat_base = inputs.flatten(2), base.flatten(2)
        jobs = torch.cartesian_prod(torch.arange(n, device=inputs.device), torch.arange(len(counts), device=inputs.device))
        values = []
        for part in chunks(len(jobs), self.max_batch or n):
            samples, points = jobs[part, 0], jobs[part, 1]
            moved = ranks[samples] < counts[points].unsqueeze(1)  # (B, P): positions removed or restored
            keep_input = moved if self.restore else ~moved
            batch = torch.where(keep_input.unsqueeze(1), flat_inputs[samples], flat_base[samples])
            values.append(score(batch.reshape(len(samples), *inputs.shape[1:]), samples))
        curves = torch.cat(values).reshape(n, len(counts))
        fractions = counts.float() / positions
        return MetricResult(self.name, torch.trapezoid(curves, fractions, dim=1), curves, fractions)


class Deletion(_RankedRemoval):
    """Area under the target score as the most relevant positions are replaced by the baseline
    (lower is better: a faithful map removes the evidence first)."""

    name = "deletion"
    higher_is_better = False


class Insertion(_RankedRemoval):
    """Area under the target score as the most relevant positions are restored onto the baseline
    (higher is better)."""

    name = "insertion"
    restore = True


class _Masked(Metric):
    """The input multiplied by the map against the input. With ``normalize=True`` each map is
    min-max scaled to [0, 1] first; with ``False`` it is the mask as given (it must lie in [0, 1],
    as torchcam's normalised CAMs do)."""

    def __init__(self, *, normalize: bool = True, max_batch: int | None = None, score: str = "probability") -> None:
        super().__init__(max_batch=max_batch, score=score)
        self.normalize = check_flag("normalize", normalize)

    def compute(self, model: nn.Module, inputs: torch.Tensor, saliency: torch.Tensor,
                score: Callable[..., Any]) -> MetricResult:
        flat = saliency.flatten(1)
        if self.normalize:
            low, span = flat.amin(1, keepdim=True), flat.amax(1, keepdim=True) - flat.amin(1, keepdim=True)
            flat = (flat - low) / torch.where(span > 0, span, 1.0)
        elif flat.min() < 0 or flat.max() > 1:
            raise InputError("with normalize=False the maps are the masks and must lie in [0, 1]")
        mask = flat.reshape(saliency.shape).unsqueeze(1)
        samples = torch.arange(len(inputs), device=inputs.device)
        before = score(inputs, samples)
        after = score(inputs * mask.to(inputs.dtype), samples)
        return MetricResult(self.name, self.per_sample(before, after))

    def per_sample(self, before: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class AverageDrop(_Masked):
    """``max(0, Y - O) / Y`` with Y the target's score on the input and O on the input times the
    map (lower is better). No epsilon: a score of exactly 0 gives NaN, left out of the mean."""

    name = "average_drop"
    higher_is_better = False

    def per_sample(self, before: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
        return (before - after).clamp_min(0) / before


class IncreaseInConfidence(_Masked):
    """1 where the target's score rises when the input is multiplied by the map, else 0."""

    name = "increase_in_confidence"

    def per_sample(self, before: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
        return (after > before).float()
