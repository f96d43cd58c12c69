"""Localisation metrics: how well an explanation's relevance falls on the object a ground-truth
mask marks. Each scores the maps against ``masks=`` (N, *grid) booleans on the input's grid,
without running the model; a sample whose mask is empty scores NaN and is left out of the mean.

- ``AttributionLocalisation`` (Kohlbrenner et al., 2020): the share of the relevance inside the mask.
- ``RelevanceMassAccuracy`` (Arras et al., 2022): the same for the signed map, sum inside over sum.
- ``RelevanceRankAccuracy`` (Arras et al., 2022): of the ``|mask|`` highest-ranked positions, the
  share inside the mask.
- ``TopKIntersection`` (Theiner et al., 2021): of the ``k`` highest-ranked positions, the share inside.
- ``LocalisationAUC`` (Fawcett, 2006): the area under the ROC curve of the map as a classifier of
  the mask's positions.

Maps keep their sign ((N, 1, *grid) maps too; several channels are summed in absolute value)
and float64 maps stay float64. Quantus (0.6) normalises a whole batch by its largest value
before scoring; these metrics are invariant to a positive scale, so that changes nothing here.
Ties in rankings are broken by position (the first in row-major order ranks higher), as a stable
sort does (Quantus' unstable sort may order ties otherwise); the rank metrics give NaN for a
constant map, whose ranking would be the positions' order alone.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..core import Explanation, check_finite, check_int, check_tensor
from ..errors import InputError
from .base import Metric, MetricResult, aligned_saliency, check_model, class_indices


class MaskMetric(Metric):
    """A metric of maps against ground-truth masks; subclasses implement ``localise``."""

    needs_masks = True

    def __init__(self) -> None:
        super().__init__()

    def __call__(self, model: nn.Module, inputs: torch.Tensor, maps: Explanation | torch.Tensor,
                 targets: Any = None, *, masks: torch.Tensor | None = None) -> MetricResult:
        """Score ``maps`` of ``inputs`` against ground-truth ``masks`` (N, *grid)."""
        check_model(model)
        inputs = check_tensor(inputs, model, finite=False)
        if targets is not None:
            class_indices(targets, len(inputs), inputs.device)  # checked as elsewhere, though the masks decide
        if inputs.dim() < 3:
            raise InputError(f"{self.name} scores maps on the input's grid: inputs {tuple(inputs.shape)} have none "
                             "(it needs (N, C, *grid))")
        saliency = self.prepare(maps, inputs)
        check_finite(inputs=inputs, maps=saliency)
        if not isinstance(masks, torch.Tensor) or masks.shape != saliency.shape:
            shape = tuple(masks.shape) if isinstance(masks, torch.Tensor) else type(masks).__name__
            raise InputError(f"{self.name} needs masks= of shape {tuple(saliency.shape)} (one per sample, on the input "
                             f"grid), got {shape}")
        if masks.is_floating_point() and bool(((masks != 0) & (masks != 1)).any()):  # one sync, not per image
            raise InputError(f"{self.name} needs binary masks (bool, integers read as non-zero inside, or floats 0 "
                             "and 1 only); threshold soft masks first, e.g. masks > 0.5")
        return self.compute(model, inputs, saliency, masks.to(saliency.device).bool())

    def score_each(self, model: nn.Module, inputs: torch.Tensor, explanations: Any) -> list[MetricResult]:
        raise InputError(f"{self.name} needs each explanation's masks=: score each with a call, "
                         "metric(model, inputs, maps, masks=masks)")

    def prepare(self, maps: Explanation | torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        """The maps with their sign (a single channel is not made absolute) and float64 kept."""
        return aligned_saliency(maps, inputs, keep_float64=True)

    def compute(self, model: nn.Module, inputs: torch.Tensor, saliency: torch.Tensor, masks: Any) -> MetricResult:
        flat, inside = saliency.flatten(1).double(), masks.flatten(1)
        scores = self.localise(flat, inside)
        return MetricResult(self.name, torch.where(inside.any(dim=1), scores, torch.nan).float())

    def localise(self, saliency: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """Scores (N,) of flat maps (N, P) against flat masks (N, P)."""
        raise NotImplementedError


def _ranks(saliency: torch.Tensor) -> torch.Tensor:
    """Each position's rank (N, P), 0 the highest value; ties by position."""
    order = saliency.argsort(dim=1, descending=True, stable=True)
    return torch.empty_like(order).scatter_(1, order, torch.arange(order.shape[1], device=order.device).expand_as(order))


def _ranked(saliency: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    """``scores``, NaN where the map is constant: its ranking would be the positions' order alone."""
    return torch.where(saliency.amax(dim=1) > saliency.amin(dim=1), scores, torch.nan)


class AttributionLocalisation(MaskMetric):
    """The share of the map's relevance inside the mask: with ``relevance="positive"`` (the
    paper's) the positive part's, with ``"absolute"`` (Quantus' default) the absolute values'.
    A map with no such relevance scores 0."""

    name = "attribution_localisation"

    def __init__(self, *, relevance: str = "positive") -> None:
        super().__init__()
        if relevance not in ("positive", "absolute"):
            raise InputError(f"relevance must be 'positive' or 'absolute', not {relevance!r}")
        self.relevance = relevance

    def localise(self, saliency: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        relevance = saliency.clamp_min(0) if self.relevance == "positive" else saliency.abs()
        total = relevance.sum(dim=1)
        return torch.where(total > 0, (relevance * masks).sum(dim=1) / torch.where(total > 0, total, 1.0), 0.0)


class RelevanceMassAccuracy(MaskMetric):
    """``sum(map inside the mask) / sum(map)`` of the signed map (NaN where the map sums to 0)."""

    name = "relevance_mass_accuracy"

    def localise(self, saliency: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        total = saliency.sum(dim=1)
        return torch.where(total != 0, (saliency * masks).sum(dim=1) / torch.where(total != 0, total, 1.0), torch.nan)


class RelevanceRankAccuracy(MaskMetric):
    """Of the ``|mask|`` highest-ranked positions, the share inside the mask (NaN for a constant map)."""

    name = "relevance_rank_accuracy"

    def localise(self, saliency: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        size = masks.sum(dim=1, keepdim=True)
        hits = (masks & (_ranks(saliency) < size)).sum(dim=1)
        return _ranked(saliency, hits / size[:, 0].clamp_min(1))


class TopKIntersection(MaskMetric):
    """Of the ``k`` highest-ranked positions (all of them where there are fewer), the share
    inside the mask; ``concept_influence=True`` divides by the mask's share of the grid. NaN
    for a constant map."""

    name = "top_k_intersection"

    def __init__(self, *, k: int = 1000, concept_influence: bool = False) -> None:
        super().__init__()
        self.k = check_int("k", k)
        if not isinstance(concept_influence, bool):
            raise InputError(f"concept_influence must be True or False, not {concept_influence!r}")
        self.concept_influence = concept_influence

    def localise(self, saliency: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        k = min(self.k, saliency.shape[1])
        share = (masks & (_ranks(saliency) < k)).sum(dim=1) / k
        if self.concept_influence:
            share = share * saliency.shape[1] / masks.sum(dim=1).clamp_min(1)
        return _ranked(saliency, share)


class LocalisationAUC(MaskMetric):
    """The area under the ROC curve of the map scoring the mask's positions against the rest:
    the chance that a random position inside outranks a random one outside, ties counting a
    half (the trapezoidal area, as scikit-learn's ``roc_curve`` and ``auc`` give it). NaN where
    the mask covers the whole grid."""

    name = "localisation_auc"

    def localise(self, saliency: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        # mid-ranks from below: ties share the mean of their ranks (Mann-Whitney U)
        order = saliency.argsort(dim=1, stable=True)
        ordered = saliency.gather(1, order)
        first = torch.searchsorted(ordered.contiguous(), ordered.contiguous(), side="left")
        last = torch.searchsorted(ordered.contiguous(), ordered.contiguous(), side="right")
        mid = torch.empty_like(ordered).scatter_(1, order, (first + last + 1).double() / 2)  # 1-based
        positives, negatives = masks.sum(dim=1).double(), (~masks).sum(dim=1).double()
        u = (mid * masks).sum(dim=1) - positives * (positives + 1) / 2
        return torch.where(negatives > 0, u / (positives * negatives).clamp_min(1), torch.nan)
