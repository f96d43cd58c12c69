"""Features of a frozen backbone computed once and cached on disk, keyed by weights and images."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from ..core import evaluation
from ..data.fingerprint import fingerprint, weights_fingerprint
from .checkpoint import load_checkpoint, save_atomic


@torch.no_grad()
def cached_features(backbone: Callable[[torch.Tensor], torch.Tensor], key_model: nn.Module, images: torch.Tensor,
                    prepare: Callable[[torch.Tensor], torch.Tensor], cache_dir: str | os.PathLike | None,
                    batch_size: int = 25, tag: str = "") -> torch.Tensor:
    """``backbone(prepare(images))`` for every image, from the cache when the same weights
    (``key_model``'s state dict), images and ``tag`` (name the preprocessing) were seen before."""
    key = hashlib.sha256((weights_fingerprint(key_model) + fingerprint(images) + tag).encode()).hexdigest()[:32]
    path = Path(cache_dir) / f"features-{key}.pt" if cache_dir is not None else None
    if path is not None and path.exists():
        return load_checkpoint(path)["features"]
    device = next(key_model.parameters()).device
    with evaluation(key_model):
        features = torch.cat([backbone(prepare(images[i:i + batch_size].to(device))).cpu()
                              for i in range(0, len(images), batch_size)])
    if path is not None:
        save_atomic({"features": features}, path)
    return features
