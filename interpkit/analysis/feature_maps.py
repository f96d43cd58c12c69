"""Feature maps: the activations of chosen layers for a batch, from one forward."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

import torch
from torch import nn

from ..core import ModuleLike, capture_outputs, evaluation, model_inputs, resolve_layer
from ..errors import LayerError


@dataclass(frozen=True)
class FeatureMapSet:
    """The activations of each captured layer, in forward order: ``layers`` names them and
    ``activations`` holds one (N, C, *grid) tensor per layer, on the model's device."""

    layers: tuple[str, ...]
    activations: tuple[torch.Tensor, ...]

    def __getitem__(self, layer: str) -> torch.Tensor:
        """The activation of ``layer``; a LayerError names the captured layers otherwise."""
        if layer not in self.layers:
            raise LayerError(f"no feature maps for layer '{layer}'; captured: {', '.join(self.layers)}")
        return self.activations[self.layers.index(layer)]

    def items(self) -> Iterator[tuple[str, torch.Tensor]]:
        """(layer, activation) pairs in forward order."""
        return zip(self.layers, self.activations)

    def figure(self, layer: str, sample: int = 0, **options):
        """The grid of every channel of ``layer`` for one sample, as a matplotlib Figure."""
        from ..viz import plot_feature_maps

        return plot_feature_maps(self[layer][sample], title=layer, **options)


def feature_maps(model: nn.Module, inputs: torch.Tensor, layers: Sequence[ModuleLike] | None = None) -> FeatureMapSet:
    """The outputs of every ``Conv2d`` the forward runs (default) or of the named ``layers``.

    One forward under ``no_grad`` in eval mode (the model is restored afterwards). Values are
    cloned as each layer produced them, before any in-place activation that follows. By default
    convolutions the eval forward never calls (GoogLeNet's and Inception's auxiliary heads) are
    left out; a named layer that does not run is an error.
    """
    chosen: list[tuple[str, nn.Module]]
    if layers is None:
        chosen = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
        if not chosen:
            raise LayerError("the model has no Conv2d layer; name the layers to capture with layers=[...]")
    else:
        chosen = [resolve_layer(model, layer) for layer in layers if layer is not None]
    prepared = model_inputs(inputs, model)
    modules = [module for _, module in chosen]
    with evaluation(model), torch.no_grad(), capture_outputs(modules, for_gradients=False) as captured:
        prepared.run(model)
    if layers is None:
        chosen = [(name, module) for name, module in chosen if module in captured.calls]
    for name, module in chosen:
        captured.output(module, name)  # raises for a layer the forward never called, or called twice
    position = {module: i for i, module in enumerate(captured)}
    in_order = sorted(chosen, key=lambda layer: position[layer[1]])
    return FeatureMapSet(tuple(n for n, _ in in_order), tuple(captured[m] for _, m in in_order))
