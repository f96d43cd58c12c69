"""What a feature visualisation maximises: one score per optimised image, read from layers.

An ``Objective`` reads the activations of some layers (as channels-first grids, whatever the
layer's layout) or the model's class scores, and gives each image of the batch its score. The
constructors that take a sequence of units (``channel(layer, range(64))``) define one image per
unit, so many units are optimised as one batch; objectives add, subtract and scale, and a term
of one image applies to every image. Scores are maximised: ``channel(...) + 100 * diversity(...)``
(lucent writes the same objective as ``channel - 1e2 * diversity``, its terms being losses).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import torch
import torch.nn.functional as F

from ..errors import InputError

#: the key under which an objective reads the model's (N, classes) scores rather than a layer
OUTPUT = "<output>"

Activations = Mapping[Any, torch.Tensor]  # layer spec (or OUTPUT) -> (N, C, *grid), or (N, classes)
Score = Callable[[Activations, torch.Tensor], torch.Tensor]  # (activations, image indices) -> (N,)


@dataclass(frozen=True)
class Objective:
    """A score per image to maximise. ``reads`` are the layer specs (a name, a module or a
    ``(layer, layout)`` pair) and ``OUTPUT`` it needs; ``images`` is how many images it defines
    (None: it fits any batch, as a term of one unit does); ``score(activations, rows)`` gives the
    scores of the images numbered ``rows`` (a slice of the whole set is optimised at a time);
    ``labels`` name each image's units; ``couples`` marks a term whose images depend on each
    other (diversity), which must be optimised in one batch."""

    reads: tuple[Any, ...]
    images: int | None
    score: Score
    labels: tuple[str, ...]
    couples: bool = False

    def label(self, row: int) -> str:
        """What image ``row`` shows."""
        return self.labels[row] if len(self.labels) > 1 else self.labels[0]

    def __add__(self, other: Any) -> "Objective":
        if isinstance(other, numbers.Number) and not isinstance(other, bool) and other == 0:
            return self  # sum([...]) starts from 0
        if not isinstance(other, Objective):
            raise InputError(f"objectives add to objectives (a constant changes no image), not {other!r}")
        images = _common_images(self, other)
        count = images or 1

        def score(activations: Activations, rows: torch.Tensor) -> torch.Tensor:
            return self.score(activations, rows) + other.score(activations, rows)

        labels = tuple(f"{self.label(i)} + {other.label(i)}" for i in range(count))
        return Objective(tuple(dict.fromkeys(self.reads + other.reads)), images, score, labels,
                         self.couples or other.couples)

    __radd__ = __add__

    def __mul__(self, weight: Any) -> "Objective":
        factor = _weight(weight)

        def score(activations: Activations, rows: torch.Tensor) -> torch.Tensor:
            return factor * self.score(activations, rows)

        return Objective(self.reads, self.images, score, tuple(f"{factor:g}·({label})" for label in self.labels),
                         self.couples)

    __rmul__ = __mul__

    def __neg__(self) -> "Objective":
        return self * -1.0

    def __sub__(self, other: Any) -> "Objective":
        if not isinstance(other, Objective):
            raise InputError(f"objectives subtract objectives (a constant changes no image), not {other!r}")
        return self + (-other)

    def __truediv__(self, weight: Any) -> "Objective":
        divisor = _weight(weight)
        if divisor == 0:
            raise InputError("an objective divided by 0 has no score")
        return self * (1.0 / divisor)


def _weight(value: Any) -> float:
    """A finite real weight (a one-element tensor too), or an InputError."""
    if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.dtype.is_complex:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise InputError(f"an objective is scaled by a finite number, not {value!r}")
    return float(value)


def _common_images(a: Objective, b: Objective) -> int | None:
    if a.images is not None and b.images is not None and a.images != b.images:
        raise InputError(f"objectives of {a.images} and {b.images} images cannot be combined: each term gives one "
                         "unit for every image, or a single unit for all of them")
    return a.images if a.images is not None else b.images


def _units(name: str, value: Any) -> list[int]:
    """An int, or a non-empty sequence (a range) of non-negative ints."""
    values = [value] if isinstance(value, numbers.Integral) and not isinstance(value, bool) else value
    if isinstance(values, torch.Tensor):
        values = values.tolist()
    try:
        values = list(values)
    except TypeError:
        raise InputError(f"{name} must be an int or a sequence of ints, got {value!r}") from None
    if not values or any(isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 0 for v in values):
        raise InputError(f"{name} must be a non-negative int or a non-empty sequence of them, got {value!r}")
    return [int(v) for v in values]


def _layer_name(layer: Any) -> str:
    named = layer[0] if isinstance(layer, tuple) else layer
    return named if isinstance(named, str) else type(named).__name__


def _check_layer(layer: Any) -> Any:
    named = layer[0] if isinstance(layer, tuple) and len(layer) == 2 else layer
    if not isinstance(named, (str, torch.nn.Module)):
        raise InputError(f"a layer is a dotted name, a module or a (layer, layout) pair, not {layer!r}")
    return layer


def _pick(values: list[int], rows: torch.Tensor, device: torch.device) -> torch.Tensor:
    """The unit of each image numbered ``rows`` (one unit: the same for all)."""
    table = torch.tensor(values, device=device)
    return table[rows] if len(values) > 1 else table.expand(len(rows))


def _check_units(units: list[int], available: int, what: str, layer: Any) -> None:
    if max(units) >= available:
        raise InputError(f"{what} {max(units)} of layer '{_layer_name(layer)}' does not exist: it has {available}")


def channel(layer: Any, index: int | Sequence[int]) -> Objective:
    """The mean activation of channel ``index`` over the layer's positions (lucent's
    ``channel``); a sequence of channels defines one image each."""
    layer, units = _check_layer(layer), _units("channel", index)

    def score(activations: Activations, rows: torch.Tensor) -> torch.Tensor:
        grid = activations[layer]
        _check_units(units, grid.shape[1], "channel", layer)
        chosen = grid[torch.arange(len(rows), device=grid.device), _pick(units, rows, grid.device)]
        return chosen.flatten(1).mean(dim=1)

    return Objective((layer,), len(units) if len(units) > 1 else None, score,
                     tuple(f"{_layer_name(layer)}:{u}" for u in units))


def neuron(layer: Any, index: int | Sequence[int], position: Sequence[int] | None = None) -> Objective:
    """The activation of channel ``index`` at one grid ``position`` (a tuple of the grid's
    rank; default its centre, each size // 2, as lucent's ``neuron``)."""
    layer, units = _check_layer(layer), _units("neuron", index)
    if position is not None and not isinstance(position, (tuple, list)):
        raise InputError(f"position is a tuple of grid indices, one per dimension, got {position!r}")
    at = None if position is None else tuple(_units("position", list(position)))

    def score(activations: Activations, rows: torch.Tensor) -> torch.Tensor:
        grid = activations[layer]
        _check_units(units, grid.shape[1], "channel", layer)
        shape = tuple(grid.shape[2:])
        where = tuple(s // 2 for s in shape) if at is None else at
        if len(where) != len(shape) or any(p >= s for p, s in zip(where, shape)):
            raise InputError(f"position {where} is not on the grid {shape} of layer '{_layer_name(layer)}'")
        chosen = grid[torch.arange(len(rows), device=grid.device), _pick(units, rows, grid.device)]
        return chosen.flatten(1)[:, sum(p * math.prod(shape[d + 1:]) for d, p in enumerate(where))]

    return Objective((layer,), len(units) if len(units) > 1 else None, score,
                     tuple(f"{_layer_name(layer)}:{u}@{'centre' if at is None else at}" for u in units))


def direction(layer: Any, vector: torch.Tensor) -> Objective:
    """The cosine similarity of the activation vector at each position with ``vector`` (C,),
    averaged over positions (lucent's ``direction``); ``vector`` (K, C) defines K images."""
    if not isinstance(vector, torch.Tensor) or vector.dim() not in (1, 2) or not vector.is_floating_point():
        raise InputError("direction needs a floating tensor of shape (C,) or (K, C)")
    if not bool(torch.isfinite(vector).all()) or bool((vector.reshape(-1, vector.shape[-1]).norm(dim=1) == 0).any()):
        raise InputError("a direction must be finite and non-zero")
    layer, vectors = _check_layer(layer), vector.detach().reshape(-1, vector.shape[-1])

    def score(activations: Activations, rows: torch.Tensor) -> torch.Tensor:
        grid = activations[layer]
        if grid.shape[1] != vectors.shape[1]:
            raise InputError(f"the direction has {vectors.shape[1]} channels; layer '{_layer_name(layer)}' has "
                             f"{grid.shape[1]}")
        chosen = vectors.to(grid)[rows if len(vectors) > 1 else torch.zeros_like(rows)]
        chosen = chosen.reshape(*chosen.shape, *([1] * (grid.dim() - 2)))
        return F.cosine_similarity(grid, chosen, dim=1).flatten(1).mean(dim=1)

    return Objective((layer,), len(vectors) if len(vectors) > 1 else None, score,
                     tuple(f"{_layer_name(layer)}:direction {k}" for k in range(len(vectors))))


def class_logit(index: int | Sequence[int]) -> Objective:
    """The model's score (logit) for class ``index``; a sequence of classes defines one image each."""
    units = _units("class", index)

    def score(activations: Activations, rows: torch.Tensor) -> torch.Tensor:
        logits = activations[OUTPUT]
        if max(units) >= logits.shape[1]:
            raise InputError(f"class {max(units)} does not exist: the model gives {logits.shape[1]} scores")
        return logits[torch.arange(len(rows), device=logits.device), _pick(units, rows, logits.device)]

    return Objective((OUTPUT,), len(units) if len(units) > 1 else None, score, tuple(f"class {u}" for u in units))


def diversity(layer: Any) -> Objective:
    """Lucent's diversity term: minus the cosine similarity of each image's Gram matrix of
    ``layer`` (channels x channels over positions) with every other image's, summed over the
    other images and divided by the batch size; the terms sum to lucent's ``diversity`` value.
    It couples the images of a batch, so they are optimised together, two or more."""
    layer = _check_layer(layer)

    def score(activations: Activations, rows: torch.Tensor) -> torch.Tensor:
        grid = activations[layer]
        n = len(grid)
        if n < 2:
            raise InputError("diversity compares the images of a batch: optimise at least two (images=2 or more)")
        flat = grid.flatten(2)
        grams = F.normalize((flat @ flat.transpose(1, 2)).flatten(1), dim=1)
        similarity = grams @ grams.T
        return -(similarity.sum(dim=1) - similarity.diagonal()) / n

    return Objective((layer,), None, score, (f"diversity({_layer_name(layer)})",), couples=True)
