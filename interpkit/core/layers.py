"""Turn a layer argument (dotted name, module, or None) into a named submodule."""

from __future__ import annotations

import difflib
from typing import Union

import torch
from torch import nn

from ..errors import LayerError, LayerNotFoundError
from .hooks import forward_hooks
from .state import run_model

LayerLike = Union[str, nn.Module, None]


def resolve_layer(model: nn.Module, layer: str | nn.Module) -> tuple[str, nn.Module]:
    """Return ``(name, module)`` for a dotted name or a submodule object of ``model``."""
    if isinstance(layer, str):
        modules = dict(model.named_modules())
        if layer in modules:
            return layer, modules[layer]
        close = difflib.get_close_matches(layer, [n for n in modules if n], n=5, cutoff=0.5)
        hint = f" Closest names: {', '.join(close)}." if close else ""
        raise LayerNotFoundError(
            f"the model has no layer named '{layer}'.{hint} "
            "List the names with [n for n, _ in model.named_modules()]."
        )
    if isinstance(layer, nn.Module):
        for name, module in model.named_modules():
            if module is layer:
                return name, module
        raise LayerNotFoundError(
            f"the {type(layer).__name__} module given as layer is not a submodule of the "
            "model; pass one of model.modules() or its dotted name"
        )
    raise LayerNotFoundError(
        f"layer must be a dotted module name, a submodule or None, not {type(layer).__name__}"
    )


def is_spatial(tensor: object) -> bool:
    """True for an (N, C, H, W) tensor with more than one spatial position."""
    return isinstance(tensor, torch.Tensor) and tensor.dim() == 4 and tensor.shape[-2:].numel() > 1


def last_spatial_layer(model: nn.Module, inputs: torch.Tensor) -> tuple[str, nn.Module]:
    """Find the module whose spatial output is produced last in a probe forward.

    When a container returns the very tensor a leaf inside it produced (same object, not
    modified in place since), the leaf is chosen: ``features.5`` rather than ``features``.
    A module called more than once (ResNet's shared ReLU) is never chosen: it has no single output.
    The probe runs one sample under ``no_grad``; the caller holds the model in eval mode.
    """
    names = {module: name for name, module in model.named_modules() if name}
    produced: list[tuple[nn.Module, torch.Tensor, int]] = []

    def hook(module: nn.Module, _inputs: tuple, output) -> None:
        if is_spatial(output):
            produced.append((module, output, output._version))

    with forward_hooks(names, hook), torch.no_grad():
        run_model(model, inputs[:1])
    if not produced:
        raise LayerError(
            "no layer of the model produces a spatial (N, C, H, W) output for this input; "
            "pass layer=... naming a convolutional layer"
        )
    _, last, version = produced[-1]
    calls = {m: sum(1 for other, _, _ in produced if other is m) for m, _, _ in produced}
    same = [
        m for m, out, v in produced
        if out is last and v == version and calls[m] == 1 and not list(m.children())
    ]
    chosen = same[-1] if same else produced[-1][0]
    return names[chosen], chosen
