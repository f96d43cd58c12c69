"""A model's layer table: every leaf module in forward order with its output shape and parameters."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .state import evaluation, model_device


@dataclass(frozen=True)
class LayerRow:
    name: str
    kind: str
    output_shape: tuple[int, ...]
    params: int


def layer_table(model: nn.Module, input_shape: tuple[int, ...] = (3, 224, 224)) -> list[LayerRow]:
    """Rows for each leaf module called in one forward of a zero input (batch 1, no_grad, eval),
    in call order; shapes leave out the batch dimension. The model is restored afterwards."""
    names = {m: n for n, m in model.named_modules() if n and not list(m.children())}
    rows: list[LayerRow] = []

    def hook(module: nn.Module, _inputs: tuple, output) -> None:
        shape = tuple(output.shape[1:]) if isinstance(output, torch.Tensor) else ()
        rows.append(LayerRow(names[module], type(module).__name__, shape,
                             sum(p.numel() for p in module.parameters(recurse=False))))

    handles = [m.register_forward_hook(hook) for m in names]
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    try:
        with evaluation(model), torch.no_grad():
            model(torch.zeros(1, *input_shape, device=model_device(model), dtype=dtype))
    finally:
        for handle in handles:
            handle.remove()
    return rows
