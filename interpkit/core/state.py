"""Put a model into eval mode for an explanation and give it back exactly as it was."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn


class ModelSnapshot:
    """The parts of a model's state an explanation could disturb.

    Parameters and buffers are not copied: explanations run with eval semantics and take
    gradients with ``torch.autograd.grad``, so neither BatchNorm statistics nor ``.grad`` is
    written by interpkit. Existing ``.grad`` tensors are still copied (usually there are none,
    and then this costs nothing), so a target callable that calls ``backward`` cannot leave
    gradients behind.
    """

    def __init__(self, model: nn.Module) -> None:
        self.training = [(module, module.training) for module in model.modules()]
        params = list(model.parameters())
        self.requires_grad = [(p, p.requires_grad) for p in params]
        self.grads = [(p, p.grad, None if p.grad is None else p.grad.clone()) for p in params]

    def restore(self) -> None:
        """Put every recorded flag and gradient back."""
        for module, training in self.training:
            module.training = training
        for param, flag in self.requires_grad:
            if param.requires_grad != flag:
                param.requires_grad_(flag)
        for param, grad, value in self.grads:
            if param.grad is not grad:
                param.grad = grad
            if grad is not None and value is not None:
                grad.copy_(value)


@contextmanager
def evaluation(model: nn.Module) -> Iterator[None]:
    """Run the block with ``model.eval()`` and restore every module's flags afterwards."""
    snapshot = ModelSnapshot(model)
    try:
        model.eval()
        yield
    finally:
        snapshot.restore()


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer (CPU for a stateless model)."""
    for parameter in model.parameters():
        return parameter.device
    for buffer in model.buffers():
        return buffer.device
    return torch.device("cpu")
