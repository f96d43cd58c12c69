"""Put a model into eval mode for an explanation and give it back exactly as it was, cheaply.

Two paths, chosen per call:

* **Plain.** Every module's class comes from a library whose forwards are known not to write
  parameters or buffers in eval mode (``TRUSTED_MODULES``: ``torch.nn``, torchvision, timm and
  interpkit's zoo), no module carries a forward or backward hook of the user's, and no user code
  runs inside the call (a callable target does). Nothing intercepts the forward: the snapshot
  records flags, ``requires_grad``, ``.grad`` objects (moved aside, not copied), the tensors in
  every parameter and buffer slot, and their version counters; ``restore`` rebinds what was
  rebound. A version that moved anyway raises ``ModelChangedError`` rather than pass silently.
  No tensor is copied or compared, so no host-device synchronisation happens.
* **Guarded.** Anything else: a ``TorchDispatchMode`` sees every op torch dispatches, inside
  composite functions and the backward too, and copies a parameter or buffer just before the
  first op whose schema writes its storage (through ``.data`` as well, which no version counter
  sees; batch norm's running statistics in training mode as well, which its schema does not
  mark; in eval mode they are not written). ``restore`` puts the values back, removes buffers,
  parameters and submodules the call created and rebinds module attributes the call rebound or
  added. Writes that bypass torch's dispatcher (through numpy, raw storages or
  ``swap_tensors``) are not seen.

Per-model facts (modules, names, parents, trust) are cached and checked on every call against
each module's children, compared by identity at C speed, so a submodule replaced by any means,
``_modules[...] = ...`` included, is seen.
"""

from __future__ import annotations

import functools
import threading
import weakref
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from itertools import chain, repeat
from operator import attrgetter, is_, is_not
from typing import Any, Iterator

import torch
from torch import nn
from torch.nn.modules import module as module_hooks
from torch.utils._python_dispatch import TorchDispatchMode

from ..errors import InputError, ModelChangedError

#: module classes from these packages are trusted not to write parameters or buffers in eval mode
TRUSTED_MODULES = ("torch.nn.modules.", "torchvision.models.", "torchvision.ops.", "timm.layers.", "timm.models.",
                   "interpkit.zoo.")


@dataclass
class ModelFacts:
    """What a call needs to know about a model's structure: its modules, their names and
    parents, its batch norms (whether the eval forward mixes samples is read from them per
    call), whether every module's class is trusted, and per-shape caches of explainers
    (``cache``). ``children`` is the structure it was computed from.

    The model itself is held weakly (``root``), the rest by the properties: the facts are the
    value of a dict keyed weakly by the model, and a value that held its key would keep every
    explained model alive."""

    children: list[tuple[Any, ...]]
    root: "weakref.ref[nn.Module]"
    submodules: tuple[nn.Module, ...]  # every module but the model, in ``named_modules`` order
    subnames: dict[nn.Module, str]
    subparents: dict[nn.Module, nn.Module]  # for the modules whose parent is not the model
    subnorms: tuple[nn.Module, ...]
    trusted: bool
    untrusted: tuple[nn.Module, ...]  # the submodules of classes not trusted: the user's
    cache: dict[Any, Any] = field(default_factory=dict)

    @property
    def model(self) -> nn.Module:
        model = self.root()
        assert model is not None, "facts outlive their model only where nothing can ask for them"
        return model

    @property
    def modules(self) -> tuple[nn.Module, ...]:
        """The model and every submodule, as ``named_modules`` gives them."""
        return (self.model, *self.submodules)

    @property
    def names(self) -> dict[nn.Module, str]:
        """Dotted names by module (the model itself: '')."""
        return {self.model: "", **self.subnames}

    @property
    def parents(self) -> dict[nn.Module, nn.Module]:
        """Each submodule's parent."""
        model = self.model
        return {**{child: model for child in model.children()}, **self.subparents}

    @property
    def norms(self) -> tuple[nn.Module, ...]:
        """The batch norms (not instance norms), the model itself included if it is one."""
        return (self.model, *self.subnorms) if _is_norm(self.model) else self.subnorms

    @property
    def by_name(self) -> dict[str, nn.Module]:
        """Modules by dotted name (the model itself under '')."""
        found = self.cache.get("by_name")
        if found is None:
            found = self.cache["by_name"] = {name: module for module, name in self.subnames.items()}
        return {"": self.model, **found}

    @property
    def mixes_samples(self) -> bool:
        """True when the eval forward mixes the samples of a batch (a batch norm without running statistics)."""
        return any(m.running_mean is None for m in self.norms)


def _is_norm(module: nn.Module) -> bool:
    return isinstance(module, nn.modules.batchnorm._NormBase) and not isinstance(
        module, nn.modules.instancenorm._InstanceNorm)


_facts: "weakref.WeakKeyDictionary[nn.Module, ModelFacts]" = weakref.WeakKeyDictionary()
_facts_guard = threading.Lock()
_submodules = attrgetter("_modules")


def _children(modules: tuple[nn.Module, ...]) -> list[tuple[Any, ...]]:
    """Every module's children as tuples, built at C speed; equal lists mean the same tree."""
    return list(map(tuple, map(dict.values, map(_submodules, modules))))


def model_facts(model: nn.Module) -> ModelFacts:
    """The model's ``ModelFacts``, recomputed when any module's children changed since. Inside
    a plain explanation call (no user code runs in it) they are the ones checked at its start."""
    in_call = getattr(_calls, "facts", None)
    if in_call:
        facts = in_call.get(id(model))  # the call holds the model: its id names no other
        if facts is not None:
            return facts
    facts = _facts.get(model)
    if facts is not None and _children(facts.modules) == facts.children:
        return facts
    names = {module: name for name, module in model.named_modules(remove_duplicate=True)}
    modules = tuple(names)
    scripted = next((name for module, name in names.items() if isinstance(module, torch.jit.ScriptModule)), None)
    if scripted is not None:
        raise InputError(f"{'the model' if not scripted else f'its module {scripted!r}'} is a TorchScript module "
                         "(torch.jit.script or torch.jit.trace), whose forward cannot carry interpkit's hooks and rules; "
                         "pass the torch.nn.Module it was made from")
    submodules = modules[1:]
    subparents = {child: parent for parent in submodules for child in parent.children()}
    facts = ModelFacts(_children(modules), weakref.ref(model), submodules, {m: names[m] for m in submodules},
                       subparents, tuple(filter(_is_norm, submodules)), all(map(_trusted, modules)),
                       tuple(m for m in submodules if not _trusted(m)))
    with _facts_guard:
        _facts[model] = facts
    return facts


def model_cache(model: nn.Module) -> dict[Any, Any]:
    """A dict for what an explainer computes once per model (and input shape, in its key) and
    reuses across calls; emptied when any of the model's modules is replaced."""
    return model_facts(model).cache


def _trusted(module: nn.Module) -> bool:
    return type(module).__module__.startswith(TRUSTED_MODULES)


_HOOKS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
_GLOBAL_HOOKS = ("_global_forward_hooks", "_global_forward_pre_hooks", "_global_backward_hooks",
                 "_global_backward_pre_hooks")


def user_hooked(modules: tuple[nn.Module, ...]) -> bool:
    """True when a hook of the user's (not one of ``forward_hooks``, which write nothing of the
    model's) may run in the forward or the backward. Empty hook dicts are skipped at C speed."""
    if any(getattr(module_hooks, name, None) for name in _GLOBAL_HOOKS):
        return True
    return any(not getattr(hook, "interpkit", False) for name in _HOOKS
               for slots in filter(None, map(attrgetter(name), modules)) for hook in slots.values())


# batch norms whose running statistics are written exactly when ``training`` is true: some
# schemas do not mark them, ``_native_batch_norm_legit``'s marks them in eval mode too
_TRAINING_STATS = {"aten::native_batch_norm", "aten::_native_batch_norm_legit", "aten::cudnn_batch_norm",
                   "aten::miopen_batch_norm"}
_STATISTICS = ("running_mean", "running_var")


@functools.lru_cache(maxsize=None)
def _write_slots(func: Any) -> tuple[tuple[tuple[int, str], ...], tuple[tuple[int, str], ...], int]:
    """Where an op's written tensors are: the arguments it always writes and those it writes when
    its ``training`` argument is true, each as (position, name), and that argument's position."""
    schema = func._schema
    arguments = [(i, a.name) for i, a in enumerate(schema.arguments)]
    statistics = tuple(slot for slot in arguments if slot[1] in _STATISTICS)
    if schema.name == "aten::batch_norm_update_stats":  # updates them whatever its schema says
        return statistics, (), -1
    gated = schema.name in _TRAINING_STATS and bool(statistics)
    always = tuple(slot for slot, a in zip(arguments, schema.arguments) if a.alias_info is not None
                   and a.alias_info.is_write and not (gated and slot in statistics))
    training = next((i for i, name in arguments if name == "training"), -1)
    return always, statistics if gated else (), training


def _written(func: Any, args: tuple, kwargs: dict) -> Iterator[Any]:
    """The tensors an op writes, by its schema's alias annotations, and a batch norm's running
    statistics where it updates them (in training mode only)."""
    always, when_training, training = _write_slots(func)
    slots = always + when_training if when_training and _value(args, kwargs, (training, "training")) else always
    for slot in slots:
        value = _value(args, kwargs, slot)
        yield from (value if isinstance(value, (list, tuple)) else [value])


def _value(args: tuple, kwargs: dict, slot: tuple[int, str]) -> Any:
    return args[slot[0]] if slot[0] < len(args) else kwargs.get(slot[1])


class WriteGuard(TorchDispatchMode):
    """While active, the first op that writes the storage of one of ``tensors`` first copies
    every tensor on that storage, so ``restore`` can put them back."""

    def __init__(self, tensors: list[torch.Tensor]) -> None:
        super().__init__()
        self.storages: dict[int, list[torch.Tensor]] = {}
        for tensor in tensors:
            self.storages.setdefault(tensor.untyped_storage().data_ptr(), []).append(tensor)
        self.copies: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        for tensor in _written(func, args, kwargs):
            if isinstance(tensor, torch.Tensor):
                pointer = tensor.untyped_storage().data_ptr()
                if pointer in self.storages and pointer not in self.copies:
                    self.copies[pointer] = [(t, t.detach().clone()) for t in self.storages[pointer]]
        with torch._C.DisableTorchFunction():  # an aten op, not the user's: the explainers' function modes keep out
            return func(*args, **kwargs)

    def restore(self) -> None:
        """Put every written tensor back (its storage too, where a ``set_`` swapped it)."""
        with torch.no_grad():
            for pointer, saved in self.copies.items():
                for tensor, value in saved:
                    if tensor.shape == value.shape and tensor.untyped_storage().data_ptr() == pointer:
                        tensor.copy_(value)
                    else:
                        tensor.set_(value)  # type: ignore[call-overload]  # a tensor source is valid


class ModelSnapshot:
    """The parts of a model's state an explanation could disturb, recorded to be put back:
    module training flags, every parameter's ``requires_grad`` and ``.grad`` (the objects are
    set aside, so a target callable that calls ``backward`` cannot leave gradients behind), the
    tensor in every parameter and buffer slot; values only where the guard sees a write.
    ``user_code`` (a callable target) takes the guarded path whatever the model."""

    def __init__(self, model: nn.Module, user_code: bool = False) -> None:
        self.facts = facts = model_facts(model)
        self.modules = facts.modules
        # maps and filters with C-level callables: no Python frame per module or tensor
        self.training = list(map(_training, self.modules))
        # the parameter and buffer dicts holding anything, and shallow copies to put rebound slots back
        param_slots = list(filter(None, map(_parameters, self.modules)))
        buffer_slots = list(filter(None, map(_buffers, self.modules)))
        self.slots = param_slots + buffer_slots
        self.slot_copies = list(map(dict.copy, self.slots))
        self.params = list(filter(_present, chain.from_iterable(map(dict.values, param_slots))))
        self.requires_grad = list(map(_requires_grad, self.params))
        self.grads = list(map(_grad, self.params))
        self.tensors = self.params + list(filter(_present, chain.from_iterable(map(dict.values, buffer_slots))))
        if any(map(isinstance, self.tensors, repeat(_LAZY))):  # no storage yet: nothing to write
            self.tensors = [t for t in self.tensors if not isinstance(t, _LAZY)]
        self.guard: WriteGuard | None = None
        self.versions: list[int] = []
        if user_code or not facts.trusted or user_hooked(self.modules):
            self.tensors = [t for t in self.tensors if not t.is_inference()]
            self._guard()
        else:
            self.versions = self._versions()
        if any(map(is_not, self.grads, repeat(None))):
            for param, grad in zip(self.params, self.grads):
                if grad is not None:
                    param.grad = None

    def _versions(self) -> list[int]:
        """Every recorded tensor's version counter; inference tensors, which have none and which
        no explanation can write, are dropped from the record the first time."""
        try:
            return list(map(_version, self.tensors))
        except RuntimeError:
            self.tensors = [t for t in self.tensors if not t.is_inference()]
            return list(map(_version, self.tensors))

    def _guard(self) -> None:
        """The guarded path's records: the guard, and the attributes (names and the objects they
        hold) of the modules whose code is the user's, their own classes' or their hooks', which
        may rebind or add attributes (library classes' forwards do not)."""
        self.guard = WriteGuard(self.tensors)
        model, facts = self.modules[0], self.facts
        hooked = [m for m in self.modules if m._forward_hooks or m._forward_pre_hooks or m._backward_hooks
                  or m._backward_pre_hooks]
        own = () if _trusted(model) else (model,)
        self.watched = tuple(dict.fromkeys((*own, *facts.untrusted, *hooked)))
        self.attributes: list[dict[str, Any]] = list(map(dict.copy, map(_attributes, self.watched)))
        self.slot_names = [(set(m._buffers), set(m._parameters), set(m._modules)) for m in self.modules]
        self.versions = []

    def in_eval(self) -> None:
        """The model was just put in eval mode: the flags are the call's now (``restore`` gives
        back the recorded ones), not an attribute the forward rebound."""
        if self.guard is not None:
            for attributes, module in zip(self.attributes, self.watched):
                attributes["training"] = module.training

    def guarded(self) -> WriteGuard:
        """Switch a plain hold to the guarded path (user code is about to run inside it)."""
        if self.guard is None:
            self._guard()
        assert self.guard is not None
        return self.guard

    def _undo_writes(self) -> None:
        """On the guarded path, put back what the model's code changed: written values,
        attributes rebound or added (``self.cache = h``), buffers, parameters and submodules it
        created."""
        if self.guard is None:
            return
        self.guard.restore()
        for module, (buffers, parameters, children) in zip(self.modules, self.slot_names):
            for slots, before in ((module._buffers, buffers), (module._parameters, parameters),
                                  (module._modules, children)):
                for name in set(slots) - before:
                    del slots[name]
        if not _same_attributes(list(map(_attributes, self.watched)), self.attributes):
            for module, attributes in zip(self.watched, self.attributes):
                current = vars(module)
                for name in set(current) - set(attributes):
                    del current[name]
                current.update((name, value) for name, value in attributes.items()
                               if current.get(name, _ABSENT) is not value)

    def restore(self) -> None:
        """Put every recorded flag, gradient, slot and written tensor back; each kind is
        compared as a whole first and walked only where something differs."""
        self._undo_writes()
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
        for slot_dict, recorded in zip(self.slots, self.slot_copies):
            for name, value in recorded.items():
                if slot_dict.get(name) is not value:
                    slot_dict[name] = value  # a forward may have rebound the attribute
        if self.versions and list(map(_version, self.tensors)) != self.versions:
            self._report_write()

    def _report_write(self) -> None:
        for tensor, version in zip(self.tensors, self.versions):
            if tensor._version != version:
                raise ModelChangedError(
                    f"a {type(tensor).__name__} of shape {tuple(tensor.shape)} was written during the explanation on "
                    "interpkit's unguarded path (a model of torch.nn, torchvision or timm classes without hooks); "
                    "it could not be put back. Please report it with the model's code")


def _same_attributes(current: list[dict[str, Any]], recorded: list[dict[str, Any]]) -> bool:
    """Whether every module holds the same attributes, names and objects, in the same order
    (compared by identity at C speed; a name rebound keeps its place, an added one comes last)."""
    return (list(map(len, current)) == list(map(len, recorded))
            and all(map(is_, chain.from_iterable(current), chain.from_iterable(recorded)))
            and all(map(is_, chain.from_iterable(map(dict.values, current)),
                        chain.from_iterable(map(dict.values, recorded)))))


_training, _requires_grad, _grad, _version, _parameters, _buffers, _attributes = (
    attrgetter(name) for name in ("training", "requires_grad", "grad", "_version", "_parameters", "_buffers", "__dict__"))
_present = partial(is_not, None)
_ABSENT = object()  # an attribute the forward deleted, whose value may have been None
_LAZY = nn.parameter.UninitializedTensorMixin  # type: ignore[attr-defined]


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
def evaluation(model: nn.Module, user_code: bool = False, call: bool = False) -> Iterator[None]:
    """Run the block with the model in eval mode, holding its lock, and restore everything after.
    Re-entrant: inside a block of the same thread (a target callable that explains the same
    model, an explainer that delegates) the model is already held, and nothing is recorded twice.
    ``call``: the block is one explanation call; on the plain path its model facts are checked once."""
    record = _record(model)
    with record.lock:
        held = record.snapshot
        if held is not None:
            if user_code and held.guard is None:  # user code inside a plain hold: guard from here on
                with held.guarded():
                    yield
            elif call and held.guard is None:  # the user's code may have run in the hold before this call
                with _checked_once(model, model_facts(model)):
                    yield
            else:
                yield
            return
        snapshot = record.snapshot = ModelSnapshot(model, user_code)
        try:
            if any(snapshot.training):  # model.eval() walks every module's __setattr__: skip it when it would do nothing
                _eval(model)
                snapshot.in_eval()
            if snapshot.guard is not None:
                with snapshot.guard:
                    yield
            elif call:
                with _checked_once(model, snapshot.facts):
                    yield
            else:
                yield
        finally:
            record.snapshot = None
            snapshot.restore()


@contextmanager
def probing(model: nn.Module) -> Iterator[None]:
    """A forward an explanation call makes for itself (choosing a layer, measuring memory), on
    the first call per input shape: what the model's code changes in it is undone at once, so no
    result depends on whether its call probed. On the plain path the forward writes nothing."""
    held = _record(model).snapshot  # the call's own: it holds the model's lock
    if held is None or held.guard is None:
        yield
        return
    inner = ModelSnapshot(model, user_code=True)
    try:
        assert inner.guard is not None
        with inner.guard:
            yield
    finally:
        inner.restore()


_calls = threading.local()  # ``facts``: id(model) -> facts, for the plain explanation calls open in this thread


@contextmanager
def _checked_once(model: nn.Module, facts: ModelFacts) -> Iterator[None]:
    """Within a plain explanation call only interpkit and trusted library forwards run, so the
    model's modules cannot change: its facts, just checked, serve every read until it returns."""
    in_call = _calls.__dict__.setdefault("facts", {})
    if id(model) in in_call:  # an outer call of the same model checked them
        yield
        return
    in_call[id(model)] = facts
    try:
        yield
    finally:
        del in_call[id(model)]


def _eval(model: nn.Module) -> None:
    try:
        model.eval()
    except Exception as error:  # a model's own train() override: what it changed is restored by the caller
        raise InputError(f"the model's eval() raised {type(error).__name__} ({error}); interpkit explains models in eval "
                         "mode, so their train(False) must work") from error


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
