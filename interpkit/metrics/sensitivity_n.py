"""Sensitivity-n (Ancona et al., 2018): an attribution satisfies it when, for every subset of n
features, the subset's attribution sum equals the drop of the output when the subset is removed.

For each cardinality n, ``runs`` random subsets of n features are set to the baseline; the score
of n is the Pearson correlation, over those subsets, between their attribution sums and the
drops of the target's logit: faithfulness correlation (Bhatt et al., 2020) at every n. Quantus
0.6's ``SensitivityN`` computes something else (tests show it): it removes features cumulatively
in order of attribution, sums only the attributions each step adds while the drop is the whole
set's, and correlates across the images of a batch rather than across subsets.
"""

from __future__ import annotations

import math
import numbers
from typing import Sequence

import torch
from torch import nn

from ..core import check_int, check_seed
from ..errors import InputError
from .base import MetricResult, TargetScores
from .faithfulness import Baseline, FeatureRemoval, pearson, random_subsets, subset_drops, subset_sums


class SensitivityN(FeatureRemoval):
    """``sizes``: the cardinalities n, or how many (default 10) spaced geometrically from 1 to 80%
    of the features (Ancona et al.'s range); ``runs`` subsets per n, drawn once from a generator
    seeded with ``seed`` and shared by the images (so no score depends on its batch). A feature is
    an input element for maps with the input's channels, else a grid position (see
    ``feature_attributions``). ``curves`` (N, sizes) hold each n's correlation, ``fractions`` n over
    the features; the score is their mean over the n where it is defined (higher is better). A
    correlation is NaN where every subset's sum or drop is the same (n = all the features)."""

    name = "sensitivity_n"

    def __init__(self, *, sizes: int | Sequence[int] = 10, runs: int = 100, baseline: Baseline = "black", seed: int = 0,
                 max_batch: int | None = None, score: str = "logit") -> None:
        super().__init__(baseline=baseline, max_batch=max_batch, score=score)
        if hasattr(sizes, "tolist"):  # a numpy array or a tensor reads as its values
            sizes = sizes.tolist()
        if isinstance(sizes, numbers.Integral) and not isinstance(sizes, bool):
            sizes = check_int("sizes", sizes)
        elif isinstance(sizes, Sequence) and sizes and all(
                isinstance(s, numbers.Integral) and not isinstance(s, bool) and s > 0 for s in sizes):
            sizes = [int(s) for s in sizes]
        else:
            raise InputError(f"sizes must be a positive int or a sequence of positive ints (subset sizes), not {sizes!r}")
        self.sizes = sizes
        self.runs = check_int("runs", runs, minimum=2)
        self.seed = check_seed(seed)

    def compute(self, model: nn.Module, inputs: torch.Tensor, attributions: torch.Tensor,
                score: TargetScores) -> MetricResult:
        features = attributions.shape[1]
        sizes = self._cardinalities(features)
        drawn = score.shared(features, lambda: self._drops(inputs, features, sizes, score))
        stacked = torch.stack([pearson(subset_sums(attributions, subsets).to(drops.dtype), drops)
                               for subsets, drops in drawn], dim=1)
        fractions = torch.tensor(sizes, dtype=stacked.dtype, device=inputs.device) / features
        return MetricResult(self.name, stacked.nanmean(dim=1), stacked, fractions)

    def _drops(self, inputs: torch.Tensor, features: int, sizes: list[int], score: TargetScores
               ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """For each size, the subsets and the drops they cause: the same for any maps."""
        n = len(inputs)
        generator = torch.Generator().manual_seed(self.seed)
        before = score(inputs, torch.arange(n, device=inputs.device))
        drawn = []
        for size in sizes:
            subsets = random_subsets(generator, features, size, self.runs).to(inputs.device).expand(n, -1, -1)
            drawn.append((subsets, subset_drops(self, inputs, features, subsets, score, before)))
        return drawn

    def _cardinalities(self, features: int) -> list[int]:
        if not isinstance(self.sizes, int):
            if max(self.sizes) > features:
                raise InputError(f"subset size {max(self.sizes)} exceeds the {features} features of each input")
            return sorted(set(self.sizes))
        top = max(1, int(0.8 * features))
        spaced = torch.logspace(0, math.log10(top), self.sizes, dtype=torch.float64).round().long()
        return sorted(set(spaced.tolist()))
