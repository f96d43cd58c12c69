"""The built-in explainers; ``interpkit.registry.builtin`` registers them like any plugin."""

from .gradcam import GradCAM, MultiLayerExplanation, fuse, upsample
from .guided_backprop import Deconvnet, GuidedBackprop
from .guided_gradcam import GuidedGradCAM
from .occlusion import Occlusion
from .patches import MaxActivatingPatches, PatchExplanation
from .rise import RISE, rise_masks

__all__ = ["Deconvnet", "GradCAM", "GuidedBackprop", "GuidedGradCAM", "MaxActivatingPatches", "MultiLayerExplanation",
           "Occlusion", "PatchExplanation", "RISE", "fuse", "rise_masks", "upsample"]
