"""Small models covering the hard cases, shared by the tests."""

from __future__ import annotations

from torch import nn


class SmallCNN(nn.Module):
    """Conv, BatchNorm, in-place ReLU, Dropout: the state an explainer must restore."""

    def __init__(self, classes: int = 5) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(inplace=True),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(0.5)
        self.fc = nn.Linear(16, classes)

    def forward(self, x):
        return self.fc(self.dropout(self.pool(self.features(x)).flatten(1)))


class DictOutput(nn.Module):
    """Wraps a classifier and returns {'logits': ...}: needs a callable target."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return {"logits": self.inner(x)}
