"""GradCAM (Selvaraju et al., 2017): where in a layer's grid the evidence for a target lies."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ..core import (
    Call,
    Explanation,
    LayerExplainer,
    LayerGradients,
    LayerLike,
    MapKind,
    check_flag,
    normalize_maps,
    upsample,
)
from ..errors import InputError, LayerError


@dataclass
class MultiLayerExplanation(Explanation):
    """GradCAM of several layers: ``maps`` (N, K, *input grid) is their fusion, ``layer_maps``
    (N, K, L, *input grid) each layer's own map upsampled to the input, in the order of ``layers``."""

    layer_maps: torch.Tensor = field(default=None)  # type: ignore[assignment]
    layers: tuple[str, ...] = ()


def principal_projection(terms: torch.Tensor) -> torch.Tensor:
    """``eigen_smooth``: per sample and target, the channel terms (N, K, C, *grid) projected on
    their first principal component over the grid positions (centred per channel, as Muhammad
    and Yeasin's Eigen-CAM and pytorch-grad-cam do): (N, K, *grid). The component's sign is not
    defined by the SVD; interpkit orients it to correlate positively with the plain channel sum
    (the map without smoothing), and where that correlation is 0, to make the largest entry
    positive, so a map never flips between runs or libraries' LAPACK builds."""
    n, k, c = terms.shape[:3]
    grid = terms.shape[3:]
    positions = terms.reshape(n * k, c, -1).transpose(1, 2).double()  # (NK, P, C)
    centred = positions - positions.mean(dim=1, keepdim=True)
    _, _, vh = torch.linalg.svd(centred, full_matrices=False)
    projection = (centred @ vh[:, 0, :].unsqueeze(-1)).squeeze(-1)  # (NK, P)
    plain = positions.sum(dim=2)
    agreement = ((projection - projection.mean(1, keepdim=True)) * (plain - plain.mean(1, keepdim=True))).sum(1)
    peak = projection.gather(1, projection.abs().argmax(dim=1, keepdim=True)).squeeze(1)
    sign = torch.where(agreement.abs() > 1e-12 * projection.norm(dim=1) * plain.norm(dim=1),
                       agreement.sign(), peak.sign())
    projection = projection * torch.where(sign == 0, 1.0, sign).unsqueeze(1)
    return projection.to(terms.dtype).reshape(n, k, *grid)


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
                 relu: bool = True, eigen_smooth: bool = False) -> None:
        """``upsample`` resizes the maps to the input's grid, ``relu`` keeps the positive part,
        ``eigen_smooth`` replaces the channel sum by its first principal component."""
        super().__init__(model, layer)
        self.upsample = check_flag("upsample", upsample)
        self.relu = check_flag("relu", relu)
        self.eigen_smooth = check_flag("eigen_smooth", eigen_smooth)
        if eigen_smooth and type(self).cam is not GradCAM.cam:  # the whole map is the subclass's: no terms to smooth
            raise InputError(f"{type(self).__name__} overrides cam(), so eigen_smooth=True could not reach its channel "
                             "terms and would be ignored; override channel_weights() instead to have it smoothed")
        if isinstance(layer, list) and len(layer) > 1 and not upsample:
            raise LayerError("several layers have grids of different sizes: keep upsample=True to fuse them")

    def explain(self, call: Call) -> Explanation:
        """Explain a validated call; the model is already in eval mode."""
        found = self.all_layer_gradients(call)
        maps = [self.layer_map(call, f) for f in found]
        maps = [m.clamp_min(0) if self.relu else m for m in maps]
        selection = found[0].selection
        if not self.upsample:
            return self.result(maps[0], selection, MapKind.LAYER_GRID, found[0].layer)
        size = tuple(call.x.shape[2:])
        maps = [upsample(m, size) for m in maps]
        if len(maps) == 1:
            return self.result(maps[0], selection, MapKind.INPUT_GRID, found[0].layer)
        stacked = torch.stack(maps, dim=2)
        plain = self.result(fuse(stacked), selection, MapKind.INPUT_GRID, found[-1].layer)
        return MultiLayerExplanation(**vars(plain), layer_maps=stacked.detach().float(),
                                     layers=tuple(f.layer for f in found))

    def layer_map(self, call: Call, found: LayerGradients) -> torch.Tensor:
        """One layer's maps (N, K, *grid) before the ReLU. CAMs whose weights need more than the
        layer's activations and gradients (ScoreCAM scores masked copies of ``call.x``) override
        this; the others override ``channel_weights``."""
        return self.cam(found.activation, found.gradients)

    def cam(self, activation: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
        """Maps (N, K, *grid), before the ReLU, from activations (N, C, *grid) and their
        gradients (N, K, C, *grid): ``combine`` of the weights of ``channel_weights``."""
        return self.combine(self.channel_weights(activation, gradients), activation)

    def combine(self, weights: torch.Tensor, activation: torch.Tensor) -> torch.Tensor:
        """``sum_c w_c * A_c`` for weights (N, K, C) or (N, K, C, *grid), or with
        ``eigen_smooth`` the first principal component of the terms ``w_c * A_c``."""
        if weights.dtype != activation.dtype:  # scores of perturbed copies are float32, a half model's activations not
            weights, activation = weights.float(), activation.float()
        if weights.dim() == 3 and not self.eigen_smooth:  # per channel: one batched matmul, no (N, K, C, *grid) tensor
            return (weights @ activation.flatten(2)).view(*weights.shape[:2], *activation.shape[2:])
        terms = weights.view(*weights.shape, *[1] * (activation.dim() - weights.dim() + 1)) * activation.unsqueeze(1)
        return principal_projection(terms) if self.eigen_smooth else terms.sum(dim=2)

    def channel_weights(self, activation: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
        """The weight of each channel (N, K, C), or of each channel at each position (N, K, C,
        *grid); here the gradient averaged over the grid. CAM variants override this."""
        return gradients.flatten(3).mean(dim=-1)
