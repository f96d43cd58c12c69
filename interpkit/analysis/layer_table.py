"""A model's layer table: every leaf module in forward order with its output shape and parameters."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from ..core import evaluation, forward_hooks, model_device
from ..errors import InputError


@dataclass(frozen=True)
class LayerRow:
    """One leaf module called in the forward: its name, class name, output shape and parameters."""

    name: str
    kind: str
    output_shape: tuple[int, ...]
    params: int


def layer_table(model: nn.Module, input_size: Sequence[int] = (224, 224), in_channels: int = 3) -> list[LayerRow]:
    """Rows for each leaf module called in one forward of a zero input (batch 1, no_grad, eval),
    in call order; shapes leave out the batch dimension. ``input_size`` is (T,), (H, W) or
    (D, H, W). The model is restored afterwards."""
    size = tuple(input_size) if isinstance(input_size, Sequence) and not isinstance(input_size, str) else ()
    if not 1 <= len(size) <= 3 or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size):
        raise InputError(f"input_size must be a tuple of 1 to 3 positive ints, (T,), (H, W) or (D, H, W), got "
                         f"{input_size!r}")
    if not isinstance(in_channels, int) or isinstance(in_channels, bool) or in_channels < 1:
        raise InputError(f"in_channels must be a positive int, got {in_channels!r}")
    names = {m: n for n, m in model.named_modules() if n and not list(m.children())}
    rows: list[LayerRow] = []

    def hook(module: nn.Module, _inputs: tuple, output) -> None:
        shape = tuple(output.shape[1:]) if isinstance(output, torch.Tensor) else ()
        rows.append(LayerRow(names[module], type(module).__name__, shape,
                             sum(p.numel() for p in module.parameters(recurse=False))))

    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    image = torch.zeros(1, in_channels, *size, device=model_device(model), dtype=dtype)
    with evaluation(model), forward_hooks(names, hook), torch.no_grad():
        try:
            model(image)
        except (TypeError, RuntimeError, ValueError, IndexError) as error:
            raise InputError(f"the layer table is made by a forward of one zero input {tuple(image.shape)}, which this "
                             f"model did not run ({type(error).__name__}: {' '.join(str(error).split())[:200]}); give "
                             "the in_channels and input_size it takes") from error
    return rows
