"""VGG19 with ImageNet weights, frozen, and a new five-class last layer: the study's Task 2."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import nn

from ..errors import WeightsError
from .weights import Weights, WeightsFile, class_count, with_weights

IMAGENET = "IMAGENET1K_V1"


class Vgg19Caltech5Weights(Weights):
    """The retrained last layer (``classifier.6``); the rest comes from the ImageNet weights."""

    CALTECH5_V1 = WeightsFile.bundled("vgg19_caltech5_head.pt")
    DEFAULT = CALTECH5_V1


def imagenet_state_dict(source: str | os.PathLike | dict | None) -> dict[str, torch.Tensor] | None:
    """torchvision's VGG19 ImageNet weights (downloaded once and cached by torch.hub), a local
    state-dict file, or a state dict; ``None`` keeps random weights."""
    if source is None or isinstance(source, dict):
        return source
    if isinstance(source, str) and source == IMAGENET:
        try:
            return torchvision.models.VGG19_Weights.IMAGENET1K_V1.get_state_dict(progress=True)
        except Exception as error:  # URLError, OSError, RuntimeError: no network or a broken cache
            raise WeightsError(
                f"could not obtain torchvision's VGG19 ImageNet weights ({type(error).__name__}: {error}). "
                "Run once with internet access (they are cached under ~/.cache/torch/hub/checkpoints), or "
                "download vgg19-dcbb9e9d.pth elsewhere and give its path as the backbone (--backbone PATH on the "
                "command line, backbone=PATH in Python)"
            ) from None
    if not isinstance(source, (str, os.PathLike)):
        raise WeightsError(f"backbone must be {IMAGENET!r}, a state-dict file, a state dict or None, not {source!r:.60}")
    path = Path(source)
    if not path.exists():
        raise WeightsError(f"backbone weights file not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # not a file torch.save wrote with tensors only
        raise WeightsError(f"cannot read the backbone weights {path} ({type(error).__name__}); give torchvision's "
                           "vgg19-dcbb9e9d.pth or another state dict of vgg19") from None
    if not isinstance(state, dict):
        raise WeightsError(f"{path} holds a {type(state).__name__}, not a state dict of vgg19")
    return state


def build(num_classes: int = 5, backbone: Any = IMAGENET) -> nn.Module:
    """VGG19 with the backbone weights loaded, every layer frozen but a new ``classifier.6``."""
    model = torchvision.models.vgg19()
    state = imagenet_state_dict(backbone)
    if state is not None:
        try:
            model.load_state_dict(state)
        except RuntimeError as error:
            raise WeightsError(f"the backbone weights do not fit torchvision's vgg19: {error}") from None
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    model.classifier[6] = nn.Linear(4096, num_classes)
    return model


@with_weights(Vgg19Caltech5Weights)
def vgg19_caltech5(*, weights: Any = None, num_classes: int | None = None, backbone: Any = IMAGENET) -> nn.Module:
    """torchvision VGG19, ImageNet weights frozen, a new last layer; ``weights`` loads a trained head.

    ``backbone`` is ``'IMAGENET1K_V1'`` (downloaded once by torchvision), a state-dict file, a
    state dict, or ``None`` for random weights.
    """
    chosen = Vgg19Caltech5Weights.verify(weights)
    head_state = chosen.state_dict() if chosen is not None else None
    model = build(class_count(num_classes, head_state["weight"].shape[0] if head_state is not None else None), backbone)
    if head_state is not None:
        head(model).load_state_dict(head_state)
    return model


def head(model: nn.Module) -> nn.Module:
    """The trainable last layer."""
    return model.get_submodule("classifier.6")


def backbone(model: nn.Module) -> nn.ModuleList:
    """Every layer before the last one: the frozen part whose output the head is trained on."""
    return nn.ModuleList([model.get_submodule("features"), model.get_submodule("avgpool"),
                          *list(model.get_submodule("classifier").children())[:6]])


def backbone_features(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """The 4096-d input of the last layer (eval mode: dropout off)."""
    features, avgpool, *dense = backbone(model)
    x = avgpool(features(images)).flatten(1)
    for layer in dense:
        x = layer(x)
    return x
