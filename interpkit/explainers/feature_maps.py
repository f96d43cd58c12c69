"""Feature maps: the activations of convolutional layers for a batch, from one forward."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ..core.explainer import Explainer
from ..core.hooks import capture_outputs
from ..core.layers import LayerLike, resolve_layer
from ..core.targets import TargetLike
from ..errors import LayerError, TargetError


class FeatureMapSet(dict):
    """Layer name -> activation tensor (N, C, h, w), in forward order."""

    def plot(self, layer: str, sample: int = 0, **options):
        """The grid of every channel of ``layer`` for one sample, as a matplotlib Figure."""
        from ..viz import plot_feature_maps

        if layer not in self:
            raise LayerError(f"no feature maps for layer '{layer}'; captured: {', '.join(self)}")
        return plot_feature_maps(self[layer][sample], title=layer, **options)


class FeatureMaps(Explainer):
    """Capture the output of every ``Conv2d`` (default) or of the named ``layers``.

    Runs one forward under ``no_grad``. Values are cloned as the layer produced them, before
    any in-place activation that follows.
    """

    name = "feature_maps"
    takes_target = False

    def __init__(self, model: nn.Module, layers: Sequence[LayerLike] | None = None) -> None:
        super().__init__(model)
        if layers is None:
            self.layers: list[tuple[str, nn.Module]] = [
                (n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
            if not self.layers:
                raise LayerError("the model has no Conv2d layer; name the layers to capture with layers=[...]")
        else:
            self.layers = [resolve_layer(model, layer) for layer in layers if layer is not None]

    def explain(self, inputs: torch.Tensor, target: TargetLike = None) -> FeatureMapSet:
        """The activations of the chosen layers for ``inputs`` (no target: feature maps have none)."""
        if target is not None:
            raise TargetError("feature maps do not depend on a target; call without target")
        modules = [module for _, module in self.layers]
        with torch.no_grad(), capture_outputs(modules, for_gradients=False) as captured:
            self.model(inputs)
        for name, module in self.layers:
            captured.output(module, name)  # raises for a layer the forward never called
        position = {module: i for i, module in enumerate(captured)}
        in_forward_order = sorted(self.layers, key=lambda layer: position[layer[1]])
        return FeatureMapSet((name, captured[module]) for name, module in in_forward_order)
