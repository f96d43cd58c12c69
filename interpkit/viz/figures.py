"""Matplotlib figures (built without pyplot, so no GUI backend is ever needed)."""

from __future__ import annotations

import math

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
