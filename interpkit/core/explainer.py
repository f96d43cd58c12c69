"""The explainer contract: ``explainer(inputs, target=None) -> Explanation``.

An explainer holds a model and nothing else between calls. Each call (or each ``with`` block)
snapshots the model's flags, switches it to eval mode, registers the hooks it needs for one
forward pass, and in ``finally`` removes them and restores the snapshot, so the model is left
exactly as it was whether the call returned or raised.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from dataclasses import dataclass
from typing import Any, ClassVar, ContextManager, Sequence

import torch
from torch import nn

from ..errors import InputError, InterpkitError, LayerError, LocalisationWarning
from .explanation import Explanation, concatenate
from .gradients import per_target_gradients
from .hooks import Captured, SavedElements, capture_outputs
from .inputs import InputsLike, ModelInputs, model_inputs
from .layers import LayerChoice, LayerLike, choose_layer, layer_choices, layout_hint, resolve_layer, unwrap
from .layouts import ChannelsFirst
from .maps import MapKind
from .state import ModelSnapshot, mixes_samples, model_lock
from .targets import TargetLike, TargetSelection, class_scores, neurons_of, sample_target, select_targets


class Explainer:
    """Base class of every explainer; subclasses implement ``explain``.

    Use it for one call, ``explainer(x, target)``, or as a context manager to explain many
    batches with the model held in eval mode for the whole block. ``x`` is a tensor (N, D) or
    (N, C, *spatial) with 1 to 3 spatial dimensions, or, for a model taking several inputs, a
    tuple of its arguments or a dict of its keyword arguments; ``attribute_to`` names the input
    (position or key) that input-space maps align with, by default the first. A model compiled
    with ``torch.compile`` is explained through the module it wraps.
    """

    #: the registry name, snake_case; ``register(cls)`` files the class under it
    name: ClassVar[str] = ""
    #: the kinds of model it explains ('1d', '2d', '3d' inputs, 'tokens' layers, 'several_inputs');
    #: ``check_explainer`` expects the others to be refused with an InterpkitError
    supports: ClassVar[frozenset[str]] = frozenset({"1d", "2d", "3d", "tokens", "several_inputs"})

    def __init__(self, model: nn.Module) -> None:
        if not isinstance(model, nn.Module):
            raise InputError(f"model must be a torch.nn.Module, not {type(model).__name__}")
        self.model = unwrap(model)
        self._snapshot: ModelSnapshot | None = None
        self._inputs: ModelInputs | None = None

    def __enter__(self) -> "Explainer":
        if self._snapshot is not None:
            raise InterpkitError(f"{type(self).__name__} is already open in a with block")
        lock = model_lock(self.model)
        lock.acquire()  # another thread explaining this model finishes (and restores it) first
        try:
            self._snapshot = ModelSnapshot(self.model)
            self.model.eval()
            self._snapshot.guard.__enter__()
        except BaseException:
            lock.release()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        snapshot, self._snapshot = self._snapshot, None
        if snapshot is not None:
            try:
                snapshot.guard.__exit__(None, None, None)
                snapshot.restore()
            finally:
                model_lock(self.model).release()

    def __call__(self, inputs: InputsLike, target: TargetLike = None, *,
                 attribute_to: int | str | None = None) -> Explanation:
        prepared = model_inputs(inputs, self.model, attribute_to)
        if self._snapshot is not None:
            return self._explain_exactly(prepared, target)
        with self:
            return self._explain_exactly(prepared, target)

    def _explain_exactly(self, inputs: ModelInputs, target: TargetLike) -> Explanation:
        """``explain``, one sample at a time when the model's eval forward mixes samples: a
        sample's map must not depend on the others in its batch."""
        n = inputs.batch_size
        if n == 1 or not mixes_samples(self.model):
            return self._explain_with(inputs, target)
        try:
            return concatenate([self._explain_with(inputs.sample(i), sample_target(target, i, n)) for i in range(n)])
        except InputError as error:
            raise InputError(
                "the model's eval forward mixes the samples of a batch (a batch norm without running statistics), so "
                "interpkit explains one sample at a time, and the model cannot run one sample alone "
                f"({error}); give its batch norms running statistics (track_running_stats=True) to explain it"
            ) from error

    def _explain_with(self, inputs: ModelInputs, target: TargetLike) -> Explanation:
        self._inputs = inputs
        try:
            return self.explain(inputs.primary, target)
        finally:
            self._inputs = None

    def explain(self, inputs: torch.Tensor, target: TargetLike) -> Explanation:
        """Compute the explanation of validated ``inputs`` (the attributed tensor; the model's
        other inputs ride along in every forward); the model is already in eval mode."""
        raise NotImplementedError

    def result(self, maps: torch.Tensor, selection: TargetSelection, kind: MapKind,
               layer: str | None = None) -> Explanation:
        """The ``Explanation`` of ``maps`` (N, K, ...) for the resolved targets: float32
        maps and scores detached from the graph, named after this explainer."""
        return Explanation(maps.detach().float(), selection.indices, selection.scores.detach(), self.name, kind, layer,
                           selection.classes)

    def forward_mode(self) -> ContextManager[Any]:
        """A context active during the explainer's forward pass (op-level rules hook in here)."""
        return contextlib.nullcontext()

    def model_inputs(self, inputs: torch.Tensor) -> ModelInputs:
        """The model's arguments for the attributed tensor ``inputs``: the call's other inputs
        ride along (tiled when ``inputs`` holds several copies of the batch)."""
        if self._inputs is None:  # explain() called directly, not through __call__
            return ModelInputs(args=(inputs,))
        return self._inputs.with_primary(inputs)

    def _default_layout(self, module: nn.Module) -> ChannelsFirst:
        return ChannelsFirst(checked=True, known=layout_hint(self.model, module) == "first")

    @contextlib.contextmanager
    def sharing(self, *others: "Explainer"):
        """Let explainers this one delegates to (by calling their ``explain``) see the same call's inputs."""
        for other in others:
            other._inputs = self._inputs
        try:
            yield
        finally:
            for other in others:
                other._inputs = None

    def forward_with_targets(
        self, inputs: torch.Tensor, target: TargetLike, modules: Sequence[nn.Module] = ()
    ) -> tuple[TargetSelection, Captured]:
        """One forward with gradients enabled, capturing ``modules`` and any Neuron layers."""
        neuron_layers = {n: resolve_layer(self.model, n.layer) for n in neurons_of(target)}
        hooked = list(modules) + [module for _, module in neuron_layers.values()]
        call = self.model_inputs(inputs)
        with torch.enable_grad(), capture_outputs(hooked, for_gradients=True) as captured:
            saved = SavedElements(captured)
            with torch.autograd.graph.saved_tensors_hooks(saved.pack, saved.unpack), self.forward_mode():
                output = call.run(self.model)
            neuron_outputs = {n: (name, captured.output(m, name), self._default_layout(m))
                              for n, (name, m) in neuron_layers.items()}
            selection = select_targets(target, output, len(inputs), neuron_outputs, tuple(inputs.shape[2:]))
        selection.graph_elements = saved.total
        return selection, captured


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
    ``interpkit.core.layers.choose_layer`` (once per input shape); :attr:`layer_name`
    records the layer read last.
    """

    def __init__(self, model: nn.Module, layer: LayerLike | list = None) -> None:
        super().__init__(model)
        self.layer = layer
        self.layer_name: str | None = None
        self._choices = layer_choices(self.model, layer)
        self._probed: dict[tuple, LayerChoice] = {}

    def resolve(self, inputs: torch.Tensor) -> list[LayerChoice]:
        """The layers to read for ``inputs``, probing the model once per input shape for None."""
        if self._choices is not None:
            return self._choices
        shape = tuple(inputs.shape[1:])
        if shape not in self._probed:
            def top_score(output: Any) -> torch.Tensor:
                return class_scores(output).max(dim=1).values

            self._probed[shape] = choose_layer(self.model, self.model_inputs(inputs), top_score)
        return [self._probed[shape]]

    def layer_gradients(self, inputs: torch.Tensor, target: TargetLike) -> LayerGradients:
        """One forward and one batched backward: the layer's activation and every target's
        gradients with respect to it. Explainers built on a layer start here."""
        found = self.all_layer_gradients(inputs, target)
        if len(found) != 1:
            raise LayerError(f"{type(self).__name__} reads one layer; got {len(found)}")
        return found[0]

    def all_layer_gradients(self, inputs: torch.Tensor, target: TargetLike) -> list[LayerGradients]:
        """``layer_gradients`` for every chosen layer, from one forward and one batched backward."""
        choices = self.resolve(inputs)
        selection, captured = self.forward_with_targets(inputs, target, [c.module for c in choices])
        raw = [self._layer_output(captured, choice, len(inputs)) for choice in choices]
        grid = tuple(inputs.shape[2:])
        activations = [c.grid(a.detach(), grid) for c, a in zip(choices, raw)]  # refuses a wrong layout first
        for choice, activation in zip(choices, activations):
            if math.prod(activation.shape[2:]) == 1:
                warnings.warn(f"layer '{choice.name}' has a single position at this input size, so its maps are "
                              "constant and cannot localise", LocalisationWarning, stacklevel=4)
        gradients = per_target_gradients(selection.scores, raw, selection.graph_elements)
        self.layer_name = choices[-1].name
        return [LayerGradients(c.name, a, c.grid(g, grid, lead=2), selection)
                for c, a, g in zip(choices, activations, gradients)]

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


def check_flag(name: str, value: Any) -> bool:
    """A boolean option, refused when it is anything but a bool (``upsample="no"`` is truthy)."""
    if not isinstance(value, bool):
        raise InputError(f"{name} must be True or False, not {value!r}")
    return value


