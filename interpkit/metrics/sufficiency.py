"""Sufficiency (Dasgupta et al., 2022), as Quantus 0.6 computes it where Quantus is right.

A sample's explanation is "sufficient" when the other samples whose explanations lie close to it
get the same prediction: the score is, among the batch's other samples within ``threshold`` of
it, the fraction predicted the same class (0 when none is close). It is a property of the batch
by definition (the batch stands for the data): a sample's score depends on the others.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..core import check_number, class_scores, mixes_samples
from .base import Metric, MetricResult, _forward, chunks
from .faithfulness import feature_attributions


class Sufficiency(Metric):
    """Maps compared in absolute value, each scaled to a largest value of 1 (Quantus' defaults),
    by the standardised Euclidean distance (each feature divided by its variance over the batch,
    as scipy's ``seuclidean``), the distances scaled by their largest; two samples are close when
    their distance is at most ``threshold``. Features constant over the batch are left out:
    scipy divides by their zero variance, so Quantus' distances are NaN and every score 0 (a test
    shows it)."""

    name = "sufficiency"

    def __init__(self, *, threshold: float = 0.6, max_batch: int | None = None) -> None:
        super().__init__(max_batch=max_batch)
        self.threshold = check_number("threshold", threshold)

    def prepare(self, maps: Any, inputs: torch.Tensor) -> torch.Tensor:
        return feature_attributions(maps, inputs)

    def compute(self, model: nn.Module, inputs: torch.Tensor, attributions: torch.Tensor, score: Any) -> MetricResult:
        values = attributions.double().abs()
        peak = values.amax(dim=1, keepdim=True)
        values = values / torch.where(peak > 0, peak, 1.0)
        variance = torch.cat([values, values]).var(dim=0, correction=1)  # scipy's V: both operands stacked
        kept = variance > 0
        scaled = values[:, kept] / variance[kept].sqrt()
        distances = torch.cdist(scaled, scaled)
        largest = distances.max()
        close = distances / torch.where(largest > 0, largest, 1.0) <= self.threshold
        close.fill_diagonal_(False)
        step = 1 if mixes_samples(model) else self.max_batch or len(inputs)  # a mixing model: each image alone
        predicted = torch.cat([class_scores(_forward(model, inputs[part])).argmax(dim=1)
                               for part in chunks(len(inputs), step)])
        same = predicted[:, None] == predicted[None, :]
        counts = close.sum(dim=1)
        scores = (close & same).sum(dim=1).double() / counts.clamp_min(1)
        return MetricResult(self.name, scores.float())
