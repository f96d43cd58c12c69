"""``interpkit evaluate``'s images and its table, as text and as files."""

from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Sequence

from ..data import caltech5
from ..data.images import image_files
from ..dataset.evaluation import EvaluationRow
from ..errors import InputError
from ..files import write_text


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


def table_paths(out_dir: str | os.PathLike) -> tuple[Path, Path]:
    """Where the table goes: ``evaluation.csv`` and ``evaluation.json`` in ``out_dir``."""
    return Path(out_dir) / "evaluation.csv", Path(out_dir) / "evaluation.json"


def write_rows(rows: Sequence[EvaluationRow], out_dir: str | os.PathLike) -> tuple[Path, Path]:
    """``evaluation.csv`` and ``evaluation.json`` in ``out_dir``, each written whole or not at all."""
    csv_path, json_path = table_paths(out_dir)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(EvaluationRow.__dataclass_fields__))
    writer.writeheader()
    writer.writerows(asdict(row) for row in rows)
    write_text(csv_path, buffer.getvalue())
    write_text(json_path, json.dumps([asdict(row) for row in rows], indent=1))
    return csv_path, json_path


def format_rows(rows: Sequence[EvaluationRow]) -> str:
    """The table as aligned text, one line per method and metric."""
    lines = [f"{'method':<24} {'metric':<24} {'mean':>10} {'std':>10} {'n':>5}  better"]
    lines += [f"{r.method:<24} {r.metric:<24} {r.mean:>10.4f} {r.std:>10.4f} {r.n:>5}  {r.better}" for r in rows]
    return "\n".join(lines)
