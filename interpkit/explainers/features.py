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

import torch
import torch.nn.functional as F
from torch import nn

from ..core import Call, Explainer, Explanation, MapKind, check_baseline, check_int
from ..core.targets import TargetSelection
from ..errors import InputError
from .perturbation import baseline_like, clean_targets, perturbed_scores


def feature_mask(x: torch.Tensor, features: str | torch.Tensor | None, segments: int,
                 compactness: float = 1.0) -> tuple[torch.Tensor, int]:
    """The feature ids (N, *grid) of a batch ``x`` (N, C, *grid) and the feature count F.
    ``features`` is "superpixels", "grid", an integer tensor broadcastable to (N, *grid) (or
    to (N, 1, *grid)), or None: superpixels for inputs with a grid."""
    if isinstance(features, torch.Tensor):
        return _given(features, x)
    if features in (None, "superpixels"):
        return superpixels(x, segments, compactness), _seed_count(x.shape[2:], segments)
    if features == "grid":
        labels, count = grid_cells(x.shape[2:], segments, x.device)
        return labels.expand(len(x), *labels.shape), count
    raise InputError(f"features must be 'superpixels', 'grid' or an integer tensor of feature ids, not {features!r}")


def _given(mask: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, int]:
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
    low, high = labels.aminmax()
    if int(low) < 0:  # one host read of the mask's range per call
        raise InputError(f"feature ids must be 0 or more, the mask holds {int(low)}")
    return labels, int(high) + 1


def grid_cells(grid: tuple[int, ...] | torch.Size, segments: int, device: torch.device | str = "cpu"
               ) -> tuple[torch.Tensor, int]:
    """A regular grid of about ``segments`` cells over ``grid``, the same number per axis
    where the grid allows it: feature ids (*grid) in row-major order of the cells, and their count."""
    per_axis = _cells_per_axis(tuple(grid), segments)
    ids = torch.zeros((), dtype=torch.long, device=device)
    for axis, (size, cells) in enumerate(zip(grid, per_axis)):
        cell = torch.arange(size, device=device) * cells // size
        ids = ids.unsqueeze(-1) * cells + cell.view(*([1] * axis), size)
    return ids, math.prod(per_axis)


def superpixels(x: torch.Tensor, segments: int = 50, compactness: float = 1.0, iterations: int = 10) -> torch.Tensor:
    """SLIC superpixels (N, *grid) of a batch (N, C, *grid), about ``segments`` per image: each
    image's segmentation depends on that image only. ``compactness`` weighs one grid step
    between seeds against one standard deviation of the image's values."""
    if x.dim() < 3 or x.dim() > 5:
        raise InputError(f"superpixels segment a 1-D to 3-D grid (N, C, *grid), not inputs {tuple(x.shape)}")
    grid = tuple(x.shape[2:])
    per_axis = _cells_per_axis(grid, segments)
    step = (math.prod(grid) / math.prod(per_axis)) ** (1 / len(grid))
    values = _smoothed(x.detach().float(), step).flatten(2).transpose(1, 2)  # (N, P, C): texture averaged out
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


def _smoothed(x: torch.Tensor, step: float) -> torch.Tensor:
    """``x`` averaged over a window of about a quarter grid step per axis (at least 1), edges replicated."""
    width = max(1, round(step / 4)) // 2 * 2 + 1  # odd, so positions stay aligned
    pool = (F.avg_pool1d, F.avg_pool2d, F.avg_pool3d)[x.dim() - 3]
    padded = F.pad(x, [width // 2] * (2 * (x.dim() - 2)), mode="replicate")
    return pool(padded, width, stride=1)


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


def _seed_count(grid: tuple[int, ...] | torch.Size, segments: int) -> int:
    return math.prod(_cells_per_axis(tuple(grid), segments))


def spread(values: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-feature values (N, K, F) laid out on the grid (N, K, *grid): each position gets its
    feature's value."""
    n, k = values.shape[:2]
    index = labels.reshape(n, 1, -1).expand(n, k, -1)
    return values.gather(2, index).view(n, k, *labels.shape[1:])


def with_features(x: torch.Tensor, baseline: torch.Tensor, labels: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """Copies (m, N, C, *grid) of the batch with the features of each coalition row of
    ``present`` (m, F) kept and the others set to ``baseline`` (C, *grid)."""
    keep = present[:, labels].unsqueeze(2)  # (m, N, 1, *grid)
    return torch.where(keep, x.unsqueeze(0), baseline)


class FeatureExplainer(Explainer):
    """Base of the explainers that switch features of the input on and off: each computes per
    feature values (N, K, F) in ``attribute``; the map gives every position its feature's value.
    Inputs (N, D) without a grid are tabular: by default each column is a feature."""

    supports = frozenset({"1d", "2d", "3d", "tokens", "several_inputs"})

    def __init__(self, model: nn.Module, features: str | torch.Tensor | None = None, segments: int = 50,
                 baseline: float | torch.Tensor = 0.0, max_batch: int = 64) -> None:
        super().__init__(model)
        if not (features is None or isinstance(features, torch.Tensor) or features in ("superpixels", "grid")):
            raise InputError(f"features must be 'superpixels', 'grid' or an integer tensor of feature ids, "
                             f"not {features!r}")
        self.features, self.segments = features, check_int("segments", segments)
        self.baseline, self.max_batch = check_baseline(baseline), check_int("max_batch", max_batch)

    def explain(self, call: Call) -> Explanation:
        x = call.x
        if x.dim() < 2:
            raise InputError(f"{self.name} switches features of a batch (N, ...) on and off: inputs {tuple(x.shape)}")
        tabular = x.dim() == 2
        grid_x = x.unsqueeze(1) if tabular else x  # (N, C, *grid)
        features = self.features
        if features is None and tabular:
            features = torch.arange(x.shape[1], device=x.device)
        labels, count = feature_mask(grid_x, features, self.segments)
        selection, wanted = clean_targets(self, call, self.name)
        baseline = baseline_like(self.baseline, grid_x)

        def copies(present: torch.Tensor) -> torch.Tensor:
            made = with_features(grid_x, baseline, labels, present)
            return made.squeeze(2) if tabular else made

        values = self.attribute(call, wanted, selection, copies, count, grid_x)
        return self.result(spread(values, labels), selection, MapKind.INPUT_GRID)

    def attribute(self, call: Call, wanted: Any, selection: TargetSelection,
                  copies: Callable[[torch.Tensor], torch.Tensor], count: int, x: torch.Tensor) -> torch.Tensor:
        """Per-feature values (N, K, F) for ``count`` features; ``copies(present)`` makes the
        batch's copies for coalition rows ``present`` (m, F) of kept features."""
        raise NotImplementedError

    def scores(self, call: Call, wanted: Any, rows: int, coalitions: Callable[[int, int], torch.Tensor],
               copies: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """The target scores (rows, N, K) of the copies for coalition rows ``coalitions(first, stop)``."""
        return perturbed_scores(self.model, call, wanted, rows, lambda a, b: copies(coalitions(a, b)), self.max_batch)
