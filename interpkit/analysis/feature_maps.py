"""Feature maps: the activations of chosen layers for a batch, from one forward."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import torch
from torch import nn

from ..core import ModuleLike, capture_outputs, display, evaluation, model_inputs, resolve_layer
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
        options.setdefault("title", layer)
        return display().plot_feature_maps(self[layer][sample], **options)


ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish,
               nn.Hardswish, nn.Hardtanh, nn.Softplus, nn.Sigmoid, nn.Tanh)


def feature_maps(model: nn.Module, inputs: torch.Tensor, layers: Sequence[ModuleLike] | None = None,
                 after_activation: bool = False) -> FeatureMapSet:
    """The outputs of every ``Conv2d`` the forward runs (default) or of the named ``layers``.

    One forward under ``no_grad`` in eval mode (the model is restored afterwards). Values are
    cloned as each layer produced them, before any in-place activation that follows. By default
    convolutions the eval forward never calls (GoogLeNet's and Inception's auxiliary heads) are
    left out; a named layer that does not run is an error. With ``after_activation`` each
    convolution is replaced by the activation module that takes its output, directly or after one
    normalisation (Conv-BN-ReLU), as Keras layers with an activation show them; a convolution
    whose output no activation module takes (a functional ``F.relu``) is refused with a LayerError.
    """
    chosen: list[tuple[str, nn.Module]]
    if layers is None:
        chosen = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
        if not chosen:
            raise LayerError("the model has no Conv2d layer; name the layers to capture with layers=[...]")
    else:
        if isinstance(layers, (str, nn.Module)):  # one layer, not a sequence of its characters
            layers = [layers]
        chosen = []
        for name, module in (resolve_layer(model, layer) for layer in layers if layer is not None):
            if all(module is not kept for _, kept in chosen):  # a layer named twice is captured once
                chosen.append((name, module))
    prepared = model_inputs(inputs, model)
    if after_activation:
        chosen = _activations_after(model, chosen, prepared)
    modules = [module for _, module in chosen]
    with evaluation(model), torch.no_grad(), capture_outputs(modules, for_gradients=False) as captured:
        prepared.run(model)
    if layers is None:
        chosen = [(name, module) for name, module in chosen if module in captured.calls]
    for name, module in chosen:
        output = captured.output(module, name)  # raises for a layer the forward never called, or called twice
        if not isinstance(output, torch.Tensor):
            raise LayerError(f"layer '{name}' gives a {type(output).__name__}, not one tensor of feature maps; "
                             "name the layer inside it that makes the maps")
    position = {module: i for i, module in enumerate(captured)}
    in_order = sorted(chosen, key=lambda layer: position[layer[1]])
    return FeatureMapSet(tuple(n for n, _ in in_order), tuple(captured[m] for _, m in in_order))


NORMALISATIONS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.GroupNorm, nn.InstanceNorm2d)


def _activations_after(model: nn.Module, convolutions: list[tuple[str, nn.Module]],
                       prepared: Any) -> list[tuple[str, nn.Module]]:
    """The activation module that takes each convolution's output, directly or through one
    normalisation module (Conv-BN-ReLU), found by one forward that follows the output tensor."""
    names = {module: name for name, module in model.named_modules()}
    wanted = {module for _, module in convolutions}
    carried: dict[nn.Module, torch.Tensor] = {}  # convolution -> its output, or its normalised output
    carrier: dict[nn.Module, nn.Module] = {}  # normalisation module -> the convolution it carries
    taken_by: dict[nn.Module, nn.Module] = {}  # convolution -> the first activation given its output

    def record_output(module: nn.Module, _inputs: tuple, output: Any) -> None:
        if module in wanted:
            carried[module] = output
        elif module in carrier:
            carried[carrier.pop(module)] = output

    def record_input(module: nn.Module, inputs: tuple) -> None:
        for conv, tensor in list(carried.items()):
            if not inputs or inputs[0] is not tensor or conv in taken_by:
                continue
            if isinstance(module, ACTIVATIONS):
                taken_by[conv] = module
            elif isinstance(module, NORMALISATIONS) and tensor is not None:
                carrier[module] = conv

    followed = [m for m in model.modules() if isinstance(m, ACTIVATIONS + NORMALISATIONS)]
    handles = [m.register_forward_hook(record_output) for m in set(wanted) | set(followed)]
    handles += [m.register_forward_pre_hook(record_input) for m in followed]
    try:
        with evaluation(model), torch.no_grad():
            prepared.run(model)
    finally:
        for handle in handles:
            handle.remove()
    result = []
    for name, conv in convolutions:
        if conv not in carried:
            continue  # never ran: left out as without after_activation
        activation = taken_by.get(conv)
        if activation is None:
            raise LayerError(f"no activation module takes the output of '{name}' (a functional activation, or "
                             "another layer in between); name the layers to show with layers=[...]")
        result.append((names[activation], activation))
    return result
