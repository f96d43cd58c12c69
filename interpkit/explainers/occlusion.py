"""Occlusion (Zeiler and Fergus, 2014): how much the target's score falls when a window of the
input is replaced by a baseline, slid over the grid.

Windows of ``window`` positions start every ``stride`` positions along each axis of the input's
grid (1-D to 3-D), until a window reaches the far edge; the last one is cut at the edge where the
stride does not land on it. Every channel of a window is occluded together. A position's value
is the mean, over the windows covering it, of ``f(x) - f(x occluded)``: captum's ``Occlusion``
with ``sliding_window_shapes=(C, *window)`` and ``strides=(C, *stride)``. The occluded copies go
through the model in batches of about ``max_batch`` samples, under ``no_grad``.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch
from torch import nn

from ..core import BaselineLike, Call, Explainer, Explanation, MapKind, check_int, check_reference, reference
from ..errors import InputError
from .perturbation import clean_targets, perturbed_scores


class Occlusion(Explainer):
    """Occlusion maps (N, K, *grid) for any model whose input has a grid. ``window`` and
    ``stride`` are an int or one int per grid axis (``stride`` defaults to half the window);
    ``baseline`` is a finite number, a tensor broadcastable to one sample (C, *grid) or one per
    sample (N, C, *grid), or a callable of the inputs returning either."""

    name = "occlusion"
    supports = frozenset({"1d", "2d", "3d", "tokens", "several_inputs"})

    def __init__(self, model: nn.Module, window: int | tuple = 8, stride: int | tuple | None = None,
                 baseline: BaselineLike = 0.0, max_batch: int = 64) -> None:
        super().__init__(model)
        self.window, self.stride = _sizes("window", window), None if stride is None else _sizes("stride", stride)
        self.baseline = check_reference(baseline)
        self.max_batch = check_int("max_batch", max_batch)

    def explain(self, call: Call) -> Explanation:
        """The clean forward gives the targets and their scores; the occluded copies, the drops."""
        x = call.x
        if x.dim() < 3:
            raise InputError(f"occlusion slides a window over the input's grid: inputs {tuple(x.shape)} have none")
        grid = tuple(x.shape[2:])
        window = _per_axis(self.window, grid, "window")
        stride = _per_axis(self.stride or tuple(max(1, w // 2) for w in window), grid, "stride")
        if any(s > w for s, w in zip(stride, window)):  # positions between windows would get no value
            raise InputError(f"occlusion's stride {stride} is larger than its window {window} (after clipping to the "
                             f"grid {grid}): some positions would lie in no window; give a stride no larger than it")
        selection, wanted = clean_targets(self, call, "occlusion")
        # a window starts every stride until one reaches the far edge (windows are no larger than the grid)
        starts = [torch.tensor([p for p in range(0, n - w + s, s) if p < n], device=x.device)
                  for n, w, s in zip(grid, window, stride)]
        count = math.prod(len(a) for a in starts)
        baseline = reference(self.baseline, call)  # (1 or N, C, *grid)

        def occluded(first: int, stop: int) -> torch.Tensor:
            hidden = _windows(starts, window, grid, first, stop)[:, None, None].expand(stop - first, *x.shape)
            return torch.where(hidden, baseline, x.unsqueeze(0))

        scores = perturbed_scores(self.model, call, wanted, count, occluded, self.max_batch)  # (W, N, K)
        drops = selection.scores.detach().to(scores.dtype).unsqueeze(0) - scores
        total = sum(torch.einsum("wnk,w...->nk...", drops[a:a + self.max_batch],
                                 _windows(starts, window, grid, a, min(count, a + self.max_batch)).to(drops.dtype))
                    for a in range(0, count, self.max_batch))
        covered = _windows(starts, window, grid, 0, count, covered=True)  # every position is in a window
        return self.result(total / covered, selection, MapKind.INPUT_GRID)


def _sizes(name: str, value: Any) -> int | tuple[int, ...]:
    values = tuple(value) if isinstance(value, (tuple, list)) else (value,)
    if not values:
        raise InputError(f"{name} must be a positive int or a tuple of them, got {value!r}")
    sizes = tuple(check_int(name, v) for v in values)
    return sizes if isinstance(value, (tuple, list)) else sizes[0]


def _per_axis(value: int | tuple[int, ...], grid: tuple[int, ...], name: str) -> tuple[int, ...]:
    values = (value,) * len(grid) if isinstance(value, int) else tuple(value)
    if len(values) != len(grid):
        raise InputError(f"{name} {value!r} has {len(values)} size(s) for an input grid of {len(grid)} axes {grid}")
    return tuple(min(v, n) for v, n in zip(values, grid))


def _windows(starts: list[torch.Tensor], window: Sequence[int], grid: Sequence[int], first: int, stop: int,
             covered: bool = False) -> torch.Tensor:
    """Boolean masks (stop - first, *grid) of windows first..stop-1, in row-major order of their
    starts; with ``covered``, how many of all the windows cover each position (*grid) instead."""
    index = torch.arange(first, stop, device=starts[0].device)
    masks: torch.Tensor | None = None
    for axis in reversed(range(len(grid))):  # the last axis varies fastest
        place = torch.arange(grid[axis], device=index.device)
        begin = starts[axis] if covered else starts[axis][index % len(starts[axis])]
        inside = (place >= begin[:, None]) & (place < begin[:, None] + window[axis])  # (m, n)
        shape = [1] * (len(grid) + 1)
        shape[0], shape[axis + 1] = -1, grid[axis]
        along = inside.sum(0).view(shape[1:]) if covered else inside.view(shape)
        masks = along if masks is None else masks * along if covered else masks & along
        index = index // len(starts[axis])
    assert masks is not None
    return masks
