"""Seeded draws that do not depend on the dtype they are wanted in: torch draws another stream
for float64 than for float32 from the same generator, so a float64 copy of a model and its
inputs would be perturbed differently. Draws are made in float32, then converted."""

from __future__ import annotations

from typing import Sequence

import torch


def normal_draws(shape: Sequence[int], generator: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    """Standard normal draws of ``shape`` from ``generator``, in ``like``'s dtype and on its device."""
    return torch.randn(tuple(shape), generator=generator, device=like.device, dtype=torch.float32).to(like.dtype)


def uniform_draws(shape: Sequence[int], generator: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    """Draws uniform in [0, 1) of ``shape`` from ``generator``, in ``like``'s dtype and on its device."""
    return torch.rand(tuple(shape), generator=generator, device=like.device, dtype=torch.float32).to(like.dtype)
