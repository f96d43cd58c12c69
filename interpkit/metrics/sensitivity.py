"""Max-sensitivity (Yeh et al., 2019): how much an explanation moves under a small input change."""

from __future__ import annotations

from typing import Callable

import torch

from ..core import Explainer, TargetLike, check_int, check_tensor
from ..errors import InputError
from .base import MetricResult, chunks

Perturb = Callable[[torch.Tensor, torch.Generator], torch.Tensor]  # inputs, generator -> perturbed inputs


def max_sensitivity(explainer: Explainer, inputs: torch.Tensor, target: TargetLike = None, *, radius: float = 0.02,
                    samples: int = 10, seed: int = 0, perturb: Perturb | None = None,
                    max_batch: int | None = None) -> MetricResult:
    """``max over samples of ||E(x + d) - E(x)|| / ||E(x)||`` (Frobenius norms; a zero explanation
    divides by 1), d uniform in the L-infinity ball of ``radius`` (or ``perturb``), drawn from a
    generator seeded with ``seed``. The perturbed copies are explained for the same targets as
    ``x``, in batches of ``max_batch`` copies (default: the inputs' batch). Lower is better."""
    if not isinstance(explainer, Explainer):
        raise InputError(f"max_sensitivity takes an interpkit explainer instance, not {type(explainer).__name__}")
    check_int("samples", samples)
    inputs = check_tensor(inputs, explainer.model)
    n = len(inputs)
    clean = explainer(inputs, target)
    pinned = clean.targets if clean.class_targets else target
    generator = torch.Generator(device=inputs.device).manual_seed(seed)

    def uniform(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:  # one draw shared by the batch's images
        return x + (torch.rand((1, *x.shape[1:]), generator=g, device=x.device, dtype=x.dtype) * 2 - 1) * radius

    draw = perturb or uniform
    perturbed = torch.cat([draw(inputs, generator) for _ in range(samples)])  # copy-major (S * N, ...)
    sample_of = torch.arange(n, device=inputs.device).repeat(samples)
    maps = []
    for part in chunks(len(perturbed), max_batch or n):
        part_target = pinned[sample_of[part]] if isinstance(pinned, torch.Tensor) else pinned
        maps.append(explainer(perturbed[part], part_target).maps)
    moved = torch.cat(maps).reshape(samples, n, -1) - clean.maps.reshape(1, n, -1)
    size = clean.maps.reshape(n, -1).norm(dim=1)
    ratios = moved.norm(dim=2) / torch.where(size == 0, 1.0, size)
    return MetricResult("max_sensitivity", ratios.amax(dim=0))
