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
import numbers
import os
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Any, Callable, TypeVar

import torch

from ..data.transforms import ImageTransform
from ..errors import InputError, WeightsError


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
            sidecar = json.loads(side.read_text())
        except (OSError, ValueError) as error:
            raise WeightsError(f"weights description {side} is unreadable ({error}); write it again with "
                               "'interpkit train'") from None
        problem = _sidecar_problem(sidecar)
        if problem:
            raise WeightsError(f"weights description {side} {problem}; write it again with 'interpkit train'")
        return sidecar

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
        try:
            return torch.load(path, map_location=map_location, weights_only=True)
        except Exception as error:  # pickle's and torch's many errors for a file that is not a state dict
            raise WeightsError(f"weights file {path} is not a state dict torch can load safely "
                               f"({type(error).__name__}); write it again with 'interpkit train'") from None


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


def _sidecar_problem(sidecar: Any) -> str | None:
    """What a weights description lacks, or None."""
    if not isinstance(sidecar, dict):
        return "is not a JSON object"
    if not isinstance(sidecar.get("sha256"), str):
        return "records no sha256"
    meta = sidecar.get("meta")
    categories = meta.get("categories") if isinstance(meta, dict) else None
    if not isinstance(categories, list) or not categories or not all(isinstance(c, str) for c in categories):
        return "names no categories (meta.categories)"
    spec = sidecar.get("transforms")
    if not isinstance(spec, dict) or not all(isinstance(spec.get(key), list) for key in ("size", "mean", "std")):
        return "records no preprocessing (transforms: size, mean, std)"
    if len(spec["size"]) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in spec["size"]):
        return f"records a size {spec['size']} that is not two positive ints"
    values = spec["mean"] + spec["std"]
    if len(spec["mean"]) != len(spec["std"]) or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                        for v in values) or min(spec["std"], default=0) <= 0:
        return "records a mean and std that are not numbers per channel (std positive)"
    return None


def class_count(asked: Any, found: int | None) -> int:
    """The classifier's size: the weights' own (``found``), which ``asked`` must equal, or ``asked``
    (5 when None) for random weights."""
    if asked is not None and (isinstance(asked, bool) or not isinstance(asked, numbers.Integral) or asked < 1):
        raise InputError(f"num_classes must be a positive int, got {asked!r}")
    asked = None if asked is None else int(asked)
    if found is not None and asked is not None and asked != found:
        raise WeightsError(f"these weights have {found} classes, not num_classes={asked}; drop num_classes, or "
                           "build the model without weights")
    return found or asked or 5


def check_dropout(dropout: Any) -> float:
    """A dropout probability in [0, 1)."""
    if isinstance(dropout, bool) or not isinstance(dropout, numbers.Real) or not 0 <= float(dropout) < 1:
        raise InputError(f"dropout must be a probability in [0, 1), got {dropout!r}")
    return float(dropout)
