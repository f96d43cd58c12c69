"""GradCAM (Selvaraju et al., 2017): where in a layer's grid the evidence for a target lies."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..core import Explanation, LayerExplainer, LayerLike, MapKind, TargetLike, check_flag


class GradCAM(LayerExplainer):
    """Class activation maps weighted by spatially averaged gradients.

    For each target, ``ReLU(sum_c mean_hw(dS/dA_c) * A_c)`` over the activations ``A`` of
    ``layer``. Maps are raw, not normalised: shape (N, K, h, w) at the layer's resolution with
    ``upsample=False``, or (N, K, H, W) resized bilinearly (``align_corners=False``) to the
    input. K targets share one forward and one batched backward.
    """

    name = "gradcam"

    def __init__(self, model: nn.Module, layer: LayerLike = None, upsample: bool = True, relu: bool = True) -> None:
        super().__init__(model, layer)
        self.upsample = check_flag("upsample", upsample)
        self.relu = check_flag("relu", relu)

    def explain(self, inputs: torch.Tensor, target: TargetLike = None) -> Explanation:
        """Explain validated ``inputs`` for ``target``; the model is already in eval mode."""
        found = self.layer_gradients(inputs, target)
        maps = self.cam(found.activation, found.gradients)
        if self.relu:
            maps = maps.clamp_min(0)
        if not self.upsample:
            return self.result(maps, found.selection, MapKind.LAYER_GRID, found.layer)
        maps = F.interpolate(maps, size=inputs.shape[-2:], mode="bilinear", align_corners=False)
        return self.result(maps, found.selection, MapKind.INPUT_GRID, found.layer)

    def cam(self, activation: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
        """Maps (N, K, h, w), before the ReLU, from activations (N, C, h, w) and their
        gradients (N, K, C, h, w). Variants (GradCAM++, LayerCAM, ...) override only this."""
        weights = gradients.mean(dim=(-2, -1))
        return torch.einsum("nkc,nchw->nkhw", weights, activation)
