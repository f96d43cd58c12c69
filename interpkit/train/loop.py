"""Seeded, deterministic training with augmentation, early stopping and resumable checkpoints.

Images are decoded once into uint8 tensors; each epoch draws its shuffling and augmentation from
a generator seeded by (seed, epoch), so a run resumed from any checkpoint ends exactly like an
uninterrupted one. Under an initialised ``torch.distributed`` process group the model is wrapped
in DistributedDataParallel and each rank takes its share of every batch.
"""

from __future__ import annotations

import math
import numbers
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..core import evaluation
from ..errors import InputError, WeightsError
from .augment import augment_batch
from .checkpoint import load_checkpoint, save_atomic


@dataclass
class TrainConfig:
    """The recipe. ``patience`` epochs without a better validation score stop training."""

    epochs: int = 100
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 5e-2
    label_smoothing: float = 0.1
    warmup_epochs: int = 3
    augment: bool = True
    patience: int | None = 25
    seed: int = 1
    dropout: float = 0.3  # used when the train command builds a zoo CNN

    def __post_init__(self) -> None:
        for name, least in (("epochs", 1), ("batch_size", 1), ("warmup_epochs", 0)):
            _check_count(name, getattr(self, name), least)
        if self.patience is not None:
            _check_count("patience", self.patience, 1, "; None turns early stopping off")
        _check_count("seed", self.seed, 0)
        if self.seed >= 2 ** 46:  # each epoch's seed is seed * 100_003 + epoch, within torch's 64 bits
            raise InputError(f"seed must be below 2**46, got {self.seed}")
        for name, low, high in (("lr", 0.0, math.inf), ("weight_decay", 0.0, math.inf),
                                ("label_smoothing", 0.0, 1.0), ("dropout", 0.0, 1.0)):
            value = getattr(self, name)
            inside = isinstance(value, numbers.Real) and not isinstance(value, bool) and low <= float(value) < high
            if not inside or (name == "lr" and value == 0):  # NaN fails every comparison
                raise InputError(f"{name} must be a number in {'(' if name == 'lr' else '['}{low:g}, {high:g}), "
                                 f"got {value!r}")
        if not isinstance(self.augment, bool):
            raise InputError(f"augment must be True or False, got {self.augment!r}")


def _check_count(name: str, value: Any, least: int, hint: str = "") -> None:
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < least:
        raise InputError(f"{name} must be an integer of at least {least}, got {value!r}{hint}")


@dataclass
class Split:
    """Decoded images uint8 (N, 3, H, W) and labels (N,)."""

    images: torch.Tensor
    labels: torch.Tensor


@dataclass
class Evaluation:
    accuracy: float
    loss: float
    confusion: torch.Tensor  # (classes, classes): rows true, columns predicted
    predictions: torch.Tensor


@dataclass
class TrainResult:
    best_epoch: int
    epochs_run: int
    history: list[dict[str, float]] = field(default_factory=list)
    best_state: dict[str, torch.Tensor] = field(default_factory=dict)
    seconds: float = 0.0  # wall time spent in epochs, summed over resumed runs


_CHECKPOINT_KEYS = {"model", "optimizer", "schedule", "epoch", "history", "best_epoch", "best_key", "best_state",
                    "stale", "config"}

Prepare = Callable[[torch.Tensor], torch.Tensor]  # stored batch (uint8 images, features) -> model input


@torch.no_grad()
def evaluate(model: nn.Module, split: Split, prepare: Prepare, classes: int, batch_size: int = 100) -> Evaluation:
    """Accuracy, mean loss, confusion matrix and predictions in eval mode (training mode restored)."""
    device = next(model.parameters()).device
    with evaluation(model):
        logits = torch.cat([model(prepare(split.images[i:i + batch_size].to(device)))
                            for i in range(0, len(split.labels), batch_size)])
    labels = split.labels.to(logits.device)
    predictions = logits.argmax(1)
    confusion = torch.zeros(classes, classes, dtype=torch.long)
    confusion.index_put_((labels.cpu(), predictions.cpu()), torch.ones_like(labels.cpu()), accumulate=True)
    return Evaluation(
        accuracy=(predictions == labels).float().mean().item(),
        loss=F.cross_entropy(logits, labels).item(),
        confusion=confusion,
        predictions=predictions.cpu(),
    )


def training_checkpoint(checkpoint: str | os.PathLike, config: TrainConfig | None) -> dict[str, Any]:
    """The checkpoint ``fit`` wrote, checked to be one and, with ``config``, of that recipe."""
    state = load_checkpoint(checkpoint)
    missing = _CHECKPOINT_KEYS - set(state) if isinstance(state, dict) else _CHECKPOINT_KEYS
    if missing:
        raise InputError(f"{checkpoint} is not a training checkpoint (it lacks {', '.join(sorted(missing))}); "
                         "give the --checkpoint-dir a run of 'interpkit train' wrote, or start afresh")
    if config is not None and state["config"] != asdict(config):
        differences = ", ".join(f"{key} {state['config'].get(key)!r} there, {value!r} now"
                                for key, value in asdict(config).items() if state["config"].get(key) != value)
        raise InputError(f"checkpoint {checkpoint} was written with another recipe ({differences}); resume "
                         "with the same settings, or start afresh without --resume")
    return state


def fit(model: nn.Module, train: Split, val: Split, prepare: Prepare, config: TrainConfig,
        classes: int, checkpoint: str | Path | None = None, resume: bool = False, progress: bool = True,
        parameters: Callable[[nn.Module], Any] | None = None) -> TrainResult:
    """Train ``model`` in place and load the weights of its best validation epoch into it.

    ``prepare`` maps a stored batch to model inputs (``ImageTransform.normalize`` for uint8
    images; the identity for cached features, with ``augment=False``).
    Best means highest validation accuracy, ties broken by lower validation loss. With
    ``checkpoint`` the state is written atomically after every epoch; ``resume`` continues from
    it. ``parameters`` picks what to optimise (default: every parameter that requires grad).
    """
    device = next(model.parameters()).device
    trainable = list(parameters(model) if parameters else (p for p in model.parameters() if p.requires_grad))
    optimizer = torch.optim.AdamW(trainable, lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = math.ceil(len(train.labels) / config.batch_size)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, _warmup_cosine(config, steps_per_epoch))
    result, start, best_key, stale = TrainResult(best_epoch=-1, epochs_run=0), 0, (-1.0, 0.0), 0
    if resume:
        if checkpoint is None or not Path(checkpoint).exists():
            raise InputError(f"cannot resume: no checkpoint at {checkpoint}")
        state = training_checkpoint(checkpoint, config)
        before = {key: value.clone() for key, value in model.state_dict().items()}
        try:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            schedule.load_state_dict(state["schedule"])
        except (RuntimeError, ValueError, KeyError, TypeError) as error:
            model.load_state_dict(before)  # a refused checkpoint leaves no tensor of it behind
            found = " ".join(str(error).split())[:160]
            raise WeightsError(f"checkpoint {checkpoint} is of another model ({found}); resume with the model it "
                               "was written for, or start afresh") from None
        result = TrainResult(state["best_epoch"], state["epoch"] + 1, state["history"], state["best_state"],
                             state.get("seconds", 0.0))
        start, best_key, stale = state["epoch"] + 1, tuple(state["best_key"]), state["stale"]
    network = _distributed(model)
    bar = tqdm(range(start, config.epochs), desc="epochs", unit="epoch", disable=not progress, initial=start,
               total=config.epochs)
    for epoch in bar:
        if config.patience is not None and stale >= config.patience:
            break
        started = time.perf_counter()
        epoch_seed = config.seed * 100_003 + epoch
        generator = torch.Generator().manual_seed(epoch_seed)
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(epoch_seed)  # dropout draws from the global generator; the caller's is restored
            train_loss, train_acc = _epoch(network, train, prepare, config, generator, optimizer, schedule, device)
        scores = evaluate(model, val, prepare, classes)
        result.history.append({"epoch": epoch, "train_loss": train_loss, "train_accuracy": train_acc,
                               "val_loss": scores.loss, "val_accuracy": scores.accuracy})
        result.seconds += time.perf_counter() - started
        key = (scores.accuracy, -scores.loss)
        if key > best_key:
            best_key, stale, result.best_epoch = key, 0, epoch
            result.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            stale += 1
        result.epochs_run = epoch + 1
        bar.set_postfix(val_acc=f"{scores.accuracy:.3f}", best=f"{best_key[0]:.3f}")
        if checkpoint is not None and _is_writer():
            save_atomic({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                         "schedule": schedule.state_dict(), "epoch": epoch, "history": result.history,
                         "best_epoch": result.best_epoch, "best_key": list(best_key), "best_state": result.best_state,
                         "stale": stale, "config": asdict(config), "seconds": result.seconds}, checkpoint)
    if result.best_state:
        model.load_state_dict(result.best_state)
    return result


def _epoch(network: nn.Module, data: Split, prepare: Prepare, config: TrainConfig,
           generator: torch.Generator, optimizer: torch.optim.Optimizer, schedule: Any,
           device: torch.device) -> tuple[float, float]:
    network.train()
    order = torch.randperm(len(data.labels), generator=generator)
    rank, world = (dist.get_rank(), dist.get_world_size()) if _distributed_on() else (0, 1)
    total_loss, correct, seen = 0.0, 0, 0
    for start in range(0, len(order), config.batch_size):
        batch = order[start:start + config.batch_size]
        pixels = data.images[batch]
        if config.augment:
            pixels = augment_batch(pixels, generator)  # drawn for the whole batch: identical on every rank
        share = slice(rank * len(batch) // world, (rank + 1) * len(batch) // world)
        inputs = prepare(pixels[share].to(device))
        labels = data.labels[batch][share].to(device)
        logits = network(inputs)
        loss = F.cross_entropy(logits, labels, label_smoothing=config.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        (loss * len(labels) * world / len(batch)).backward()  # each rank's share of the batch mean
        optimizer.step()
        schedule.step()
        total_loss += loss.item() * len(labels)
        correct += (logits.argmax(1) == labels).sum().item()
        seen += len(labels)
    return total_loss / max(seen, 1), correct / max(seen, 1)


def _warmup_cosine(config: TrainConfig, steps_per_epoch: int) -> Callable[[int], float]:
    warmup = config.warmup_epochs * steps_per_epoch
    total = max(config.epochs * steps_per_epoch, 1)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(total - warmup, 1)))

    return factor


def _distributed_on() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _is_writer() -> bool:
    return not _distributed_on() or dist.get_rank() == 0


def _distributed(model: nn.Module) -> nn.Module:
    if not _distributed_on():
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model)
