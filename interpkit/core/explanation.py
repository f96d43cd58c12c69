"""The result of every explainer: maps and what they explain, as tensors on the model's device."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ..errors import InputError
from .maps import MapKind, display, normalize_maps


@dataclass
class Explanation:
    """Maps of shape (N, K, ...), one per sample and target; ``kind`` says what follows (N, K).

    ``kind`` is a ``MapKind``: maps over the layer's grid, over the input's grid, or with
    the input's channels (input gradients). ``targets`` (N, K) names what each map explains
    (class index, neuron channel, or the column of a callable's scores); ``scores`` (N, K) are
    the model outputs for those targets; ``layer`` is the explained layer, if any.
    """

    maps: torch.Tensor
    targets: torch.Tensor
    scores: torch.Tensor
    method: str
    kind: MapKind
    layer: str | None = None
    #: True when ``targets`` are class indices (False for a callable's columns or Neuron channels)
    class_targets: bool = True

    def normalized(self) -> torch.Tensor:
        """Each map min-max scaled into [0, 1]; a constant map becomes zeros, never NaN."""
        return normalize_maps(self.maps, start_dim=2)

    def overlay(self, images: Any, alpha: float = 0.5, colormap: int | str = "jet", scale: str = "map") -> np.ndarray:
        """Heatmaps blended over ``images``: uint8 RGB of shape (N, K, H, W, 3).

        ``images`` is a uint8 (N, H, W, 3) array or tensor, a uint8 (N, 3, H, W) tensor, or a
        float (N, 3, H, W) tensor in [0, 1]. ``colormap`` is an OpenCV colormap name or id.
        ``scale="sample"`` puts a sample's K maps on one colour scale (the evidence for each
        class comparable); ``"map"`` scales each map on its own.
        """
        return display().overlay_maps(self.maps, images, self.kind, alpha=alpha, colormap=colormap, scale=scale)

    def save(self, out_dir: str | Path, colormap: int | str = "jet") -> list[Path]:
        """Write one colour-mapped PNG per map into ``out_dir``; returns the paths."""
        try:
            return display().save_maps(self, out_dir, colormap=colormap)
        except OSError as error:  # a folder that cannot be made or written
            raise InputError(f"cannot write the maps into {out_dir}: {error.strerror or error}") from None

    def cpu(self) -> "Explanation":
        """A copy with every tensor on the CPU (a subclass's too, such as ``layer_maps``)."""
        moved: dict[str, Any] = {name: value.cpu() for name, value in self._tensors().items()}
        return replace(self, **moved)

    def numpy(self) -> dict[str, Any]:
        """The maps, targets and scores (and a subclass's other tensors) as numpy arrays, with
        method, kind and layer."""
        arrays = {name: value.numpy() for name, value in self.cpu()._tensors().items()}
        return {**arrays, "method": self.method, "kind": self.kind.value, "layer": self.layer}

    def _tensors(self) -> dict[str, torch.Tensor]:
        return {f.name: value for f in fields(self) if isinstance(value := getattr(self, f.name), torch.Tensor)}


def concatenate(parts: Sequence[Explanation]) -> Explanation:
    """One Explanation from several of the same kind, sample after sample: every tensor field is
    joined along the batch dimension, every other field is the first part's."""
    first = parts[0]
    values = {f.name: getattr(first, f.name) for f in fields(first)}
    for name, value in values.items():
        if isinstance(value, torch.Tensor):
            values[name] = torch.cat([getattr(part, name) for part in parts])
    return type(first)(**values)
