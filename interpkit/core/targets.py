"""What is explained: class indices, every class, a callable on the output, or inner neurons.

A target is resolved against one forward pass into a ``TargetSelection``: ``indices``
(N, K) naming what each of the K maps explains and ``scores`` (N, K), the differentiable
values whose gradients the explainers take.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence, Union

import numpy as np
import torch
from torch import nn

from ..errors import ForwardError, TargetError
from .layouts import ChannelsFirst, Layout


@dataclass(frozen=True)
class Neuron:
    """One unit of an inner layer: ``channel`` at ``(y, x)``, or the channel's maximum over its grid.

    ``layer`` is a dotted module name or the module itself; ``layout`` says how its output lies
    (``TokenGrid()``, ``ChannelsLast()``; default channels first), so that ``channel`` is a
    channel and ``(y, x)`` a grid position whatever the layout. Use it as a target of any
    gradient explainer, alone or in a list (one map per neuron).
    """

    layer: Union[str, nn.Module]
    channel: int
    y: int | None = None
    x: int | None = None
    layout: Any = None

    def __post_init__(self) -> None:
        if (self.y is None) != (self.x is None):
            raise TargetError("Neuron needs both y and x, or neither (for the channel's maximum)")
        for name in ("channel", "y", "x"):
            value = getattr(self, name)
            if value is not None and (not _is_index(value) or value < 0):
                raise TargetError(f"Neuron.{name} must be a non-negative int, not {value!r}")
            if value is not None:
                object.__setattr__(self, name, int(value))  # numpy integers become plain ints
        if self.layout is not None and not isinstance(self.layout, Layout):
            raise TargetError(f"Neuron.layout must be a layout such as TokenGrid() or ChannelsLast(), not {self.layout!r}")

    def score(self, activation: torch.Tensor, name: str, input_grid: tuple[int, ...] = (),
              default: Layout | None = None) -> torch.Tensor:
        """The neuron's value for every sample, shape (N,), read through ``default``: the caller's
        resolution of the neuron's own layout (an automatic ``TokenGrid()`` as the model states it)
        or, without one, a checked channels-first reading."""
        if not isinstance(activation, torch.Tensor) or activation.dim() < 2:
            raise TargetError(f"layer '{name}' has no (N, C, ...) tensor output to pick a neuron from")
        layout = default if self.layout is not None and default is not None else self.layout  # as the model states
        if layout is None and activation.dim() > 2 and input_grid:
            layout = default or ChannelsFirst(checked=True)  # a grid must provably be channels first
        if layout is not None:
            activation = layout.grid(activation, input_grid, 1, name)
        if self.channel >= activation.shape[1]:
            raise TargetError(
                f"Neuron channel {self.channel} is out of range: layer '{name}' has "
                f"{activation.shape[1]} channels"
            )
        channel = activation[:, self.channel]
        if self.y is None:  # a dense unit, or the channel's maximum over space
            return channel if channel.dim() == 1 else channel.flatten(1).amax(dim=1)
        assert self.x is not None  # set together with y
        if channel.dim() != 3 or self.y >= channel.shape[1] or self.x >= channel.shape[2]:
            raise TargetError(
                f"Neuron position ({self.y}, {self.x}) is outside layer '{name}' output of "
                f"spatial shape {tuple(channel.shape[1:])}"
            )
        return channel[:, self.y, self.x]


TargetLike = Union[None, int, str, Sequence[int], torch.Tensor, Neuron, Sequence[Neuron], Callable[[Any], torch.Tensor]]


@dataclass
class TargetSelection:
    """The resolved targets of one batch: ``indices`` (N, K) long and ``scores`` (N, K), and
    ``graph_elements``, the elements autograd saved for the backward of the scores (what one
    target's backward works through; 0 when unknown)."""

    indices: torch.Tensor
    scores: torch.Tensor
    graph_elements: int = 0
    #: True when ``indices`` are class indices (False: a callable's columns or Neuron channels)
    classes: bool = True


def _is_index(value: Any) -> bool:
    """An integer index: int, a numpy integer or a 0-d integer tensor, never a bool."""
    if isinstance(value, torch.Tensor):
        return value.dim() == 0 and not (value.is_floating_point() or value.is_complex() or value.dtype == torch.bool)
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def plain_target(target: TargetLike) -> TargetLike:
    """The target forms users have at hand as the plain ones: a 0-d integer tensor (``labels[0]``)
    as its int, and a range or a list of them (``list(labels)``) as a list of ints."""
    if isinstance(target, torch.Tensor) and _is_index(target):
        return int(target)
    if isinstance(target, range) or (isinstance(target, (list, tuple)) and target and all(map(_is_index, target))
                                     and any(isinstance(t, torch.Tensor) for t in target)):
        return [int(t) for t in target]
    return target


def sample_target(target: TargetLike, index: int, batch_size: int) -> TargetLike:
    """The part of ``target`` that concerns sample ``index`` of a batch of ``batch_size``, for
    explaining samples one at a time: per-sample lists and tensors are sliced, the rest kept."""
    if isinstance(target, np.ndarray):
        target = torch.from_numpy(target)
    if isinstance(target, torch.Tensor) and target.dim() >= 1:
        if target.shape[0] != batch_size:
            raise TargetError(f"a target tensor must have shape (N,) or (N, K) with N = {batch_size}, "
                              f"not {tuple(target.shape)}")
        return target[index:index + 1]
    if isinstance(target, (list, tuple)) and not neurons_of(target):
        if len(target) != batch_size:
            raise TargetError(f"got {len(target)} targets for a batch of {batch_size}; give one class index per sample")
        return [target[index]]
    return target


def one_target(target: TargetLike) -> bool:
    """Whether ``target`` surely selects one score per sample, told before the forward without
    reading a value: the predicted class (None), a class index, one per sample (a list, or a
    tensor of up to one axis or of one column) or one Neuron."""
    if target is None or isinstance(target, Neuron) or _is_index(target):
        return True
    if isinstance(target, (torch.Tensor, np.ndarray)):
        return target.ndim <= 1 or (target.ndim == 2 and target.shape[1] == 1)
    return isinstance(target, (list, tuple, range)) and all(map(_is_index, target))


def neurons_of(target: TargetLike) -> list[Neuron]:
    """The Neuron targets in ``target`` (empty for class targets)."""
    if isinstance(target, Neuron):
        return [target]
    if isinstance(target, (list, tuple)) and target and all(isinstance(t, Neuron) for t in target):
        return list(target)
    return []


def select_targets(
    target: TargetLike,
    output: Any,
    batch_size: int,
    neuron_outputs: Mapping[Neuron, tuple[str, torch.Tensor, Layout]] | None = None,
    input_grid: tuple[int, ...] = (),
) -> TargetSelection:
    """Resolve ``target`` against the model ``output`` of a batch of ``batch_size`` inputs."""
    neurons = neurons_of(target)
    if neurons:
        assert neuron_outputs is not None, "the explainer must capture the neurons' layers"
        scores = torch.stack([n.score(neuron_outputs[n][1], neuron_outputs[n][0], input_grid, neuron_outputs[n][2])
                              for n in neurons], 1)
        indices = torch.tensor([n.channel for n in neurons], device=scores.device)
        return TargetSelection(indices.expand(batch_size, -1).contiguous(), scores, classes=False)
    if callable(target) and not isinstance(target, torch.Tensor):
        return _callable_scores(target, output, batch_size)
    first = output[0] if isinstance(output, (tuple, list)) and output else output
    if isinstance(first, torch.Tensor) and first.dim() == 1 and len(first) != batch_size:
        raise ForwardError(f"the model returned {tuple(first.shape)} for a batch of {batch_size}: no row per sample, "
                           "so the inputs were not read as a batch; add the batch dimension (inputs.unsqueeze(0))")
    logits = class_scores(output)
    if len(logits) != batch_size:
        raise ForwardError(f"the model returned class scores {tuple(logits.shape)} for a batch of {batch_size}: no "
                           "row per sample, so the inputs were not read as a batch; add the batch dimension "
                           "(inputs.unsqueeze(0) for one sample), or pass a callable target")
    indices = _class_indices(target, logits, batch_size)
    return TargetSelection(indices, logits.gather(1, indices))


def class_scores(output: Any) -> torch.Tensor:
    """The (N, classes) scores in a model's output: the output itself, its ``logits`` (a mapping
    or a HuggingFace ``ModelOutput``), or the first element of a tuple or list."""
    found = output
    if isinstance(found, Mapping) and "logits" in found:
        found = found["logits"]
    elif isinstance(found, (tuple, list)) and found:
        found = found[0]
    if not isinstance(found, torch.Tensor) or found.dim() != 2:
        kind = type(output).__name__ if not isinstance(found, torch.Tensor) else f"a {found.dim()}-D tensor"
        raise TargetError(
            f"class targets need (N, classes) scores, but the model returns {kind}; pass a "
            "callable target that maps the output to (N,) or (N, K) scores (a pixel region of a "
            "segmentation, a box score of a detector)"
        )
    return found


def _class_indices(target: TargetLike, logits: torch.Tensor, n: int) -> torch.Tensor:
    classes = logits.shape[1]
    device = logits.device
    if target is None:
        return logits.detach().argmax(dim=1, keepdim=True)
    if isinstance(target, str):
        if target != "all":
            raise TargetError(f"unknown target string {target!r}; the only string target is 'all'")
        return torch.arange(classes, device=device).expand(n, -1).contiguous()
    if isinstance(target, (bool, np.bool_)):
        raise TargetError("a bool is not a class index; pass an int, a list of ints or a tensor")
    if isinstance(target, np.ndarray):
        target = torch.from_numpy(target)
    if _is_index(target):
        _check_range([int(target)], classes)  # type: ignore[arg-type]
        return torch.full((n, 1), int(target), dtype=torch.long, device=device)  # type: ignore[arg-type]
    if isinstance(target, (list, tuple)):
        if not all(_is_index(t) for t in target):
            raise TargetError("a list target must hold one int class index per sample (or Neurons)")
        if len(target) != n:
            raise TargetError(
                f"got {len(target)} targets for a batch of {n}; give one class index per sample"
            )
        _check_range([int(t) for t in target], classes)
        return torch.tensor([int(t) for t in target], dtype=torch.long).to(device, non_blocking=True).unsqueeze(1)
    if isinstance(target, torch.Tensor):
        indices = _tensor_indices(target, n)
        # checked where the tensor lies: free on the CPU, the one documented sync for a target tensor on a GPU
        if indices.numel() and bool((indices.min() < 0) | (indices.max() >= classes)):
            _check_range(indices.flatten().tolist(), classes)
        return indices.to(device, non_blocking=True)
    raise TargetError(
        f"unsupported target of type {type(target).__name__}; use None, an int, a list of "
        "ints, 'all', a LongTensor (N,) or (N, K), a callable, or Neuron(s)"
    )


def _check_range(indices: list[int], classes: int) -> None:
    bad = next((i for i in indices if not 0 <= i < classes), None)
    if bad is not None:
        raise TargetError(f"class index {bad} is out of range: the model has {classes} outputs")


def _tensor_indices(target: torch.Tensor, n: int) -> torch.Tensor:
    if target.dtype.is_floating_point or target.dtype.is_complex or target.dtype == torch.bool:
        raise TargetError(f"a target tensor must hold integer class indices, not {target.dtype}")
    if target.dim() not in (1, 2) or target.shape[0] != n or target.shape[-1] == 0:
        raise TargetError(
            f"a target tensor must have shape (N,) or (N, K) with N = {n}, not {tuple(target.shape)}"
        )
    target = target.to(torch.long, copy=True)  # the explanation's own: the user may reuse their tensor
    return target.unsqueeze(1) if target.dim() == 1 else target


def _callable_scores(target: Callable[[Any], torch.Tensor], output: Any, n: int) -> TargetSelection:
    scores = target(output)
    if not isinstance(scores, torch.Tensor) or not scores.dtype.is_floating_point:
        raise TargetError("a target callable must return a floating tensor of shape (N,) or (N, K)")
    if scores.dim() == 1:
        scores = scores.unsqueeze(1)
    if scores.dim() != 2 or scores.shape[0] != n or scores.shape[1] == 0:
        raise TargetError(
            f"a target callable must return (N,) or (N, K) scores with N = {n}, got {tuple(scores.shape)}"
        )
    if not scores.requires_grad and torch.is_grad_enabled():  # no_grad: forward-only explainers
        raise TargetError("the target callable's scores do not depend on the model output; "
                          "compute them from the output without detaching")
    indices = torch.arange(scores.shape[1], device=scores.device).expand(n, -1).contiguous()
    return TargetSelection(indices, scores, classes=False)
