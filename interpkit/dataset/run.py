"""Explaining a whole dataset in one call, on any number of processes, resumable, memory-flat.

Under an initialised ``torch.distributed`` process group each rank takes a contiguous block of
the store's fixed shards (not ``DistributedSampler``, which pads with duplicates), so every index
is explained exactly once and the store is the same for any number of processes. Images are
decoded in DataLoader workers, shards are written by a background thread, and only the shard in
progress is held in memory.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from ..core import Explainer, check_int, class_scores, forward_hooks, model_device
from ..data import ImageDataset, ImageTransform, caltech5
from ..data.fingerprint import weights_fingerprint
from ..data.images import image_files
from ..errors import InputError
from ..files import write_text
from ..registry import get_metric
from ..version import __version__
from .store import FORMAT, MapStore, differences, read_store, shard_done, shard_ranges, write_shard

PRECISIONS = {"bfloat16": torch.bfloat16, "float16": torch.float16}
STORED = {"float32": np.float32, "float16": np.float16}


def explain_dataset(explainer: Explainer, data: Any, out: str | os.PathLike, *, target: Any = None,
                    metrics: Sequence[str] = (), batch_size: int = 32, num_workers: int = 0,
                    shard_size: int = 256, dtype: str = "float32", precision: str | None = None,
                    transform: Any = None, resume: bool = False, progress: bool = True) -> MapStore:
    """Explain every sample of ``data`` with ``explainer`` into a store under ``out``; returns it
    (see ``interpkit.dataset.store`` for the layout, ``read_store(out)`` to read it later).

    ``data`` is a Dataset of (input, label) pairs, a DataLoader (its dataset, batch size and
    workers), a folder of images (one subfolder per class, or none) or ``"caltech5:SPLIT"`` for
    the bundled split; folders and the split are decoded with ``transform`` (default: 224 x 224,
    ImageNet normalisation). ``target`` is as in a single call, or ``"labels"`` for each sample's
    own label. ``metrics`` are names from the metrics registry, computed on the same batches.
    ``dtype`` stores maps as float32 or float16; ``precision`` runs the model under autocast
    (``"bfloat16"``, or ``"float16"`` on CUDA) with maps returned in float32. With ``resume`` a
    store begun with the same arguments is continued; other arguments are refused, naming them.
    """
    dataset, batch_size, num_workers = _dataset(data, batch_size, num_workers, transform)
    _check(explainer, dtype, precision, shard_size, batch_size, target, dataset)
    if isinstance(metrics, str):
        raise InputError(f"metrics takes a list of names, e.g. [{metrics!r}]")
    scorers = [get_metric(m)() for m in metrics]  # unknown names refused before anything is written
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_available() and dist.is_initialized() else (0, 1)
    root = Path(out)
    wanted = _manifest(explainer, dataset, target, metrics, batch_size, shard_size, dtype, precision)
    _agree_on_manifest(root, wanted, resume, rank, world)
    ranges = shard_ranges(len(dataset), shard_size)  # type: ignore[arg-type]
    mine = ranges[rank * len(ranges) // world:(rank + 1) * len(ranges) // world]  # contiguous, whole shards
    pending = [r for r in mine if not shard_done(root, *r)]
    if pending:
        _run(explainer, dataset, root, pending, target, scorers, metrics, batch_size,
             num_workers, STORED[dtype], precision, progress and rank == 0)
    if world > 1:
        dist.barrier()
    return read_store(root)


def _dataset(data: Any, batch_size: int, num_workers: int, transform: Any) -> tuple[Dataset, int, int]:
    if isinstance(data, DataLoader):
        return data.dataset, data.batch_size or batch_size, data.num_workers
    if isinstance(data, Dataset):
        return data, batch_size, num_workers
    if isinstance(data, (str, os.PathLike)):
        transform = transform or ImageTransform()
        if str(data).startswith("caltech5:"):
            return caltech5(str(data).split(":", 1)[1], transform=transform), batch_size, num_workers
        return image_folder_dataset(Path(data), transform), batch_size, num_workers
    raise InputError(f"data must be a Dataset, a DataLoader, an image folder or 'caltech5:SPLIT', "
                     f"not {type(data).__name__}")


def image_folder_dataset(folder: Path, transform: Any) -> ImageDataset:
    """Every image under ``folder`` in sorted path order; labelled by class subfolder when the
    images lie in subfolders (-1 for images directly in ``folder``)."""
    paths = image_files(folder)
    classes = sorted({p.relative_to(folder).parts[0] for p in paths if len(p.relative_to(folder).parts) > 1})
    labels = [classes.index(p.relative_to(folder).parts[0]) if len(p.relative_to(folder).parts) > 1 else -1
              for p in paths]
    return ImageDataset(paths, labels, classes, transform)


def _check(explainer: Explainer, dtype: str, precision: str | None, shard_size: int, batch_size: int,
           target: Any, dataset: Dataset) -> None:
    if not isinstance(explainer, Explainer):
        raise InputError(f"explain_dataset takes an interpkit explainer instance, not {type(explainer).__name__}")
    if dtype not in STORED:
        raise InputError(f"dtype must be 'float32' or 'float16', got {dtype!r}")
    if precision is not None and precision not in PRECISIONS:
        raise InputError(f"precision must be None, 'bfloat16' or 'float16', got {precision!r}")
    if precision == "float16" and model_device(explainer.model).type != "cuda":
        raise InputError("float16 autocast needs a CUDA model; use precision='bfloat16' on a CPU")
    for name, value in (("shard_size", shard_size), ("batch_size", batch_size)):
        check_int(name, value)
    if target == "labels" and not _has_labels(dataset):
        raise InputError("target='labels' needs a dataset of (input, label) pairs")
    if len(dataset) == 0:  # type: ignore[arg-type]
        raise InputError("the dataset is empty")


def _has_labels(dataset: Dataset) -> bool:
    sample = dataset[0]
    return isinstance(sample, (tuple, list)) and len(sample) >= 2


def _manifest(explainer: Explainer, dataset: Dataset, target: Any, metrics: Sequence[str], batch_size: int,
              shard_size: int, dtype: str, precision: str | None) -> dict[str, Any]:
    options = {k: repr(v) for k, v in sorted(vars(explainer).items())
               if not k.startswith("_") and isinstance(v, (int, float, str, bool, type(None), tuple, list))}
    return {
        "format": FORMAT, "versions": {"interpkit": __version__, "torch": torch.__version__},
        "model": {"class": type(explainer.model).__name__, "weights_sha256": weights_fingerprint(explainer.model)},
        "explainer": {"name": explainer.name, "class": type(explainer).__name__, "options": options},
        "dataset": {"class": type(dataset).__name__, "length": len(dataset),  # type: ignore[arg-type]
                    "fingerprint": _fingerprint(dataset)},
        "target": repr(target), "metrics": list(metrics), "batch_size": batch_size, "shard_size": shard_size,
        "dtype": dtype, "precision": precision,
    }


def _fingerprint(dataset: Dataset) -> str:
    """The file list where the dataset has one (file dataset), else its class and length."""
    paths = getattr(dataset, "paths", None) or [p for p, *_ in getattr(dataset, "samples", [])]
    digest = hashlib.sha256(f"{type(dataset).__name__}:{len(dataset)}".encode())  # type: ignore[arg-type]
    for path in paths:
        digest.update(str(path).encode())
    return digest.hexdigest()


def _agree_on_manifest(root: Path, wanted: dict[str, Any], resume: bool, rank: int, world: int) -> None:
    """Rank 0 checks the folder (new, or a store to resume with the same arguments) and writes the
    manifest; every rank learns the verdict, so all raise the same error."""
    problem = ""
    if rank == 0:
        problem = _check_folder(root, wanted, resume)
        if not problem:
            write_text(root / "manifest.json", json.dumps(wanted, indent=1))
    if world > 1:
        verdict = [problem]
        dist.broadcast_object_list(verdict, src=0)
        problem = verdict[0]
    if problem:
        raise InputError(problem)


def _check_folder(root: Path, wanted: dict[str, Any], resume: bool) -> str:
    manifest = root / "manifest.json"
    if not manifest.exists():
        if root.exists() and any(root.iterdir()):
            return f"{root} is not empty and holds no interpkit store; choose an empty or new folder"
        return ""
    if not resume:
        return f"{root} already holds a store; pass resume=True (--resume) to continue it, or choose a new folder"
    try:
        stored = json.loads(manifest.read_text())
    except ValueError:
        return f"{manifest} is unreadable; choose a new folder"
    changed = [d for d in differences(stored, wanted) if not d.startswith("versions.")]
    if changed:
        return f"the store in {root} was begun with other arguments ({'; '.join(changed)}); use them, or a new folder"
    return ""


class _Guarded(Dataset):
    """Yields (index, input or None, label, reason): a sample that cannot be read is reported,
    not raised, so one corrupt file does not stop the run."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[int, Any, int, str]:
        try:
            sample = self.dataset[index]
        except Exception as error:  # any reader's failure is this sample's, recorded with its reason
            known = getattr(self.dataset, "labels", None)  # a file dataset knows the label without the file
            label = int(known[index]) if known is not None else -1
            return index, None, label, " ".join(f"{type(error).__name__}: {error}".split())
        if isinstance(sample, (tuple, list)):
            return index, sample[0], int(sample[1]) if len(sample) > 1 else -1, ""
        return index, sample, -1, ""


def _collate(items: list[tuple[int, Any, int, str]]) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, list]:
    indices = torch.tensor([i for i, *_ in items])
    good = [x for _, x, _, reason in items if not reason]
    labels = torch.tensor([label for _, _, label, _ in items])
    inputs = torch.stack(good) if good else None
    return indices, inputs, labels, [reason for *_, reason in items]


def _run(explainer: Explainer, dataset: Dataset, root: Path, shards: list[tuple[int, int]], target: Any,
         metrics: list[Any], metric_names: Sequence[str], batch_size: int, num_workers: int, stored: Any,
         precision: str | None, progress: bool) -> None:
    batches = [list(range(b, min(b + batch_size, stop))) for start, stop in shards
               for b in range(start, stop, batch_size)]
    loader = DataLoader(_Guarded(dataset), batch_sampler=batches, num_workers=num_workers, collate_fn=_collate,
                        persistent_workers=False)
    device = model_device(explainer.model)
    writes: deque[Future] = deque()
    buffer = _ShardBuffer(metric_names)
    shard_iter = iter(shards)
    current = next(shard_iter)
    bar = tqdm(total=sum(stop - start for start, stop in shards), desc="explain", unit="image", disable=not progress)
    with ThreadPoolExecutor(max_workers=1) as writer:
        for indices, inputs, labels, reasons in loader:
            buffer.add(indices, labels, reasons, *_explain_batch(explainer, inputs, labels, reasons, target,
                                                                   metrics, device, precision))
            bar.update(len(indices))
            if int(indices[-1]) + 1 == current[1]:  # the shard is complete: write it while the model goes on
                writes.append(writer.submit(write_shard, root, *current, *buffer.take(stored)))
                while len(writes) > 2:  # at most two finished shards wait in memory
                    writes.popleft().result()
                current = next(shard_iter, current)
        for write in writes:
            write.result()
    bar.close()


def _explain_batch(explainer: Explainer, inputs: torch.Tensor | None, labels: torch.Tensor, reasons: list[str],
                   target: Any, metrics: list[Any], device: torch.device, precision: str | None) -> tuple:
    """Maps, targets, scores, predictions, probabilities and metric scores of the readable samples."""
    if inputs is None:
        return None, None, None, None, None, {}
    inputs = inputs.to(device)
    ok = torch.tensor([not r for r in reasons])
    batch_target = labels[ok].to(device) if target == "labels" else target
    autocast = torch.autocast(device.type, dtype=PRECISIONS[precision]) if precision else nullcontext()
    outputs: list[Any] = []  # the explainer's own forward gives the predictions, sparing a second one
    with forward_hooks([explainer.model], lambda _m, _i, output: outputs.append(output)), autocast:
        explanation = explainer(inputs, batch_target)
    logits = [class_scores(o) for o in outputs]
    logits = [t for t in logits if t.shape[0] == len(inputs)]
    if len(logits) != 1:  # split into several calls (a batch-mixing model): one plain forward
        with torch.no_grad(), autocast:
            logits = [class_scores(explainer.model(inputs))]
    probabilities = logits[0].detach().float().softmax(dim=1)
    scored = {}
    for metric in metrics:
        scored[metric.name] = metric(explainer.model, inputs, explanation).scores.float().cpu()
    best = probabilities.max(dim=1)
    maps = explanation.maps.float().cpu()  # the store needs the results on the host; checked there, for free
    if not torch.isfinite(maps).all():
        raise InputError("the explanation has non-finite values; run without precision= (in float32)")
    return (maps, explanation.targets.cpu(), explanation.scores.float().cpu(), best.indices.cpu(),
            best.values.cpu(), scored)


class _ShardBuffer:
    """The rows of the shard in progress; failed samples get NaN maps and -1 targets."""

    def __init__(self, metric_names: Sequence[str]) -> None:
        self.metric_names = list(metric_names)
        self.rows: list[tuple] = []

    def add(self, indices: torch.Tensor, labels: torch.Tensor, reasons: list[str], maps: Any, targets: Any,
            scores: Any, predictions: Any, probabilities: Any, metrics: dict[str, torch.Tensor]) -> None:
        self.rows.append((indices, labels, reasons, maps, targets, scores, predictions, probabilities, metrics))

    def take(self, stored: Any) -> tuple[dict[str, np.ndarray], list[dict]]:
        rows, self.rows = self.rows, []
        shape = next(((m.shape[1:], t.shape[1]) for _, _, _, m, t, *_ in rows if m is not None), ((0,), 0))
        (grid, k) = shape
        columns: dict[str, list[np.ndarray]] = {n: [] for n in ("maps", "targets", "scores", "predictions",
                                                                 "probabilities", "labels", "valid")}
        columns.update({f"metric-{n}": [] for n in self.metric_names})
        failures = []
        for indices, labels, reasons, maps, targets, scores, predictions, probabilities, metrics in rows:
            ok = np.array([not r for r in reasons])
            n = len(indices)
            failures += [{"index": int(i), "reason": r} for i, r in zip(indices.tolist(), reasons) if r]

            def spread(values: Any, fill: Any, dtype: Any, tail: tuple = ()) -> np.ndarray:
                full = np.full((n, *tail), fill, dtype=dtype)
                if values is not None:
                    full[ok] = values.numpy()
                return full

            columns["maps"].append(spread(maps, np.nan, stored, tuple(grid)))
            columns["targets"].append(spread(targets, -1, np.int64, (k,)))
            columns["scores"].append(spread(scores, np.nan, np.float32, (k,)))
            columns["predictions"].append(spread(predictions, -1, np.int64))
            columns["probabilities"].append(spread(probabilities, np.nan, np.float32))
            columns["labels"].append(labels.numpy().astype(np.int64))
            columns["valid"].append(ok)
            for name in self.metric_names:
                columns[f"metric-{name}"].append(spread(metrics.get(name), np.nan, np.float32))
        return {name: np.concatenate(parts) for name, parts in columns.items()}, failures
