"""What an explanation's maps are laid out over, and how they are scaled for display."""

from __future__ import annotations

import enum

import torch


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
