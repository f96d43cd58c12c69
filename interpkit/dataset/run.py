"""Explaining a whole dataset in one call, on any number of processes, resumable, memory-flat.

Under an initialised ``torch.distributed`` process group each rank takes a contiguous block of
the store's fixed shards (not ``DistributedSampler``, which pads with duplicates), so every index
is explained exactly once and the store is the same for any number of processes. Images are
decoded in DataLoader workers, shards are written by a background thread, and only the shard in
progress is held in memory.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import types
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import BatchSampler, DataLoader, Dataset, DistributedSampler, IterableDataset, RandomSampler, SequentialSampler
from torch.utils.data.dataloader import default_collate, default_convert
from tqdm.auto import tqdm

from ..core import Explainer, MapKind, check_int, class_scores, evaluation, forward_hooks, mixes_samples, model_device
from ..core.state import model_facts
from ..data import ImageDataset, ImageTransform, caltech5
from ..data.fingerprint import fingerprint, weights_fingerprint
from ..data.images import image_files
from ..errors import InputError, InterpkitError
from ..files import write_text
from ..metrics import ExplainerCheck
from ..registry import get_metric
from ..version import __version__
from .store import FORMAT, SHARDS, MapStore, differences, read_store, remove_unfinished, shard_done, shard_ranges, write_shard

PRECISIONS = {"bfloat16": torch.bfloat16, "float16": torch.float16}
STORED = {"float32": np.float32, "float16": np.float16}


def explain_dataset(explainer: Explainer, data: Any, out: str | os.PathLike, *, target: Any = None,
                    metrics: Sequence[str] = (), batch_size: int = 32, num_workers: int = 0,
                    shard_size: int = 256, dtype: str = "float32", precision: str | None = None,
                    transform: Any = None, classes: Sequence[str] | None = None, resume: bool = False,
                    progress: bool = True) -> MapStore:
    """Explain every sample of ``data`` with ``explainer`` into a store under ``out``; returns it
    (see ``interpkit.dataset.store`` for the layout, ``read_store(out)`` to read it later).

    ``data`` is a Dataset of (input, label) pairs, a DataLoader (its dataset, batch size and
    workers), a folder of images (one subfolder per class, or none) or ``"caltech5:SPLIT"`` for
    the bundled split; folders and the split are decoded with ``transform`` (default: 224 x 224,
    ImageNet normalisation). ``target`` is as in a single call, or ``"labels"`` for each sample's
    own label. ``metrics`` are names from the metrics registry, computed on the same batches.
    ``classes`` are the model's class names in output order: a folder's class subfolders are
    matched to them by name (a name the model lacks is refused); without them subfolders are
    numbered alphabetically, as torchvision's ImageFolder does.
    ``dtype`` stores maps as float32 or float16 (a map beyond float16's range is not stored: the
    sample is marked failed, saying so); ``precision`` runs the model under autocast
    (``"bfloat16"``, or ``"float16"`` on CUDA) with maps returned in float32. With ``resume`` a
    store begun with the same arguments and data is continued; other arguments are refused, naming
    them. Everything is validated, and the first sample explained, before anything is written.
    """
    if not isinstance(out, (str, os.PathLike)):
        raise InputError(f"out is the store's folder, a path, not {type(out).__name__}")
    if classes is not None and (isinstance(classes, str) or not all(isinstance(c, str) for c in classes)):
        raise InputError(f"classes are the model's class names in output order, a list of str, not {classes!r}")
    dataset, batch_size, num_workers = _dataset(data, batch_size, num_workers, transform, classes)
    _check(explainer, dtype, precision, shard_size, batch_size, num_workers, target, dataset)
    batch_size, shard_size, num_workers = int(batch_size), int(shard_size), int(num_workers)  # numpy ints too
    if isinstance(metrics, str):
        raise InputError(f"metrics takes a list of names, e.g. [{metrics!r}]")
    if not isinstance(metrics, (list, tuple)) or not all(isinstance(m, str) for m in metrics):
        raise InputError(f"metrics takes a list of registered metric names, e.g. ['deletion'], not {metrics!r}")
    scorers = [get_metric(m)() for m in metrics]  # unknown names refused before anything is written
    rerunning = [m for m, scorer in zip(metrics, scorers) if isinstance(scorer, ExplainerCheck)]
    if rerunning:
        raise InputError(f"{', '.join(rerunning)} re-runs the explainer on perturbed inputs or randomised models, "
                         "which explain_dataset does not store; score those with interpkit evaluate or the check itself")
    kind = _try_first_sample(explainer, dataset, target, scorers, precision)
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_available() and dist.is_initialized() else (0, 1)
    root = Path(out)
    wanted = _manifest(explainer, dataset, target, metrics, batch_size, shard_size, dtype, precision, kind)
    _agree_on_manifest(root, wanted, resume, rank, world)
    ranges = shard_ranges(len(dataset), shard_size)  # type: ignore[arg-type]
    mine = ranges[rank * len(ranges) // world:(rank + 1) * len(ranges) // world]  # contiguous, whole shards
    pending = [r for r in mine if not shard_done(root, *r, metrics)]
    if pending:
        _run(explainer, dataset, root, pending, target, scorers, metrics, batch_size,
             num_workers, STORED[dtype], precision, progress and rank == 0)
    if world > 1:
        dist.barrier()
    return read_store(root)


def _dataset(data: Any, batch_size: int, num_workers: int, transform: Any,
             classes: Sequence[str] | None) -> tuple[Dataset, int, int]:
    if isinstance(data, DataLoader):
        _check_loader(data)
        data, batch_size, num_workers = data.dataset, data.batch_size or batch_size, data.num_workers
    if isinstance(data, IterableDataset):
        raise InputError("explain_dataset needs a map-style Dataset (a length and samples by index) for its "
                         "index-keyed, resumable store, not an IterableDataset; wrap the samples in a Dataset")
    if isinstance(data, Dataset):
        if transform is not None or classes is not None:
            raise InputError("transform= and classes= apply to image folders and 'caltech5:SPLIT'; a Dataset applies "
                             "its own transform and labels")
        return data, batch_size, num_workers
    if isinstance(data, (str, os.PathLike)):
        if transform is not None and not callable(transform):
            raise InputError(f"transform must be a function of a PIL image (or None: 224 x 224, ImageNet "
                             f"normalisation), not {transform!r}")
        transform = transform or ImageTransform()
        if str(data).startswith("caltech5:"):
            split = caltech5(str(data).split(":", 1)[1], transform=transform)
            return _in_model_classes(split, classes), batch_size, num_workers
        return image_folder_dataset(Path(data), transform, classes), batch_size, num_workers
    raise InputError(f"data must be a Dataset, a DataLoader, an image folder or 'caltech5:SPLIT', "
                     f"not {type(data).__name__}")


def _check_loader(loader: DataLoader) -> None:
    """A loader is read for its dataset, batch size and workers: a collate function or a sampler
    that would change what is explained is refused, not ignored."""
    if loader.collate_fn not in (default_collate, default_convert):  # the loader's own, without batching or with
        raise InputError("explain_dataset batches the loader's dataset itself, so its collate_fn would be ignored; "
                         "move what it does into the Dataset (or its transform)")
    batches = loader.batch_sampler
    if batches is not None and type(batches) is not BatchSampler:
        raise InputError(f"explain_dataset batches the loader's dataset itself, so its {type(batches).__name__} would "
                         "be ignored; give a torch.utils.data.Subset of the samples wanted instead")
    sampler = batches.sampler if batches is not None else loader.sampler
    if not _every_sample_once(sampler):
        raise InputError("explain_dataset explains every sample of the loader's dataset once, in index order, so its "
                         f"{type(sampler).__name__} would be ignored; give a torch.utils.data.Subset of the samples "
                         "wanted instead")


def _every_sample_once(sampler: Any) -> bool:
    """Whether a sampler visits every sample once, in some order (a DistributedSampler across
    the ranks, which explain_dataset shards itself)."""
    if isinstance(sampler, (SequentialSampler, DistributedSampler)):
        return True
    return isinstance(sampler, RandomSampler) and not sampler.replacement and sampler.num_samples == len(
        sampler.data_source)


def _in_model_classes(dataset: ImageDataset, classes: Sequence[str] | None) -> ImageDataset:
    """``dataset`` labelled by the model's ``classes`` (its output order), matched by name."""
    if classes is None or list(classes) == dataset.classes:
        return dataset
    unknown = [name for name in dataset.classes if name not in classes]
    if unknown:
        raise InputError(f"the split's class(es) {', '.join(unknown)} are not classes of the model "
                         f"({', '.join(classes)}); give the model's class names")
    labels = [classes.index(dataset.classes[label]) for label in dataset.labels]
    return ImageDataset(dataset.paths, labels, list(classes), dataset.transform)


def image_folder_dataset(folder: Path, transform: Any, classes: Sequence[str] | None = None) -> ImageDataset:
    """Every image under ``folder`` in sorted path order; labelled by class subfolder when the
    images lie in subfolders (-1 for images directly in ``folder``). Subfolders are matched by
    name to ``classes`` (the model's, in output order) when given, else numbered alphabetically."""
    if not isinstance(folder, (str, os.PathLike)):
        raise InputError(f"folder is a path, not {type(folder).__name__}")
    folder = Path(folder)
    paths = image_files(folder)
    folders = sorted({p.relative_to(folder).parts[0] for p in paths if len(p.relative_to(folder).parts) > 1})
    if classes is not None:
        unknown = [name for name in folders if name not in classes]
        if unknown:
            raise InputError(f"class folder(s) {', '.join(unknown)} in {folder} are not classes of the model "
                             f"({', '.join(classes)}); rename them to its class names, or move the images directly into "
                             f"{folder} to explain them without labels")
    else:  # numbered alphabetically: a class folder without images would shift every later class's number
        empty = _empty_classes(folder, folders) if folders else []
        if empty:
            raise InputError(f"class folder(s) {', '.join(empty)} in {folder} hold no images, so the classes after "
                             "them would be numbered wrongly; remove them, or give the model's classes")
    names = list(classes) if classes is not None else folders
    labels = [names.index(p.relative_to(folder).parts[0]) if len(p.relative_to(folder).parts) > 1 else -1
              for p in paths]
    return ImageDataset(paths, labels, names, transform)


def _empty_classes(folder: Path, folders: list[str]) -> list[str]:
    """Subfolders that hold no image and are not left out on purpose: interpkit's own outputs (an
    ``explain`` folder or a store, each with its manifest.json) and second names of a class folder."""
    named = {os.path.realpath(folder / name) for name in folders}
    return sorted(d.name for d in folder.iterdir() if d.is_dir() and not d.name.startswith(".")
                  and d.name not in folders and os.path.realpath(d) not in named
                  and not (d / "manifest.json").is_file())


def _check(explainer: Explainer, dtype: str, precision: str | None, shard_size: int, batch_size: int,
           num_workers: int, target: Any, dataset: Dataset) -> None:
    if not isinstance(explainer, Explainer):
        raise InputError(f"explain_dataset takes an interpkit explainer instance, not {type(explainer).__name__}")
    if not isinstance(dtype, str) or dtype not in STORED:
        raise InputError(f"dtype must be 'float32' or 'float16', got {dtype!r}")
    if precision is not None and (not isinstance(precision, str) or precision not in PRECISIONS):
        raise InputError(f"precision must be None, 'bfloat16' or 'float16', got {precision!r}")
    if precision == "float16" and model_device(explainer.model).type != "cuda":
        raise InputError("float16 autocast needs a CUDA model; use precision='bfloat16' on a CPU")
    for name, value in (("shard_size", shard_size), ("batch_size", batch_size)):
        check_int(name, value)
    check_int("num_workers", num_workers, minimum=0)
    if len(dataset) == 0:  # type: ignore[arg-type]
        raise InputError("the dataset is empty")
    sample = _first_readable(dataset)
    if sample is None:
        return  # the first samples cannot be read: each is recorded as failed, with its reason
    if isinstance(sample, dict):
        raise InputError(f"the dataset returns dicts (keys {', '.join(map(str, sample))}); explain_dataset needs "
                         "(input, label) pairs or input tensors: wrap it in a Dataset that returns them")
    if not isinstance(sample, (tuple, list)):
        sample = (sample,)
    if not isinstance(sample[0], torch.Tensor):
        raise InputError(f"the dataset's inputs are {type(sample[0]).__name__}, not tensors; give it a transform that "
                         "makes tensors (an image folder gets interpkit's by default)")
    if len(sample) > 1 and not _is_label(sample[1]):
        raise InputError(f"the dataset's labels must be class indices (ints), not {sample[1]!r}; map class names "
                         "to the model's output indices")
    if target == "labels" and (len(sample) < 2 or not _labelled(dataset)):
        raise InputError("target='labels' needs labelled samples, and this data has none (a folder without class "
                         "subfolders, or a dataset of inputs alone); give a class or leave the target to top-1")


def _kind(value: Any) -> str:
    return f"a {value.dtype} tensor" if isinstance(value, torch.Tensor) else f"a {type(value).__name__}"


def _first_readable(dataset: Dataset, tries: int = 8) -> Any:
    for index in range(min(len(dataset), tries)):  # type: ignore[arg-type]
        try:
            return dataset[index]
        except Exception:  # a reader's failure is that sample's; the run records it
            continue
    return None


def _is_label(value: Any) -> bool:
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value[()]  # a numpy scalar, read as one
    if isinstance(value, torch.Tensor):
        return value.numel() == 1 and not value.is_floating_point() and not value.is_complex() and value.dtype != torch.bool
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _labelled(dataset: Dataset) -> bool:
    labels = getattr(dataset, "labels", None)  # a file dataset knows them without reading images
    if labels is None or not all(_is_label(label) for label in labels):  # not class indices: read from the samples
        return True
    return any(int(label) >= 0 for label in labels)


def _manifest(explainer: Explainer, dataset: Dataset, target: Any, metrics: Sequence[str], batch_size: int,
              shard_size: int, dtype: str, precision: str | None, kind: MapKind | None) -> dict[str, Any]:
    return {
        "format": FORMAT, "versions": {"interpkit": __version__, "torch": torch.__version__},
        "model": {"class": type(explainer.model).__name__, "weights_sha256": weights_fingerprint(explainer.model)},
        "explainer": {"name": explainer.name, **_describe(explainer, explainer.model)},
        "dataset": _describe_data(dataset),
        "target": repr(target), "metrics": list(metrics), "batch_size": batch_size, "shard_size": shard_size,
        "dtype": dtype, "precision": precision,
        "map_kind": kind.value if kind is not None else None,  # what the maps' axes are, for readers such as the viewer
    }


def _describe(value: Any, model: torch.nn.Module) -> Any:
    """What an explainer's configuration is, in JSON: options by value, a layer given as a module
    by its name, a wrapped explainer with its own options, a tensor by its content."""
    if isinstance(value, Explainer):
        options = {k: _describe(v, model) for k, v in sorted(vars(value).items()) if not k.startswith("_") and k != "model"}
        return {"class": type(value).__name__, "options": options}
    if isinstance(value, torch.nn.Module):
        name = model_facts(model).names.get(value)
        return f"layer '{name}'" if name is not None else f"a {type(value).__name__} outside the model"
    if isinstance(value, torch.Tensor):
        return f"tensor {tuple(value.shape)} {value.dtype} sha256 {fingerprint(value)[:16]}"
    if isinstance(value, (list, tuple)):
        return [_describe(v, model) for v in value]
    if isinstance(value, dict):
        return {str(k): _describe(v, model) for k, v in value.items()}
    if isinstance(value, str) and value and value in model_facts(model).by_name:
        return f"layer '{value}'"  # the same as the module given for it
    if isinstance(value, type) or (callable(value) and hasattr(value, "__qualname__")):
        return f"{getattr(value, '__module__', '')}.{value.__qualname__}"
    return _plain_repr(value)


def _describe_data(dataset: Dataset) -> dict[str, Any]:
    """The data by what identifies it: a file dataset's files (relative to their common folder,
    resolved, so './x' and '/abs/x' agree), classes and transform; another dataset's first,
    middle and last samples, hashed."""
    length = len(dataset)  # type: ignore[arg-type]
    described: dict[str, Any] = {"class": type(dataset).__name__, "length": length}
    paths = _files_of(dataset)
    if paths:
        absolute = [Path(os.path.abspath(p)) for p in paths]  # not through symlinks: a relinked file is other data
        root = Path(os.path.commonpath(absolute)) if len(absolute) > 1 else absolute[0].parent
        described.update(root=str(root), files=[p.relative_to(root).as_posix() for p in absolute])
        labels = getattr(dataset, "labels", None)
        if labels is not None and all(_is_label(label) for label in labels):
            described["labels_sha256"] = fingerprint(torch.as_tensor(list(labels)))
    else:
        tensors = [t for i in sorted({0, length // 2, length - 1}) for t in _tensors(dataset, i)]
        described["samples_sha256"] = fingerprint(*tensors) if tensors else None
    if getattr(dataset, "classes", None) is not None:
        described["classes"] = list(dataset.classes)  # type: ignore[attr-defined]
    transform = getattr(dataset, "transform", None)
    described["transform"] = _plain_repr(transform) if transform is not None else None
    return described


def _code_text(code: types.CodeType) -> str:
    """A code object's instructions, names and constants, nested code (comprehensions, lambdas)
    included by content: its repr holds an address."""
    constants = [_code_text(c) if isinstance(c, types.CodeType) else repr(c) for c in code.co_consts]
    return repr((code.co_code, code.co_names, constants))


def _filled(cell: Any) -> bool:
    try:
        cell.cell_contents
    except ValueError:  # a closure variable not yet assigned
        return False
    return True


def _files_of(dataset: Dataset) -> list:
    """The files a dataset reads: its ``paths`` (interpkit's), or the paths of its ``samples``
    when they are (path, label) pairs (torchvision's ImageFolder); none for any other dataset."""
    def is_path(value: Any) -> bool:
        return isinstance(value, (str, os.PathLike))

    paths = getattr(dataset, "paths", None)
    if isinstance(paths, (list, tuple)) and paths and all(is_path(p) for p in paths):
        return list(paths)
    samples = getattr(dataset, "samples", None)
    if isinstance(samples, (list, tuple)) and samples and all(
            isinstance(s, (tuple, list)) and len(s) == 2 and is_path(s[0]) for s in samples):
        return [path for path, _ in samples]
    return []


def _plain_repr(value: Any) -> Any:
    """``repr`` where it says what the object is; for an object with Python's default repr (its
    address, which differs in every process), its class and public attributes."""
    if isinstance(value, types.FunctionType):  # its name and a digest of what it computes, the same in every process
        cells = [_plain_repr(cell.cell_contents) for cell in value.__closure__ or () if _filled(cell)]
        parts = [_code_text(value.__code__), _plain_repr(value.__defaults__), _plain_repr(value.__kwdefaults__), cells]
        digest = hashlib.sha256(repr(parts).encode()).hexdigest()[:16]
        return f"function {value.__module__}.{value.__qualname__} sha256 {digest}"
    if isinstance(value, functools.partial):
        return {"partial": _plain_repr(value.func), "args": [_plain_repr(a) for a in value.args],
                "keywords": {k: _plain_repr(v) for k, v in sorted(value.keywords.items())}}
    text = repr(value)
    if " object at 0x" not in text:
        return text
    state = {k: _plain_repr(v) for k, v in sorted(getattr(value, "__dict__", {}).items()) if not k.startswith("_")}
    return {"class": f"{type(value).__module__}.{type(value).__qualname__}", **state}


def _tensors(dataset: Dataset, index: int) -> list[torch.Tensor]:
    try:
        sample = dataset[index]
    except Exception:  # an unreadable sample is recorded when it is explained
        return [torch.tensor(index)]
    parts = sample if isinstance(sample, (tuple, list)) else (sample,)
    return [torch.as_tensor(p) for p in parts if isinstance(p, (torch.Tensor, int, float, np.ndarray, np.generic))]


def _agree_on_manifest(root: Path, wanted: dict[str, Any], resume: bool, rank: int, world: int) -> None:
    """Rank 0 checks the folder (new, or a store to resume with the same arguments), removes what a
    killed writer left half-written, and writes the manifest, before any rank writes a shard;
    every rank learns the verdict, so all raise the same error."""
    problem = ""
    if rank == 0:
        problem = _check_folder(root, wanted, resume)
        if not problem:
            remove_unfinished(root)
            write_text(root / "manifest.json", json.dumps(wanted, indent=1))
    if world > 1:
        verdict = [problem]
        dist.broadcast_object_list(verdict, src=0)
        problem = verdict[0]
    if problem:
        raise InputError(problem)


def _check_folder(root: Path, wanted: dict[str, Any], resume: bool) -> str:
    manifest = root / "manifest.json"
    if root.exists() and not root.is_dir():
        return f"{root} is a file, not a folder; choose a new folder for the store"
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
    if not isinstance(stored, dict):
        return f"{manifest} is not an interpkit manifest (a JSON {type(stored).__name__}); choose a new folder"
    if (root / SHARDS).exists() and not (root / SHARDS).is_dir():
        return f"{root / SHARDS} is a file where the store keeps its shards; choose a new folder"
    changed = _changes(stored, wanted)
    if changed:
        return f"the store in {root} was begun with other arguments ({'; '.join(changed)}); use them, or a new folder"
    return ""


def _changes(stored: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    """What differs between a store's manifest and this call, in words."""
    said = []
    old, new = _as_dict(stored.get("dataset")), dict(wanted["dataset"])
    old_files, new_files = old.pop("files", None), new.pop("files", None)
    if old_files != new_files and old_files and new_files:
        first = next((i for i, (a, b) in enumerate(zip(old_files, new_files)) if a != b), min(len(old_files), len(new_files)))
        was = old_files[first] if first < len(old_files) else "nothing"
        now = new_files[first] if first < len(new_files) else "nothing"
        said.append(f"other files: sample {first} was {was!r}, now {now!r}")
    elif old_files != new_files:
        said.append("other data: the store was begun from files" if old_files else "other data: the store was begun "
                    "from a dataset without files")
    if old.pop("samples_sha256", None) != new.pop("samples_sha256", None) and not said:
        said.append("other data: the first, middle or last sample differs")
    if "map_kind" not in stored:  # a store of an earlier version, which did not record it
        wanted = {k: v for k, v in wanted.items() if k != "map_kind"}
    if _as_dict(stored.get("model")).get("weights_sha256") != wanted["model"]["weights_sha256"]:
        said.append("other model weights")
    rest = [d for d in differences({**stored, "dataset": old, "model": {**_as_dict(stored.get("model")), "weights_sha256": 0}},
                                   {**wanted, "dataset": new, "model": {**wanted["model"], "weights_sha256": 0}})
            if not d.startswith("versions.")]
    return said + rest


def _as_dict(value: Any) -> dict[str, Any]:
    return dict(value) if isinstance(value, dict) else {"(not an object)": value}


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
            label = int(known[index]) if known is not None and _is_label(known[index]) else -1
            return index, None, label, " ".join(f"{type(error).__name__}: {error}".split())
        parts = sample if isinstance(sample, (tuple, list)) else (sample,)
        x, label = parts[0], parts[1] if len(parts) > 1 else -1
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            return index, None, int(label) if _is_label(label) else -1, f"its input is {_kind(x)}, not a floating tensor"
        if not _is_label(label):
            return index, None, -1, f"its label {label!r} is not a class index (an int)"
        return index, x, int(label), ""


class _Collate:
    """Stacks a batch's readable samples; a sample whose shape differs from the batch's first, or
    that has no label when the target is each sample's label, is recorded as failed, saying why."""

    def __init__(self, need_labels: bool) -> None:
        self.need_labels = need_labels

    def __call__(self, items: list[tuple[int, Any, int, str]]) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, list]:
        shape = next((tuple(x.shape) for _, x, _, reason in items if not reason), None)
        checked = []
        for index, x, label, reason in items:
            if not reason and tuple(x.shape) != shape:
                reason = (f"its shape {tuple(x.shape)} differs from its batch's {shape}; give a transform that resizes "
                          "the inputs, or batch_size=1")
            if not reason and self.need_labels and label < 0:
                reason = "it has no label (an image outside the class folders), and the target is each sample's label"
            checked.append((index, x, label, reason))
        indices = torch.tensor([i for i, *_ in checked])
        good = [x for _, x, _, reason in checked if not reason]
        labels = torch.tensor([label for _, _, label, _ in checked])
        return indices, torch.stack(good) if good else None, labels, [reason for *_, reason in checked]


def _try_first_sample(explainer: Explainer, dataset: Dataset, target: Any, metrics: list[Any],
                      precision: str | None) -> MapKind | None:
    """Explain (and score) the first readable samples until one works, so that a call that cannot
    work is refused before the store's folder is touched; when the first three all fail, the
    first's error is the call's (one sample that fails alone is recorded in the run). Returns the
    maps' kind (None when no sample could be read)."""
    guarded, first_error = _Guarded(dataset), None
    tried = 0
    for index in range(min(len(guarded), 8)):
        _, inputs, labels, reasons = _Collate(target == "labels")([guarded[index]])
        if inputs is None:
            continue
        wanted = labels.to(model_device(explainer.model)) if target == "labels" else target
        try:
            return _explain_readable(explainer, inputs.to(model_device(explainer.model)), wanted, metrics, precision)[6]
        except InterpkitError as error:
            first_error, tried = first_error or error, tried + 1
            if tried == 3:
                break
    if first_error is not None:
        raise first_error
    return None


def _run(explainer: Explainer, dataset: Dataset, root: Path, shards: list[tuple[int, int]], target: Any,
         metrics: list[Any], metric_names: Sequence[str], batch_size: int, num_workers: int, stored: Any,
         precision: str | None, progress: bool) -> None:
    batches = [list(range(b, min(b + batch_size, stop))) for start, stop in shards
               for b in range(start, stop, batch_size)]
    loader = DataLoader(_Guarded(dataset), batch_sampler=batches, num_workers=num_workers,
                        collate_fn=_Collate(target == "labels"),
                        persistent_workers=False)
    device = model_device(explainer.model)
    writes: deque[Future] = deque()
    buffer = _ShardBuffer(metric_names)
    shard_iter = iter(shards)
    current = next(shard_iter)
    bar = tqdm(total=sum(stop - start for start, stop in shards), desc="explain", unit="image", disable=not progress)
    with ThreadPoolExecutor(max_workers=1) as writer:
        for indices, inputs, labels, reasons in loader:
            buffer.add(indices, labels, *_explain_batch(explainer, inputs, labels, reasons, target, metrics, device,
                                                        precision))
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
    """The reasons, updated, and the maps, targets, scores, predictions, probabilities and metric
    scores of the samples explained. A batch the explainer refuses is explained sample by sample,
    so that one sample it refuses (non-finite values, a label out of range) is recorded as failed
    with the reason and the others are done; so is a sample whose maps are not finite."""
    reasons = list(reasons)
    rows = [i for i, reason in enumerate(reasons) if not reason]
    if inputs is None:
        return reasons, None, None, None, None, None, {}
    inputs, wanted = inputs.to(device), labels[rows].to(device) if target == "labels" else None
    try:
        found = [(rows, _explain_readable(explainer, inputs, wanted if wanted is not None else target, metrics, precision))]
    except InterpkitError:
        found = []
        for k, row in enumerate(rows):
            try:
                alone = wanted[k:k + 1] if wanted is not None else target
                found.append(([row], _explain_readable(explainer, inputs[k:k + 1], alone, metrics, precision)))
            except InterpkitError as error:
                reasons[row] = " ".join(str(error).split())
    if not found:
        return reasons, None, None, None, None, None, {}
    kept = [row for part, _ in found for row in part]
    columns = [torch.cat([result[i] for _, result in found]) for i in range(5)]
    scored = {name: torch.cat([result[5][name] for _, result in found]) for name in found[0][1][5]}
    finite = torch.isfinite(columns[0].flatten(1)).all(dim=1)
    if not bool(finite.all()):
        hint = "; run without precision= (in float32)" if precision else ""
        for row, ok in zip(kept, finite.tolist()):
            if not ok:
                reasons[row] = f"its maps hold NaN or infinite values{hint}"
        columns = [column[finite] for column in columns]
        scored = {name: values[finite] for name, values in scored.items()}
    return (reasons, *columns, scored)


def _explain_readable(explainer: Explainer, inputs: torch.Tensor, target: Any, metrics: list[Any],
                      precision: str | None) -> tuple:
    """Maps, targets, scores, predictions, probabilities (on the host), metric scores and the maps' kind."""
    device = inputs.device
    autocast = torch.autocast(device.type, dtype=PRECISIONS[precision]) if precision else nullcontext()
    outputs: list[Any] = []  # the explainer's own forward gives the predictions, sparing a second one
    with forward_hooks([explainer.model], lambda _m, _i, output: outputs.append(output)), autocast:
        explanation = explainer(inputs, target)
    logits = [class_scores(o) for o in outputs]
    logits = [t for t in logits if t.shape[0] == len(inputs)]
    if len(logits) != 1:  # split into several calls, or copies: plain forwards, as the explainer runs the model
        step = 1 if mixes_samples(explainer.model) else len(inputs)  # a batch-mixing model sees one image at a time
        with evaluation(explainer.model), torch.no_grad(), autocast:
            logits = [torch.cat([class_scores(explainer.model(inputs[i:i + step])) for i in range(0, len(inputs), step)])]
    probabilities = logits[0].detach().float().softmax(dim=1)
    scored = {metric.name: metric(explainer.model, inputs, explanation).scores.float().cpu() for metric in metrics}
    best = probabilities.max(dim=1)
    return (explanation.maps.float().cpu(), explanation.targets.cpu(), explanation.scores.float().cpu(),
            best.indices.cpu(), best.values.cpu(), scored, explanation.kind)


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
        grid, k = next(((tuple(m.shape[1:]), t.shape[1]) for _, _, _, m, t, *_ in rows if m is not None), ((0,), 0))
        columns: dict[str, list[np.ndarray]] = {n: [] for n in ("maps", "targets", "scores", "predictions",
                                                                 "probabilities", "labels", "valid")}
        columns.update({f"metric-{n}": [] for n in self.metric_names})
        failures = []
        for indices, labels, reasons, maps, targets, scores, predictions, probabilities, metrics in rows:
            explained = np.array([not r for r in reasons])
            reasons = list(reasons)
            for row, problem in zip(explained.nonzero()[0], _unstorable(maps, grid, stored)):
                reasons[row] = reasons[row] or problem
            valid = np.array([not r for r in reasons])
            failures += [{"index": int(i), "reason": r} for i, r in zip(indices.tolist(), reasons) if r]

            def spread(values: Any, fill: Any, dtype: Any, tail: tuple = (), rows: np.ndarray = explained) -> np.ndarray:
                full = np.full((len(indices), *tail), fill, dtype=dtype)
                if values is not None:
                    full[rows] = values.numpy()
                return full

            stored_maps = maps[torch.from_numpy(valid[explained])] if maps is not None else None
            columns["maps"].append(spread(stored_maps, np.nan, stored, grid, rows=valid))
            columns["targets"].append(spread(targets, -1, np.int64, (k,)))
            columns["scores"].append(spread(scores, np.nan, np.float32, (k,)))
            columns["predictions"].append(spread(predictions, -1, np.int64))
            columns["probabilities"].append(spread(probabilities, np.nan, np.float32))
            columns["labels"].append(labels.numpy().astype(np.int64))
            columns["valid"].append(valid)
            for name in self.metric_names:
                columns[f"metric-{name}"].append(spread(metrics.get(name), np.nan, np.float32))
        return {name: np.concatenate(parts) for name, parts in columns.items()}, failures


def _unstorable(maps: torch.Tensor | None, grid: tuple, stored: Any) -> list[str]:
    """Why each explained sample's maps cannot be stored exactly ('' where they can): a shard
    holds maps of one shape, and float16 holds magnitudes up to 65504 (more would read as inf)."""
    if maps is None:
        return []
    if tuple(maps.shape[1:]) != grid:
        return [f"its maps' shape {tuple(maps.shape[1:])} differs from the rest of its shard's {grid}; give a "
                "transform that resizes the inputs"] * len(maps)
    if stored is not np.float16 or not maps.numel():
        return [""] * len(maps)
    peaks = maps.flatten(1).abs().amax(1).tolist()
    limit = float(np.finfo(np.float16).max)
    return [f"its maps reach {peak:.4g}, beyond float16's range; store them as float32 (dtype='float32')"
            if peak > limit else "" for peak in peaks]
