"""The result of an explainer: maps and what they explain, as tensors on the model's device."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch


@dataclass
class Explanation:
    """Maps of shape (N, K, *map_shape), one per sample and target.

    ``map_shape`` is (H, W) for class activation maps and (C, H, W) for input-gradient maps.
    ``targets`` (N, K) names what each map explains (class index, neuron channel, or the column
    of a callable's scores); ``scores`` (N, K) are the model outputs for those targets.
    """

    maps: torch.Tensor
    targets: torch.Tensor
    scores: torch.Tensor
    method: str
    layer: str | None = None

    def normalized(self) -> torch.Tensor:
        """Each map min-max scaled into [0, 1]; a constant map becomes zeros, never NaN."""
        return normalize_maps(self.maps, start_dim=2)

    def overlay(self, images: Any, alpha: float = 0.5, colormap: int | str = "jet") -> np.ndarray:
        """Heatmaps blended over ``images``: uint8 RGB of shape (N, K, H, W, 3).

        ``images`` is a uint8 (N, H, W, 3) array or tensor, a uint8 (N, 3, H, W) tensor, or a
        float (N, 3, H, W) tensor in [0, 1]. ``colormap`` is an OpenCV colormap name or id.
        """
        from ..viz import overlay_maps

        return overlay_maps(self.maps, images, alpha=alpha, colormap=colormap)

    def save(self, directory: str | Path, colormap: int | str = "jet") -> list[Path]:
        """Write one colour-mapped PNG per map into ``directory``; returns the paths."""
        from ..viz import save_maps

        return save_maps(self, directory, colormap=colormap)

    def cpu(self) -> "Explanation":
        """A copy with every tensor on the CPU."""
        return replace(self, maps=self.maps.cpu(), targets=self.targets.cpu(), scores=self.scores.cpu())

    def numpy(self) -> dict[str, Any]:
        """The maps, targets and scores as numpy arrays, with method and layer."""
        cpu = self.cpu()
        return {
            "maps": cpu.maps.numpy(),
            "targets": cpu.targets.numpy(),
            "scores": cpu.scores.numpy(),
            "method": self.method,
            "layer": self.layer,
        }


def normalize_maps(maps: torch.Tensor, start_dim: int) -> torch.Tensor:
    """Min-max scale each slice ``maps[i, j, ...]`` flattened from ``start_dim`` into [0, 1].

    Computed in float64 so that neither a subnormal nor an overflowing span loses the 0 and 1.
    """
    flat = maps.flatten(start_dim).double()
    low = flat.amin(dim=-1, keepdim=True)
    span = flat.amax(dim=-1, keepdim=True) - low
    scaled = (flat - low) / torch.where(span > 0, span, 1.0)
    return scaled.reshape(maps.shape).to(maps.dtype if maps.dtype.is_floating_point else torch.float32)
