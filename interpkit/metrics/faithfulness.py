"""Faithfulness by setting features to a baseline: pixel flipping (Bach et al., 2015), faithfulness
correlation (Bhatt et al., 2020), faithfulness estimate (Alvarez-Melis and Jaakkola, 2018) and
monotonicity (Arya et al., 2019), as Quantus 0.6 defines them.

A feature is an element of the input (one channel of one position) when the maps have the
input's channels, as Quantus reads every attribution; it is a grid position, all its channels
together, when the maps have one channel (a CAM, a saliency map). Attributions keep their sign
(the metrics that take absolute values say so); each metric depends only on their order or is
invariant to their scale, so Quantus' normalisation by the maximum changes nothing. Perturbed
copies are built on the device and scored in batches of ``max_batch``.
"""

from __future__ import annotations

from typing import Any, Callable, ClassVar

import torch
from torch import nn

from ..core import Explanation, check_baseline, check_int, check_number, check_seed
from ..errors import InputError
from .base import Metric, MetricResult, TargetScores, chunks, one_map_per_sample
from .sanity import _ranks

Baseline = Any  # "black", "white", "mean", a number, or a tensor broadcastable to one input
DEFAULT_SUBSET = 224  # Quantus' subset size
DEFAULT_STEPS = 100  # without features_in_step: Quantus' 1 costs one forward per feature (150,528 at 224 px RGB)


def feature_attributions(maps: Explanation | torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
    """The attributions as (N, F) signed values: F = C x positions when the maps have the inputs'
    C channels, else F = positions (maps (N, *grid) or (N, 1, *grid))."""
    tensor = one_map_per_sample(maps)
    if tensor.dim() == inputs.dim() - 1:
        tensor = tensor.unsqueeze(1)
    if (tensor.dim() != inputs.dim() or len(tensor) != len(inputs) or tensor.shape[1] not in (1, inputs.shape[1])
            or tensor.shape[2:] != inputs.shape[2:]):
        raise InputError(f"maps of shape {tuple(tensor.shape)} do not align with inputs {tuple(inputs.shape)}: give "
                         "(N, *grid) or (N, 1, *grid) maps (positions) or (N, C, *grid) (elements); upsample layer maps")
    dtype = torch.float64 if tensor.dtype == torch.float64 else torch.float32
    return tensor.detach().to(inputs.device, dtype).flatten(1)


def baseline_values(inputs: torch.Tensor, baseline: Baseline) -> torch.Tensor:
    """What a removed feature becomes, as a tensor shaped like ``inputs``: Quantus' "black" (each
    input's minimum), "white" (its maximum), "mean" (its mean), a number or a given tensor."""
    per_sample = {"black": lambda f: f.amin(1), "white": lambda f: f.amax(1), "mean": lambda f: f.mean(1)}
    if isinstance(baseline, str):
        value = per_sample[baseline](inputs.flatten(1))
        return value.reshape(-1, *[1] * (inputs.dim() - 1)).expand_as(inputs)
    value = torch.as_tensor(baseline, dtype=inputs.dtype, device=inputs.device)
    try:
        return torch.broadcast_to(value, inputs.shape)
    except RuntimeError:
        raise InputError(f"a baseline of shape {tuple(value.shape)} does not broadcast to the inputs "
                         f"{tuple(inputs.shape)}") from None


def with_features_removed(inputs: torch.Tensor, base: torch.Tensor, removed: torch.Tensor) -> torch.Tensor:
    """``inputs`` (B, C, *grid) with the features ``removed`` (B, F) set to ``base``: F elements
    (C x positions) or F positions (every channel)."""
    flat, flat_base = inputs.flatten(1), base.flatten(1)
    if removed.shape[1] != flat.shape[1]:  # positions: every channel alike
        flat, flat_base = inputs.flatten(2), base.flatten(2)
        removed = removed.unsqueeze(1)
    return torch.where(removed, flat_base, flat).reshape(inputs.shape)


class FeatureRemoval(Metric):
    """Base of the metrics that set features to a baseline (``baseline``: "black", Quantus'
    default, "white", "mean", a number or a tensor) and read the target's score."""

    def __init__(self, *, baseline: Baseline = "black", max_batch: int | None = None, score: str = "probability"
                 ) -> None:
        super().__init__(max_batch=max_batch, score=score)
        self.baseline = check_baseline(baseline, ("black", "white", "mean"))

    def prepare(self, maps: Explanation | torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        return feature_attributions(maps, inputs)

    def removed_scores(self, inputs: torch.Tensor, removed: Callable[[torch.Tensor], torch.Tensor], jobs: int,
                       score: Callable[..., Any]) -> torch.Tensor:
        """Scores (N, jobs): job j of sample i sets ``removed(pairs)`` to the baseline, where
        ``pairs`` (B, 2) holds (sample, job) for a batch of copies."""
        n = len(inputs)
        base = baseline_values(inputs, self.baseline)
        pairs = torch.cartesian_prod(torch.arange(n, device=inputs.device), torch.arange(jobs, device=inputs.device))
        values = []
        for part in chunks(len(pairs), self.max_batch or n):
            samples = pairs[part, 0]
            values.append(score(with_features_removed(inputs[samples], base[samples], removed(pairs[part])), samples))
        return torch.cat(values).reshape(n, jobs)


class Stepwise(FeatureRemoval):
    """Feature removal ``features_in_step`` features at a time (default: a hundredth of them;
    Quantus' default is 1); the target's score is ``default_score`` unless ``score`` is given."""

    default_score: ClassVar[str] = "probability"

    def __init__(self, *, features_in_step: int | None = None, baseline: Baseline = "black",
                 max_batch: int | None = None, score: str | None = None) -> None:
        super().__init__(baseline=baseline, max_batch=max_batch, score=score or self.default_score)
        self.features_in_step = check_int("features_in_step", features_in_step, none=f"1/{DEFAULT_STEPS} of the features")


def step_of_each_feature(attributions: torch.Tensor, step: int | None, descending: bool) -> tuple[torch.Tensor, int]:
    """(N, F): the step at which each feature goes, ``step`` features per step (None: a
    ``DEFAULT_STEPS``-th of them, rounded up) in order of attribution (a stable sort: ties in
    feature order); and the number of steps."""
    features = attributions.shape[1]
    if step is not None and step > features:
        raise InputError(f"features_in_step {step} exceeds the {features} features of each input")
    step = step or -(-features // DEFAULT_STEPS)
    order = torch.argsort(attributions, dim=1, descending=descending, stable=True)
    return torch.argsort(order, dim=1) // step, -(-features // step)


def moved_fractions(steps_of: torch.Tensor, total: int, dtype: torch.dtype) -> torch.Tensor:
    """The fraction of the features gone (or restored) after each step (the last step may be short)."""
    counts = torch.bincount(steps_of[0], minlength=total).cumsum(0)
    return counts.to(dtype) / steps_of.shape[1]


class PixelFlipping(Stepwise):
    """Features set to the baseline in order of decreasing attribution, ``features_in_step`` at a
    time (default: a hundredth of them; Quantus' default is 1), cumulatively; the curve is the
    target's probability after each step (its last point has every feature removed) and the
    score its area with unit spacing, as Quantus' ``return_auc_per_sample`` (lower is better: a
    faithful map removes the evidence first)."""

    name = "pixel_flipping"
    higher_is_better = False

    def compute(self, model: nn.Module, inputs: torch.Tensor, attributions: torch.Tensor,
                score: Callable[..., Any]) -> MetricResult:
        steps_of, total = step_of_each_feature(attributions, self.features_in_step, descending=True)
        curves = self.removed_scores(inputs, lambda pairs: steps_of[pairs[:, 0]] <= pairs[:, 1:], total, score)
        return MetricResult(self.name, torch.trapezoid(curves, dim=1), curves, moved_fractions(steps_of, total, curves.dtype))


class FaithfulnessEstimate(Stepwise):
    """The Pearson correlation, over steps, between the attribution of the ``features_in_step``
    features each step removes (in order of decreasing attribution, each step from the original
    input) and the drop of the target's logit it causes (higher is better)."""

    name = "faithfulness_estimate"
    default_score = "logit"

    def compute(self, model: nn.Module, inputs: torch.Tensor, attributions: torch.Tensor,
                score: Callable[..., Any]) -> MetricResult:
        steps_of, total = step_of_each_feature(attributions, self.features_in_step, descending=True)
        after = self.removed_scores(inputs, lambda pairs: steps_of[pairs[:, 0]] == pairs[:, 1:], total, score)
        before = score(inputs, torch.arange(len(inputs), device=inputs.device))
        sums = torch.zeros(len(inputs), total, dtype=attributions.dtype, device=inputs.device).scatter_add_(
            1, steps_of, attributions)
        return MetricResult(self.name, pearson(sums.to(after.dtype), before[:, None] - after))


class FaithfulnessCorrelation(FeatureRemoval):
    """The Pearson correlation, over ``runs`` random subsets of ``subset_size`` features (default
    224, as Quantus, or half the features of a smaller input), between
    the subset's attribution sum and the drop of the target's logit when the subset is set to the
    baseline (higher is better). The subsets are drawn once from a generator seeded with ``seed``
    and shared by the images (so no score depends on its batch), or given as ``subsets`` (N, runs,
    subset_size) feature indices (Quantus draws its own for each image)."""

    name = "faithfulness_correlation"

    def __init__(self, *, runs: int = 100, subset_size: int | None = None, baseline: Baseline = "black", seed: int = 0,
                 subsets: torch.Tensor | None = None, max_batch: int | None = None, score: str = "logit") -> None:
        super().__init__(baseline=baseline, max_batch=max_batch, score=score)
        self.runs = check_int("runs", runs, minimum=2)
        self.subset_size = check_int("subset_size", subset_size, none="224, or half the features of a smaller input")
        self.seed = check_seed(seed)
        if subsets is not None and (not isinstance(subsets, torch.Tensor) or subsets.dim() != 3
                                    or subsets.dtype.is_floating_point or subsets.shape[1] != runs
                                    or subsets.shape[2] != (subset_size or subsets.shape[2])):
            raise InputError(f"subsets must be feature indices of shape (N, {runs}, subset_size)")
        self.subsets = subsets

    def compute(self, model: nn.Module, inputs: torch.Tensor, attributions: torch.Tensor,
                score: TargetScores) -> MetricResult:
        subsets, drops = score.shared(attributions.shape[1], lambda: self._drops(inputs, attributions.shape[1], score))
        return MetricResult(self.name, pearson(subset_sums(attributions, subsets).to(drops.dtype), drops))

    def _drops(self, inputs: torch.Tensor, features: int, score: TargetScores) -> tuple[torch.Tensor, torch.Tensor]:
        """The subsets of ``features`` features and the drops they cause: the same for any maps."""
        subsets = self._subsets(len(inputs), features, inputs.device)
        before = score(inputs, torch.arange(len(inputs), device=inputs.device))
        return subsets, subset_drops(self, inputs, features, subsets, score, before)

    def _subsets(self, n: int, features: int, device: torch.device) -> torch.Tensor:
        if self.subsets is not None:
            subsets = self.subsets.to(device).long()
            if len(subsets) != n or bool((subsets.min() < 0) | (subsets.max() >= features)):
                raise InputError(f"subsets must hold one row per input ({n}) of indices below {features}")
            if bool((subsets.sort(dim=2).values.diff(dim=2) == 0).any()):
                raise InputError("each subset must name distinct features")
            return subsets
        size = self.subset_size or min(DEFAULT_SUBSET, max(features // 2, 1))
        if size > features:
            raise InputError(f"subset_size {size} exceeds the {features} features of each input")
        generator = torch.Generator().manual_seed(self.seed)  # one set of subsets for every image: none depends on its batch
        return random_subsets(generator, features, size, self.runs).to(device).expand(n, -1, -1)


def random_subsets(generator: torch.Generator, features: int, size: int, runs: int) -> torch.Tensor:
    """``runs`` subsets (runs, size) of ``size`` distinct feature indices, uniformly drawn."""
    return torch.stack([torch.randperm(features, generator=generator)[:size] for _ in range(runs)])


def subset_drops(metric: FeatureRemoval, inputs: torch.Tensor, features: int, subsets: torch.Tensor,
                 score: Callable[..., Any], before: torch.Tensor) -> torch.Tensor:
    """For subsets (N, R, size) of ``features`` features: the drop of the target's score from
    ``before`` (N,) (N, R) when the subset alone is set to ``metric``'s baseline."""
    def removed(pairs: torch.Tensor) -> torch.Tensor:  # built per batch of copies: (B, F), not (N, runs, F)
        mask = torch.zeros(len(pairs), features, dtype=torch.bool, device=inputs.device)
        return mask.scatter_(1, subsets[pairs[:, 0], pairs[:, 1]], True)

    return before[:, None] - metric.removed_scores(inputs, removed, subsets.shape[1], score)


def subset_sums(attributions: torch.Tensor, subsets: torch.Tensor) -> torch.Tensor:
    """Each subset's attribution sum (N, R), for attributions (N, F) and subsets (N, R, size)."""
    n, runs, size = subsets.shape
    return attributions.gather(1, subsets.flatten(1)).reshape(n, runs, size).sum(2)


class Monotonicity(Stepwise):
    """Arya et al.'s monotonicity: starting from the baseline, the input's own features are
    restored in order of increasing absolute attribution, ``features_in_step`` at a time; 1 when
    the target's probability never falls from one step to the next, else 0 (higher is better).
    The curve holds the probabilities after each step."""

    name = "monotonicity"

    def compute(self, model: nn.Module, inputs: torch.Tensor, attributions: torch.Tensor,
                score: Callable[..., Any]) -> MetricResult:
        steps_of, total = step_of_each_feature(attributions.abs(), self.features_in_step, descending=False)
        curves = self.removed_scores(inputs, lambda pairs: steps_of[pairs[:, 0]] > pairs[:, 1:], total, score)
        rising = (curves.diff(dim=1) >= 0).all(dim=1)
        return MetricResult(self.name, rising.to(curves.dtype), curves, moved_fractions(steps_of, total, curves.dtype))


def pearson(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pearson's correlation of the rows of ``a`` and ``b`` (N, K), in float64; NaN for a
    constant row (the correlation is undefined), as SciPy gives."""
    a, b = a.double(), b.double()
    constant = (a.amax(1) == a.amin(1)) | (b.amax(1) == b.amin(1))  # a mean's rounding would leave noise
    a, b = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
    return torch.where(constant, torch.nan, (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)))


class NonSensitivity(FeatureRemoval):
    """Nguyen and Martinez's (2020) non-sensitivity: over groups of ``features_in_step``
    consecutive features, each set to the baseline alone, the number of groups where "the
    explanation gives it nothing" (every |a| at most ``eps`` times the map's largest) differs from
    "removing it moves the target's probability by less than ``eps``" (lower is better: 0 when
    exactly the features without effect get no attribution)."""

    name = "non_sensitivity"
    higher_is_better = False

    def __init__(self, *, features_in_step: int = 1, eps: float = 1e-5, baseline: Baseline = "black",
                 max_batch: int | None = None, score: str = "probability") -> None:
        super().__init__(baseline=baseline, max_batch=max_batch, score=score)
        self.features_in_step = check_int("features_in_step", features_in_step)
        self.eps = check_number("eps", eps)

    def compute(self, model: nn.Module, inputs: torch.Tensor, attributions: torch.Tensor,
                score: Callable[..., Any]) -> MetricResult:
        features = attributions.shape[1]
        if self.features_in_step > features:
            raise InputError(f"features_in_step {self.features_in_step} exceeds the {features} features of each input")
        group = torch.arange(features, device=inputs.device) // self.features_in_step
        total = int(group[-1]) + 1
        after = self.removed_scores(inputs, lambda pairs: group.unsqueeze(0) == pairs[:, 1:], total, score)
        before = score(inputs, torch.arange(len(inputs), device=inputs.device))
        no_effect = (after - before[:, None]).abs() < self.eps
        magnitude = attributions.abs()
        largest = magnitude.amax(dim=1, keepdim=True)
        unattributed = magnitude <= self.eps * torch.where(largest > 0, largest, 1.0)
        nothing = torch.ones(len(inputs), total, dtype=torch.bool, device=inputs.device).scatter_reduce(
            1, group.expand(len(inputs), -1), unattributed, reduce="amin")
        return MetricResult(self.name, (no_effect ^ nothing).sum(dim=1).to(after.dtype))


class MonotonicityCorrelation(FeatureRemoval):
    """Nguyen and Martinez's (2020) monotonicity correlation: in order of increasing absolute
    attribution, each group of ``features_in_step`` features is set, ``samples`` times, to a value
    uniform in [0, 1) (the same value for the group, as Quantus' "uniform" baseline); Spearman's
    correlation (average ranks) over the groups between the group's absolute attribution and the
    mean squared change of the target's probability, divided by the probability squared (by 1
    below ``eps``). Higher is better. The values are drawn from a generator seeded with ``seed``,
    one per group and sample shared by the images, or given as ``values`` (N, groups, samples)."""

    name = "monotonicity_correlation"

    def __init__(self, *, features_in_step: int | None = None, samples: int = 100, eps: float = 1e-5, seed: int = 0,
                 values: torch.Tensor | None = None, max_batch: int | None = None, score: str = "probability") -> None:
        super().__init__(max_batch=max_batch, score=score)
        self.features_in_step = check_int("features_in_step", features_in_step, none=f"1/{DEFAULT_STEPS} of the features")
        self.samples, self.eps, self.seed = check_int("samples", samples), check_number("eps", eps), check_seed(seed)
        if values is not None and (not isinstance(values, torch.Tensor) or values.dim() != 3
                                   or not values.is_floating_point() or values.shape[2] != samples):
            raise InputError(f"values must be a floating tensor (N, groups, {samples})")
        self.values = values

    def compute(self, model: nn.Module, inputs: torch.Tensor, attributions: torch.Tensor,
                score: Callable[..., Any]) -> MetricResult:
        n, magnitude = len(inputs), attributions.abs()
        steps_of, total = step_of_each_feature(magnitude, self.features_in_step, descending=False)
        values = self._values(n, total, inputs)
        jobs = torch.cartesian_prod(torch.arange(n, device=inputs.device), torch.arange(total * self.samples,
                                                                                     device=inputs.device))
        after = []
        for part in chunks(len(jobs), self.max_batch or n):
            samples, job = jobs[part, 0], jobs[part, 1]
            group, run = job // self.samples, job % self.samples
            fill = values[samples, group, run].reshape(-1, *[1] * (inputs.dim() - 1)).expand(len(samples),
                                                                                             *inputs.shape[1:])
            after.append(score(with_features_removed(inputs[samples], fill, steps_of[samples] == group[:, None]), samples))
        before = score(inputs, torch.arange(n, device=inputs.device))
        moved = torch.cat(after).reshape(n, total, self.samples)
        weight = torch.where(before.abs() >= self.eps, 1 / before.abs().clamp_min(self.eps), 1.0) ** 2
        variances = (moved - before[:, None, None]).square().mean(dim=2) * weight[:, None]
        sums = torch.zeros(n, total, dtype=magnitude.dtype, device=inputs.device).scatter_add_(1, steps_of, magnitude)
        return MetricResult(self.name, spearman(sums, variances))

    def _values(self, n: int, total: int, inputs: torch.Tensor) -> torch.Tensor:
        if self.values is not None:
            if self.values.shape[:2] != (n, total):
                raise InputError(f"values must be ({n}, {total}, {self.samples}): one per input, group and sample")
            return self.values.to(inputs.device, inputs.dtype)
        generator = torch.Generator().manual_seed(self.seed)
        return torch.rand((1, total, self.samples), generator=generator).to(inputs.device, inputs.dtype).expand(n, -1, -1)


def spearman(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman's correlation of the rows of ``a`` and ``b`` (average ranks for ties), as SciPy."""
    return pearson(_ranks(a.double()), _ranks(b.double()))
