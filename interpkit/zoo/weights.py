"""Weights enums in torchvision's style: each member carries its file, checksum, preprocessing and meta.

A weights file ``NAME.pt`` (a state dict) has a sidecar ``NAME.json`` written by the training
command: the file's sha256, the preprocessing, the categories, the recipe and the metrics on the
canonical split. Loading verifies the checksum and uses ``torch.load(weights_only=True)``, which
cannot execute code.
"""

from __future__ import annotations

import enum
import hashlib
import json
from dataclasses import dataclass
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from ..data.transforms import ImageTransform
from ..errors import InputError


class WeightsError(InputError):
    """Weights are missing, corrupt or do not fit the model."""


@dataclass(frozen=True)
class WeightsFile:
    """Where a member's state dict and its sidecar live: a file name in ``interpkit/zoo/weights``
    or an absolute path."""

    name: str

    @property
    def path(self) -> Path:
        """The state-dict file; its description is the ``.json`` beside it."""
        candidate = Path(self.name)
        return candidate if candidate.is_absolute() else Path(str(resources.files("interpkit.zoo") / "weights" / self.name))

    @cached_property
    def sidecar(self) -> dict[str, Any]:
        side = self.path.with_suffix(".json")
        if not side.exists():
            raise WeightsError(f"weights description {side} is missing; reinstall interpkit or retrain with "
                               "'interpkit train'")
        return json.loads(side.read_text())


class Weights(enum.Enum):
    """Base of every model's weights enum; members' values are :class:`WeightsFile`."""

    @property
    def meta(self) -> dict[str, Any]:
        """categories, metrics on the canonical split, the training recipe and command."""
        return self.value.sidecar["meta"]

    def transforms(self) -> ImageTransform:
        """The exact preprocessing: PIL image or uint8 (C, H, W) tensor -> normalised float tensor."""
        spec = self.value.sidecar["transforms"]
        return ImageTransform(tuple(spec["size"]), tuple(spec["mean"]), tuple(spec["std"]))

    @property
    def sha256(self) -> str:
        """The checksum the weights file must have."""
        return self.value.sidecar["sha256"]

    def state_dict(self, map_location: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
        """The verified state dict."""
        path = self.value.path
        if not path.exists():
            raise WeightsError(f"weights file {path} is missing; reinstall interpkit or retrain with 'interpkit train'")
        data = path.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        if digest != self.sha256:
            raise WeightsError(f"weights file {path} is corrupt: sha256 {digest[:12]}... does not match "
                               f"{self.sha256[:12]}...; reinstall interpkit")
        return torch.load(path, map_location=map_location, weights_only=True)


def sha256_file(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
