"""A canonical-split folder with a few images per class, for reports that need every section
but not the whole split's arithmetic."""

import json
from functools import partial
from pathlib import Path

import interpkit
import interpkit.report
from interpkit.data import caltech5

#: the same code with fewer forwards (their defaults cost minutes here), for the conformance test
#: and tiny reports: RISE's masks still span three batches of its max_batch, each sampler draws
#: several samples
FEWER_FORWARDS = {"rise": {"masks": 150}, "shapley_value_sampling": {"samples": 3}, "lime": {"samples": 60},
                  "kernel_shap": {"samples": 60}, "sscam": {"samples": 3}, "iscam": {"samples": 3}}


def with_fewer_forwards(monkeypatch) -> None:
    """For a tiny report that tests the page, not the methods' sample counts (the whole study's
    report keeps every default): the report's explainers with ``FEWER_FORWARDS``, 16 visualisation steps."""
    registered = interpkit.get_explainer
    monkeypatch.setattr(interpkit, "get_explainer", lambda name: partial(registered(name), **FEWER_FORWARDS.get(name, {})))
    monkeypatch.setattr(interpkit.report, "VISUALISE_STEPS", 16)


def tiny_caltech5(folder: Path, train: int = 2, val: int = 1, test: int = 1) -> Path:
    """Copy the first ``train``/``val``/``test`` images of each class of the bundled split into
    ``folder`` with their ``split.json``; returns ``folder``."""
    split = {"classes": caltech5("train").classes}
    for name, per_class in (("train", train), ("val", val), ("test", test)):
        source = caltech5(name)
        split[name] = []
        for c in range(len(split["classes"])):
            for path in [p for p, label in zip(source.paths, source.labels) if label == c][:per_class]:
                target = folder / path.parent.name / path.name
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(path.read_bytes())
                split[name].append(f"{path.parent.name}/{path.name}")
    (folder / "split.json").write_text(json.dumps(split))
    return folder
