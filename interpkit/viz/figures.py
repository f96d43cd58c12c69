"""Matplotlib figures (built without pyplot, so no GUI backend is ever needed)."""

from __future__ import annotations

import math

import numpy as np
import torch
from matplotlib.figure import Figure

from ..core.explanation import normalize_maps
from ..errors import InputError


def plot_feature_maps(activation: torch.Tensor, ncols: int | None = None, title: str | None = None,
                      cmap: str = "viridis", size: float = 1.2) -> Figure:
    """A grid with one panel per channel of an activation (C, h, w) or (1, C, h, w)."""
    if activation.dim() == 4 and activation.shape[0] == 1:
        activation = activation[0]
    if activation.dim() != 3:
        raise InputError(f"feature maps must be (C, h, w) for one sample, got {tuple(activation.shape)}")
    channels = activation.shape[0]
    ncols = ncols or math.ceil(math.sqrt(channels))
    nrows = math.ceil(channels / ncols)
    planes = normalize_maps(activation.detach().float()[None], start_dim=2)[0].cpu().numpy()
    figure = Figure(figsize=(size * ncols, size * nrows + (0.4 if title else 0)))
    axes = figure.subplots(nrows, ncols, squeeze=False)
    for index, axis in enumerate(axes.flat):
        axis.set_axis_off()
        if index < channels:
            axis.imshow(planes[index], cmap=cmap, vmin=0, vmax=1)
    if title:
        figure.suptitle(title)
    return figure


def plot_patch(image, box: tuple[int, int, int, int], title: str | None = None,
               color: tuple[int, int, int] = (255, 255, 0)) -> Figure:
    """An RGB uint8 image (H, W, 3) with ``box`` drawn, beside the patch it frames."""
    import cv2

    top, left, bottom, right = box
    framed = np.ascontiguousarray(image).copy()
    thickness = max(1, round(min(framed.shape[:2]) / 112))
    cv2.rectangle(framed, (left, top), (max(left, right - 1), max(top, bottom - 1)), color, thickness)
    figure = Figure(figsize=(6, 3.2))
    axes = figure.subplots(1, 2)
    axes[0].imshow(framed)
    axes[1].imshow(image[top:bottom, left:right])
    axes[1].set_title(f"patch {bottom - top} x {right - left}", fontsize=8)
    for axis in axes:
        axis.set_axis_off()
    if title:
        figure.suptitle(title)
    return figure


def plot_patch_grid(rows: list[list[np.ndarray]], labels: list[str] | None = None, size: float = 0.9) -> Figure:
    """A Zeiler-Fergus grid: one row of patches (uint8 RGB arrays) per channel."""
    ncols = max((len(r) for r in rows), default=1)
    figure = Figure(figsize=(size * ncols + 0.8, size * max(len(rows), 1)))
    axes = figure.subplots(max(len(rows), 1), ncols, squeeze=False)
    for r, row in enumerate(rows):
        for c in range(ncols):
            axis = axes[r, c]
            axis.set_xticks([])
            axis.set_yticks([])
            for spine in axis.spines.values():
                spine.set_visible(False)
            if c < len(row):
                axis.imshow(row[c])
        if labels:
            axes[r, 0].set_ylabel(labels[r], rotation=0, ha="right", va="center", fontsize=7)
    return figure
