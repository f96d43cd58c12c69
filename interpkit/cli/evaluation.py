"""Which explanation is faithful: every chosen explainer scored by every chosen metric over a
dataset, as a table (what ``interpkit evaluate`` and the report print)."""

from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import torch
from tqdm.auto import tqdm

from ..core import check_int
from ..data import caltech5
from ..data.images import image_files
from ..errors import InputError
from ..files import write_text
from ..metrics import ExplainerCheck, scored_maps
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
    scorers = {name: get_metric(name)() for name in metrics}
    needs_masks = [name for name, metric in scorers.items() if getattr(metric, "needs_masks", False)]
    if needs_masks:
        raise InputError(f"{', '.join(needs_masks)} needs ground-truth masks, which images alone do not give; "
                         "drop it here")
    scores: dict[tuple[str, str], list[torch.Tensor]] = {(m, s): [] for m in methods for s in metrics}
    batches = range(0, len(images), batch_size)
    for start in tqdm(batches, desc="evaluate", unit="batch", disable=not progress):
        batch = images[start:start + batch_size]
        for method, explainer in explainers.items():
            maps, targets = scored_maps(explainer(batch), batch)
            for name, metric in scorers.items():
                if isinstance(metric, ExplainerCheck):  # it re-runs the explainer: given its factory, not its maps
                    result = metric(factories[method], model, batch, targets)
                else:
                    result = metric(model, batch, maps, targets)
                scores[(method, name)].append(result.scores)
    rows = []
    for (method, name), parts in scores.items():
        values = torch.cat(parts)
        defined = values[~values.isnan()]
        better = "higher" if scorers[name].higher_is_better else "lower"
        std = defined.std().item() if len(defined) > 1 else 0.0
        rows.append(EvaluationRow(method, name, defined.mean().item() if len(defined) else float("nan"), std,
                                  len(defined), better))
    return rows


def dataset_images(split: str | None, images_dir: str | os.PathLike | None, data_dir: str | os.PathLike | None,
                   limit: int | None) -> list[Path]:
    """Image files: every image under ``images_dir`` (sorted), or a split of the canonical set."""
    if images_dir is not None:
        files = image_files(Path(images_dir))
    else:
        files = caltech5(split or "test", root=data_dir).paths
    if limit is not None:
        if limit < 1:
            raise InputError(f"--limit must be positive, got {limit}")
        files = files[:limit]
    return list(files)


def write_rows(rows: Sequence[EvaluationRow], out_dir: str | os.PathLike) -> tuple[Path, Path]:
    """``evaluation.csv`` and ``evaluation.json`` in ``out_dir``, each written whole or not at all."""
    folder = Path(out_dir)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(EvaluationRow.__dataclass_fields__))
    writer.writeheader()
    writer.writerows(asdict(row) for row in rows)
    write_text(folder / "evaluation.csv", buffer.getvalue())
    write_text(folder / "evaluation.json", json.dumps([asdict(row) for row in rows], indent=1))
    return folder / "evaluation.csv", folder / "evaluation.json"


def format_rows(rows: Sequence[EvaluationRow]) -> str:
    """The table as aligned text, one line per method and metric."""
    lines = [f"{'method':<24} {'metric':<24} {'mean':>10} {'std':>10} {'n':>5}  better"]
    lines += [f"{r.method:<24} {r.metric:<24} {r.mean:>10.4f} {r.std:>10.4f} {r.n:>5}  {r.better}" for r in rows]
    return "\n".join(lines)
