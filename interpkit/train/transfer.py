"""Transfer learning for the Task 2 stand-in: pretrain a slim VGG19 on Caltech-101's other
categories, then fine-tune it on the canonical five-class split.

A VGG without batch normalisation trains poorly from scratch, so each convolution is trained
with a BatchNorm after it (``with_batch_norm``) and the BatchNorm is folded into the convolution
afterwards (``fold_batch_norm``): the result computes exactly the same function in eval mode
with VGG19's plain layout and module names.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from ..data import ImageTransform, caltech101_categories
from ..errors import InputError
from ..zoo.vgg_slim import slim_vgg19
from .loop import Evaluation, Split, TrainConfig, TrainResult, evaluate, fit

SIZE = (160, 160)  # pretraining and fine-tuning resolution: features transfer best at the size they learned
PRETRAIN_STAGES = (  # a first cosine cycle, then a second at half the rate from where the first ended
    TrainConfig(epochs=18, batch_size=64, lr=2e-3, weight_decay=5e-2, label_smoothing=0.1, warmup_epochs=1,
                patience=None, seed=1, dropout=0.5),
    TrainConfig(epochs=12, batch_size=64, lr=1e-3, weight_decay=5e-2, label_smoothing=0.1, warmup_epochs=0,
                patience=None, seed=2, dropout=0.5),
)
# Linear probing, then fine-tuning (LP-FT): the new last layer learns alone first, so the
# pretrained features are not disturbed by a random head's gradients when every layer trains.
LINEAR_PROBE = TrainConfig(epochs=15, batch_size=32, lr=3e-3, weight_decay=1e-2, label_smoothing=0.1,
                           warmup_epochs=1, patience=None, seed=1, dropout=0.5)
FINE_TUNE = TrainConfig(epochs=60, batch_size=32, lr=1e-3, weight_decay=1e-2, label_smoothing=0.1, warmup_epochs=2,
                        patience=None, seed=1, dropout=0.5)


def with_batch_norm(model: nn.Module) -> nn.Module:
    """Each ``features`` convolution becomes (convolution, BatchNorm2d), in place."""
    features = _features(model)
    for index, module in enumerate(features):
        if isinstance(module, nn.Conv2d):
            features[index] = nn.Sequential(module, nn.BatchNorm2d(module.out_channels))
    return model


def _features(model: nn.Module) -> nn.Sequential:
    features = model.get_submodule("features")
    if not isinstance(features, nn.Sequential):
        raise InputError("the model needs a Sequential 'features', as torchvision's VGG has")
    return features


def fold_batch_norm(model: nn.Module) -> nn.Module:
    """Undo ``with_batch_norm``, in place: each (convolution, BatchNorm2d) pair becomes one
    convolution (with every option of the first: dilation, groups, padding mode) computing conv
    then the BatchNorm's eval-mode affine map. Every pair is checked before any is folded."""
    features = _features(model)
    pairs: list[tuple[int, nn.Conv2d, nn.BatchNorm2d]] = []
    for index, pair in enumerate(features):
        if not isinstance(pair, nn.Sequential):
            continue
        conv, norm = (pair[0], pair[1]) if len(pair) == 2 else (None, None)
        if type(conv) is not nn.Conv2d or type(norm) is not nn.BatchNorm2d or norm.running_var is None:
            raise InputError(f"features.{index} is not a (Conv2d, BatchNorm2d with running statistics) pair as "
                             "with_batch_norm makes; nothing was folded")
        pairs.append((index, conv, norm))
    for index, conv, norm in pairs:
        assert norm.running_var is not None and norm.running_mean is not None
        scale = (norm.running_var + norm.eps).rsqrt()
        if norm.weight is not None:
            scale = scale * norm.weight
        folded = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size,  # type: ignore[arg-type]
                           conv.stride, conv.padding, conv.dilation, conv.groups,  # type: ignore[arg-type]
                           padding_mode=conv.padding_mode, device=conv.weight.device, dtype=conv.weight.dtype)
        with torch.no_grad():
            folded.weight.copy_(conv.weight * scale.view(-1, 1, 1, 1))
            bias = conv.bias if conv.bias is not None else torch.zeros_like(norm.running_mean)
            shift = (bias - norm.running_mean) * scale + (norm.bias if norm.bias is not None else 0)
            folded.bias.copy_(shift)  # type: ignore[union-attr]
        folded.requires_grad_(conv.weight.requires_grad).train(conv.training)
        features[index] = folded
    return model


def pretrain(categories_root: str | os.PathLike, exclude: list[str], stages: tuple[TrainConfig, ...] = PRETRAIN_STAGES,
             checkpoints: list[Path | None] | None = None, resume: bool = False,
             progress: bool = True) -> tuple[nn.Module, list[TrainResult], Evaluation]:
    """A slim VGG19 trained (with BatchNorm, then folded) on every Caltech-101 category in
    ``categories_root`` but ``exclude``, one ``fit`` per stage (each resumable from its own
    checkpoint); returns it with each stage's history and the held-out evaluation."""
    data = caltech101_categories(categories_root, exclude)
    classes = data["train"].classes
    if set(classes) & set(exclude):
        raise InputError("the pretraining categories overlap the excluded ones")
    transform = ImageTransform(size=SIZE)
    train, val = Split(*data["train"].tensors(SIZE)), Split(*data["val"].tensors(SIZE))
    torch.manual_seed(stages[0].seed)
    model = with_batch_norm(slim_vgg19(len(classes), dropout=stages[0].dropout))
    results = []
    for stage, config in enumerate(stages):
        checkpoint = checkpoints[stage] if checkpoints else None
        results.append(fit(model, train, val, transform.normalize, config, len(classes), checkpoint,
                           resume and checkpoint is not None and Path(checkpoint).exists(), progress))
    scores = evaluate(model, val, transform.normalize, len(classes))
    return fold_batch_norm(model).eval(), results, scores


def fine_tune(pretrained: nn.Module, splits: dict[str, Split], classes: int, transform: ImageTransform,
              probe: TrainConfig = LINEAR_PROBE, config: TrainConfig = FINE_TUNE,
              checkpoints: tuple[Path | None, Path | None] = (None, None), resume: bool = False,
              progress: bool = True) -> tuple[nn.Module, TrainResult, TrainResult]:
    """The pretrained network with a new last layer, trained alone (``probe``), then every layer
    (``config``) on ``splits``; each stage resumable from its checkpoint. Returns the network
    and both stages' results."""
    torch.manual_seed(probe.seed)
    classifier = pretrained.get_submodule("classifier")
    assert isinstance(classifier, nn.Sequential) and isinstance(classifier[6], nn.Linear)
    classifier[6] = nn.Linear(classifier[6].in_features, classes)
    head = classifier[6]
    stages = []
    for stage, (recipe, parameters) in enumerate(((probe, lambda _: head.parameters()), (config, None))):
        checkpoint = checkpoints[stage]
        stages.append(fit(pretrained, splits["train"], splits["val"], transform.normalize, recipe, classes, checkpoint,
                          resume and checkpoint is not None and Path(checkpoint).exists(), progress, parameters))
    return pretrained, stages[0], stages[1]
