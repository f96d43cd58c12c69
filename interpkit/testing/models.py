"""Small models covering the cases explainers get wrong, for tests of any explainer."""

from __future__ import annotations

from typing import Any

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


class Conv1dNet(nn.Module):
    """A 1-D signal model (audio, time series): inputs (N, 2, T)."""

    input_kind = "1d"

    def __init__(self, classes: int = 4) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv1d(2, 6, 5, padding=2), nn.ReLU(), nn.MaxPool1d(2),
                                      nn.Conv1d(6, 8, 3, padding=1), nn.ReLU())
        self.head = nn.Linear(8, classes)

    def forward(self, x):
        """Class scores (N, classes) for signals (N, 2, T)."""
        return self.head(self.features(x).mean(dim=-1))

    def example_inputs(self, batch: int, generator: torch.Generator) -> torch.Tensor:
        """Random signals (batch, 2, 24)."""
        return torch.randn(batch, 2, 24, generator=generator)


class Conv3dNet(nn.Module):
    """A video or volume model: inputs (N, 1, D, H, W)."""

    input_kind = "3d"

    def __init__(self, classes: int = 4) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv3d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool3d(2),
                                      nn.Conv3d(4, 6, 3, padding=1), nn.ReLU())
        self.head = nn.Linear(6, classes)

    def forward(self, x):
        """Class scores (N, classes) for volumes (N, 1, D, H, W)."""
        return self.head(self.features(x).mean(dim=(2, 3, 4)))

    def example_inputs(self, batch: int, generator: torch.Generator) -> torch.Tensor:
        """Random volumes (batch, 1, 6, 10, 8)."""
        return torch.randn(batch, 1, 6, 10, 8, generator=generator)


class TokenBlock(nn.Module):
    """A pre-norm transformer block: attention, then a ReLU MLP, each added to the tokens."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attention = nn.MultiheadAttention(dim, 2, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.ReLU(), nn.Linear(2 * dim, dim))

    def forward(self, tokens):
        """Tokens (N, T, dim) through the block."""
        normed = self.norm1(tokens)
        tokens = tokens + self.attention(normed, normed, normed, need_weights=False)[0]
        return tokens + self.mlp(self.norm2(tokens))


class TinyTokens(nn.Module):
    """A vision transformer in miniature: 4 x 4 patches, a class token, one block
    (``blocks.0``: attention and a ReLU MLP), the class token to the head. Its token outputs are
    (N, 1 + patches, 16)."""

    input_kind = "tokens"

    def __init__(self, classes: int = 4, dim: int = 16) -> None:
        super().__init__()
        self.patches = nn.Conv2d(3, dim, 4, stride=4)
        self.cls = nn.Parameter(torch.randn(1, 1, dim) * 0.5)
        self.blocks = nn.Sequential(TokenBlock(dim))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, x):
        """Class scores (N, classes) for images (N, 3, H, W), H and W multiples of 4."""
        tokens = self.patches(x).flatten(2).transpose(1, 2)
        tokens = torch.cat([self.cls.expand(len(x), -1, -1), tokens], dim=1)
        return self.head(self.norm(self.blocks(tokens))[:, 0])

    def example_inputs(self, batch: int, generator: torch.Generator) -> torch.Tensor:
        """Random images (batch, 3, 16, 12)."""
        return torch.randn(batch, 3, 16, 12, generator=generator)


class TwoInputs(nn.Module):
    """Two inputs: images (N, 3, H, W) and a per-sample scale (N, 1) applied to the features."""

    input_kind = "several_inputs"

    def __init__(self, classes: int = 4) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 8, 3, padding=1),
                                      nn.ReLU())
        self.head = nn.Linear(8, classes)

    def forward(self, x, scale):
        """Class scores (N, classes) for images (N, 3, H, W) and scales (N, 1)."""
        return self.head(self.features(x).mean(dim=(2, 3)) * scale)

    def example_inputs(self, batch: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Random images (batch, 3, 20, 16) and scales (batch, 1)."""
        return torch.randn(batch, 3, 20, 16, generator=generator), torch.rand(batch, 1, generator=generator) + 0.5


def plain_sequential(classes: int = 4) -> nn.Sequential:
    """A model of torch.nn classes alone, which interpkit runs on its unguarded path (nothing
    intercepts its forward): an explainer's own writes to it show here, where the guarded path
    of the other hard cases would put them back unseen."""
    return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.Conv2d(6, 8, 3, padding=1),
                         nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, classes))


def hard_case_models(seed: int = 0) -> dict[str, nn.Module]:
    """One instance of each hard case, seeded, in training mode (explainers must restore it)."""
    torch.manual_seed(seed)
    models = {cls.__name__: cls().train() for cls in (ConvStack, ResidualReusedReLU, FunctionalReLU, BatchNormDropout,
                                                     DictOutput, Conv1dNet, Conv3dNet, TinyTokens, TwoInputs)}
    return {**models, "PlainSequential": plain_sequential().train()}


def example_inputs(model: nn.Module, batch: int = 3, seed: int = 0, size: tuple[int, int] = (20, 16)) -> Any:
    """Inputs for ``model``: its own ``example_inputs`` if it has one, else images (batch, 3, *size)."""
    generator = torch.Generator().manual_seed(seed)
    make = getattr(model, "example_inputs", None)
    return make(batch, generator) if make is not None else torch.randn(batch, 3, *size, generator=generator)


def input_kind(model: nn.Module) -> str:
    """What a model takes: '1d', '2d', '3d', 'tokens' (an image model read through tokens) or
    'several_inputs'; '2d' unless the model says otherwise."""
    return getattr(model, "input_kind", "2d")
