"""Feature ablation and Shapley value sampling: attributions from the target's score with
features of the input switched off (set to the baseline).

``FeatureAblation`` gives feature ``f`` the drop ``f(x) - f(x without f)``: captum's
``FeatureAblation``. ``ShapleyValueSampling`` averages, over ``samples`` random orders of the
features, the gain of switching ``f`` on after the features before it, starting from the
baseline (Castro et al., 2009; captum's ``ShapleyValueSampling``). Its orders come from ``seed``
on the input's device (``shapley_permutations``), the same for every image of a batch, so no
image's result depends on its batch.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from ..core import Call, check_int
from ..core.targets import TargetSelection
from .features import FeatureExplainer


class FeatureAblation(FeatureExplainer):
    """Per-feature drops ``f(x) - f(x with feature f at the baseline)``, one copy per feature,
    laid out on the grid (N, K, *grid). ``features``: "superpixels" (the default for inputs with
    a grid; about ``segments`` of them), "grid", or an integer tensor of feature ids
    broadcastable to (N, *grid); for inputs (N, D) each column is a feature by default."""

    name = "feature_ablation"

    def attribute(self, call: Call, wanted: Any, selection: TargetSelection,
                  copies: Callable[[torch.Tensor], torch.Tensor], count: int, x: torch.Tensor) -> torch.Tensor:
        """One copy per feature, that feature at the baseline: the drops."""
        def all_but_one(first: int, stop: int) -> torch.Tensor:
            present = torch.ones(stop - first, count, dtype=torch.bool, device=x.device)
            present[torch.arange(stop - first, device=x.device), torch.arange(first, stop, device=x.device)] = False
            return present

        scores = self.scores(call, wanted, count, all_but_one, copies)  # (F, N, K)
        return (selection.scores.detach().float().unsqueeze(0) - scores).permute(1, 2, 0)


def shapley_permutations(samples: int, features: int, generator: torch.Generator,
                         device: torch.device | str = "cpu") -> torch.Tensor:
    """``samples`` uniformly random orders (samples, F) of ``features`` features, from ``generator``."""
    return torch.rand(samples, features, generator=generator, device=device).argsort(dim=1)


class ShapleyValueSampling(FeatureExplainer):
    """Shapley values estimated from ``samples`` random feature orders: ``samples * F + 1``
    copies of the batch. Exact for a model additive over the features, with any orders."""

    name = "shapley_value_sampling"

    def __init__(self, model: nn.Module, features: str | torch.Tensor | None = None, segments: int = 50,
                 baseline: float | torch.Tensor = 0.0, samples: int = 25, seed: int = 0, max_batch: int = 64) -> None:
        super().__init__(model, features, segments, baseline, max_batch)
        self.samples, self.seed = check_int("samples", samples), check_int("seed", seed, minimum=0)

    def attribute(self, call: Call, wanted: Any, selection: TargetSelection,
                  copies: Callable[[torch.Tensor], torch.Tensor], count: int, x: torch.Tensor) -> torch.Tensor:
        """``samples * F + 1`` copies: the baseline, then each order's growing prefixes; the gains."""
        generator = torch.Generator(device=x.device).manual_seed(self.seed)
        orders = shapley_permutations(self.samples, count, generator, x.device)  # (S, F)
        ranks = orders.argsort(dim=1)  # ranks[s, f]: where feature f comes in order s

        def prefixes(first: int, stop: int) -> torch.Tensor:
            """Row 0 keeps no feature; row 1 + s F + j keeps the first j + 1 features of order s."""
            rows = torch.arange(first, stop, device=x.device) - 1
            order, length = rows.clamp_min(0) // count, rows % count
            return (ranks[order] <= length.unsqueeze(1)) & (rows >= 0).unsqueeze(1)

        scores = self.scores(call, wanted, 1 + self.samples * count, prefixes, copies)  # (1 + S F, N, K)
        steps = scores[1:].view(self.samples, count, *scores.shape[1:])
        gains = steps - torch.cat([scores[:1].expand(self.samples, 1, -1, -1), steps[:, :-1]], dim=1)
        values = torch.zeros(count, *scores.shape[1:], device=x.device)
        values.index_add_(0, orders.flatten(), gains.flatten(0, 1))
        return (values / self.samples).permute(1, 2, 0)
