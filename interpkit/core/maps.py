"""What an explanation's maps are laid out over, and how they are scaled for display."""

from __future__ import annotations

import enum
from typing import Any, Callable

import torch
import torch.nn.functional as F


class MapKind(str, enum.Enum):
    """The layout of ``Explanation.maps`` after its (N, K) leading dimensions.

    ``LAYER_GRID``: one value per position of the explained layer's grid, (N, K, *layer grid).
    ``INPUT_GRID``: one value per position of the input's grid, (N, K, *input grid).
    ``INPUT_CHANNELS``: a value per input channel and position, (N, K, C, *input grid), as
    input gradients are.
    """

    LAYER_GRID = "layer_grid"
    INPUT_GRID = "input_grid"
    INPUT_CHANNELS = "input_channels"

    @property
    def has_channels(self) -> bool:
        """True when each map keeps a channel dimension before its grid."""
        return self is MapKind.INPUT_CHANNELS


def normalize_maps(maps: torch.Tensor, start_dim: int) -> torch.Tensor:
    """Min-max scale each slice ``maps[i, j, ...]`` flattened from ``start_dim`` into [0, 1].

    Computed in float64 so that neither a subnormal nor an overflowing span loses the 0 and 1.
    """
    flat = maps.flatten(start_dim).double()
    low = flat.amin(dim=-1, keepdim=True)
    span = flat.amax(dim=-1, keepdim=True) - low
    scaled = (flat - low) / torch.where(span > 0, span, 1.0)
    return scaled.reshape(maps.shape).to(maps.dtype if maps.dtype.is_floating_point else torch.float32)


_display_provider: list[Callable[[], Any]] = []


def provide_display(provider: Callable[[], Any]) -> None:
    """Name the module that turns maps into pixels; the ``interpkit`` package, which sits above
    core and viz alike, names ``interpkit.viz``. Core, analysis and explainers import nothing of viz."""
    _display_provider[:] = [provider]


def display() -> Any:
    """The display module (``interpkit.viz``): ``display().overlay_maps(...)``."""
    if not _display_provider:
        raise RuntimeError("no display module was provided: import interpkit, which provides interpkit.viz")
    return _display_provider[0]()


_MODES = {1: "linear", 2: "bilinear", 3: "trilinear"}


def upsample(maps: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    """Maps (N, K, *grid) resized to ``size`` by linear, bilinear or trilinear interpolation
    (``align_corners=False``), the interpolation of the grid's rank."""
    if tuple(maps.shape[2:]) == tuple(size):
        return maps
    if maps.shape[2:].numel() == 1:  # one position: exactly constant (interpolation rounds)
        return maps.expand(*maps.shape[:2], *size).contiguous()
    return F.interpolate(maps, size=size, mode=_MODES[len(size)], align_corners=False)
