"""How a layer's output lies over the input's grid: channels first, channels last, or tokens.

A layout turns a layer output into a channels-first grid (N, C, *grid) and is applied alike to
activations, their gradients and ``Neuron`` indexing. It is only a re-indexing (tokens before
the grid, such as a class token, are left out), so the gradient of a score with respect to the
re-indexed grid is the re-indexed gradient.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence, Union

import torch

from ..errors import LayerError

MAX_PREFIX_TOKENS = 16  # class, distillation and register tokens: more is not a vision transformer


class Layout:
    """Base of the layouts; ``grid(tensor, input_grid, lead)`` gives (lead dims..., C, *grid)."""

    def grid(self, tensor: torch.Tensor, input_grid: Sequence[int], lead: int = 1, name: str = "") -> torch.Tensor:
        """``tensor`` (``lead`` batch-like dims, then the layer's output) as (lead dims, C, *grid);
        a LayerError naming the layer ``name`` when it does not have this layout."""
        raise NotImplementedError


@dataclass(frozen=True)
class ChannelsFirst(Layout):
    """(N, C, *grid) as it is. Without a layout interpkit also checks that the grid lines up with
    the input (same rank, no larger, one common stride); given explicitly, only the rank is checked."""

    checked: bool = False

    def grid(self, tensor: torch.Tensor, input_grid: Sequence[int], lead: int = 1, name: str = "") -> torch.Tensor:
        """See :meth:`Layout.grid`."""
        grid = tuple(tensor.shape[lead + 1:])
        if len(grid) != len(input_grid):
            raise LayerError(
                f"layer '{name}' gives shape {tuple(tensor.shape[lead:])} per sample, which is not a channels-first "
                f"grid of the input's {len(input_grid)} spatial dimension(s); give its layout with the layer, e.g. "
                f"layer=('{name}', TokenGrid()) for (N, tokens, dim) or ('{name}', ChannelsLast()) for (N, *grid, C)"
            )
        if self.checked and not aligned(grid, input_grid):
            raise LayerError(
                f"layer '{name}' gives shape {tuple(tensor.shape[lead:])} per sample: read as channels first its grid "
                f"{grid} does not line up with the input's {tuple(input_grid)} (no common stride), so it is not a map "
                f"of the input; give its layout with the layer (TokenGrid(), ChannelsLast(), or ChannelsFirst() to "
                "insist)"
            )
        return tensor


@dataclass(frozen=True)
class ChannelsLast(Layout):
    """(N, *grid, C), as Swin, ConvNeXt blocks and MaxViT partitions keep their activations."""

    def grid(self, tensor: torch.Tensor, input_grid: Sequence[int], lead: int = 1, name: str = "") -> torch.Tensor:
        """See :meth:`Layout.grid`."""
        if tensor.dim() - lead - 1 != len(input_grid):
            raise LayerError(f"layer '{name}' gives shape {tuple(tensor.shape[lead:])} per sample, not a channels-last "
                             f"grid (*grid, C) of the input's {len(input_grid)} spatial dimension(s)")
        return tensor.movedim(-1, lead)


@dataclass(frozen=True)
class TokenGrid(Layout):
    """(N, tokens, D): ``prefix`` tokens (class, distillation, registers) then a row-major grid.

    With ``prefix="auto"`` and ``grid=None`` both are derived from the token count and the input
    size: the grid must tile the input with one patch size. Give them when they cannot be.
    """

    prefix: Union[int, str] = "auto"
    grid_size: Union[tuple[int, ...], None] = None

    def __post_init__(self) -> None:
        if self.prefix != "auto" and (isinstance(self.prefix, bool) or not isinstance(self.prefix, int)
                                      or self.prefix < 0):
            raise LayerError(f"TokenGrid prefix must be 'auto' or a non-negative int, not {self.prefix!r}")

    def resolve(self, tokens: int, input_grid: Sequence[int], name: str = "") -> tuple[int, tuple[int, ...]]:
        """(prefix, grid) for ``tokens`` tokens over ``input_grid``."""
        prefixes = range(MAX_PREFIX_TOKENS + 1) if self.prefix == "auto" else [int(self.prefix)]
        for prefix in prefixes:
            rest = tokens - prefix
            if self.grid_size is not None:
                if math.prod(self.grid_size) == rest:
                    return prefix, tuple(self.grid_size)
                continue
            grid = patch_grid(rest, input_grid)
            if grid is not None:
                return prefix, grid
        given = f"prefix={self.prefix!r}, grid={self.grid_size!r}"
        raise LayerError(
            f"layer '{name}' gives {tokens} tokens, which with {given} make no grid over the {tuple(input_grid)} "
            f"input (tokens = prefix + a grid with one patch size); pass both, e.g. TokenGrid(prefix=1, "
            f"grid_size=(14, 14)) for 197 tokens"
        )

    def grid(self, tensor: torch.Tensor, input_grid: Sequence[int], lead: int = 1, name: str = "") -> torch.Tensor:
        """See :meth:`Layout.grid`."""
        if tensor.dim() != lead + 2:
            raise LayerError(f"layer '{name}' gives shape {tuple(tensor.shape[lead:])} per sample, not (tokens, dim)")
        prefix, grid = self.resolve(tensor.shape[lead], input_grid, name)
        tokens = tensor.narrow(lead, prefix, math.prod(grid))
        return tokens.reshape(*tensor.shape[:lead], *grid, tensor.shape[-1]).movedim(-1, lead)


def aligned(grid: Sequence[int], input_grid: Sequence[int]) -> bool:
    """True when ``grid`` can be a map of the input: same rank, no dimension larger, and the
    input-to-grid ratios agree within the rounding of one position."""
    if len(grid) != len(input_grid) or any(g < 1 or g > n for g, n in zip(grid, input_grid)):
        return False
    if len(grid) == 1:
        return True
    low = max(n / (g + 1) for g, n in zip(grid, input_grid))
    high = min(n / max(g - 1, 0.5) for g, n in zip(grid, input_grid))
    return low <= high


def patch_grid(tokens: int, input_grid: Sequence[int]) -> tuple[int, ...] | None:
    """The grid of ``tokens`` patches of one size that tiles ``input_grid`` (floor division, as
    patch embeddings crop), or None."""
    if tokens < 1:
        return None
    for patch in range(1, max(input_grid) + 1):
        grid = tuple(n // patch for n in input_grid)
        if math.prod(grid) == tokens and all(g > 0 for g in grid):
            return grid
        if math.prod(grid) < tokens:
            return None
    return None


LayoutLike = Union[Layout, None]
