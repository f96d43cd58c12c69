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
from typing import Any, Sequence

import numpy as np

from ..core.options import check_int
from ..errors import InputError
from ..files import default_mode

FORMAT = "interpkit-store/1"
SHARDS = "shards"


def shard_name(start: int, stop: int) -> str:
    return f"{start:08d}-{stop:08d}"


def shard_ranges(length: int, shard_size: int) -> list[tuple[int, int]]:
    """The fixed [start, stop) ranges that tile 0 .. length."""
    return [(start, min(start + shard_size, length)) for start in range(0, length, shard_size)]


ARRAYS = ("maps", "targets", "scores", "predictions", "probabilities", "labels", "valid")


_KINDS = {"targets": "iu", "predictions": "iu", "labels": "iu", "valid": "b"}  # numpy kinds; the rest float


def shard_done(out: Path, start: int, stop: int, metrics: Sequence[str] = ()) -> bool:
    """True when the shard is whole: every array, the scores of each of ``metrics`` too, present
    with its full length (a truncated or missing file makes it pending again, so resuming
    repairs it)."""
    folder = out / SHARDS / shard_name(start, stop)
    try:
        lengths = {len(np.load(folder / f"{name}.npy", mmap_mode="r"))
                   for name in (*ARRAYS, *(f"metric-{m}" for m in metrics))}
        failures = json.loads((folder / "failures.json").read_text())
    except (OSError, ValueError, EOFError, TypeError):  # TypeError: a single value where rows belong
        return False
    return lengths == {stop - start} and isinstance(failures, list) and all(
        isinstance(f, dict) and isinstance(f.get("index"), int) for f in failures)


def remove_unfinished(out: Path) -> None:
    """Delete the temporary shard folders a killed writer left (``shards/.NAME.*``); call it only
    while no writer runs."""
    folder = out / SHARDS
    if folder.is_dir():
        for temporary in folder.glob(".*"):
            shutil.rmtree(temporary, ignore_errors=True)


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
        final = folder / shard_name(start, stop)
        if final.exists():  # a damaged shard being repaired: moved aside first, so the rename stays atomic
            damaged = Path(tempfile.mkdtemp(dir=folder, prefix=f".{shard_name(start, stop)}.damaged."))
            os.replace(final, damaged / "shard")
            shutil.rmtree(damaged, ignore_errors=True)
        os.replace(temporary, final)
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
        metrics = self.manifest.get("metrics") or []
        missing = [shard_name(*r) for r in ranges if not shard_done(self.path, *r, metrics)]
        if missing:
            raise InputError(f"the store in {self.path} is incomplete ({len(missing)} of {len(ranges)} shards missing, "
                             f"first {missing[0]}); resume the run that writes it")
        return [self.path / SHARDS / shard_name(*r) for r in ranges]

    def array(self, name: str) -> np.ndarray:
        """One array over the whole dataset (``maps``, ``targets``, ``scores``, ``predictions``,
        ``probabilities``, ``labels``, ``valid`` or ``metric-NAME``)."""
        parts = [self._load(folder, name) for folder in self._shards()]
        # a shard where every sample failed stores (n, 0) maps, targets and scores: filled to the others' shape
        shapes = {p.shape[1:] for p in parts if not (p.ndim > 1 and p.shape[1] == 0)}
        if len(shapes) > 1:
            raise InputError(f"the store's {name} have different shapes in different shards ({', '.join(map(str, sorted(shapes)))}"
                             f"), inputs of different sizes; read them shard by shard with store.shard_array('{name}', i)")
        if shapes:
            shape = shapes.pop()
            fill = -1 if np.issubdtype(parts[0].dtype, np.integer) else np.nan
            parts = [p if p.shape[1:] == shape else np.full((len(p), *shape), fill, p.dtype) for p in parts]
        return np.concatenate(parts)

    def shard_array(self, name: str, shard: int) -> np.ndarray:
        """The array ``name`` of the ``shard``-th shard (indices ``shard * shard_size`` onwards)."""
        check_int("shard", shard, minimum=0)
        folders = self._shards()
        if not 0 <= shard < len(folders):
            raise InputError(f"shard {shard} is out of range: the store has {len(folders)} shards")
        return self._load(folders[shard], name)

    def _load(self, folder: Path, name: str) -> np.ndarray:
        file = folder / f"{name}.npy"
        try:
            array = np.load(file, mmap_mode="r")
        except (OSError, ValueError, EOFError) as error:
            raise InputError(f"{file} is missing or damaged ({error}); resume the run that wrote the store to "
                             "rewrite that shard") from None
        kinds = _KINDS.get(name, "f")
        if array.ndim == 0 or array.dtype.kind not in kinds:  # one row per sample, of the kind written
            raise InputError(f"{file} is damaged (a {array.dtype} array of shape {array.shape}, where interpkit writes "
                             "one row per sample); resume the run that wrote the store to rewrite that shard")
        return array

    @property
    def files(self) -> list[str] | None:
        """Each sample's file, in index order (for data read from files)."""
        dataset = self.manifest["dataset"]
        return [str(Path(dataset["root"]) / f) for f in dataset["files"]] if "files" in dataset else None

    @property
    def classes(self) -> list[str] | None:
        """The class names that ``labels`` index, where the data has them."""
        return self.manifest["dataset"].get("classes")

    @property
    def maps(self) -> np.ndarray:
        """Every sample's maps (N, K, *grid), NaN where ``valid`` is False."""
        return self.array("maps")

    def metric(self, name: str) -> np.ndarray:
        """The metric ``name``'s score for every sample (N,), NaN for samples that failed."""
        return self.array(f"metric-{name}")

    @property
    def failures(self) -> list[dict[str, Any]]:
        """``{"index": i, "reason": ...}`` for every sample that could not be read or explained."""
        return [f for folder in self._shards() for f in json.loads((folder / "failures.json").read_text())]


def _count(value: Any, minimum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def read_store(out: str | os.PathLike) -> MapStore:
    """Open the store written by ``explain_dataset`` into ``out``."""
    if not isinstance(out, (str, os.PathLike)):
        raise InputError(f"a store is named by its folder's path, not {type(out).__name__}")
    path = Path(out)
    try:
        manifest = json.loads((path / "manifest.json").read_text())
    except (OSError, ValueError):
        raise InputError(f"no interpkit store in {path} (manifest.json missing or unreadable)") from None
    if not isinstance(manifest, dict):
        raise InputError(f"{path / 'manifest.json'} is not an interpkit manifest (a JSON {type(manifest).__name__})")
    if manifest.get("format") != FORMAT:
        raise InputError(f"{path} holds a store of format {manifest.get('format')!r}; this interpkit reads {FORMAT}")
    dataset, shard_size = manifest.get("dataset"), manifest.get("shard_size")
    length = dataset.get("length") if isinstance(dataset, dict) else None
    if not (_count(length, 0) and _count(shard_size, 1)):
        raise InputError(f"{path / 'manifest.json'} is damaged (its dataset length or shard size is missing or not a "
                         "positive int); it was not written by interpkit as it is")
    assert isinstance(dataset, dict)
    metrics, files = manifest.get("metrics", []), dataset.get("files")
    if not (isinstance(metrics, list) and all(isinstance(m, str) for m in metrics)) or (files is not None and not (
            isinstance(files, list) and len(files) == length and all(isinstance(f, str) for f in files)
            and isinstance(dataset.get("root"), str))):
        raise InputError(f"{path / 'manifest.json'} is damaged (its metrics, files or root are not what interpkit "
                         "writes, one file per sample); it was not written by interpkit as it is")
    shards = path / SHARDS
    present = sum(1 for _ in shards.iterdir()) if shards.is_dir() else 0
    assert isinstance(length, int) and isinstance(shard_size, int)
    if -(-length // shard_size) > present:  # a length beyond the shards there (a damaged one: 10**18)
        raise InputError(f"the store in {path} is incomplete ({present} shard folders for {length} samples in shards "
                         f"of {shard_size}); resume the run that writes it")
    return MapStore(path, manifest)
