"""Put a model into eval mode for an explanation and give it back exactly as it was."""

from __future__ import annotations

import threading
import weakref
from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn
from torch.overrides import TorchFunctionMode



class ParameterGuard(TorchFunctionMode):
    """While active, the first in-place write to a parameter's storage (weight clipping or an
    EMA in a forward) first copies the parameter, so ``restore`` can put it back."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.storages = {p.untyped_storage().data_ptr(): p for p in model.parameters()
                         if not isinstance(p, nn.parameter.UninitializedParameter)}  # lazy ones have none yet
        self.copies: dict[int, tuple[nn.Parameter, torch.Tensor]] = {}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        if (args and isinstance(args[0], torch.Tensor) and (name.endswith("_") or name == "__setitem__")
                and not isinstance(args[0], nn.parameter.UninitializedParameter)):
            pointer = args[0].untyped_storage().data_ptr()
            if pointer in self.storages and pointer not in self.copies:
                parameter = self.storages[pointer]
                self.copies[pointer] = (parameter, parameter.detach().clone())
        return func(*args, **kwargs)

    def restore(self) -> None:
        """Put every written parameter back."""
        with torch.no_grad():
            for parameter, value in self.copies.values():
                parameter.copy_(value)


class ModelSnapshot:
    """The parts of a model's state an explanation could disturb, recorded to be put back.

    Module training flags, every parameter's ``requires_grad`` and ``.grad`` (values copied, so
    a target callable that calls ``backward`` cannot leave gradients behind), and every buffer,
    persistent or not, by object and value: a forward that counts samples in a buffer, a
    quantisation observer or a BatchNorm without running statistics cannot leave a change.
    """

    def __init__(self, model: nn.Module) -> None:
        self.training = [(module, module.training) for module in model.modules()]
        params = list(model.parameters())
        self.requires_grad = [(p, p.requires_grad) for p in params]
        self.grads = [(p, p.grad, None if p.grad is None else p.grad.clone()) for p in params]
        self.buffers = [(module, name, buffer, None if buffer is None else buffer.detach().clone())
                        for module in model.modules() for name, buffer in module._buffers.items()]
        self.buffer_names = [(module, set(module._buffers)) for module in model.modules()]
        self.guard = ParameterGuard(model)

    def restore(self) -> None:
        """Put every recorded flag, gradient, buffer and written parameter back."""
        self.guard.restore()
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
        for module, names in self.buffer_names:  # buffers a forward registered anew
            for name in set(module._buffers) - names:
                del module._buffers[name]
        with torch.no_grad():
            for module, name, buffer, value in self.buffers:
                module._buffers[name] = buffer  # a forward may have rebound the attribute
                if buffer is None or value is None:
                    continue
                if buffer.shape != value.shape:
                    buffer.resize_(value.shape)
                if not torch.equal(buffer, value):
                    buffer.copy_(value)


_locks: "weakref.WeakKeyDictionary[nn.Module, threading.RLock]" = weakref.WeakKeyDictionary()
_locks_guard = threading.Lock()


def model_lock(model: nn.Module) -> threading.RLock:
    """One re-entrant lock per model: explanations of one model from several threads run one at a
    time (each sees and restores the model's own state), while copies of a model run concurrently."""
    with _locks_guard:
        lock = _locks.get(model)
        if lock is None:
            lock = _locks[model] = threading.RLock()
        return lock


@contextmanager
def evaluation(model: nn.Module) -> Iterator[None]:
    """Run the block with the model in eval mode, holding its lock, and restore everything after."""
    with model_lock(model):
        snapshot = ModelSnapshot(model)
        try:
            model.eval()
            with snapshot.guard:
                yield
        finally:
            snapshot.restore()


def model_dtype(model: nn.Module) -> torch.dtype | None:
    """The floating dtype of the model's parameters (None for a model without any)."""
    return next((p.dtype for p in model.parameters() if p.is_floating_point()), None)


def mixes_samples(model: nn.Module) -> bool:
    """True when the model's eval forward mixes the samples of a batch: a batch norm without
    running statistics normalises with the batch's own, so a sample's output depends on the others."""
    return any(isinstance(m, nn.modules.batchnorm._NormBase) and not isinstance(m, nn.modules.instancenorm._InstanceNorm)
               and m.running_mean is None for m in model.modules())


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer (CPU for a stateless model)."""
    for parameter in model.parameters():
        return parameter.device
    for buffer in model.buffers():
        return buffer.device
    return torch.device("cpu")
