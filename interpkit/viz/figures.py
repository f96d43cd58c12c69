"""Matplotlib figures (built without pyplot, so no GUI backend is ever needed)."""

from __future__ import annotations

import math

import numpy as np
import torch
from matplotlib.figure import Figure

from ..core.maps import normalize_maps
from ..errors import InputError


def plot_feature_maps(activation: torch.Tensor, ncols: int | None = None, title: str | None = None,
                      colormap: str = "viridis", panel_inches: float = 1.2) -> Figure:
    """A grid with one panel per channel of an activation (C, h, w) or (1, C, h, w), each panel
    ``panel_inches`` square."""
    if activation.dim() == 4 and activation.shape[0] == 1:
        activation = activation[0]
    if activation.dim() != 3:
        raise InputError(f"feature maps must be (C, h, w) for one sample, got {tuple(activation.shape)}")
    channels = activation.shape[0]
    ncols = ncols or math.ceil(math.sqrt(channels))
    nrows = math.ceil(channels / ncols)
    planes = normalize_maps(activation.detach().float()[None], start_dim=2)[0].cpu().numpy()
    figure = Figure(figsize=(panel_inches * ncols, panel_inches * nrows + (0.4 if title else 0)))
    axes = figure.subplots(nrows, ncols, squeeze=False)
    for index, axis in enumerate(axes.flat):
        axis.set_axis_off()
        if index < channels:
            axis.imshow(planes[index], cmap=colormap, vmin=0, vmax=1)
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


def plot_image_grid(rows: list[list[np.ndarray]], row_labels: list[str] | None = None,
                    column_labels: list[str] | None = None, panel_inches: float = 0.9) -> Figure:
    """A grid of uint8 RGB images, one list per row (a Zeiler-Fergus grid: one row per channel),
    each panel ``panel_inches`` square."""
    ncols = max((len(r) for r in rows), default=1)
    top = 0.3 if column_labels else 0.0
    width = panel_inches * ncols + (1.2 if row_labels else 0.2)
    figure = Figure(figsize=(width, panel_inches * max(len(rows), 1) + top))
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
            if column_labels and r == 0 and c < len(column_labels):
                axis.set_title(column_labels[c], fontsize=7)
        if row_labels:
            axes[r, 0].set_ylabel(row_labels[r], rotation=0, ha="right", va="center", fontsize=7)
    figure.tight_layout(pad=0.3)
    return figure


def plot_confusion(matrix, classes: list[str], title: str | None = None) -> Figure:
    """A confusion matrix (rows true, columns predicted) with counts in the cells."""
    counts = np.asarray(matrix.cpu() if hasattr(matrix, "cpu") else matrix)
    figure = Figure(figsize=(4.2, 3.8))
    axis = figure.subplots()
    axis.imshow(counts, cmap="Blues")
    axis.set_xticks(range(len(classes)), classes, rotation=45, ha="right", fontsize=8)
    axis.set_yticks(range(len(classes)), classes, fontsize=8)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    peak = counts.max() if counts.size else 0
    for (row, col), value in np.ndenumerate(counts):
        axis.text(col, row, str(value), ha="center", va="center", fontsize=8,
                  color="white" if value > peak / 2 else "black")
    if title:
        axis.set_title(title, fontsize=9)
    figure.tight_layout()
    return figure


def plot_top_patches(crops: list[list[torch.Tensor]], row_labels: list[str], crop_pixels: int = 48) -> Figure:
    """Rows of input crops (C, h, w), each min-max scaled and resized to ``crop_pixels`` square."""
    import cv2

    rows = []
    for row in crops:
        pictures = []
        for crop in row:
            lo, hi = crop.min(), crop.max()
            scaled = ((crop - lo) / (hi - lo).clamp_min(1e-12) * 255).round().byte()
            picture = scaled.permute(1, 2, 0).cpu().numpy()
            picture = np.repeat(picture, 3, axis=2) if picture.shape[2] == 1 else picture[..., :3]
            pictures.append(cv2.resize(np.ascontiguousarray(picture), (crop_pixels, crop_pixels),
                                       interpolation=cv2.INTER_NEAREST))
        rows.append(pictures)
    return plot_image_grid(rows, row_labels)


def plot_signal_map(signal: torch.Tensor, heat: torch.Tensor, title: str | None = None,
                    colormap: str = "jet") -> Figure:
    """A 1-D explanation: the signal's channels (C, T) as lines, the map (T,) as a heat strip
    under them on the same time axis."""
    values = signal.detach().float().cpu().numpy()
    strip = normalize_maps(heat.detach().float().reshape(1, 1, -1), start_dim=2).reshape(1, -1).cpu().numpy()
    if values.ndim != 2 or strip.shape[1] != values.shape[1]:
        raise InputError(f"a signal (C, T) and a map (T,) of the same length are needed, got {tuple(signal.shape)} "
                         f"and {tuple(heat.shape)}")
    figure = Figure(figsize=(6, 2.6))
    top, bottom = figure.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    for channel in values:
        top.plot(channel, linewidth=0.8)
    top.set_ylabel("signal", fontsize=8)
    bottom.imshow(strip, aspect="auto", cmap=colormap, vmin=0, vmax=1, extent=(-0.5, strip.shape[1] - 0.5, 0, 1))
    bottom.set_yticks([])
    bottom.set_xlabel("time step", fontsize=8)
    if title:
        top.set_title(title, fontsize=9)
    figure.tight_layout()
    return figure


def plot_metric_curves(panels: dict[str, dict[str, tuple[torch.Tensor, torch.Tensor]]]) -> Figure:
    """One panel per curve metric (title -> {explainer: (fractions, mean curve)}), the score
    against the fraction of the input perturbed, one line per explainer."""
    figure = Figure(figsize=(4.2 * max(len(panels), 1) + 1.8, 3.3))
    axes = figure.subplots(1, max(len(panels), 1), squeeze=False)[0]
    for axis, (title, lines) in zip(axes, panels.items()):
        for label, (fractions, curve) in lines.items():
            axis.plot(fractions.cpu().numpy(), curve.cpu().numpy(), label=label, linewidth=1.2)
        axis.set_title(title, fontsize=9)
        axis.set_xlabel("fraction of the image perturbed", fontsize=8)
        axis.set_ylabel("probability of the class", fontsize=8)
        axis.tick_params(labelsize=7)
    handles, labels = axes[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="center right", fontsize=7, frameon=False)
    figure.tight_layout(rect=(0, 0, 1 - 1.8 / figure.get_figwidth(), 1))
    return figure
