"""Feature masks for the perturbation explainers: which positions of the input's grid are
switched on and off together.

A feature mask is an integer tensor (N, *grid) of feature ids 0..F-1 per image; every channel
of a position belongs to its feature. It is given by the user, or made here: a regular grid of
about ``segments`` cells, or superpixels (SLIC, Achanta et al. 2012) on any 1-D to 3-D grid and
any number of channels. interpkit's SLIC is a small torch one, so segmentation stays batched on
the model's device with no extra dependency (scikit-image's works on one CPU image at a time):
k-means over the standardised channel values and the positions scaled by ``compactness`` per
grid step, from cell-centred seeds, assigning every position to its nearest centre (dense, not
windowed). Unlike scikit-image it does not merge a superpixel's disconnected pieces; a feature
may then be more than one region.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from ..core import (
    BaselineLike,
    Call,
    Explainer,
    Explanation,
    MapKind,
    TargetSelection,
    check_int,
    check_number,
    check_reference,
    check_sizes,
    reference,
)
from ..errors import InputError
from .perturbation import clean_targets, perturbed_scores


def feature_mask(x: torch.Tensor, features: str | torch.Tensor | None, segments: int,
                 compactness: float = 1.0) -> tuple[torch.Tensor, list[int]]:
    """The feature ids (N, *grid) of a batch ``x`` (N, C, *grid), numbered 0..F_n-1 per image in
    the order of the given ids, and each image's feature count F_n. ``features`` is
    "superpixels", "grid", an integer tensor broadcastable to (N, *grid) (or to (N, 1, *grid)),
    or None: superpixels."""
    if isinstance(features, torch.Tensor):
        labels = _given(features, x)
    elif features is None or features == "superpixels":
        labels = superpixels(x, segments, compactness)
    elif features == "grid":
        labels = grid_cells(x.shape[2:], segments, x.device)[0].expand(len(x), *x.shape[2:])
    else:
        raise InputError(f"features must be 'superpixels', 'grid' or an integer tensor of feature ids, not {features!r}")
    return _renumbered(labels)


def _given(mask: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    if mask.dtype.is_floating_point or mask.dtype.is_complex or mask.dtype == torch.bool:
        raise InputError(f"a feature mask holds integer feature ids, not {mask.dtype}")
    if mask.dim() == x.dim():  # (N or 1, 1, *grid): captum's layout, every channel alike
        if mask.shape[1] != 1:
            raise InputError(f"a feature mask gives one id per grid position for every channel; its channel axis has "
                             f"{mask.shape[1]} entries, give 1 (shape {(1, 1, *x.shape[2:])})")
        mask = mask[:, 0]
    try:
        labels = mask.to(device=x.device, dtype=torch.long).expand(len(x), *x.shape[2:])
    except RuntimeError as error:
        raise InputError(f"feature mask of shape {tuple(mask.shape)} does not broadcast to the batch's grid "
                         f"{(len(x), *x.shape[2:])}") from error
    if labels.numel() == 0:
        raise InputError("the feature mask is empty")
    return labels


def _renumbered(labels: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
    """Ids renumbered 0..F_n-1 per image, keeping their order, and the counts F_n: gaps in the
    ids cost nothing, and an image's features do not depend on the others' ids."""
    flat = labels.flatten(1)
    ordered, order = flat.sort(dim=1)
    new = torch.zeros_like(ordered)
    new[:, 1:] = (ordered.diff(dim=1) != 0).cumsum(dim=1)
    facts = torch.cat([new[:, -1] + 1, ordered[:, 0]]).tolist()  # one host read: the counts and the smallest ids
    if min(facts[len(flat):]) < 0:
        raise InputError(f"feature ids must be 0 or more, the mask holds {min(facts[len(flat):])}")
    return torch.empty_like(flat).scatter_(1, order, new).view_as(labels), facts[:len(flat)]


def grid_cells(grid: tuple[int, ...] | torch.Size, segments: int, device: torch.device | str = "cpu"
               ) -> tuple[torch.Tensor, int]:
    """A regular grid of about ``segments`` cells over ``grid``, the same number per axis
    where the grid allows it: feature ids (*grid) in row-major order of the cells, and their count."""
    check_int("segments", segments)
    grid = check_sizes("grid", grid)
    per_axis = _cells_per_axis(grid, segments)
    ids = torch.zeros((), dtype=torch.long, device=device)
    for axis, (size, cells) in enumerate(zip(grid, per_axis)):
        cell = torch.arange(size, device=device) * cells // size
        ids = ids.unsqueeze(-1) * cells + cell.view(*([1] * axis), size)
    return ids, math.prod(per_axis)


def superpixels(x: torch.Tensor, segments: int = 50, compactness: float = 1.0, iterations: int = 10) -> torch.Tensor:
    """SLIC superpixels (N, *grid) of a batch (N, C, *grid), about ``segments`` per image: each
    image's segmentation depends on that image only. ``compactness`` weighs one grid step
    between seeds against one standard deviation of the image's values."""
    check_int("segments", segments)
    check_number("compactness", compactness)
    check_int("iterations", iterations, minimum=0)
    if x.dim() < 3 or x.dim() > 5:
        raise InputError(f"superpixels segment a 1-D to 3-D grid (N, C, *grid), not inputs {tuple(x.shape)}")
    grid = tuple(x.shape[2:])
    per_axis = _cells_per_axis(grid, segments)
    step = (math.prod(grid) / math.prod(per_axis)) ** (1 / len(grid))
    values = x.detach().float().flatten(2).transpose(1, 2)  # (N, P, C)
    spread = values.flatten(1).std(dim=1, correction=0).clamp_min(1e-12)
    values = (values - values.mean(dim=(1, 2), keepdim=True)) / spread[:, None, None]
    axes = [torch.arange(n, device=x.device, dtype=torch.float32) for n in grid]
    positions = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).view(-1, len(grid))
    points = torch.cat([values, (positions * compactness / step).expand(len(x), -1, -1)], dim=2)  # (N, P, C + d)
    seeds = grid_cells(grid, segments, x.device)[0].flatten()  # each position's cell; seeds start at cell means
    centres = _means(points, seeds.expand(len(x), -1), math.prod(per_axis), points.new_zeros(0))
    for _ in range(iterations):
        labels = _nearest(points, centres)
        centres = _means(points, labels, len(centres[0]), centres)
    return _nearest(points, centres).view(len(x), *grid)


def _nearest(points: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """Each point's nearest centre (N, P) by squared Euclidean distance."""
    distances = (centres * centres).sum(-1).unsqueeze(1) - 2 * points @ centres.transpose(1, 2)
    return distances.argmin(dim=2)


def _means(points: torch.Tensor, labels: torch.Tensor, count: int, previous: torch.Tensor) -> torch.Tensor:
    """The mean point (N, count, D) of each label; an empty label keeps its ``previous`` centre."""
    n, _, d = points.shape
    sums = points.new_zeros(n, count, d).scatter_add_(1, labels.unsqueeze(-1).expand(-1, -1, d), points)
    sizes = points.new_zeros(n, count).scatter_add_(1, labels, points.new_ones(labels.shape))
    means = sums / sizes.clamp_min(1).unsqueeze(-1)
    return means if previous.numel() == 0 else torch.where(sizes.unsqueeze(-1) > 0, means, previous)


def _cells_per_axis(grid: tuple[int, ...], segments: int) -> tuple[int, ...]:
    """Cells per axis, about ``segments`` in all, of about equal extent along every axis."""
    step = (math.prod(grid) / segments) ** (1 / len(grid))
    return tuple(max(1, min(n, round(n / step))) for n in grid)


def spread(values: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-feature values (N, K, F) laid out on the grid (N, K, *grid): each position gets its
    feature's value."""
    n, k = values.shape[:2]
    index = labels.reshape(n, 1, -1).expand(n, k, -1)
    return values.gather(2, index).view(n, k, *labels.shape[1:])


def with_features(x: torch.Tensor, baseline: torch.Tensor, labels: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """Copies (m, N, C, *grid) of the batch with the features of each coalition row of
    ``present`` kept and the others set to ``baseline`` (C, *grid); ``present`` is (m, F), the
    same for every image, or (m, N, F), one row per image."""
    m, n = len(present), len(x)
    rows = present.unsqueeze(1).expand(m, n, -1) if present.dim() == 2 else present
    keep = rows.gather(2, labels.reshape(1, n, -1).expand(m, -1, -1)).view(m, n, 1, *labels.shape[1:])
    return torch.where(keep, x.unsqueeze(0), baseline)


def per_image(draw: Callable[[int, torch.Generator], torch.Tensor], counts: list[int], seed: int,
              device: torch.device, fill: Any = False) -> torch.Tensor:
    """Each image's random draw (S, N, F), padded with ``fill`` to the largest count F: ``draw(F_n,
    generator)`` gives (S, F_n) from a generator seeded with ``seed``, so an image draws the same
    whatever its batch."""
    drawn = {c: draw(c, torch.Generator(device=device).manual_seed(seed)) for c in sorted(set(counts))}
    rows = len(next(iter(drawn.values())))
    out = torch.full((rows, len(counts), max(counts)), fill, dtype=next(iter(drawn.values())).dtype, device=device)
    for image, c in enumerate(counts):
        out[:, image, :c] = drawn[c]
    return out


class FeatureExplainer(Explainer):
    """Base of the explainers that switch features of the input on and off: each computes per
    feature values (N, K, F) in ``attribute``; the map gives every position its feature's value.
    Inputs (N, D) without a grid are tabular: by default each column is a feature. A switched-off
    feature takes ``baseline``'s values: a finite number, a tensor broadcastable to one sample or
    one per sample, or a callable of the inputs returning either."""

    supports = frozenset({"1d", "2d", "3d", "tokens", "several_inputs"})

    def __init__(self, model: nn.Module, features: str | torch.Tensor | None = None, segments: int = 50,
                 baseline: BaselineLike = 0.0, max_batch: int = 64) -> None:
        super().__init__(model)
        if isinstance(features, np.ndarray):
            features = torch.from_numpy(features)
        if not (features is None or isinstance(features, torch.Tensor) or features in ("superpixels", "grid")):
            raise InputError(f"features must be 'superpixels', 'grid' or an integer tensor of feature ids, "
                             f"not {features!r}")
        self.features, self.segments = features, check_int("segments", segments)
        self.baseline, self.max_batch = check_reference(baseline), check_int("max_batch", max_batch)

    def explain(self, call: Call) -> Explanation:
        x, features = call.x, self.features
        if x.dim() < 2:
            raise InputError(f"{self.name} switches features of a batch (N, ...) on and off: inputs {tuple(x.shape)}")
        tabular = x.dim() == 2
        grid_x = x.unsqueeze(1) if tabular else x  # (N, C, *grid)
        if features is None and tabular:
            features = torch.arange(x.shape[1], device=x.device)
        elif isinstance(features, torch.Tensor) and features.dim() > max(3, x.dim()) - 2:  # (N, *grid), (N, 1, *grid)
            features = call.per_sample(features)  # a mask per image: for the call's rows
        labels, counts = feature_mask(grid_x, features, self.segments)
        selection, wanted = clean_targets(self, call, self.name)
        baseline = reference(self.baseline, call)  # (1 or N, C, *grid)
        baseline = baseline.unsqueeze(1) if tabular else baseline

        def copies(present: torch.Tensor) -> torch.Tensor:
            made = with_features(grid_x, baseline, labels, present)
            return made.squeeze(2) if tabular else made

        values = self.attribute(call, wanted, selection, copies, counts)
        return self.result(spread(values, labels), selection, MapKind.INPUT_GRID)

    def attribute(self, call: Call, wanted: Any, selection: TargetSelection,
                  copies: Callable[[torch.Tensor], torch.Tensor], counts: list[int]) -> torch.Tensor:
        """Per-feature values (N, K, F), F the largest of the images' feature counts ``counts``;
        ``copies(present)`` makes the batch's copies for coalition rows ``present``, (m, F) or
        (m, N, F), of kept features."""
        raise NotImplementedError

    def scores(self, call: Call, wanted: Any, rows: int, coalitions: Callable[[int, int], torch.Tensor],
               copies: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """The target scores (rows, N, K) of the copies for coalition rows ``coalitions(first, stop)``."""
        return perturbed_scores(self.model, call, wanted, rows, lambda a, b: copies(coalitions(a, b)), self.max_batch)
