"""A canonical-split folder with a few images per class, for reports that need every section
but not the whole split's arithmetic."""

import json
from pathlib import Path

from interpkit.data import caltech5


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
