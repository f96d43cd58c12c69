"""Which layer an explainer reads: a dotted name or module with its layout, or a choice by probe.

``layer=None`` follows a rule (``choose_layer``): the last layer output, in the order the
forward completes them, that is a per-sample grid lined up with the input (channels first,
channels last, or tokens) and on which the model's top score depends at more than one position.
That is the last feature grid before global pooling and the head: for a CNN its last block, for
a vision transformer the input of its last attention (later token outputs reach the head only
through the class token). Pooling that resizes (adaptive pooling, upsampling), modules that
only pass a tensor on (Identity, Dropout), projections (Linear), modules called more than once,
and outputs whose batch is not the input's (ROI pooling) are never chosen; when a container
returns the very tensor a leaf made, the leaf is named. Models with a ``backbone`` (torchvision
detection and segmentation) are searched inside it. When the score depends on no position of
any grid (an output that is not class scores, or an untrained head of zeros), the last grid is
chosen.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass
from typing import Any, Sequence, Union

import torch
from torch import nn

from ..errors import LayerError, LayerNotFoundError
from .gradients import backward_errors_refused
from .hooks import forward_hooks, hooks_set_aside
from .inputs import ModelInputs
from .layouts import ChannelsFirst, ChannelsLast, Layout, TokenGrid, aligned, history_hint, stated, token_layout
from .state import model_facts, probing

ModuleLike = Union[str, nn.Module]  # a dotted name or the submodule itself
LayerLike = Union[ModuleLike, tuple, None]  # also a (layer, layout) pair, or None to choose
ORIGINAL = "_orig_mod."  # torch.compile's wrapper keeps the model under this name


@dataclass(frozen=True)
class LayerChoice:
    """A layer to read: its dotted name, the module, and how its output lies over the input."""

    name: str
    module: nn.Module
    layout: Layout

    def grid(self, tensor: torch.Tensor, input_grid: Sequence[int], lead: int = 1, checked: bool = True) -> torch.Tensor:
        """``tensor`` (lead dims, *output) as (lead dims, C, *grid) through the layout;
        ``checked=False`` for a tensor shaped as an output already checked (its gradients)."""
        layout = self.layout if checked or not isinstance(self.layout, ChannelsFirst) else ChannelsFirst()
        return layout.grid(tensor, input_grid, lead, self.name)


def unwrap(model: nn.Module) -> nn.Module:
    """The module a ``torch.compile`` wrapper holds (hooks and modes need the eager module)."""
    original = getattr(model, "_orig_mod", None)
    return original if isinstance(original, nn.Module) else model


def resolve_layer(model: nn.Module, layer: str | nn.Module) -> tuple[str, nn.Module]:
    """Return ``(name, module)`` for a dotted name or a submodule object of ``model``."""
    if isinstance(layer, str):
        modules = model_facts(model).by_name
        name = layer[len(ORIGINAL):] if layer.startswith(ORIGINAL) and layer not in modules else layer
        if name in modules:
            return name, modules[name]
        close = difflib.get_close_matches(layer, [n for n in modules if n], n=5, cutoff=0.5)
        hint = f" Closest names: {', '.join(close)}." if close else ""
        raise LayerNotFoundError(
            f"the model has no layer named '{layer}'.{hint} "
            "List the names with [n for n, _ in model.named_modules()]."
        )
    if isinstance(layer, nn.Module):
        found = model_facts(model).names.get(layer)
        if found is not None:
            return found, layer
        raise LayerNotFoundError(
            f"the {type(layer).__name__} module given as layer is not a submodule of the "
            "model; pass one of model.modules() or its dotted name"
        )
    raise LayerNotFoundError(
        f"layer must be a dotted module name, a submodule, a (layer, layout) pair or None, not {type(layer).__name__}"
    )


def layer_choices(model: nn.Module, layer: Any) -> list[LayerChoice] | None:
    """The layers named by ``layer``: one, a (layer, layout) pair, or a list of either; None to probe."""
    if layer is None:
        return None
    specs = list(layer) if isinstance(layer, list) else [layer]
    if not specs:
        raise LayerError("layer=[] names no layer; give at least one, or None to choose")
    choices = []
    for spec in specs:
        named, layout = spec if isinstance(spec, tuple) else (spec, None)
        if layout is not None and not isinstance(layout, Layout):
            raise LayerError(f"a (layer, layout) pair needs a layout such as TokenGrid() or ChannelsLast(), "
                             f"not {layout!r}")
        name, module = resolve_layer(model, named)
        if layout is None:  # checked to be channels first; the module may vouch for it
            layout = ChannelsFirst(checked=True, known=layout_hint(model, module) == "first")
        layout = stated(layout, model)  # TokenGrid(): the prefix the model states, where it states one
        choices.append(LayerChoice(name, module, layout))
    if len({c.name for c in choices}) != len(choices):
        raise LayerError("the same layer is named twice in layer=[...]")
    return choices


_FIRST = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d,
          nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.modules.instancenorm._InstanceNorm,
          nn.modules.pooling._MaxPoolNd, nn.modules.pooling._AvgPoolNd)
_LAST = (nn.LayerNorm, nn.Linear, nn.MultiheadAttention, nn.TransformerEncoderLayer, nn.TransformerDecoderLayer)
_PASS_ON = (nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout,
            torch.ao.quantization.FakeQuantizeBase, torch.ao.quantization.ObserverBase)  # the layout is the previous module's


def _passes_on(module: nn.Module) -> bool:
    """Modules whose output keeps its input's shape and layout: every activation of torch.nn
    (PReLU, Softplus, Softmax over channels ...) but attention and GLU, dropout, quantisation stubs."""
    if isinstance(module, _PASS_ON):
        return True
    return type(module).__module__ == "torch.nn.modules.activation" and not isinstance(module, (nn.MultiheadAttention,
                                                                                                nn.GLU))


def layout_hint(model: nn.Module, module: nn.Module) -> str | None:
    """What the module that made a layer's output says of its layout: 'first' for convolutions,
    pooling and batch/group/instance norms, 'last' for layer norms, linear layers and attention
    blocks; a container by its last leaf, an activation by the module before it; else None."""
    parents = model_facts(model).parents
    for _ in range(64):  # bounded walk
        if isinstance(module, _FIRST):
            return "first"
        if isinstance(module, _LAST):
            return "last"
        if _passes_on(module):
            parent = parents.get(module)
            siblings = list(parent.children()) if isinstance(parent, nn.Sequential) else []
            if module not in siblings or siblings.index(module) == 0:
                return None
            module = siblings[siblings.index(module) - 1]
            continue
        children = list(module.children())
        if not children:
            return None
        module = children[-1]
    return None


def detect_layout(output: Any, input_grid: Sequence[int], batch: int, hint: str | None = None,
                  tokens: TokenGrid = TokenGrid()) -> Layout | None:
    """The layout under which ``output`` is a per-sample grid lined up with the input, or None;
    where its shape alone allows several readings, the producing module's ``hint`` decides, and
    without one the output is not used."""
    if not isinstance(output, torch.Tensor) or output.dim() < 2 or output.shape[0] != batch:
        return None
    rank, shape = len(input_grid), tuple(output.shape[1:])
    hint = hint or history_hint(output)
    if hint == "first" and output.dim() == rank + 2:
        return ChannelsFirst(checked=True, known=True)  # a map whatever its per-axis strides
    readings: list[Layout] = []
    if output.dim() == rank + 2 and aligned(shape[1:], input_grid):
        readings.append(ChannelsFirst(checked=True, known=hint == "first"))
    if output.dim() == rank + 2 and aligned(shape[:-1], input_grid):
        readings.append(ChannelsLast())
    if output.dim() == 3 and rank in (1, 2):
        try:
            tokens.resolve(shape[0], input_grid)
            readings.append(tokens)
        except LayerError:
            pass
    if len(readings) == 1:
        return readings[0]
    if len(readings) > 1 and hint is not None:
        wanted = ChannelsFirst if hint == "first" else (TokenGrid if output.dim() == 3 and rank == 1 else ChannelsLast)
        return next((r for r in readings if isinstance(r, wanted)), None)
    return None


# never chosen: pooling that resizes, modules that only pass a tensor on, and projections inside
# a block (a transformer's qkv, an MLP's Linear), whose channels are not the block's features
_NOT_FEATURES = (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d, nn.AdaptiveMaxPool1d,
                 nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d, nn.Upsample, nn.Identity, nn.Dropout, nn.Linear)


@dataclass
class _Candidate:
    module: nn.Module
    output: torch.Tensor
    layout: Layout
    version: int


def choose_layer(model: nn.Module, inputs: ModelInputs, score: Any) -> LayerChoice:
    """Choose the layer by the rule in this module's docstring, from one probe forward (and,
    when ``score`` maps the output to (N,) scores, one backward) of the first sample, twice,
    with the model's own hooks set aside: they see only the explaining forward."""
    names = {module: name for module, name in model_facts(model).names.items() if name}
    backbone = getattr(model, "backbone", None)
    if isinstance(backbone, nn.Module):
        names = {m: n for m, n in names.items() if n.startswith("backbone.")}
    primary = inputs.primary
    input_grid = tuple(primary.shape[2:]) if primary.dim() > 2 else ()
    if not input_grid:
        with torch.no_grad():
            inputs.sample(0).run(model)  # an input that is no batch at all is the first thing to report
        raise LayerError("inputs (N, D) have no grid to map a layer onto; give the layer, or use an input-gradient "
                         "method such as GuidedBackprop")
    tokens = token_layout(model)
    probe_input = torch.cat([primary[:1], primary[:1]]).requires_grad_(True)
    probe = inputs.sample(0).with_primary(probe_input)
    candidates: list[_Candidate] = []
    calls: dict[nn.Module, int] = {}

    def hook(module: nn.Module, _inputs: tuple, output: Any) -> None:
        calls[module] = calls.get(module, 0) + 1
        if isinstance(module, _NOT_FEATURES):
            return
        layout = detect_layout(output, input_grid, 2, layout_hint(model, module), tokens)
        if layout is not None:
            candidates.append(_Candidate(module, output, layout, output._version))

    # the user's hooks see the explaining forward only, and what the probe wrote is undone before it
    with probing(model), hooks_set_aside(model_facts(model).modules):
        with torch.enable_grad(), forward_hooks(names, hook):
            output = probe.run(model)
        usable = [c for c in candidates if calls[c.module] == 1]
        if usable and len(inputs.args) + len(inputs.kwargs) > 1:  # another input's layers explain nothing of this one
            usable = _moved(model, probe, usable)
        if not usable:
            raise LayerError(
                "no layer of the model gives a per-sample grid lined up with the attributed input and computed from "
                "it; pass layer=... naming one, with its layout if it is not channels first (TokenGrid(), "
                "ChannelsLast())"
            )
        depends = _depending(usable, output, score, input_grid)
    kept = [c for c, positions in zip(usable, depends)
            if positions > 1 or (positions < 0 and _positions(c, input_grid) > 1)] or usable
    chosen = kept[-1]
    same = [c for c in kept if c.output is chosen.output and c.version == chosen.version
            and not list(c.module.children())]
    chosen = same[-1] if same else chosen
    return LayerChoice(names[chosen.module], chosen.module, chosen.layout)


def _moved(model: nn.Module, probe: ModelInputs, candidates: list[_Candidate]) -> list[_Candidate]:
    """The candidates whose outputs change when the attributed input does (one more probe
    forward with other values there): a layer of another input's branch explains nothing of
    this one. By value, not by autograd graph: a branch may read its input detached."""
    primary = probe.primary
    other = torch.randn(primary.shape, generator=torch.Generator(device=primary.device).manual_seed(0),
                        device=primary.device, dtype=torch.float32).to(primary.dtype)
    seen: dict[nn.Module, Any] = {}

    def hook(module: nn.Module, _inputs: tuple, output: Any) -> None:
        seen.setdefault(module, output)

    with torch.no_grad(), forward_hooks([c.module for c in candidates], hook):
        probe.with_primary(other).run(model)
    return [c for c in candidates if not (isinstance(seen.get(c.module), torch.Tensor)
                                          and seen[c.module].shape == c.output.shape
                                          and torch.equal(seen[c.module], c.output.detach()))]


def _positions(candidate: _Candidate, input_grid: tuple[int, ...]) -> int:
    return math.prod(candidate.layout.grid(candidate.output, input_grid).shape[2:])


def _depending(candidates: list[_Candidate], output: Any, score: Any, input_grid: tuple[int, ...]) -> list[int]:
    """For each candidate, how many grid positions the top score depends on (-1: unknown)."""
    try:
        scores = score(output)
    except Exception:  # a detection or segmentation output: no class score to follow
        return [-1] * len(candidates)
    if not scores.requires_grad:
        return [-1] * len(candidates)
    tracked = [c for c in candidates if c.output.requires_grad]  # not: made with gradients off
    with backward_errors_refused():
        found = dict(zip(map(id, tracked), torch.autograd.grad(scores.sum(), [c.output for c in tracked],
                                                               allow_unused=True))) if tracked else {}
    counts = []
    for candidate in candidates:
        gradient = found.get(id(candidate))
        if gradient is None:
            counts.append(0)
            continue
        grid = candidate.layout.grid(gradient, input_grid)
        counts.append(int((grid.abs().sum(dim=(0, 1)) > 0).sum()))
    return counts
