"""Continuity (Montavon et al., 2018), as Quantus 0.6 computes it where Quantus is right: the
strongest change of the explanation per unit of input change, ``||R(x) - R(x')||_1 / ||x - x'||_2``,
over copies x' of the input translated along its last grid axis (an image's width)."""

from __future__ import annotations

import torch

from ..core import Explainer, TargetLike, check_baseline, check_flag, check_int
from ..errors import InputError
from .base import MetricResult
from .faithfulness import Baseline, baseline_values
from .sensitivity import checked_inputs, explained_copies


def continuity(explainer: Explainer, inputs: torch.Tensor, target: TargetLike = None, *, steps: int | None = None,
               baseline: Baseline = "black", normalise: bool = True, absolute: bool = True,
               max_batch: int | None = None) -> MetricResult:
    """The largest ratio over ``steps`` translations (default 28, Quantus', or all 2W + 1 of a grid
    narrower than 14) of each input along its last grid axis, by
    ``dx = (2W + 1) // steps`` positions at a time from ``dx - W`` (W the axis' length; Quantus'
    schedule), the uncovered positions filled with ``baseline`` ("black": each input's minimum,
    "white", "mean", a number or a tensor). Each explanation is divided by its own largest absolute
    value (``normalise``) and taken in absolute value (``absolute``) before the L1 distance, as
    Quantus' defaults do. The translation by 0, whose ratio is 0 / 0, is left out. ``curves``
    (N, S) hold every translation's ratio and ``fractions`` its shift over W. Lower is better."""
    check_int("steps", steps, none="28, or 2W + 1 for a narrower grid")
    baseline = check_baseline(baseline, ("black", "white", "mean"))
    check_flag("normalise", normalise)
    check_flag("absolute", absolute)
    inputs = checked_inputs("continuity", explainer, inputs)
    if inputs.dim() < 3:
        raise InputError(f"continuity translates the input's grid: inputs {tuple(inputs.shape)} have none")
    width = inputs.shape[-1]
    steps = steps or min(28, 2 * width + 1)
    dx = (2 * width + 1) // steps
    if dx == 0:
        raise InputError(f"steps={steps} exceeds the {2 * width + 1} translations of a grid {width} wide; give fewer")
    shifts = [dx * k - width for k in range(1, steps + 1) if dx * k != width]
    copies = translated(inputs, baseline_values(inputs, baseline), shifts)
    clean, moved = explained_copies(explainer, inputs, target, copies.flatten(0, 1), max_batch)
    clean, moved = _prepared(clean, normalise, absolute), _prepared(moved, normalise, absolute)
    change = (copies - inputs).flatten(2).double().norm(dim=2)  # (S, N)
    ratios = ((moved - clean).abs().sum(dim=2) / (change + 1e-9)).T  # (N, S)
    fractions = torch.tensor(shifts, dtype=torch.float64, device=inputs.device) / width
    return MetricResult("continuity", ratios.amax(dim=1).float(), ratios.float(), fractions.float())


def translated(inputs: torch.Tensor, fill: torch.Tensor, shifts: list[int]) -> torch.Tensor:
    """Copies (S, N, ...) of ``inputs`` moved by each shift along the last axis (positive: towards
    higher indices), the positions left uncovered taken from ``fill`` (shaped like ``inputs``)."""
    width = inputs.shape[-1]
    source = torch.arange(width, device=inputs.device) - torch.tensor(shifts, device=inputs.device)[:, None]
    inside = (source >= 0) & (source < width)  # (S, W)
    moved = inputs[..., source.clamp(0, width - 1)]  # (N, ..., S, W)
    moved = moved.movedim(-2, 0)  # (S, N, ..., W)
    return torch.where(inside.view(len(shifts), *[1] * (inputs.dim() - 1), width), moved, fill)


def _prepared(maps: torch.Tensor, normalise: bool, absolute: bool) -> torch.Tensor:
    """Flattened maps (..., F) divided by their own largest absolute value (a zero map stays zero)
    and in absolute value, as asked."""
    if normalise:
        peak = maps.abs().amax(dim=-1, keepdim=True)
        maps = maps / torch.where(peak > 0, peak, 1.0)
    return maps.abs() if absolute else maps
