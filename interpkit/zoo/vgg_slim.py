"""The offline stand-in for ImageNet VGG19 (the study's Task 2).

VGG19's layer layout with every width divided by ``SLIM`` (8): the same module names
(``features.0`` ... ``features.36``, ``classifier.0`` ... ``classifier.6``), so the study's layer
and neuron references hold, but small enough to train on a CPU. Its bundled weights were
pretrained by ``interpkit.train.transfer`` on the 96 Caltech-101 categories outside the
study's five, then fine-tuned on the canonical split: transfer learning as the study did it, with
a smaller network and a smaller source dataset than ImageNet.
"""

from __future__ import annotations

from typing import Any

import torchvision
from torch import nn

from .weights import Weights, WeightsFile, check_dropout, class_count, with_weights

SLIM = 8
VGG19_LAYOUT: tuple[int | str, ...] = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M",
                                       512, 512, 512, 512, "M", 512, 512, 512, 512, "M")


class Vgg19SlimCaltech5Weights(Weights):
    """Pretrained on Caltech-101's other 96 categories, fine-tuned on the canonical split."""

    CALTECH5_V1 = WeightsFile.bundled("vgg19_slim_caltech5.pt")
    DEFAULT = CALTECH5_V1


def slim_vgg19(num_classes: int, width_divisor: int = SLIM, dropout: float = 0.5) -> torchvision.models.VGG:
    """torchvision's ``VGG`` with VGG19's layout, convolution and dense widths divided by
    ``width_divisor``; randomly initialised as torchvision initialises VGG."""
    layers: list[nn.Module] = []
    channels = 3
    for entry in VGG19_LAYOUT:
        if entry == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            width = int(entry) // width_divisor
            layers += [nn.Conv2d(channels, width, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
            channels = width
    model = torchvision.models.VGG(nn.Sequential(*layers), num_classes=num_classes, dropout=dropout)
    hidden = 4096 // width_divisor  # torchvision builds the dense layers for 512 channels and 4096 units
    model.classifier = nn.Sequential(
        nn.Linear(channels * 7 * 7, hidden), nn.ReLU(True), nn.Dropout(dropout),
        nn.Linear(hidden, hidden), nn.ReLU(True), nn.Dropout(dropout), nn.Linear(hidden, num_classes),
    )
    for module in model.classifier:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, 0, 0.01)
            nn.init.zeros_(module.bias)
    return model


@with_weights(Vgg19SlimCaltech5Weights)
def vgg19_slim_caltech5(*, weights: Any = None, num_classes: int | None = None, dropout: float = 0.5) -> nn.Module:
    """VGG19's layout at 1/8 width; ``weights`` loads the bundled transfer-learned weights."""
    chosen = Vgg19SlimCaltech5Weights.verify(weights)
    state = chosen.state_dict() if chosen is not None else None
    classes = class_count(num_classes, state["classifier.6.weight"].shape[0] if state is not None else None)
    model = slim_vgg19(classes, dropout=check_dropout(dropout))
    if state is not None:
        model.load_state_dict(state)
    return model
