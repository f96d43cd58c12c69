"""Forward hooks that live for one forward pass and keep layer outputs."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable, Iterable, Iterator, Sequence

import torch
from torch import nn

from ..errors import LayerError


@contextmanager
def forward_hooks(modules: Iterable[nn.Module], hook: Callable[..., Any], pre: bool = False) -> Iterator[None]:
    """Register ``hook`` as a forward hook (``pre=True``: a forward pre-hook, called with the
    module and its inputs) on each module, once each, for the block only.

    The one place interpkit adds hooks: they are removed in ``finally``, whether the block
    returned or raised, so no hook outlives the call that needed it.
    """
    unique = dict.fromkeys(modules)

    def ours(*args: Any) -> Any:
        return hook(*args)

    ours.interpkit = True  # type: ignore[attr-defined]  # the snapshot knows it writes nothing of the model's
    handles = [m.register_forward_pre_hook(ours) if pre else m.register_forward_hook(ours) for m in unique]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


_SET_ASIDE = ("_forward_hooks", "_forward_hooks_with_kwargs", "_forward_hooks_always_called", "_forward_pre_hooks",
              "_forward_pre_hooks_with_kwargs", "_backward_hooks", "_backward_pre_hooks")


@contextmanager
def hooks_set_aside(modules: Iterable[nn.Module]) -> Iterator[None]:
    """The modules' own hooks set aside for the block, for a probe forward (choosing a layer,
    finding input channels) that the user's hooks must not see: a user counting forwards counts
    the explaining one only. Only modules with hooks are touched; their very hook dicts are put
    back in ``finally``. Global module hooks stay: setting them aside would hide them from other
    threads' models."""
    kept = []
    for module in modules:
        if module._forward_hooks or module._forward_pre_hooks or module._backward_hooks or module._backward_pre_hooks:
            kept.append((module, {name: module.__dict__[name] for name in _SET_ASIDE}))
            for name in _SET_ASIDE:
                module.__dict__[name] = type(module.__dict__[name])()
    try:
        yield
    finally:
        for module, dicts in kept:
            module.__dict__.update(dicts)


class Captured(dict):
    """Layer outputs recorded during one forward, keyed by module, with call counts."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: dict[nn.Module, int] = {}

    def output(self, module: nn.Module, name: str) -> torch.Tensor:
        """The module's output; a layer called never or several times has no single output."""
        calls = self.calls.get(module, 0)
        if calls == 0:
            raise LayerError(
                f"layer '{name}' was not called in the forward pass; choose a layer that "
                "the model's forward uses"
            )
        if calls > 1:
            raise LayerError(
                f"layer '{name}' is called {calls} times in one forward (a reused module, such as "
                "the ReLU of a ResNet block), so it has no single output; choose the block that contains it"
            )
        return self[module]


@contextmanager
def capture_outputs(modules: Sequence[nn.Module], *, for_gradients: bool) -> Iterator[Captured]:
    """Record the output of each module during the block; hooks are removed on exit.

    With ``for_gradients`` the recorded tensor is made to require grad and the rest of the
    forward receives a clone, so an in-place op downstream (DenseNet's ``relu(inplace)``,
    VGG's in-place ReLU after a convolution) cannot change the value being explained, and
    gradients taken with respect to the recorded tensor are the layer's own. Without it the
    value is cloned only when the output is a tensor, to survive those in-place ops.
    A module called more than once is counted; ``Captured.output`` refuses it.
    """
    captured = Captured()

    def hook(module: nn.Module, _inputs: tuple, output):
        captured.calls[module] = captured.calls.get(module, 0) + 1
        if module in captured or not isinstance(output, torch.Tensor):
            captured.setdefault(module, output)
            return None
        if not for_gradients:
            captured[module] = output.detach().clone()
            return None
        if not torch.is_grad_enabled():  # reentrant checkpointing, or no_grad inside the model's forward
            raise LayerError(
                f"a layer to explain ran with gradients turned off inside the model's forward ({type(module).__name__}); "
                "reentrant torch.utils.checkpoint and torch.no_grad() regions give it no gradient. Use "
                "checkpoint(..., use_reentrant=False), or choose a layer outside such a region"
            )
        if not output.requires_grad:
            output = output.detach().requires_grad_(True)
        captured[module] = output
        return output.clone()

    with forward_hooks(modules, hook):
        yield captured
