"""Small models covering the cases explainers get wrong, for tests of any explainer."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ConvStack(nn.Module):
    """A plain stack: convolutions, out-of-place ReLU modules, pooling, a linear head."""

    def __init__(self, classes: int = 4) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                      nn.Conv2d(6, 8, 3, padding=1), nn.ReLU())
        self.head = nn.Linear(8, classes)

    def forward(self, x):
        """Class scores (N, classes) for a batch (N, 3, H, W)."""
        return self.head(self.features(x).mean(dim=(2, 3)))


class ResidualReusedReLU(nn.Module):
    """A ResNet-style block whose one in-place ReLU module is called twice per forward."""

    def __init__(self, classes: int = 4) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.conv1 = nn.Conv2d(8, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)
        self.block = nn.Identity()  # marks the block output, a layer explainers can read
        self.head = nn.Linear(8, classes)

    def forward(self, x):
        """Class scores (N, classes) for a batch (N, 3, H, W)."""
        x = self.relu(self.stem(x))
        out = self.conv2(self.relu(self.conv1(x)))
        out = self.block(self.relu(out + x))
        return self.head(out.mean(dim=(2, 3)))


class FunctionalReLU(nn.Module):
    """ReLUs called as functions in forward (``F.relu``, ``torch.relu``, ``Tensor.relu``)."""

    def __init__(self, classes: int = 4) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1)
        self.conv2 = nn.Conv2d(6, 8, 3, padding=1)
        self.head = nn.Linear(8, classes)

    def forward(self, x):
        """Class scores (N, classes) for a batch (N, 3, H, W)."""
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = torch.relu(self.conv2(x))
        return self.head(x.mean(dim=(2, 3)).relu())


class BatchNormDropout(nn.Module):
    """BatchNorm and Dropout: eval and train mode give different outputs."""

    def __init__(self, classes: int = 4) -> None:
        super().__init__()
        norms = [nn.BatchNorm2d(8), nn.BatchNorm2d(8)]
        with torch.no_grad():  # statistics that differ from a fresh module's, so modes matter
            for norm in norms:
                norm.running_mean.uniform_(-0.3, 0.3)  # type: ignore[union-attr]
                norm.running_var.uniform_(0.5, 1.5)  # type: ignore[union-attr]
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), norms[0], nn.ReLU(inplace=True),
                                      nn.Conv2d(8, 8, 3, padding=1), norms[1], nn.ReLU(inplace=True))
        self.dropout = nn.Dropout(0.5)
        self.head = nn.Linear(8, classes)

    def forward(self, x):
        """Class scores (N, classes) for a batch (N, 3, H, W)."""
        return self.head(self.dropout(self.features(x).mean(dim=(2, 3))))


class DictOutput(nn.Module):
    """Returns ``{"logits": ..., "pooled": ...}``: class targets need a callable."""

    def __init__(self, classes: int = 4) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU())
        self.head = nn.Linear(8, classes)

    def forward(self, x):
        """A dict: ``logits`` (N, classes) and ``pooled`` features (N, 8), for a batch (N, 3, H, W)."""
        pooled = self.features(x).mean(dim=(2, 3))
        return {"logits": self.head(pooled), "pooled": pooled}


def hard_case_models(seed: int = 0) -> dict[str, nn.Module]:
    """One instance of each hard case, seeded, in training mode (explainers must restore it)."""
    torch.manual_seed(seed)
    return {cls.__name__: cls().train() for cls in (ConvStack, ResidualReusedReLU, FunctionalReLU,
                                                   BatchNormDropout, DictOutput)}
