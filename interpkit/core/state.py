"""Put a model into eval mode for an explanation and give it back exactly as it was, cheaply.

Two paths, chosen per call from facts cached per model (``model_facts``):

* **Plain.** Every module's class comes from a library whose forwards are known not to write
  parameters or buffers in eval mode (``TRUSTED_MODULES``: ``torch.nn``, torchvision, timm and
  interpkit's zoo) and no module carries hooks. Nothing intercepts the forward: the snapshot
  records flags, ``requires_grad``, ``.grad`` objects (moved aside, not copied) and the version
  counters of parameters and buffers, and ``restore`` rebinds what was rebound. A version that
  moved anyway raises ``ModelChangedError`` naming the tensor, instead of leaving it silently
  changed. No tensor is copied or compared, so no host-device synchronisation happens.
* **Guarded.** Any other module (the user's own code, which may write its weights for some inputs
  and not others) or any hook: a ``TorchFunctionMode`` copies a parameter or buffer just before
  the first in-place write to its storage (``p.data.clamp_()`` included, which no version counter
  sees), and ``restore`` copies it back; buffers a forward registers anew are removed.

Why this is exact: in eval mode the trusted classes' forwards only read their tensors; a write
from anywhere else runs under the guard; a grad accumulated by a target callable lands in a
fresh tensor, since the original ``.grad`` objects are out of reach until ``restore`` puts them
back untouched.
"""

from __future__ import annotations

import itertools
import threading
import weakref
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import repeat
from operator import attrgetter, is_not
from typing import Any, Iterator

import torch
from torch import nn
from torch.nn.modules import module as module_hooks
from torch.overrides import TorchFunctionMode

from ..errors import ModelChangedError

#: module classes from these packages are trusted not to write parameters or buffers in eval mode
TRUSTED_MODULES = ("torch.nn.modules.", "torchvision.models.", "torchvision.ops.", "timm.layers.", "timm.models.",
                   "interpkit.zoo.")

_generation = itertools.count()
_structure = [next(_generation)]  # bumped whenever any module anywhere gains a submodule or a buffer


def _structure_changed(*_args: Any) -> None:
    _structure[0] = next(_generation)


module_hooks.register_module_module_registration_hook(_structure_changed)
module_hooks.register_module_buffer_registration_hook(_structure_changed)  # a BatchNorm's statistics set to None


@dataclass
class ModelFacts:
    """What a call needs to know about a model's structure, computed once per structure: its
    modules, their names and parents, whether its eval forward mixes samples, whether every
    module's class is trusted, and per-shape caches of explainers (``cache``)."""

    structure: int
    modules: tuple[nn.Module, ...]
    names: dict[nn.Module, str]
    parents: dict[nn.Module, nn.Module]
    mixes_samples: bool
    trusted: bool
    cache: dict[Any, Any] = field(default_factory=dict)

    @property
    def by_name(self) -> dict[str, nn.Module]:
        """Modules by dotted name (the model itself under '')."""
        found = self.cache.get("by_name")
        if found is None:
            found = self.cache["by_name"] = {name: module for module, name in self.names.items()}
        return found


_facts: "weakref.WeakKeyDictionary[nn.Module, ModelFacts]" = weakref.WeakKeyDictionary()
_facts_guard = threading.Lock()


def model_facts(model: nn.Module) -> ModelFacts:
    """The model's ``ModelFacts``, recomputed only after a submodule was added or replaced
    (anywhere: torch's global module-registration hook tells)."""
    facts = _facts.get(model)
    if facts is not None and facts.structure == _structure[0]:
        return facts
    structure = _structure[0]
    names = {module: name for name, module in model.named_modules(remove_duplicate=True)}
    parents = {child: parent for parent in names for child in parent.children()}
    facts = ModelFacts(structure, tuple(names), names, parents, _mixes(names), all(map(_trusted, names)))
    with _facts_guard:
        _facts[model] = facts
    return facts


def _trusted(module: nn.Module) -> bool:
    return type(module).__module__.startswith(TRUSTED_MODULES)


def _mixes(modules: Any) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._NormBase) and not isinstance(m, nn.modules.instancenorm._InstanceNorm)
               and m.running_mean is None for m in modules)


def _hooked(modules: tuple[nn.Module, ...]) -> bool:
    """True when a hook of the user's (not one of ``forward_hooks``, which write nothing of the
    model's) may run in the forward."""
    if module_hooks._global_forward_hooks or module_hooks._global_forward_pre_hooks:
        return True
    return any(not getattr(hook, "interpkit", False) for m in modules if m._forward_hooks or m._forward_pre_hooks
               for hook in (*m._forward_hooks.values(), *m._forward_pre_hooks.values()))


class WriteGuard(TorchFunctionMode):
    """While active, the first in-place write to the storage of one of ``tensors`` (an in-place
    method, ``__setitem__``, or ``out=``) first copies that tensor, so ``restore`` can put it back."""

    def __init__(self, tensors: list[torch.Tensor]) -> None:
        super().__init__()
        self.storages = {t.untyped_storage().data_ptr(): t for t in tensors
                         if not isinstance(t, nn.parameter.UninitializedTensorMixin)}  # type: ignore[attr-defined]  # lazy: no storage yet
        self.copies: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        written = args[0] if args and (name.endswith("_") or name == "__setitem__") else kwargs.get("out")
        lazy = nn.parameter.UninitializedTensorMixin
        if isinstance(written, torch.Tensor) and not isinstance(written, lazy):
            pointer = written.untyped_storage().data_ptr()
            if pointer in self.storages and pointer not in self.copies:
                tensor = self.storages[pointer]
                self.copies[pointer] = (tensor, tensor.detach().clone())
        return func(*args, **kwargs)

    def restore(self) -> None:
        """Put every written tensor back."""
        with torch.no_grad():
            for tensor, value in self.copies.values():
                if tensor.shape != value.shape:
                    tensor.resize_(value.shape)
                tensor.copy_(value)


class ModelSnapshot:
    """The parts of a model's state an explanation could disturb, recorded to be put back:
    module training flags, every parameter's ``requires_grad`` and ``.grad`` (the objects are
    set aside, so a target callable that calls ``backward`` cannot leave gradients behind), and
    every buffer by object; values only where the guarded path says a write happened."""

    def __init__(self, model: nn.Module) -> None:
        facts = model_facts(model)
        self.modules = facts.modules
        self.training = list(map(_training, self.modules))  # map with attrgetter: C speed, no Python loop
        self.params = [p for m in self.modules for p in m._parameters.values() if p is not None]
        self.requires_grad = list(map(_requires_grad, self.params))
        self.grads = list(map(_grad, self.params))
        self.buffers = [(m._buffers, name, b) for m in self.modules for name, b in m._buffers.items()]
        self.tensors = self.params + [b for _, _, b in self.buffers if b is not None]
        self.guard: WriteGuard | None = None
        self.versions: list[int] = []
        if not facts.trusted or _hooked(self.modules):
            self.guard = WriteGuard(self.tensors)
            self.buffer_names = [(m, set(m._buffers)) for m in self.modules]
        else:
            self.versions = list(map(_version, self.tensors))
        if any(map(is_not, self.grads, repeat(None))):
            for param, grad in zip(self.params, self.grads):
                if grad is not None:
                    param.grad = None

    def restore(self) -> None:
        """Put every recorded flag, gradient, buffer and written tensor back; each kind is
        compared as a whole first and walked only where something differs."""
        if self.guard is not None:
            self.guard.restore()
            for module, names in self.buffer_names:  # buffers a forward registered anew
                for name in set(module._buffers) - names:
                    del module._buffers[name]
        if list(map(_training, self.modules)) != self.training:
            for module, training in zip(self.modules, self.training):
                module.training = training
        if list(map(_requires_grad, self.params)) != self.requires_grad:
            for param, flag in zip(self.params, self.requires_grad):
                if param.requires_grad is not flag:
                    param.requires_grad_(flag)
        if any(map(is_not, map(_grad, self.params), self.grads)):
            for param, grad in zip(reversed(self.params), reversed(self.grads)):  # a shared parameter: first record last
                if param.grad is not grad:
                    param.grad = grad
        for slots, name, buffer in self.buffers:
            if slots.get(name) is not buffer:
                slots[name] = buffer  # a forward may have rebound the attribute
        if self.versions and list(map(_version, self.tensors)) != self.versions:
            self._report_write()

    def _report_write(self) -> None:
        for tensor, version in zip(self.tensors, self.versions):
            if tensor._version != version:
                raise ModelChangedError(
                    f"a {type(tensor).__name__} of shape {tuple(tensor.shape)} was written during the explanation by "
                    "a module interpkit trusts not to write in eval mode; report it, and meanwhile wrap the model in "
                    "a module of your own so that interpkit guards its writes")


_training, _requires_grad, _grad, _version = (attrgetter(name) for name in ("training", "requires_grad", "grad",
                                                                             "_version"))


class _Record:
    """Per model: the lock that serialises explanations, and the open hold (one per thread
    holding the lock, so read and written by that thread alone)."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.snapshot: ModelSnapshot | None = None


_records: "weakref.WeakKeyDictionary[nn.Module, _Record]" = weakref.WeakKeyDictionary()
_records_guard = threading.Lock()


def _record(model: nn.Module) -> _Record:
    with _records_guard:
        record = _records.get(model)
        if record is None:
            record = _records[model] = _Record()
        return record


def model_lock(model: nn.Module) -> threading.RLock:
    """One re-entrant lock per model: explanations of one model from several threads run one at a
    time (each sees and restores the model's own state), while copies of a model run concurrently."""
    return _record(model).lock


@contextmanager
def evaluation(model: nn.Module) -> Iterator[None]:
    """Run the block with the model in eval mode, holding its lock, and restore everything after.
    Re-entrant: inside a block of the same thread (a target callable that explains the same
    model, an explainer that delegates) the model is already held, and nothing is recorded twice."""
    record = _record(model)
    with record.lock:
        if record.snapshot is not None:
            yield
            return
        snapshot = record.snapshot = ModelSnapshot(model)
        try:
            if any(snapshot.training):  # model.eval() walks every module's __setattr__: skip it when it would do nothing
                model.eval()
            if snapshot.guard is None:
                yield
            else:
                with snapshot.guard:
                    yield
        finally:
            record.snapshot = None
            snapshot.restore()


def model_dtype(model: nn.Module) -> torch.dtype | None:
    """The floating dtype of the model's parameters (None for a model without any)."""
    for module in model_facts(model).modules:
        for p in module._parameters.values():
            if p is not None and p.is_floating_point():
                return p.dtype
    return None


def mixes_samples(model: nn.Module) -> bool:
    """True when the model's eval forward mixes the samples of a batch: a batch norm without
    running statistics normalises with the batch's own, so a sample's output depends on the others."""
    return model_facts(model).mixes_samples


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer (CPU for a stateless model)."""
    modules = model_facts(model).modules
    for slots in ("_parameters", "_buffers"):
        for module in modules:
            for tensor in getattr(module, slots).values():
                if tensor is not None:
                    return tensor.device
    return torch.device("cpu")
