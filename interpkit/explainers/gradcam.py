"""GradCAM (Selvaraju et al., 2017): where in a layer's grid the evidence for a target lies."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..core import Explanation, LayerExplainer, LayerLike, MapKind, TargetLike, check_flag, normalize_maps
from ..errors import LayerError

_MODES = {1: "linear", 2: "bilinear", 3: "trilinear"}


@dataclass
class MultiLayerExplanation(Explanation):
    """GradCAM of several layers: ``maps`` (N, K, *input grid) is their fusion, ``layer_maps``
    (N, K, L, *input grid) each layer's own map upsampled to the input, in the order of ``layers``."""

    layer_maps: torch.Tensor = field(default=None)  # type: ignore[assignment]
    layers: tuple[str, ...] = ()


def upsample(maps: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    """Maps (N, K, *grid) resized to ``size`` by linear, bilinear or trilinear interpolation
    (``align_corners=False``), the interpolation of the grid's rank."""
    if tuple(maps.shape[2:]) == tuple(size):
        return maps
    if maps.shape[2:].numel() == 1:  # one position: exactly constant (interpolation rounds)
        return maps.expand(*maps.shape[:2], *size).contiguous()
    return F.interpolate(maps, size=size, mode=_MODES[len(size)], align_corners=False)


def fuse(layer_maps: torch.Tensor) -> torch.Tensor:
    """Several layers' maps (N, K, L, *grid) as one: each map scaled to [0, 1], the mean over
    the layers, scaled to [0, 1] again: pytorch-grad-cam's aggregation of several target layers
    (which scales before resizing, so the two differ by interpolation rounding)."""
    scaled = normalize_maps(layer_maps.clamp_min(0), start_dim=3)
    return normalize_maps(scaled.mean(dim=2), start_dim=2)


class GradCAM(LayerExplainer):
    """Class activation maps weighted by the gradients averaged over the layer's grid.

    For each target, ``ReLU(sum_c mean_grid(dS/dA_c) * A_c)`` over the activations ``A`` of
    ``layer`` (1-D, 2-D or 3-D grids, tokens and channels-last outputs through their layout).
    Maps are raw, not normalised: (N, K, *layer grid) with ``upsample=False``, or (N, K, *input
    grid) resized to the input by (bi/tri)linear interpolation. K targets share one forward and
    one batched backward; with ``layer=[...]`` so do all the layers, and the result is a
    ``MultiLayerExplanation`` whose maps fuse them (``fuse``).
    """

    name = "gradcam"

    def __init__(self, model: nn.Module, layer: LayerLike | list = None, upsample: bool = True,
                 relu: bool = True) -> None:
        super().__init__(model, layer)
        self.upsample = check_flag("upsample", upsample)
        self.relu = check_flag("relu", relu)
        if isinstance(layer, list) and len(layer) > 1 and not upsample:
            raise LayerError("several layers have grids of different sizes: keep upsample=True to fuse them")

    def explain(self, inputs: torch.Tensor, target: TargetLike = None) -> Explanation:
        """Explain validated ``inputs`` for ``target``; the model is already in eval mode."""
        found = self.all_layer_gradients(inputs, target)
        maps = [self.cam(f.activation, f.gradients) for f in found]
        maps = [m.clamp_min(0) if self.relu else m for m in maps]
        selection = found[0].selection
        if not self.upsample:
            return self.result(maps[0], selection, MapKind.LAYER_GRID, found[0].layer)
        size = tuple(inputs.shape[2:])
        maps = [upsample(m, size) for m in maps]
        if len(maps) == 1:
            return self.result(maps[0], selection, MapKind.INPUT_GRID, found[0].layer)
        stacked = torch.stack(maps, dim=2)
        plain = self.result(fuse(stacked), selection, MapKind.INPUT_GRID, found[-1].layer)
        return MultiLayerExplanation(**vars(plain), layer_maps=stacked.detach().float(),
                                     layers=tuple(f.layer for f in found))

    def cam(self, activation: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
        """Maps (N, K, *grid), before the ReLU, from activations (N, C, *grid) and their
        gradients (N, K, C, *grid). Variants (GradCAM++, LayerCAM, ...) override only this."""
        weights = gradients.flatten(3).mean(dim=-1)  # (N, K, C)
        return torch.einsum("nkc,nc...->nk...", weights, activation)
