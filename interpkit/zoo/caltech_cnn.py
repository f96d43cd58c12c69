"""The reference study's three CNNs for five Caltech-101 classes, layer for layer.

224 x 224 RGB input; an 11 x 11 convolution with stride 4 and 8 channels whose Keras 'same'
padding (3 pixels before, 4 after) gives 56 x 56; 3 x 3 max pooling with stride 2; a 5 x 5
convolution with 16 channels; then 3 x 3 convolutions with 32 (and 64) channels; dense 128;
dense 5. Parameter counts: 353,013 (arch1), 158,997 (arch2), 324,949 (arch3).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from .weights import Weights, WeightsFile, check_dropout, class_count, with_weights


class CaltechCNN(nn.Module):
    """``features`` (convolutions, ReLU, pooling) then ``classifier`` (dropout, dense 128, dense K)."""

    def __init__(self, extra_channels: tuple[int, ...], flat: int, num_classes: int = 5, dropout: float = 0.5) -> None:
        super().__init__()
        layers: list[nn.Module] = [
            nn.ZeroPad2d((3, 4, 3, 4)), nn.Conv2d(3, 8, 11, stride=4), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
            nn.Conv2d(8, 16, 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
        ]
        channels = 16
        for out in extra_channels:
            layers += [nn.Conv2d(channels, out, 3, padding=1), nn.ReLU(inplace=True)]
            channels = out
        if extra_channels:
            layers.append(nn.MaxPool2d(3, 2))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Dropout(dropout), nn.Linear(flat, 128), nn.ReLU(inplace=True),
            nn.Dropout(dropout), nn.Linear(128, num_classes),
        )

    def forward(self, x):
        """Class scores (N, classes) for images (N, 3, 224, 224)."""
        return self.classifier(self.features(x))


class Caltech5Arch1Weights(Weights):
    """Weights of ``caltech5_arch1`` trained on the canonical split by ``interpkit train``."""

    CALTECH5_V1 = WeightsFile.bundled("caltech5_arch1.pt")
    DEFAULT = CALTECH5_V1


class Caltech5Arch2Weights(Weights):
    """Weights of ``caltech5_arch2`` trained on the canonical split by ``interpkit train``."""

    CALTECH5_V1 = WeightsFile.bundled("caltech5_arch2.pt")
    DEFAULT = CALTECH5_V1


class Caltech5Arch3Weights(Weights):
    """Weights of ``caltech5_arch3`` trained on the canonical split by ``interpkit train``."""

    CALTECH5_V1 = WeightsFile.bundled("caltech5_arch3.pt")
    DEFAULT = CALTECH5_V1


def _build(weights: Weights | None, extra_channels: tuple[int, ...], flat: int, num_classes: int | None,
           dropout: float) -> CaltechCNN:
    classes = class_count(num_classes, len(weights.meta["categories"]) if weights is not None else None)
    model = CaltechCNN(extra_channels, flat, classes, check_dropout(dropout))
    if weights is not None:
        model.load_state_dict(weights.state_dict())
    return model


@with_weights(Caltech5Arch1Weights)
def caltech5_arch1(*, weights: Any = None, num_classes: int | None = None, dropout: float = 0.5) -> CaltechCNN:
    """The study's first CNN (two convolutions); ``weights="DEFAULT"`` loads the bundled, trained
    weights. ``num_classes``: 5, or the weights' own; ``dropout`` before each linear layer."""
    return _build(Caltech5Arch1Weights.verify(weights), (), 16 * 13 * 13, num_classes, dropout)


@with_weights(Caltech5Arch2Weights)
def caltech5_arch2(*, weights: Any = None, num_classes: int | None = None, dropout: float = 0.5) -> CaltechCNN:
    """The study's second CNN (three convolutions); ``weights="DEFAULT"`` loads the bundled weights."""
    return _build(Caltech5Arch2Weights.verify(weights), (32,), 32 * 6 * 6, num_classes, dropout)


@with_weights(Caltech5Arch3Weights)
def caltech5_arch3(*, weights: Any = None, num_classes: int | None = None, dropout: float = 0.5) -> CaltechCNN:
    """The study's third CNN (four convolutions); ``weights="DEFAULT"`` loads the bundled weights."""
    return _build(Caltech5Arch3Weights.verify(weights), (32, 64), 64 * 6 * 6, num_classes, dropout)
