"""Training the zoo on the canonical split: the study's Task 1 and Task 2 tables.

``train_models(["caltech5_arch1", ...], out_dir)`` trains each model, writes its weights and
their description (checksum, preprocessing, categories, metrics, recipe, command), the
confusion matrices, and a results table in markdown and JSON. ``interpkit train`` runs it.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any, Sequence

import torch

from ..data import ImageTransform, caltech5
from ..errors import InputError, InterpkitError
from ..files import save_figure, write_text
from ..registry import get_model, list_models
from ..zoo import sha256_file, vgg
from . import transfer
from .checkpoint import save_atomic
from .features import cached_features
from .loop import Evaluation, Split, TrainConfig, TrainResult, evaluate, fit, training_checkpoint

SPLIT_NAMES = ("train", "val", "test")
STAND_IN = "vgg19_slim_caltech5"
STUDY: dict[str, dict[str, float | None]] = {  # the reference study's accuracies, for the results table
    "caltech5_arch1": {"train": 0.976, "val": 0.74, "test": None},
    "caltech5_arch2": {"train": 1.0, "val": 0.74, "test": 0.76},
    "caltech5_arch3": {"train": 0.996, "val": 0.70, "test": None},
    "vgg19_caltech5": {"train": 0.976, "val": 0.96, "test": 0.93},
    STAND_IN: {"train": 0.976, "val": 0.96, "test": 0.93},  # the study's VGG19, which the stand-in replaces
}


def load_splits(data_dir: str | os.PathLike | None, size: tuple[int, int]) -> tuple[dict[str, Split], list[str]]:
    """The canonical split decoded once: bundled, or from ``data_dir`` (with its split JSON)."""
    splits, classes = {}, []
    for name in SPLIT_NAMES:
        dataset = caltech5(name, root=data_dir)
        classes = dataset.classes
        images, labels = dataset.tensors(size)
        splits[name] = Split(images, labels)
    return splits, classes


def train_models(names: Sequence[str], out_dir: str | os.PathLike, config: TrainConfig | None = None,
                 data_dir: str | os.PathLike | None = None, checkpoint_dir: str | os.PathLike | None = None,
                 resume: bool = False, backbone: Any = vgg.IMAGENET, cache_dir: str | os.PathLike | None = None,
                 progress: bool = True, command: str | None = None) -> list[dict[str, Any]]:
    """Train each named zoo model; returns one results row per model (also written as tables).

    ``command`` is recorded in each weights description (the command line that reproduces it).
    """
    config = config or TrainConfig()
    unknown = [n for n in names if n not in list_models()]
    if unknown or not names:
        raise InputError(f"unknown model(s) {', '.join(unknown) or '(none given)'}; choose from {', '.join(list_models())}")
    if resume and checkpoint_dir is None:
        raise InputError("resuming reads each model's checkpoint: give the folder they were saved to (--checkpoint-dir)")
    _check_sources(names, data_dir, backbone)
    _check_checkpoints(names, checkpoint_dir, resume, config)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file; give a folder for the weights and tables")
    transform = ImageTransform()
    splits, classes = load_splits(data_dir, transform.size)
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        return _train_each(names, out, config, splits, classes, transform, data_dir, checkpoint_dir, resume, backbone,
                           cache_dir, progress, command)
    except InterpkitError:  # refused (a checkpoint that does not fit, say) before anything was written
        if created and not any(out.iterdir()):
            out.rmdir()
        raise


def _train_each(names: Sequence[str], out: Path, config: TrainConfig, splits: dict[str, Split], classes: list[str],
                transform: ImageTransform, data_dir: Any, checkpoint_dir: Any, resume: bool, backbone: Any,
                cache_dir: Any, progress: bool, command: str | None) -> list[dict[str, Any]]:
    rows = []
    for name in names:
        checkpoint = Path(checkpoint_dir) / f"{name}.ckpt" if checkpoint_dir else None
        resume_this = resume and checkpoint is not None and checkpoint.exists()  # the others start afresh
        if name == STAND_IN:
            model, result, scores, extra, own = _train_stand_in(data_dir, checkpoint_dir, resume, progress)
            weights, weights_name = model.state_dict(), f"{name}.pt"
        elif name == "vgg19_caltech5":
            model, result, scores = _train_vgg_head(splits, classes, config, transform, checkpoint, resume_this, backbone,
                                                    cache_dir or out / "feature-cache", progress)
            weights = vgg.head(model).state_dict()
            weights_name = "vgg19_caltech5_head.pt"
        else:
            torch.manual_seed(config.seed)
            model = get_model(name, num_classes=len(classes), dropout=config.dropout)
            result = fit(model, splits["train"], splits["val"], transform.normalize, config, len(classes),
                         checkpoint, resume_this, progress)
            scores = {s: evaluate(model, splits[s], transform.normalize, len(classes)) for s in SPLIT_NAMES}
            weights, weights_name = model.state_dict(), f"{name}.pt"
        if name != STAND_IN:  # the recipe the weights were trained with
            extra = {"recipe": asdict(_head_config(config) if name == "vgg19_caltech5" else config)}
        recorded = command or f"interpkit train --models {name} --out {out}"
        rows.append(_write_model(out, name, weights_name, weights, model, result, scores, classes, extra,
                                 own if name == STAND_IN else transform, recorded, data_dir))
        write_tables(out, rows)  # after each model: the tables always describe the weights beside them
    return rows


def _check_sources(names: Sequence[str], data_dir: Any, backbone: Any) -> None:
    """What the models train from, checked before the first is trained: a late refusal would come
    after earlier models' weights had been replaced."""
    if STAND_IN in names:
        _stand_in_categories(data_dir)
    if "vgg19_caltech5" in names and isinstance(backbone, (str, os.PathLike)) and str(backbone) != vgg.IMAGENET:
        if not Path(backbone).is_file():
            raise InputError(f"backbone weights file not found: {backbone}")


def _check_checkpoints(names: Sequence[str], checkpoint_dir: Any, resume: bool, config: TrainConfig) -> None:
    """A fresh run refuses to replace checkpoints; a resumed run needs at least one to continue,
    and every one readable and of its recipe, before the first model trains."""
    if checkpoint_dir is None:
        return
    if Path(checkpoint_dir).exists() and not Path(checkpoint_dir).is_dir():
        raise InputError(f"--checkpoint-dir {checkpoint_dir} is a file; give a folder for the checkpoints")
    found = [(name, path) for name in names for path in _checkpoint_paths(name, Path(checkpoint_dir)) if path.exists()]
    if found and not resume:
        raise InputError(f"{found[0][1]} exists: pass --resume to continue from the checkpoints in {checkpoint_dir}, "
                         "or give another --checkpoint-dir")
    if resume and not found:
        raise InputError(f"cannot resume: {checkpoint_dir} holds no checkpoint of {', '.join(names)}")
    for name, path in found:  # the stand-in's stages have recipes of their own, checked when each resumes
        recipe = None if name == STAND_IN else _head_config(config) if name == "vgg19_caltech5" else config
        training_checkpoint(path, recipe)


def _checkpoint_paths(name: str, folder: Path) -> list[Path]:
    if name != STAND_IN:
        return [folder / f"{name}.ckpt"]
    stages = [f"pretrain-{i + 1}" for i in range(len(transfer.PRETRAIN_STAGES))] + ["linear-probe", "fine-tune"]
    return [folder / f"{STAND_IN}.{stage}.ckpt" for stage in stages]


def _stand_in_categories(data_dir: Any) -> Path:
    categories = Path(data_dir) / "101_ObjectCategories" if data_dir is not None else None
    if categories is None or not categories.is_dir():
        raise InputError(f"{STAND_IN} is pretrained on Caltech-101's other categories: pass --data-dir with the "
                         "folder that holds 101_ObjectCategories and caltech5_split.json")
    return categories


def _train_vgg_head(splits: dict[str, Split], classes: list[str], config: TrainConfig, transform: ImageTransform,
                    checkpoint: Path | None, resume: bool, backbone: Any, cache_dir: Any,
                    progress: bool) -> tuple[torch.nn.Module, TrainResult, dict[str, Evaluation]]:
    """Train only the new last layer, on backbone features computed once (and cached)."""
    torch.manual_seed(config.seed)
    model = get_model("vgg19_caltech5", num_classes=len(classes), backbone=backbone)
    features = {s: Split(cached_features(lambda x: vgg.backbone_features(model, x), vgg.backbone(model),
                                         splits[s].images,
                                         transform.normalize, cache_dir, tag=repr(transform)), splits[s].labels)
                for s in SPLIT_NAMES}
    head_config = _head_config(config)
    head = vgg.head(model)
    result = fit(head, features["train"], features["val"], lambda f: f, head_config, len(classes),
                 checkpoint, resume, progress)
    scores = {s: evaluate(head, features[s], lambda f: f, len(classes)) for s in SPLIT_NAMES}
    return model, result, scores


def _head_config(config: TrainConfig) -> TrainConfig:
    """The VGG head's recipe: the run's, without augmentation (it trains on cached features)."""
    return TrainConfig(**{**asdict(config), "augment": False})


def _train_stand_in(data_dir: Any, checkpoint_dir: Any, resume: bool, progress: bool
                    ) -> tuple[torch.nn.Module, TrainResult, dict[str, Evaluation], dict[str, Any], ImageTransform]:
    """Task 2 offline: a slim VGG19 pretrained on Caltech-101's other categories, fine-tuned here."""
    categories = _stand_in_categories(data_dir)
    transform = ImageTransform(size=transfer.SIZE)
    splits, classes = load_splits(data_dir, transform.size)
    paths: list[Path | None] = [*_checkpoint_paths(STAND_IN, Path(checkpoint_dir))] if checkpoint_dir else \
        [None] * (len(transfer.PRETRAIN_STAGES) + 2)
    stages, tuned = paths[:-2], (paths[-2], paths[-1])
    # --resume continues each stage that has a checkpoint and starts the others
    pretrained, history, held_out = transfer.pretrain(categories, classes, checkpoints=stages, resume=resume,
                                                      progress=progress)
    model, probed, result = transfer.fine_tune(pretrained, splits, len(classes), transform, checkpoints=tuned,
                                               resume=resume, progress=progress)
    scores = {s: evaluate(model, splits[s], transform.normalize, len(classes)) for s in SPLIT_NAMES}
    sources, pretraining_seconds = len(held_out.confusion), sum(h.seconds for h in history)
    epochs = sum(h.epochs_run for h in history)
    extra = {"recipe": {"pretraining": [asdict(c) for c in transfer.PRETRAIN_STAGES],
                        "linear_probe": asdict(transfer.LINEAR_PROBE), "fine_tuning": asdict(transfer.FINE_TUNE)},
             "pretraining": {
                 "summary": (f"{sources} categories, {epochs} epochs at {transform.size[0]} x {transform.size[1]} "
                             "with batch normalisation folded into the convolutions afterwards; "
                             f"{held_out.accuracy:.1%} on held-out images of those categories"),
                 "categories": sources, "held_out_accuracy": round(held_out.accuracy, 4),
                 "seconds": round(pretraining_seconds)},
             "training_seconds": round(pretraining_seconds + probed.seconds + result.seconds)}
    return model, result, scores, extra, transform


def _write_model(out: Path, name: str, weights_name: str, weights: dict, model: torch.nn.Module, result: TrainResult,
                 scores: dict[str, Evaluation], classes: list[str], extra: dict[str, Any],
                 transform: ImageTransform, command: str, data_dir: Any) -> dict[str, Any]:
    path = out / weights_name
    save_atomic({k: v.contiguous() for k, v in weights.items()}, path)
    metrics = {f"{s}_accuracy": round(scores[s].accuracy, 4) for s in SPLIT_NAMES}
    meta = {
        "model": name,
        "categories": classes,
        "metrics": metrics,
        "confusion": {s: scores[s].confusion.tolist() for s in SPLIT_NAMES},
        "best_epoch": result.best_epoch,
        "epochs_run": result.epochs_run,
        "num_params": sum(p.numel() for p in model.parameters()),
        "training_seconds": round(result.seconds),
        **extra,
        "command": command,
        "dataset": "canonical five-class Caltech-101 split (250 train / 50 val / 100 test), "
                   + ("bundled" if data_dir is None else f"read from {data_dir}"),
    }
    sidecar = {"sha256": sha256_file(path), "meta": meta,
               "transforms": {"size": list(transform.size), "mean": list(transform.mean), "std": list(transform.std)}}
    write_text(path.with_suffix(".json"), json.dumps(sidecar, indent=1))
    _write_confusions(out, name, scores, classes)
    return {"model": name, **metrics, "best_epoch": result.best_epoch, "num_params": meta["num_params"]}


def _write_confusions(out: Path, name: str, scores: dict[str, Evaluation], classes: list[str]) -> None:
    from ..viz.figures import plot_confusion

    for split in SPLIT_NAMES:
        figure = plot_confusion(scores[split].confusion, classes, f"{name}: {split} ({scores[split].accuracy:.1%})")
        save_figure(out / f"confusion_{name}_{split}.png", figure, dpi=100)


def write_tables(out: Path, rows: list[dict[str, Any]]) -> None:
    """``results.md`` and ``results.json``: ours beside the study's figures."""
    lines = ["| model | train | validation | test | study train | study validation | study test | params |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for row in rows:
        study = STUDY.get(row["model"], {})
        cells = [f"{row[f'{s}_accuracy']:.1%}" for s in SPLIT_NAMES]
        cells += [_percent(study.get(s)) for s in SPLIT_NAMES]
        lines.append(f"| {row['model']} | " + " | ".join(cells) + f" | {row['num_params']:,} |")
    write_text(out / "results.md", "\n".join(lines) + "\n")
    write_text(out / "results.json", json.dumps(rows, indent=1))


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


__all__ = ["STUDY", "Evaluation", "Split", "TrainConfig", "TrainResult", "evaluate", "fit", "load_splits",
           "train_models", "write_tables"]
