"""Checkpoints written atomically: a temporary file beside the target, then a rename."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from ..errors import InputError
from ..files import replacing


def save_atomic(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` to ``path`` so that a crash never leaves a half-written file there."""
    with replacing(path) as temporary, open(temporary, "wb") as handle:
        torch.save(obj, handle)
        handle.flush()
        os.fsync(handle.fileno())


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """A checkpoint written by ``save_atomic``, loaded without executing code."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise InputError(f"cannot read checkpoint {path} ({_reason(error)}); give a checkpoint 'interpkit train' "
                         "wrote") from None


def _reason(error: Exception) -> str:
    """torch's reason, without its advice to load with ``weights_only=False`` (which would run
    code from the file)."""
    text = " ".join(str(error).split())
    if "WeightsUnpickler error:" in text:
        text = text.split("WeightsUnpickler error:", 1)[1].split(" Check the documentation")[0].split(". ")[0].strip()
    return f"{type(error).__name__}: {text[:120]}"
