"""The CAM family as interpkit plugins: GradCAM++ (Chattopadhyay et al., 2018), LayerCAM (Jiang
et al., 2021), XGradCAM (Fu et al., 2020), HiResCAM (Draelos and Carin, 2020), EigenCAM
(Muhammad and Yeasin, 2020) and EigenGradCAM.

Each reuses interpkit's GradCAM entirely (layer choice, targets, one forward and one batched
backward, ReLU, upsampling, ``eigen_smooth``, hook hygiene) and overrides only the weights of the
channels from the layer's activations ``A`` (N, C, *grid) and gradients ``G`` (N, K, C, *grid),
on grids of any rank.
"""

from __future__ import annotations

import torch

import interpkit
from interpkit import GradCAM

__version__ = "0.2.0"


def _grid_sum(values: torch.Tensor) -> torch.Tensor:
    return values.flatten(3).sum(-1)


class GradCAMPlusPlus(GradCAM):
    """GradCAM with pixel-wise weights: ``w_c = sum_ij alpha_ij ReLU(G_ij)`` where
    ``alpha = G^2 / (2 G^2 + sum_ab A_ab G^3)`` (the exponential-score closed form)."""

    name = "gradcam_plus_plus"

    def channel_weights(self, activation: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
        squared = gradients.pow(2)
        grid_rank = activation.dim() - 2
        total = activation.flatten(2).sum(-1).view(activation.shape[0], 1, -1, *[1] * grid_rank)  # (N, 1, C, 1..)
        denominator = 2 * squared + total * gradients.pow(3)
        # no epsilon in the denominator: with small gradients it would outweigh G^2 itself
        safe = torch.where(denominator != 0, denominator, torch.ones_like(denominator))
        alpha = torch.where(denominator != 0, squared / safe, torch.zeros_like(gradients))
        return _grid_sum(alpha * gradients.clamp_min(0))  # (N, K, C)


class LayerCAM(GradCAM):
    """Element-wise weights: ``ReLU(G_c)`` at every position."""

    name = "layercam"

    def channel_weights(self, activation: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
        return gradients.clamp_min(0)


class XGradCAM(GradCAM):
    """Axiom-based weights: ``w_c = sum_ij G_ij A_ij / sum_ij A_ij`` (0 for a channel whose
    activations sum to 0; pytorch-grad-cam adds 1e-7 to that sum instead)."""

    name = "xgradcam"

    def channel_weights(self, activation: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
        mass = activation.flatten(2).sum(-1).unsqueeze(1)  # (N, 1, C)
        weighted = _grid_sum(gradients * activation.unsqueeze(1))
        return torch.where(mass != 0, weighted / torch.where(mass != 0, mass, 1.0), 0.0)


class HiResCAM(GradCAM):
    """Element-wise ``G_c * A_c`` summed over channels: the exact contribution of each position
    for a model whose head is linear after the layer (Draelos and Carin)."""

    name = "hirescam"

    def channel_weights(self, activation: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
        return gradients


class _Eigen(GradCAM):
    """A CAM that is a principal component by definition: ``eigen_smooth`` is always on."""

    def __init__(self, *args, **kwargs) -> None:
        if kwargs.get("eigen_smooth") is False:
            raise interpkit.InputError(f"{type(self).__name__} is a principal component by definition; "
                                       "drop eigen_smooth=False")
        super().__init__(*args, **{**kwargs, "eigen_smooth": True})


class EigenCAM(_Eigen):
    """The first principal component of the activations alone (the same map for every target;
    the backward pass it shares with the family is not needed), oriented as
    ``interpkit.explainers.gradcam.principal_projection`` documents."""

    name = "eigencam"

    def channel_weights(self, activation: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
        return torch.ones(gradients.shape[:3], dtype=activation.dtype, device=activation.device)


class EigenGradCAM(_Eigen):
    """The first principal component of ``G_c * A_c``: EigenCAM made class-discriminative."""

    name = "eigengradcam"

    def channel_weights(self, activation: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
        return gradients


@interpkit.hookimpl
def interpkit_register_explainers(register):
    for cls in (GradCAMPlusPlus, LayerCAM, XGradCAM, HiResCAM, EigenCAM, EigenGradCAM):
        register(cls)
