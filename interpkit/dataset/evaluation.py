"""Which explanation is faithful: every chosen explainer scored by every chosen metric over a
set of images, one row per explainer and metric (what ``interpkit evaluate`` prints and the
report's faithfulness table shows)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch
from tqdm.auto import tqdm

from ..core import check_int
from ..errors import InputError
from ..metrics import ExplainerCheck, Metric, MetricResult, scored_maps
from ..registry import get_explainer, get_metric


@dataclass(frozen=True)
class EvaluationRow:
    """One explainer under one metric: the mean and standard deviation over the samples where
    the metric is defined (``n``), and which way is better."""

    method: str
    metric: str
    mean: float
    std: float
    n: int
    better: str


def evaluate_explainers(model: torch.nn.Module, images: torch.Tensor, methods: Sequence[str],
                        metrics: Sequence[str], batch_size: int = 16, progress: bool = True) -> list[EvaluationRow]:
    """Explain ``images`` (N, C, H, W, on the model's device) for the top class with each method
    and score every explanation with each metric (metrics with their defaults)."""
    check_int("--batch-size", batch_size)
    if not methods or not metrics:
        raise InputError("name at least one method (--methods) and one metric (--metrics)")
    factories = {name: get_explainer(name) for name in methods}
    explainers = {name: factory(model) for name, factory in factories.items()}
    scorers = metric_scorers(metrics)
    scores: dict[tuple[str, str], list[torch.Tensor]] = {(m, s): [] for m in methods for s in metrics}
    batches = range(0, len(images), batch_size)
    for start in tqdm(batches, desc="evaluate", unit="batch", disable=not progress):
        batch = images[start:start + batch_size]
        scored = {method: scored_maps(explainer(batch), batch) for method, explainer in explainers.items()}
        for name, metric in scorers.items():
            for method, result in score_explanations(metric, factories, model, batch, scored).items():
                scores[(method, name)].append(result.scores)
    return [summarise(method, name, scorers[name], torch.cat(parts)) for (method, name), parts in scores.items()]


def metric_scorers(names: Sequence[str], settings: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """Each named metric built with its defaults, or with ``settings[name]``; metrics that need
    ground-truth masks are refused, since images alone do not give them."""
    scorers = {name: get_metric(name)(**(settings or {}).get(name, {})) for name in names}
    needs_masks = [name for name, metric in scorers.items() if getattr(metric, "needs_masks", False)]
    if needs_masks:
        raise InputError(f"{', '.join(needs_masks)} needs ground-truth masks, which images alone do not give; "
                         "drop it here")
    return scorers


def score_explanations(metric: Any, factories: dict[str, Any], model: torch.nn.Module, images: torch.Tensor,
                       scored: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> dict[str, MetricResult]:
    """One metric's result for each method's maps and targets of ``images`` (``scored``, by
    method); a check that re-runs the explainer is given the method's factory instead of its
    maps. Forwards that do not depend on the maps run once for all methods (``Metric.score_each``)."""
    if isinstance(metric, ExplainerCheck):
        return {method: metric(factories[method], model, images, targets) for method, (_, targets) in scored.items()}
    if not isinstance(metric, Metric):  # a plugin's plain callable metric
        return {method: metric(model, images, maps, targets) for method, (maps, targets) in scored.items()}
    return dict(zip(scored, metric.score_each(model, images, list(scored.values()))))


def summarise(method: str, name: str, metric: Any, scores: torch.Tensor) -> EvaluationRow:
    """The mean and standard deviation of ``scores`` over the samples where they are defined."""
    defined = scores[~scores.isnan()]
    std = defined.std().item() if len(defined) > 1 else 0.0
    mean = defined.mean().item() if len(defined) else float("nan")
    return EvaluationRow(method, name, mean, std, len(defined), "higher" if metric.higher_is_better else "lower")
