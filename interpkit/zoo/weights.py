"""Weights in torchvision's style: an enum per model whose members carry a weights file and its meta.

A weights file ``NAME.pt`` (a state dict) has a sidecar ``NAME.json`` written by the training
command: the file's sha256, the preprocessing, the categories, the recipe and the metrics on the
canonical split. ``WeightsFile`` reads both for bundled and user files alike; loading
verifies the checksum and uses ``torch.load(weights_only=True)``, which cannot execute code.
"""

from __future__ import annotations

import enum
import hashlib
import json
import os
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Any, Callable, TypeVar

import torch

from ..data.transforms import ImageTransform
from ..errors import WeightsError


class WeightsFile:
    """A state-dict file ``path`` and its description, the ``.json`` beside it: weights written
    by ``interpkit train`` anywhere, or bundled ones (``bundled``)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    @classmethod
    def bundled(cls, file_name: str) -> "WeightsFile":
        """Weights shipped in ``interpkit/zoo/weights``."""
        return cls(Path(str(resources.files("interpkit.zoo") / "weights" / file_name)))

    def __repr__(self) -> str:
        return f"WeightsFile({str(self.path)!r})"

    @cached_property
    def sidecar(self) -> dict[str, Any]:
        """The description written beside the weights by ``interpkit train``."""
        side = self.path.with_suffix(".json")
        if not side.exists():
            raise WeightsError(f"weights description {side} is missing: give weights written by 'interpkit train', "
                               "which writes the .pt and its .json side by side")
        try:
            return json.loads(side.read_text())
        except (OSError, ValueError) as error:
            raise WeightsError(f"weights description {side} is unreadable ({error}); write it again with "
                               "'interpkit train'") from None

    @property
    def meta(self) -> dict[str, Any]:
        """model, categories, metrics on the canonical split, the training recipe and command."""
        return self.sidecar["meta"]

    @property
    def sha256(self) -> str:
        """The checksum the weights file must have."""
        return self.sidecar["sha256"]

    def transforms(self) -> ImageTransform:
        """The exact preprocessing: PIL image or uint8 (C, H, W) tensor -> normalised float tensor."""
        spec = self.sidecar["transforms"]
        return ImageTransform(tuple(spec["size"]), tuple(spec["mean"]), tuple(spec["std"]))

    def state_dict(self, map_location: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
        """The state dict, after checking the file against its recorded sha256."""
        path = self.path
        if not path.exists():
            raise WeightsError(f"weights file {path} is missing; train it with 'interpkit train' "
                               "or reinstall interpkit for the bundled weights")
        digest = sha256_file(path)
        if digest != self.sha256:
            raise WeightsError(f"weights file {path} is corrupt or was replaced: sha256 {digest[:12]}... does not "
                               f"match {self.sha256[:12]}... recorded in {path.with_suffix('.json').name}")
        return torch.load(path, map_location=map_location, weights_only=True)


class Weights(enum.Enum):
    """Base of every model's weights enum; each member's value is a ``WeightsFile``."""

    @classmethod
    def verify(cls, weights: Any) -> "Weights | None":
        """``None``, a member, or a member's name (``"DEFAULT"``) -> the member (or None)."""
        if weights is None or isinstance(weights, cls):
            return weights
        if isinstance(weights, str):
            if weights in cls.__members__:
                return cls[weights]
            raise WeightsError(f"unknown weights {weights!r}; choose one of {', '.join(cls.__members__)}")
        raise WeightsError(f"weights must be None, a name or a {cls.__name__} member, not {weights!r}")

    @property
    def meta(self) -> dict[str, Any]:
        """categories, metrics on the canonical split, the training recipe and command."""
        return self.value.meta

    @property
    def sha256(self) -> str:
        """The checksum the weights file must have."""
        return self.value.sha256

    def transforms(self) -> ImageTransform:
        """The exact preprocessing of these weights."""
        return self.value.transforms()

    def state_dict(self, map_location: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
        """The checksum-verified state dict."""
        return self.value.state_dict(map_location)


Builder = TypeVar("Builder", bound=Callable[..., Any])


def with_weights(weights_enum: type[Weights]) -> Callable[[Builder], Builder]:
    """Mark a model builder with its weights enum (read by ``interpkit.get_weights``)."""
    def mark(builder: Builder) -> Builder:
        builder.weights = weights_enum  # type: ignore[attr-defined]
        return builder

    return mark


def sha256_file(path: str | os.PathLike) -> str:
    """The hex sha256 of a file's bytes."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
