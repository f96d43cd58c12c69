"""Batch augmentation on uint8 tensors, driven by an explicit generator (so runs are replayable)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def augment_batch(pixels: torch.Tensor, generator: torch.Generator, min_scale: float = 0.45) -> torch.Tensor:
    """Random resized crops (area 45-100%, aspect 3/4-4/3), horizontal flips and brightness,
    contrast and saturation jitter, for a batch uint8 (N, 3, H, W); returns uint8 of the same size."""
    n, _, height, width = pixels.shape
    u = torch.rand(n, 8, generator=generator)
    area = min_scale + (1 - min_scale) * u[:, 0]
    aspect = torch.exp((u[:, 1] - 0.5) * 2 * torch.log(torch.tensor(4 / 3)))
    crop_w = torch.sqrt(area * aspect).clamp(max=1.0)
    crop_h = torch.sqrt(area / aspect).clamp(max=1.0)
    center_x = crop_w / 2 + (1 - crop_w) * u[:, 2]
    center_y = crop_h / 2 + (1 - crop_h) * u[:, 3]
    flip = torch.where(u[:, 4] < 0.5, -1.0, 1.0)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = crop_w * flip
    theta[:, 0, 2] = center_x * 2 - 1
    theta[:, 1, 1] = crop_h
    theta[:, 1, 2] = center_y * 2 - 1
    grid = F.affine_grid(theta, [n, 3, height, width], align_corners=False)
    images = F.grid_sample(pixels.float() / 255, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    brightness = (0.7 + 0.6 * u[:, 5]).view(n, 1, 1, 1)
    contrast = (0.7 + 0.6 * u[:, 6]).view(n, 1, 1, 1)
    saturation = (0.7 + 0.6 * u[:, 7]).view(n, 1, 1, 1)
    images = images * brightness
    mean = images.mean(dim=(1, 2, 3), keepdim=True)
    images = (images - mean) * contrast + mean
    gray = images.mean(dim=1, keepdim=True)
    images = (images - gray) * saturation + gray
    return (images.clamp(0, 1) * 255).round().to(torch.uint8)
