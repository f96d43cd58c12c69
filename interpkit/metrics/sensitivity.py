"""Robustness of an explanation: max- and average sensitivity (Yeh et al., 2019) and the local
Lipschitz estimate (Alvarez-Melis and Jaakkola, 2018), how much it moves under a small input change."""

from __future__ import annotations

from typing import Callable

import torch

from ..core import Explainer, TargetLike, check_int, check_number, check_seed, check_tensor, normal_draws, uniform_draws
from ..errors import InputError
from .base import MetricResult, chunks, drawn

Perturb = Callable[[torch.Tensor, torch.Generator], torch.Tensor]  # inputs, generator -> perturbed inputs


def max_sensitivity(explainer: Explainer, inputs: torch.Tensor, target: TargetLike = None, *, radius: float = 0.02,
                    samples: int = 10, seed: int = 0, perturb: Perturb | None = None,
                    max_batch: int | None = None) -> MetricResult:
    """``max over samples of ||E(x + d) - E(x)|| / ||E(x)||`` (Frobenius norms; a zero explanation
    divides by 1), d uniform in the L-infinity ball of ``radius`` (or ``perturb``), drawn from a
    generator seeded with ``seed``. The perturbed copies are explained for the same targets as
    ``x``, in batches of ``max_batch`` copies (default: the inputs' batch). Lower is better."""
    ratios = _sensitivities("max_sensitivity", explainer, inputs, target, radius, samples, seed, perturb, max_batch)
    return MetricResult("max_sensitivity", ratios.amax(dim=0).float())


def avg_sensitivity(explainer: Explainer, inputs: torch.Tensor, target: TargetLike = None, *, radius: float = 0.2,
                    samples: int = 200, seed: int = 0, perturb: Perturb | None = None,
                    max_batch: int | None = None) -> MetricResult:
    """The mean over samples of the same ratio as ``max_sensitivity`` (Yeh et al., 2019), with
    Quantus' defaults for ``AvgSensitivity``: noise uniform in [-0.2, 0.2], 200 samples. Lower is
    better."""
    ratios = _sensitivities("avg_sensitivity", explainer, inputs, target, radius, samples, seed, perturb, max_batch)
    return MetricResult("avg_sensitivity", ratios.mean(dim=0).float())


def local_lipschitz_estimate(explainer: Explainer, inputs: torch.Tensor, target: TargetLike = None, *,
                             std: float = 0.1, samples: int = 200, seed: int = 0, perturb: Perturb | None = None,
                             max_batch: int | None = None) -> MetricResult:
    """Alvarez-Melis and Jaakkola's (2018) local Lipschitz estimate: the largest
    ``||E(x') - E(x)|| / (||x' - x|| + 1e-10)`` (Euclidean norms) over ``samples`` copies x' = x + d,
    d Gaussian with ``std`` per element (Quantus' ``LocalLipschitzEstimate`` defaults), one draw
    per sample shared by the batch's images. Lower is better."""
    clean, moved, copies = perturbed_explanations("local_lipschitz_estimate", explainer, inputs, target, samples,
                                                   seed, perturb or _gaussian(check_number("std", std)), max_batch)
    shifts = (copies - inputs.unsqueeze(0)).flatten(2).double()
    ratios = (moved - clean).norm(dim=2) / (shifts.norm(dim=2) + 1e-10)
    return MetricResult("local_lipschitz_estimate", ratios.amax(dim=0).float())


def _uniform(radius: float) -> Perturb:
    """x + d, d uniform in [-radius, radius] per element: one draw shared by the batch's images."""
    def draw(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        return x + (uniform_draws((1, *x.shape[1:]), g, x) * 2 - 1) * radius
    return draw


def _gaussian(std: float) -> Perturb:
    """x + d, d ~ N(0, std^2) per element: one draw shared by the batch's images."""
    def draw(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        return x + normal_draws((1, *x.shape[1:]), g, x) * std
    return draw


def _sensitivities(name: str, explainer: Explainer, inputs: torch.Tensor, target: TargetLike, radius: float,
                   samples: int, seed: int, perturb: Perturb | None, max_batch: int | None) -> torch.Tensor:
    """``||E(x + d) - E(x)|| / ||E(x)||`` (a zero explanation divides by 1): (samples, N)."""
    draw = perturb or _uniform(check_number("radius", radius))
    clean, moved, _ = perturbed_explanations(name, explainer, inputs, target, samples, seed, draw, max_batch)
    size = clean.norm(dim=2)
    return (moved - clean).norm(dim=2) / torch.where(size == 0, 1.0, size)


def perturbed_explanations(name: str, explainer: Explainer, inputs: torch.Tensor, target: TargetLike, samples: int,
                            seed: int, draw: Perturb, max_batch: int | None
                            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The explanation of ``inputs`` (1, N, F), of ``samples`` perturbed copies (samples, N, F),
    explained for the same targets in batches of ``max_batch`` copies, and the copies (samples,
    N, ...)."""
    check_int("samples", samples)
    check_seed(seed)
    if not callable(draw):
        raise InputError(f"perturb must be a function (inputs, generator) -> perturbed inputs, not {draw!r}")
    inputs = checked_inputs(name, explainer, inputs)
    generator = torch.Generator(device=inputs.device).manual_seed(seed)
    perturbed = drawn(draw, inputs, generator, samples, "perturb").flatten(0, 1)  # copy-major (S * N, ...)
    clean, moved = explained_copies(explainer, inputs, target, perturbed, max_batch)
    return clean, moved, perturbed.reshape(samples, len(inputs), *inputs.shape[1:])


def checked_inputs(name: str, explainer: Explainer, inputs: torch.Tensor) -> torch.Tensor:
    """``inputs`` validated for ``explainer``'s model, or an InputError naming the metric."""
    if not isinstance(explainer, Explainer):
        raise InputError(f"{name} takes an interpkit explainer instance, not {type(explainer).__name__}")
    return check_tensor(inputs, explainer.model)


def explained_copies(explainer: Explainer, inputs: torch.Tensor, target: TargetLike, copies: torch.Tensor,
                     max_batch: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The explanation of ``inputs`` (1, N, F) and of their ``copies`` (S * N, ..., copy-major),
    (S, N, F), explained for the inputs' targets in batches of ``max_batch`` copies."""
    check_int("max_batch", max_batch, none="the inputs' batch size")
    n = len(inputs)
    clean = explainer(inputs, target)
    pinned = clean.targets if clean.class_targets else target
    sample_of = torch.arange(n, device=inputs.device).repeat(len(copies) // n)
    maps = []
    for part in chunks(len(copies), max_batch or n):
        part_target = pinned[sample_of[part]] if isinstance(pinned, torch.Tensor) else pinned
        maps.append(explainer(copies[part], part_target).maps)
    return clean.maps.reshape(1, n, -1).double(), torch.cat(maps).reshape(len(copies) // n, n, -1).double()
