"""The explainer contract: ``explainer(inputs, target=None) -> Explanation``.

An explainer holds a model and nothing else between calls. Each call (or each ``with`` block)
snapshots the model's flags, switches it to eval mode, registers the hooks it needs for one
forward pass, and in ``finally`` removes them and restores the snapshot, so the model is left
exactly as it was whether the call returned or raised.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, ClassVar, ContextManager, Sequence

import torch
from torch import nn

from ..errors import InputError, InterpkitError, LayerError
from .explanation import Explanation, concatenate
from .gradients import per_target_gradients
from .hooks import Captured, SavedElements, capture_outputs
from .layers import LayerLike, is_spatial, last_spatial_layer, resolve_layer
from .maps import MapKind
from .state import ModelSnapshot, mixes_samples, model_device, model_dtype, model_lock, run_model
from .targets import TargetLike, TargetSelection, neurons_of, sample_target, select_targets


class Explainer:
    """Base class of every explainer; subclasses implement :meth:`explain`.

    Use it for one call, ``explainer(x, target)``, or as a context manager to explain many
    batches with the model held in eval mode for the whole block.
    """

    #: the registry name, snake_case; ``register(cls)`` files the class under it
    name: ClassVar[str] = ""

    def __init__(self, model: nn.Module) -> None:
        if not isinstance(model, nn.Module):
            raise InputError(f"model must be a torch.nn.Module, not {type(model).__name__}")
        self.model = model
        self._snapshot: ModelSnapshot | None = None

    def __enter__(self) -> "Explainer":
        if self._snapshot is not None:
            raise InterpkitError(f"{type(self).__name__} is already open in a with block")
        lock = model_lock(self.model)
        lock.acquire()  # another thread explaining this model finishes (and restores it) first
        try:
            self._snapshot = ModelSnapshot(self.model)
            self.model.eval()
        except BaseException:
            lock.release()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        snapshot, self._snapshot = self._snapshot, None
        if snapshot is not None:
            try:
                snapshot.restore()
            finally:
                model_lock(self.model).release()

    def __call__(self, inputs: torch.Tensor, target: TargetLike = None) -> Explanation:
        inputs = check_inputs(inputs, self.model)
        if self._snapshot is not None:
            return self._explain_exactly(inputs, target)
        with self:
            return self._explain_exactly(inputs, target)

    def _explain_exactly(self, inputs: torch.Tensor, target: TargetLike) -> Explanation:
        """``explain``, one sample at a time when the model's eval forward mixes samples: a
        sample's map must not depend on the others in its batch."""
        if len(inputs) == 1 or not mixes_samples(self.model):
            return self.explain(inputs, target)
        n = len(inputs)
        return concatenate([self.explain(inputs[i:i + 1], sample_target(target, i, n)) for i in range(n)])

    def explain(self, inputs: torch.Tensor, target: TargetLike) -> Explanation:
        """Compute the explanation of validated ``inputs``; the model is already in eval mode."""
        raise NotImplementedError

    def result(self, maps: torch.Tensor, selection: TargetSelection, kind: MapKind,
               layer: str | None = None) -> Explanation:
        """The :class:`Explanation` of ``maps`` (N, K, ...) for the resolved targets: float32
        maps and scores detached from the graph, named after this explainer."""
        return Explanation(maps.detach().float(), selection.indices, selection.scores.detach(), self.name, kind, layer)

    def forward_mode(self) -> ContextManager[Any]:
        """A context active during the explainer's forward pass (op-level rules hook in here)."""
        return contextlib.nullcontext()

    def forward_with_targets(
        self, inputs: torch.Tensor, target: TargetLike, modules: Sequence[nn.Module] = ()
    ) -> tuple[TargetSelection, Captured]:
        """One forward with gradients enabled, capturing ``modules`` and any Neuron layers."""
        neuron_layers = {n: resolve_layer(self.model, n.layer) for n in neurons_of(target)}
        hooked = list(modules) + [module for _, module in neuron_layers.values()]
        with torch.enable_grad(), capture_outputs(hooked, for_gradients=True) as captured:
            saved = SavedElements(captured)
            with torch.autograd.graph.saved_tensors_hooks(saved.pack, saved.unpack), self.forward_mode():
                output = run_model(self.model, inputs)
            neuron_outputs = {n: (name, captured.output(m, name)) for n, (name, m) in neuron_layers.items()}
            selection = select_targets(target, output, len(inputs), neuron_outputs)
        selection.graph_elements = saved.total
        return selection, captured


@dataclass
class LayerGradients:
    """One layer read for a batch: its activation (N, C, *grid), detached, the gradients of
    every target score with respect to it (N, K, C, *grid), and the resolved targets."""

    layer: str
    activation: torch.Tensor
    gradients: torch.Tensor
    selection: TargetSelection


class LayerExplainer(Explainer):
    """An explainer that reads one inner layer, given by name, module, or ``None``.

    With ``None`` the last layer with a spatial output is found by a probe forward on the first
    batch of each input shape; :attr:`layer_name` records the choice.
    """

    def __init__(self, model: nn.Module, layer: LayerLike = None) -> None:
        super().__init__(model)
        self.layer = layer
        self.layer_name: str | None = None
        self._module: nn.Module | None = None
        self._probed: dict[tuple[int, ...], tuple[str, nn.Module]] = {}
        if layer is not None:
            self.layer_name, self._module = resolve_layer(model, layer)

    def resolve(self, inputs: torch.Tensor) -> tuple[str, nn.Module]:
        """The layer's ``(name, module)``, probing the model once per input shape when it is None."""
        if self._module is not None and self.layer is not None:
            return self.layer_name, self._module  # type: ignore[return-value]
        shape = tuple(inputs.shape[1:])
        if shape not in self._probed:
            self._probed[shape] = last_spatial_layer(self.model, inputs)
        self.layer_name, module = self._probed[shape]
        return self.layer_name, module

    def layer_gradients(self, inputs: torch.Tensor, target: TargetLike) -> LayerGradients:
        """One forward and one batched backward: the layer's activation and every target's
        gradients with respect to it. Explainers built on a layer start here."""
        name, module = self.resolve(inputs)
        selection, captured = self.forward_with_targets(inputs, target, [module])
        activation = self.spatial_activation(captured, name, module)
        (gradients,) = per_target_gradients(selection.scores, [activation], selection.graph_elements)
        return LayerGradients(name, activation.detach(), gradients, selection)

    def spatial_activation(self, captured: Captured, name: str, module: nn.Module) -> torch.Tensor:
        """The layer's captured (N, C, H, W) output; a LayerError for any other output."""
        activation = captured.output(module, name)
        if not is_spatial(activation):
            shape = tuple(activation.shape) if isinstance(activation, torch.Tensor) else type(activation).__name__
            raise LayerError(
                f"layer '{name}' has no spatial (N, C, H, W) output (got {shape}); "
                f"{type(self).__name__} needs a convolutional layer, or layer=None to pick the last one"
            )
        return activation


def check_flag(name: str, value: Any) -> bool:
    """A boolean option, refused when it is anything but a bool (``upsample="no"`` is truthy)."""
    if not isinstance(value, bool):
        raise InputError(f"{name} must be True or False, not {value!r}")
    return value


def check_inputs(inputs: Any, model: nn.Module) -> torch.Tensor:
    """Validate a batch of images: a finite, floating (N, C, H, W) tensor on the model's device."""
    if not isinstance(inputs, torch.Tensor):
        raise InputError(
            f"inputs must be a torch.Tensor of shape (N, C, H, W), not {type(inputs).__name__}; "
            "convert images with the model's transforms first"
        )
    if inputs.dim() != 4 or inputs.shape[0] == 0:
        raise InputError(
            f"inputs must be a non-empty 4-D batch (N, C, H, W), got shape {tuple(inputs.shape)}; "
            "add a batch dimension with inputs.unsqueeze(0) for one image"
        )
    if not inputs.dtype.is_floating_point:
        raise InputError(
            f"inputs must be a floating tensor, got {inputs.dtype}; convert uint8 images with "
            "the model's transforms or inputs.float() / 255"
        )
    if 0 in inputs.shape:
        raise InputError(f"inputs of shape {tuple(inputs.shape)} have a dimension of size 0; give at least one pixel")
    if torch.is_inference_mode_enabled() or inputs.is_inference():
        raise InputError("explanations need gradients, which torch.inference_mode() turns off: call the explainer "
                         "outside inference mode, on inputs made outside it (or inputs.clone() there)")
    device = model_device(model)
    if inputs.device != device:
        raise InputError(f"inputs are on {inputs.device} but the model is on {device}; move them with .to()")
    dtype = model_dtype(model)
    if dtype is not None and inputs.dtype != dtype:
        raise InputError(f"inputs are {inputs.dtype} but the model's parameters are {dtype}; convert one to the "
                         f"other, e.g. inputs.to({dtype})")
    if not bool(torch.isfinite(inputs).all()):
        raise InputError("inputs contain NaN or Inf values; clean or re-normalise the images")
    return inputs.detach()
