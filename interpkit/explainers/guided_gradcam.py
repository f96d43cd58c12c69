"""Guided GradCAM: guided backprop masked by the upsampled GradCAM map of the same target."""

from __future__ import annotations

from torch import nn

from ..core import Call, Explanation, LayerExplainer, LayerLike, MapKind, TargetSelection
from .gradcam import GradCAM
from .guided_backprop import GuidedBackprop


class GuidedGradCAM(LayerExplainer):
    """``GuidedBackprop(x)[n, k] * GradCAM(x, upsample=True)[n, k]``, shape (N, K, C, H, W).

    GradCAM takes plain gradients and guided backprop its own rule, so they are two passes.
    """

    name = "guided_gradcam"

    def __init__(self, model: nn.Module, layer: LayerLike = None, strict: bool = True) -> None:
        super().__init__(model, layer)
        self.gradcam = GradCAM(model, layer)
        self.guided = GuidedBackprop(model, strict=strict)

    def explain(self, call: Call) -> Explanation:
        """Explain a validated call; the model is already in eval mode."""
        cam = self.gradcam.explain(call)
        # top-1 is resolved once, by GradCAM, so both passes explain the same classes
        guided = self.guided.explain(call.with_(target=cam.targets if call.target is None else call.target))
        maps = guided.maps * cam.maps.unsqueeze(2)
        selection = TargetSelection(cam.targets, cam.scores, classes=cam.class_targets)
        return self.result(maps, selection, MapKind.INPUT_CHANNELS, cam.layer)
