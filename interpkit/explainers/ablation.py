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

from ..core import BaselineLike, Call, TargetSelection, check_generator, check_int, check_seed
from .features import FeatureExplainer, per_image


class FeatureAblation(FeatureExplainer):
    """Per-feature drops ``f(x) - f(x with feature f at the baseline)``, one copy per feature,
    laid out on the grid (N, K, *grid). ``features``: "superpixels" (the default for inputs with
    a grid; about ``segments`` of them), "grid", or an integer tensor of feature ids
    broadcastable to (N, *grid); for inputs (N, D) each column is a feature by default."""

    name = "feature_ablation"

    def attribute(self, call: Call, wanted: Any, selection: TargetSelection,
                  copies: Callable[[torch.Tensor], torch.Tensor], counts: list[int]) -> torch.Tensor:
        """One copy per feature, that feature at the baseline: the drops."""
        count, device = max(counts), call.x.device

        def all_but_one(first: int, stop: int) -> torch.Tensor:
            present = torch.ones(stop - first, count, dtype=torch.bool, device=device)
            present[torch.arange(stop - first, device=device), torch.arange(first, stop, device=device)] = False
            return present

        scores = self.scores(call, wanted, count, all_but_one, copies)  # (F, N, K)
        return (selection.scores.detach().to(scores.dtype).unsqueeze(0) - scores).permute(1, 2, 0)


def shapley_permutations(samples: int, features: int, generator: torch.Generator,
                         device: torch.device | str = "cpu") -> torch.Tensor:
    """``samples`` uniformly random orders (samples, F) of ``features`` features, from ``generator``."""
    check_int("samples", samples), check_int("features", features), check_generator(generator)
    return torch.rand(samples, features, generator=generator, device=device).argsort(dim=1)


class ShapleyValueSampling(FeatureExplainer):
    """Shapley values estimated from ``samples`` random feature orders: ``samples * F + 1``
    copies of the batch. Exact for a model additive over the features, with any orders."""

    name = "shapley_value_sampling"

    def __init__(self, model: nn.Module, features: str | torch.Tensor | None = None, segments: int = 50,
                 baseline: BaselineLike = 0.0, samples: int = 25, seed: int = 0, max_batch: int = 64) -> None:
        super().__init__(model, features, segments, baseline, max_batch)
        self.samples, self.seed = check_int("samples", samples), check_seed(seed)

    def attribute(self, call: Call, wanted: Any, selection: TargetSelection,
                  copies: Callable[[torch.Tensor], torch.Tensor], counts: list[int]) -> torch.Tensor:
        """``samples * F + 1`` copies: the baseline, then each order's growing prefixes; the gains."""
        count, device, n = max(counts), call.x.device, len(counts)
        orders = per_image(lambda c, g: shapley_permutations(self.samples, c, g, device), counts, self.seed, device,
                           fill=count)  # (S, N, F); past an image's own count, the step adds nothing
        # ranks[s, n, f]: where feature f comes in image n's order s (padding lands on a feature the image lacks)
        ranks = torch.empty_like(orders).scatter_(2, orders.clamp_max(count - 1),
                                                  torch.arange(count, device=device).expand_as(orders))

        def prefixes(first: int, stop: int) -> torch.Tensor:
            """Row 0 keeps no feature; row 1 + s F + j keeps the first j + 1 features of order s."""
            rows = torch.arange(first, stop, device=device) - 1
            order, length = rows.clamp_min(0) // count, rows % count
            return (ranks[order] <= length.view(-1, 1, 1)) & (rows >= 0).view(-1, 1, 1)

        scores = self.scores(call, wanted, 1 + self.samples * count, prefixes, copies)  # (1 + S F, N, K)
        steps = scores[1:].view(self.samples, count, *scores.shape[1:])  # (S, F, N, K)
        gains = steps - torch.cat([scores[:1].expand(self.samples, 1, -1, -1), steps[:, :-1]], dim=1)
        k = gains.shape[-1]
        index = orders.permute(1, 0, 2).reshape(n, 1, -1).expand(-1, k, -1)  # (N, K, S F), padding to column F
        values = gains.new_zeros(n, k, count + 1).scatter_add_(2, index, gains.permute(2, 3, 0, 1).reshape(n, k, -1))
        return values[..., :count] / self.samples
