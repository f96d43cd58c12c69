"""GradCAM++ (Chattopadhyay et al., 2018) and LayerCAM (Jiang et al., 2021) as interpkit plugins.

Both reuse interpkit's GradCAM entirely (layer choice, targets, one forward and one batched
backward, ReLU, upsampling, hook hygiene) and override only how a map is made from the layer's
activations ``A`` (N, C, *grid) and gradients ``G`` (N, K, C, *grid), on grids of any rank.
"""

from __future__ import annotations

import torch

import interpkit
from interpkit import GradCAM

__version__ = "0.1.0"


class GradCAMPlusPlus(GradCAM):
    """GradCAM with pixel-wise weights: ``w_c = sum_ij alpha_ij ReLU(G_ij)`` where
    ``alpha = G^2 / (2 G^2 + sum_ab A_ab G^3)`` (the exponential-score closed form)."""

    name = "gradcam_plus_plus"

    def cam(self, activation: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
        squared = gradients.pow(2)
        grid_rank = activation.dim() - 2
        total = activation.flatten(2).sum(-1).view(activation.shape[0], 1, -1, *[1] * grid_rank)  # (N, 1, C, 1..)
        denominator = 2 * squared + total * gradients.pow(3)
        # no epsilon in the denominator: with small gradients it would outweigh G^2 itself
        safe = torch.where(denominator != 0, denominator, torch.ones_like(denominator))
        alpha = torch.where(denominator != 0, squared / safe, torch.zeros_like(gradients))
        weights = (alpha * gradients.clamp_min(0)).flatten(3).sum(-1)  # (N, K, C)
        return torch.einsum("nkc,nc...->nk...", weights, activation)


class LayerCAM(GradCAM):
    """Element-wise weights: ``sum_c ReLU(G_c) * A_c`` at every position."""

    name = "layercam"

    def cam(self, activation: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
        return (gradients.clamp_min(0) * activation.unsqueeze(1)).sum(dim=2)


@interpkit.hookimpl
def interpkit_register_explainers(register):
    register(GradCAMPlusPlus)
    register(LayerCAM)
