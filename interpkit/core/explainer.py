"""The explainer contract: ``explainer(inputs, target=None) -> Explanation``.

An explainer holds a model and nothing else between calls. Each call (or each ``with`` block)
snapshots the model's flags, switches it to eval mode, registers the hooks it needs for one
forward pass, and in ``finally`` removes them and restores the snapshot, so the model is left
exactly as it was whether the call returned or raised.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
import math
import threading
import warnings
from dataclasses import dataclass, replace
from typing import Any, ClassVar, ContextManager, Sequence

import torch
from torch import nn

from ..errors import ForwardError, InputError, InterpkitError, LayerError, LocalisationWarning
from .explanation import Explanation, concatenate
from .gradients import MAX_BATCHED_ELEMENTS, per_target_gradients
from .hooks import Captured, capture_outputs
from .inputs import InputsLike, ModelInputs, model_inputs
from .layers import LayerChoice, LayerLike, choose_layer, layer_choices, layout_hint, resolve_layer, unwrap
from .layouts import ChannelsFirst, stated
from .maps import MapKind
from .options import CheckedOptions
from .saved import SavedElements
from .state import evaluation, model_facts, model_lock
from .targets import TargetLike, TargetSelection, class_scores, neurons_of, one_target, plain_target, sample_target, select_targets

_KEEP = object()  # ``Call.with_``: the target unchanged


@dataclass(frozen=True)
class Call:
    """One call's data, passed down through ``explain`` instead of kept on the explainer, so one
    explainer object can serve several threads and calls nested inside its own target callable.

    ``inputs`` are the model's arguments (``inputs.primary`` is the attributed tensor, also
    ``x``); ``target`` is what to explain. Delegating explainers pass ``with_(x=..., target=...)``:
    a batch of copies of ``x`` tiles the model's other batched arguments alike.
    """

    inputs: ModelInputs
    target: TargetLike = None
    #: the user's batch size and the sample explained alone (None: every one): ``x``'s rows are those
    #: samples or copies of them, copy-major, so an option with one row per sample maps onto them
    batch: int | None = None
    sample: int | None = None

    @property
    def x(self) -> torch.Tensor:
        """The attributed tensor."""
        return self.inputs.primary

    def with_(self, x: torch.Tensor | None = None, target: Any = _KEEP) -> "Call":
        """This call with another attributed tensor and/or target."""
        inputs = self.inputs if x is None else self.inputs.with_primary(x)
        return Call(inputs, self.target if target is _KEEP else target, self.batch, self.sample)

    def per_sample(self, value: torch.Tensor) -> torch.Tensor:
        """An option ``value`` with one row per sample of the user's batch, for ``x``'s rows: the
        row of the sample explained alone, or the rows repeated for copies of the batch; any other
        tensor as it is."""
        if self.batch is None or self.batch < 2 or value.dim() == 0 or len(value) != self.batch:
            return value
        if self.sample is not None:
            return value[self.sample:self.sample + 1]
        copies = len(self.x) // self.batch
        return value.repeat(copies, *[1] * (value.dim() - 1)) if copies > 1 else value

    def model_inputs(self, x: torch.Tensor) -> ModelInputs:
        """The model's arguments with ``x`` (the batch, or copies of it) as the attributed tensor."""
        return self.inputs.with_primary(x)


class Explainer(CheckedOptions):
    """Base class of every explainer; subclasses implement ``explain``.

    Use it for one call, ``explainer(x, target)``, or as a context manager to explain many
    batches with the model held in eval mode for the whole block. ``x`` is a tensor (N, D) or
    (N, C, *spatial) with 1 to 3 spatial dimensions, or, for a model taking several inputs, a
    tuple of its arguments or a dict of its keyword arguments; ``attribute_to`` names the input
    (position or key) that input-space maps align with, by default the first. A model compiled
    with ``torch.compile`` is explained through the module it wraps. An explainer keeps no call
    data: one object may be shared by threads and called again from inside its own target.
    """

    #: the registry name, snake_case; ``register(cls)`` files the class under it
    name: ClassVar[str] = ""
    #: the kinds of model it explains ('1d', '2d', '3d' inputs, 'tokens' layers, 'several_inputs');
    #: ``check_explainer`` expects the others to be refused with an InterpkitError
    supports: ClassVar[frozenset[str]] = frozenset({"1d", "2d", "3d", "tokens", "several_inputs"})
    #: True where the method is defined for class targets only (FinerCAM compares classes): a
    #: model whose classes need a callable target must then be refused, as ``check_explainer`` expects
    class_targets_only: ClassVar[bool] = False
    #: True where the maps are made without the target (EigenCAM, attention rollout): only the
    #: scores follow it, and ``check_explainer`` does not expect two classes' maps to differ
    target_free: ClassVar[bool] = False
    #: False where ``Explanation.scores`` are what the map explains rather than the model's outputs
    #: for the targets (FinerCAM's class differences); ``check_explainer`` compares them otherwise
    scores_are_outputs: ClassVar[bool] = True

    def __init__(self, model: nn.Module) -> None:
        if not isinstance(model, nn.Module):
            raise InputError(f"model must be a torch.nn.Module, not {type(model).__name__}")
        self.model = unwrap(model)
        self._blocks = threading.local()  # each thread's open ``with`` block

    def __enter__(self) -> "Explainer":
        """Hold the model against other threads until the block ends. Each call inside records
        and restores the model as a call of its own: the user's code runs between the calls of a
        block, and what it does to the model (a training step, ``train()``) is the user's."""
        if getattr(self._blocks, "held", None) is not None:
            raise InterpkitError(f"{type(self).__name__} is already open in a with block")
        lock = model_lock(self.model)
        lock.acquire()
        self._blocks.held = lock
        return self

    def __exit__(self, *exc_info: object) -> None:
        held, self._blocks.held = getattr(self._blocks, "held", None), None
        if held is not None:
            held.release()

    def __call__(self, inputs: InputsLike, target: TargetLike = None, *,
                 attribute_to: int | str | None = None) -> Explanation:
        # re-entrant: inside a with block or an outer call it records nothing; a callable target, or the
        # user's function or class among the options, is code running inside the call: the guarded path
        with evaluation(self.model, user_code=callable(target) or _holds_user_code(self), call=True):
            prepared = model_inputs(inputs, self.model, attribute_to)
            return self._explain_exactly(Call(prepared, plain_target(target), prepared.batch_size))

    def _explain_exactly(self, call: Call) -> Explanation:
        """``explain``, one sample at a time when the model's eval forward mixes samples: a
        sample's map must not depend on the others in its batch."""
        n = call.inputs.batch_size
        if n == 1 or not model_facts(self.model).mixes_samples:
            return self.explain(call)
        try:
            return concatenate([self.explain(Call(call.inputs.sample(i), sample_target(call.target, i, n), n, i))
                                for i in range(n)])
        except ForwardError as error:  # not a bad option: those say what they are
            raise InputError(
                "the model's eval forward mixes the samples of a batch (a batch norm without running statistics), so "
                "interpkit explains one sample at a time, and the model cannot run one sample alone "
                f"({error}); give its batch norms running statistics (track_running_stats=True) to explain it"
            ) from error

    def explain(self, call: Call) -> Explanation:
        """Compute the explanation of a validated call (``call.x`` the attributed tensor, the
        model's other inputs riding along in every forward); the model is already in eval mode."""
        raise NotImplementedError

    def result(self, maps: torch.Tensor, selection: TargetSelection, kind: MapKind,
               layer: str | None = None) -> Explanation:
        """The ``Explanation`` of ``maps`` (N, K, ...) for the resolved targets: float32
        maps and scores detached from the graph, named after this explainer."""
        return Explanation(maps.detach().float(), selection.indices, selection.scores.detach(), self.name, kind, layer,
                           selection.classes)

    def _forward(self, call: Call, hooked: list[nn.Module], mode: ContextManager[Any] | None, count: bool
                 ) -> tuple[Any, Captured, int]:
        """The model's output on copies of the call's inputs (``run``), ``hooked`` captured, inside
        ``mode``; with ``count``, the elements autograd saved per sample (else 0)."""
        with capture_outputs(hooked, for_gradients=True) as captured, mode or contextlib.nullcontext():
            if not count:
                return call.inputs.run(self.model), captured, 0
            saved = SavedElements(captured)
            with torch.autograd.graph.saved_tensors_hooks(saved.pack, saved.unpack):
                output = call.inputs.run(self.model)
        return output, captured, -(-saved.total // len(call.x))

    def _default_layout(self, module: nn.Module) -> ChannelsFirst:
        return ChannelsFirst(checked=True, known=layout_hint(self.model, module) == "first")

    def forward_with_targets(
        self, call: Call, modules: Sequence[nn.Module] = (), mode: ContextManager[Any] | None = None,
        graph: bool = True, mode_reads_targets: bool = False,
    ) -> tuple[TargetSelection, Captured]:
        """One forward of ``call`` with gradients enabled, capturing ``modules`` and any Neuron
        layers, under ``mode`` (a context active during the forward only: op-level rules; with
        ``mode_reads_targets`` also while the targets' scores are read from the output, for
        rules that must see how a score is made: a Neuron's maximum, a callable's softmax).
        ``selection.graph_elements`` is what one target's backward works through, counted on
        the first call of several targets per input shape and layers, then scaled by the batch
        (uncounted, it is large enough that several targets go one backward each). ``graph=False``
        runs it under ``no_grad`` for explainers that only read the scores."""
        target, x = call.target, call.x
        neuron_layers = {n: resolve_layer(self.model, n.layer) for n in neurons_of(target)}
        hooked = list(modules) + [module for _, module in neuron_layers.values()]
        key = ("saved", type(self), tuple(x.shape[1:]), x.dtype, x.device, tuple(map(id, hooked)))
        cache = model_facts(self.model).cache
        per_sample = cache.get(key) if graph else 0
        # the count sizes batched backwards: a first call of one target per sample needs none, and leaves it to the
        # first call of several (a forward that runs torch.func's grad refuses the hooks that count)
        count = per_sample is None and not one_target(target)
        with torch.enable_grad() if graph else torch.no_grad():
            try:
                output, captured, counted = self._forward(call, hooked, mode, count)
            except ForwardError as error:
                if count and "saved tensor hooks" in str(error):
                    raise InputError(
                        f"{type(self).__name__}: the model's forward runs torch.func's grad, vjp, jacrev or hessian, "
                        "which refuse the saved-tensor hooks with which a first call of several targets counts what "
                        "the forward saves (to size their batched backward); explain one target per call (a class "
                        "index, or one per sample), which needs no count") from error
                raise
            if count:
                per_sample = cache[key] = counted
            # the hooks are gone: a target callable may run the model again (even explain it) unseen
            neuron_outputs = {n: (name, captured.output(m, name),
                                  stated(n.layout, self.model) if n.layout is not None else self._default_layout(m))
                              for n, (name, m) in neuron_layers.items()}
            # a class's score is a logit picked by index; a callable or a Neuron may read it nonlinearly
            reads = mode_reads_targets and (
                bool(neurons_of(target)) or (callable(target) and not isinstance(target, torch.Tensor)))
            with mode if reads and mode is not None else contextlib.nullcontext():
                selection = select_targets(target, output, len(x), neuron_outputs, tuple(x.shape[2:]))
        # uncounted: one target was expected; should there be more, each goes through its own backward
        elements = MAX_BATCHED_ELEMENTS if per_sample is None else per_sample
        return replace(selection, graph_elements=elements * len(x)), captured


#: modules whose functions and classes are not the user's code
_LIBRARY = ("interpkit", "torch", "builtins", "numpy", "math", "enum", "functools")


def _holds_user_code(value: Any, seen: set[int] | None = None) -> bool:
    """Whether the user's code sits among an explainer's options, in delegate explainers, rules,
    containers or closures: a function, or an object of a class, defined outside the libraries
    interpkit trusts (a callable baseline, a custom LRP rule). It runs inside the call, so the
    call takes the guarded path, as with a callable target."""
    seen = set() if seen is None else seen
    if isinstance(value, (nn.Module, torch.Tensor, str, bytes, int, float, type(None), threading.local)) or (
            id(value) in seen):  # a thread-local holds an explainer's open ``with`` block, not an option
        return False
    seen.add(id(value))
    if isinstance(value, Explainer):  # its class, a plugin's included, keeps the hygiene promise: its options
        inner: Any = list(vars(value).values())
    elif isinstance(value, (list, tuple, set, frozenset)):
        inner = value
    elif isinstance(value, dict):
        inner = [*value.keys(), *value.values()]
    elif not _defined_in(value, _LIBRARY):
        return True
    elif isinstance(value, functools.partial):
        inner = [value.func, *value.args, *value.keywords.values()]
    elif inspect.isfunction(value):
        inner = [cell.cell_contents for cell in value.__closure__ or ()]
    elif inspect.ismethod(value):
        inner = [value.__func__, value.__self__]
    elif hasattr(value, "__dict__"):  # an object of the libraries': what it holds
        inner = list(vars(value).values())
    else:  # a slotted dataclass keeps it in its fields
        inner = [getattr(value, f.name) for f in dataclasses.fields(value)] if dataclasses.is_dataclass(value) else []
    return any(_holds_user_code(item, seen) for item in inner)


def _defined_in(value: Any, modules: tuple[str, ...]) -> bool:
    own = value if inspect.isfunction(value) or inspect.isclass(value) else type(value)
    return (getattr(own, "__module__", None) or "").startswith(modules)


@dataclass
class LayerGradients:
    """One layer read for a batch: its activation as a channels-first grid (N, C, *grid),
    detached, the gradients of every target score with respect to it (N, K, C, *grid), and the
    resolved targets."""

    layer: str
    activation: torch.Tensor
    gradients: torch.Tensor
    selection: TargetSelection


class LayerExplainer(Explainer):
    """An explainer that reads inner layers: ``layer`` is a dotted name or module, a pair
    ``(layer, layout)`` for outputs that are not channels first (``TokenGrid()``,
    ``ChannelsLast()``), a list of those, or ``None`` to choose one by the rule of
    ``interpkit.core.layers.choose_layer`` (once per model and input shape); ``Explanation.layer``
    names the layer read.
    """

    def __init__(self, model: nn.Module, layer: LayerLike | list = None) -> None:
        super().__init__(model)
        self.layer = layer
        self._choices = layer_choices(self.model, layer)

    def resolve(self, call: Call | torch.Tensor) -> list[LayerChoice]:
        """The layers to read for ``call`` (or a batch of the model's one input), probing the
        model once per model and input shape for None."""
        if self._choices is not None:
            return self._choices
        if isinstance(call, torch.Tensor):
            call = Call(ModelInputs(args=(call,)))
        # the choice is the model's: every explainer of it shares it, for the input it attributes to
        key = ("layer", tuple(call.x.shape[1:]), call.inputs.key)
        cache = model_facts(self.model).cache
        if key not in cache:
            def top_score(output: Any) -> torch.Tensor:
                return class_scores(output).max(dim=1).values

            cache[key] = choose_layer(self.model, call.inputs, top_score)
        return [cache[key]]

    def layer_gradients(self, call: Call) -> LayerGradients:
        """One forward and one batched backward: the layer's activation and every target's
        gradients with respect to it. Explainers built on a layer start here."""
        found = self.all_layer_gradients(call)
        if len(found) != 1:
            raise LayerError(f"{type(self).__name__} reads one layer; got {len(found)}")
        return found[0]

    def all_layer_gradients(self, call: Call) -> list[LayerGradients]:
        """``layer_gradients`` for every chosen layer, from one forward and one batched backward."""
        choices = self.resolve(call)
        selection, captured = self.forward_with_targets(call, [c.module for c in choices])
        batch, grid = len(call.x), tuple(call.x.shape[2:])
        raw = [self._layer_output(captured, choice, batch) for choice in choices]
        activations = [c.grid(a, grid).detach() for c, a in zip(choices, raw)]  # refuses a wrong layout first
        for choice, activation in zip(choices, activations):
            if math.prod(activation.shape[2:]) == 1:
                warnings.warn(f"layer '{choice.name}' has a single position at this input size, so its maps are "
                              "constant and cannot localise", LocalisationWarning, stacklevel=4)
        gradients = self.target_gradients(selection, raw)
        return [LayerGradients(c.name, a, c.grid(g, grid, lead=2, checked=False), selection)
                for c, a, g in zip(choices, activations, gradients)]

    def target_gradients(self, selection: TargetSelection, outputs: list[torch.Tensor]) -> list[torch.Tensor]:
        """Every target's gradients (N, K, ...) with respect to each layer's raw output (N, ...),
        still attached to the forward's graph. Explainers that weigh channels by more than the
        first derivative (ShapleyCAM's Hessian-vector product) override this."""
        return per_target_gradients(selection.scores, outputs, selection.graph_elements)

    def _layer_output(self, captured: Captured, choice: LayerChoice, batch: int) -> torch.Tensor:
        """The layer's captured output, checked to be a tensor with one row per sample."""
        output = captured.output(choice.module, choice.name)
        if not isinstance(output, torch.Tensor):
            raise LayerError(f"layer '{choice.name}' returns {type(output).__name__}, not a tensor; choose a layer "
                             "whose output is one")
        if output.shape[0] != batch:
            raise LayerError(f"layer '{choice.name}' gives {output.shape[0]} rows for a batch of {batch}: its output "
                             "is not one per sample (pooled regions, flattened tokens); choose another layer")
        return output
