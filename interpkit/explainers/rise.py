"""RISE (Petsiuk et al., 2018): the input multiplied by many random smooth masks; each mask is
weighted by the target's score on its masked copy.

A mask is a ``cells`` grid per axis of independent Bernoulli(``p``) values, upsampled (linear,
bilinear or trilinear, ``align_corners=False``) to ``(cells + 1)`` cells of ``ceil(size / cells)``
positions, then cropped to the input's grid at a random shift of less than one cell. The map is

    sum_i f(x * M_i) M_i / (N p)

with ``f`` the target class's probability (``score="probability"``, the paper's) or logit, or a
callable target's values as they are. The masks come
from ``seed`` on the input's device, the same for every image of a batch, so no map depends on
its batch; the masked copies go through the model about ``max_batch`` samples at a time, under
``no_grad``.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..core import Call, Explainer, Explanation, MapKind, check_generator, check_int, check_number, check_seed, check_sizes
from ..errors import InputError
from .perturbation import clean_targets, perturbed_scores

_MODES = {1: "linear", 2: "bilinear", 3: "trilinear"}


def rise_masks(count: int, grid: Sequence[int], cells: int, p: float, generator: torch.Generator,
               device: torch.device | str = "cpu") -> torch.Tensor:
    """``count`` RISE masks (count, *grid) in [0, 1], drawn from ``generator``: Bernoulli(p) cell
    values, upsampled to cells + 1 cells, cropped at a random shift of less than one cell."""
    check_int("count", count), check_int("cells", cells), check_generator(generator)
    grid = check_sizes("grid", grid)
    if not check_number("p", p) <= 1:
        raise InputError(f"p is the probability of keeping a cell: it must lie in [0, 1], got {p!r}")
    return _render(*_draw(count, grid, cells, p, generator, device), grid)


def _draw(count: int, grid: Sequence[int], cells: int, p: float, generator: torch.Generator,
          device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
    """The random part of ``count`` masks, small: cell values (count, 1, *cells) and shifts (count, d)."""
    if len(grid) not in _MODES:
        raise InputError(f"RISE masks cover 1 to 3 grid axes, not {len(grid)}")
    values = (torch.rand(count, 1, *[cells] * len(grid), generator=generator, device=device) < p).float()
    shifts = torch.stack([torch.randint(0, math.ceil(n / cells), (count,), generator=generator, device=device)
                          for n in grid], dim=1)
    return values, shifts


def _render(values: torch.Tensor, shifts: torch.Tensor, grid: Sequence[int]) -> torch.Tensor:
    """The masks (m, *grid) of drawn cell values and shifts: upsampled, then cropped."""
    m, d, cells = len(values), len(grid), values.shape[-1]
    size = [(cells + 1) * math.ceil(n / cells) for n in grid]
    upsampled = F.interpolate(values, size=size, mode=_MODES[d], align_corners=False)[:, 0]
    index = [torch.arange(m, device=values.device).view(m, *[1] * d)]
    for axis, n in enumerate(grid):  # each mask's window along this axis, broadcast over the others
        along = [1] * d
        along[axis] = n
        index.append(shifts[:, axis].view(m, *[1] * d) + torch.arange(n, device=values.device).view(1, *along))
    return upsampled[tuple(index)]


class RISE(Explainer):
    """RISE maps (N, K, *grid) for any model whose input has a 1-D to 3-D grid."""

    name = "rise"
    supports = frozenset({"1d", "2d", "3d", "tokens", "several_inputs"})

    def __init__(self, model: nn.Module, masks: int = 4000, cells: int = 7, p: float = 0.5, seed: int = 0,
                 max_batch: int = 64, score: str = "probability") -> None:
        super().__init__(model)
        self.masks, self.cells = check_int("masks", masks), check_int("cells", cells)
        self.p = check_number("p", p)
        if not 0 < self.p <= 1:
            raise InputError(f"p must lie in (0, 1], got {p!r}")
        self.seed, self.max_batch = check_seed(seed), check_int("max_batch", max_batch)
        if score not in ("probability", "logit"):
            raise InputError(f"score must be 'probability' or 'logit', not {score!r}")
        self.score = score

    def explain(self, call: Call) -> Explanation:
        """The clean forward gives the targets; the masked copies, the weights of their masks."""
        x = call.x
        if x.dim() < 3:
            raise InputError(f"RISE masks the input's grid: inputs {tuple(x.shape)} have none")
        selection, wanted = clean_targets(self, call, "RISE")
        generator = torch.Generator(device=x.device).manual_seed(self.seed)
        grid = tuple(x.shape[2:])
        values, shifts = _draw(self.masks, grid, self.cells, self.p, generator, x.device)  # masks made a chunk at a time

        size = self.max_batch
        block: dict[int, torch.Tensor] = {}  # one block of masks at a time, made once for the chunks inside it

        def masks(first: int, stop: int) -> torch.Tensor:
            parts = []
            while first < stop:
                start = first // size * size
                if start not in block:
                    block.clear()
                    block[start] = _render(values[start:start + size], shifts[start:start + size], grid).to(x.dtype)
                end = min(stop, start + size)
                parts.append(block[start][first - start:end - start])
                first = end
            return parts[0] if len(parts) == 1 else torch.cat(parts)

        def masked(first: int, stop: int) -> torch.Tensor:
            return x.unsqueeze(0) * masks(first, stop)[:, None, None]

        scores = perturbed_scores(self.model, call, wanted, self.masks, masked, self.max_batch,
                                  probability=self.score == "probability")  # (M, N, K)
        total = sum(torch.einsum("mnk,m...->nk...", scores[a:a + size], masks(a, min(a + size, self.masks)).to(scores.dtype))
                    for a in range(0, self.masks, size))
        return self.result(total / (self.masks * self.p), selection, MapKind.INPUT_GRID)
