"""The on-disk store of a dataset's explanations: per-shard ``.npy`` files and a manifest.

Layout under ``out``::

    manifest.json                       what produced the store (model, explainer, data, versions)
    shards/00000000-00000256/maps.npy   (n, K, *grid) float32 or float16; NaN rows for failed samples
                             targets.npy, scores.npy (n, K); predictions.npy, probabilities.npy,
                             labels.npy, valid.npy (n,); metric-NAME.npy (n,); failures.json

Plain ``.npy`` files because every tool in the field reads them (numpy, torch, JAX, R), they
memory-map, and a shard directory appears whole (written beside, then renamed) so a killed run
never leaves half a shard. Shards cover fixed index ranges of ``shard_size`` samples, whatever
the number of processes, so the store is the same however the work was split.
``read_store(out)`` reads it back.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..files import default_mode

FORMAT = "interpkit-store/1"
SHARDS = "shards"


def shard_name(start: int, stop: int) -> str:
    return f"{start:08d}-{stop:08d}"


def shard_ranges(length: int, shard_size: int) -> list[tuple[int, int]]:
    """The fixed [start, stop) ranges that tile 0 .. length."""
    return [(start, min(start + shard_size, length)) for start in range(0, length, shard_size)]


def shard_done(out: Path, start: int, stop: int) -> bool:
    return (out / SHARDS / shard_name(start, stop) / "valid.npy").exists()


def write_shard(out: Path, start: int, stop: int, arrays: dict[str, np.ndarray], failures: list[dict]) -> None:
    """Write one shard's arrays into a temporary directory beside it, then rename it into place."""
    folder = out / SHARDS
    folder.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(dir=folder, prefix=f".{shard_name(start, stop)}."))
    try:
        for name, array in arrays.items():
            np.save(temporary / f"{name}.npy", array)
        (temporary / "failures.json").write_text(json.dumps(failures))
        os.chmod(temporary, default_mode(directory=True))  # mkdtemp's 0700 would hide it from other users
        for file in temporary.iterdir():
            os.chmod(file, default_mode())
        os.replace(temporary, folder / shard_name(start, stop))
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise


def differences(stored: dict[str, Any], wanted: dict[str, Any], prefix: str = "") -> list[str]:
    """The manifest fields that differ, as 'field: stored -> wanted'."""
    found = []
    for key in sorted(set(stored) | set(wanted)):
        a, b = stored.get(key), wanted.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            found += differences(a, b, f"{prefix}{key}.")
        elif a != b:
            found.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return found


@dataclass
class MapStore:
    """A store read back: ``manifest``, and every array concatenated in index order."""

    path: Path
    manifest: dict[str, Any]

    def __len__(self) -> int:
        return int(self.manifest["dataset"]["length"])

    def _shards(self) -> list[Path]:
        ranges = shard_ranges(len(self), int(self.manifest["shard_size"]))
        missing = [shard_name(*r) for r in ranges if not shard_done(self.path, *r)]
        if missing:
            raise InputError(f"the store in {self.path} is incomplete ({len(missing)} of {len(ranges)} shards missing, "
                             f"first {missing[0]}); resume the run that writes it")
        return [self.path / SHARDS / shard_name(*r) for r in ranges]

    def array(self, name: str) -> np.ndarray:
        """One array over the whole dataset (``maps``, ``targets``, ``scores``, ``predictions``,
        ``probabilities``, ``labels``, ``valid`` or ``metric-NAME``)."""
        parts = [np.load(folder / f"{name}.npy", mmap_mode="r") for folder in self._shards()]
        if name == "maps":  # a shard where every sample failed stores (n, 0) maps
            shape = next((p.shape[1:] for p in parts if p.ndim > 2 or (p.ndim == 2 and p.shape[1])), None)
            if shape is not None:
                parts = [p if p.shape[1:] == shape else np.full((len(p), *shape), np.nan, p.dtype) for p in parts]
        return np.concatenate(parts)

    @property
    def maps(self) -> np.ndarray:
        """Every sample's maps (N, K, *grid), NaN for samples that failed."""
        return self.array("maps")

    def metric(self, name: str) -> np.ndarray:
        """The metric ``name``'s score for every sample (N,), NaN for samples that failed."""
        return self.array(f"metric-{name}")

    @property
    def failures(self) -> list[dict[str, Any]]:
        """``{"index": i, "reason": ...}`` for every sample that could not be read or explained."""
        return [f for folder in self._shards() for f in json.loads((folder / "failures.json").read_text())]


def read_store(out: str | os.PathLike) -> MapStore:
    """Open the store written by ``explain_dataset`` into ``out``."""
    path = Path(out)
    try:
        manifest = json.loads((path / "manifest.json").read_text())
    except (OSError, ValueError):
        raise InputError(f"no interpkit store in {path} (manifest.json missing or unreadable)") from None
    if manifest.get("format") != FORMAT:
        raise InputError(f"{path} holds a store of format {manifest.get('format')!r}; this interpkit reads {FORMAT}")
    return MapStore(path, manifest)
