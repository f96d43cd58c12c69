"""The preprocessing a classifier expects: resize, scale to [0, 1], normalise per channel."""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import InputError
from .images import as_rgb_uint8

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ImageTransform:
    """Maps a PIL image or uint8 tensor (C, H, W) to the float tensor (3, H, W) a model expects.

    The image is resized to ``size`` exactly (aspect ratio not kept, as in the reference study),
    bilinearly with antialiasing, scaled to [0, 1] and normalised with ``mean`` and ``std``.
    """

    size: tuple[int, int] = (224, 224)
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def __post_init__(self) -> None:
        if isinstance(self.size, numbers.Integral) and not isinstance(self.size, bool):  # a square, as Resize
            object.__setattr__(self, "size", (self.size, self.size))
        size, mean, std = (tuple(v) if isinstance(v, (tuple, list)) else v for v in (self.size, self.mean, self.std))
        if not (isinstance(size, tuple) and len(size) == 2 and all(_count(v) for v in size)):
            raise InputError(f"size must be (height, width) in positive ints, or one int, got {self.size!r}")
        for name, values in (("mean", mean), ("std", std)):
            if not (isinstance(values, tuple) and len(values) == 3 and all(_finite(v) for v in values)):
                raise InputError(f"{name} must be three finite numbers, one per RGB channel, got {values!r}")
        if min(std) <= 0:
            raise InputError(f"std must be positive, got {std}")
        object.__setattr__(self, "size", tuple(int(v) for v in size))
        object.__setattr__(self, "mean", tuple(float(v) for v in mean))
        object.__setattr__(self, "std", tuple(float(v) for v in std))

    def __call__(self, image: object) -> torch.Tensor:
        pixels = resize_uint8(as_rgb_uint8(image), self.size)
        return self.normalize(pixels)

    def normalize(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 (..., 3, H, W) already at ``size`` -> normalised float."""
        return self.standardize(pixels.float() / 255.0)

    def standardize(self, images: torch.Tensor) -> torch.Tensor:
        """Float images (..., 3, H, W) in [0, 1] -> normalised (the model's input), differentiably."""
        mean = torch.tensor(self.mean, device=images.device, dtype=images.dtype).view(3, 1, 1)
        std = torch.tensor(self.std, device=images.device, dtype=images.dtype).view(3, 1, 1)
        return (images - mean) / std

    def denormalize(self, tensor: torch.Tensor) -> torch.Tensor:
        """Back to float images in [0, 1], for display."""
        mean = torch.tensor(self.mean, device=tensor.device).view(3, 1, 1)
        std = torch.tensor(self.std, device=tensor.device).view(3, 1, 1)
        return (tensor * std + mean).clamp(0, 1)


def resize_uint8(pixels: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize uint8 (3, H, W) or (N, 3, H, W) to ``size`` with antialiased bilinear filtering."""
    if tuple(pixels.shape[-2:]) == tuple(size):
        return pixels
    batch = pixels.unsqueeze(0) if pixels.dim() == 3 else pixels
    resized = F.interpolate(batch.float(), size=size, mode="bilinear", align_corners=False, antialias=True)
    resized = resized.round().clamp(0, 255).to(torch.uint8)
    return resized[0] if pixels.dim() == 3 else resized


def _count(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and int(value) > 0


def _finite(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(float(value))
