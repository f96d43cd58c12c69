"""sha256 fingerprints of tensors: a model's weights, a batch of images."""

from __future__ import annotations

import hashlib

import torch
from torch import nn


def fingerprint(*tensors: torch.Tensor) -> str:
    """sha256 over the tensors' bytes, shapes and dtypes."""
    digest = hashlib.sha256()
    for tensor in tensors:
        digest.update(str((tuple(tensor.shape), tensor.dtype)).encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def weights_fingerprint(model: nn.Module) -> str:
    return fingerprint(*model.state_dict().values())
