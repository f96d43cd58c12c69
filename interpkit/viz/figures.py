"""Matplotlib figures (built without pyplot, so no GUI backend is ever needed)."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import matplotlib
import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from ..core.maps import normalize_maps
from ..errors import InputError
from ..files import save_figure
from .images import to_uint8_images, write_png

if TYPE_CHECKING:
    from ..analysis.visualise import Visualisation


def plot_feature_maps(activation: torch.Tensor, ncols: int | None = None, title: str | None = None,
                      colormap: str = "viridis", panel_inches: float = 1.2, scale: str = "layer") -> Figure:
    """A grid with one panel per channel of an activation (C, h, w) or (1, C, h, w), each panel
    ``panel_inches`` square and numbered by its channel. With ``scale="layer"`` every panel shares
    one colour scale (from the layer's minimum to its maximum, drawn as a colour bar), so channels
    compare; ``"channel"`` stretches each panel on its own."""
    if activation.dim() == 4 and activation.shape[0] == 1:
        activation = activation[0]
    if activation.dim() != 3:
        raise InputError(f"feature maps must be (C, h, w) for one sample, got {tuple(activation.shape)}")
    if scale not in ("layer", "channel"):
        raise InputError(f"scale must be 'layer' or 'channel', got {scale!r}")
    channels = activation.shape[0]
    ncols = ncols or math.ceil(math.sqrt(channels))
    nrows = math.ceil(channels / ncols)
    values = activation.detach().float().cpu()
    if scale == "channel":
        values, low, high = normalize_maps(values[None], start_dim=2)[0], 0.0, 1.0
    else:
        low, high = float(values.min()), float(values.max())
        high = high if high > low else low + 1.0
    figure = Figure(figsize=(panel_inches * ncols + 0.9, panel_inches * nrows + (0.5 if title else 0.1)))
    axes = figure.subplots(nrows, ncols, squeeze=False)
    image = None
    for index, axis in enumerate(axes.flat):
        axis.set_axis_off()
        if index < channels:
            image = axis.imshow(values[index].numpy(), cmap=colormap, vmin=low, vmax=high)
            axis.set_title(str(index), fontsize=7, pad=1.5)
    if title:
        figure.suptitle(title, fontsize=10)
    top = 1 - 0.4 / figure.get_figheight() if title else 1
    figure.tight_layout(pad=0.3, rect=(0, 0, 1 - 0.8 / figure.get_figwidth(), top))
    if image is not None and scale == "layer":
        bar = figure.add_axes((1 - 0.7 / figure.get_figwidth(), 0.1, 0.15 / figure.get_figwidth(), 0.8))
        figure.colorbar(image, cax=bar).ax.tick_params(labelsize=7)
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
                    column_labels: list[str] | None = None, panel_inches: float = 0.9,
                    highlight: Sequence[tuple[int, int]] = (),
                    colorbar: tuple[str, str, str] | None = None) -> Figure:
    """A grid of uint8 RGB images, one list per row (a Zeiler-Fergus grid: one row per channel),
    each panel ``panel_inches`` square; ``highlight`` frames the panels at (row, column). Row
    labels get the room their longest line needs. ``colorbar`` = (colormap, low label, high
    label) adds a colour bar on the right for panels coloured with that map."""
    ncols = max((len(r) for r in rows), default=1)
    top = 0.35 if column_labels else 0.0
    longest = max((len(line) for label in row_labels or [] for line in label.split("\n")), default=0)
    left = 0.07 * longest + 0.2 if row_labels else 0.1  # about 0.07 inch per character at 7 points
    right = 0.9 if colorbar else 0.1
    width = panel_inches * ncols + left + right
    height = panel_inches * max(len(rows), 1) + top
    figure = Figure(figsize=(width, height))
    axes = figure.subplots(max(len(rows), 1), ncols, squeeze=False)
    for r, row in enumerate(rows):
        for c in range(ncols):
            axis = axes[r, c]
            axis.set_xticks([])
            axis.set_yticks([])
            for spine in axis.spines.values():
                spine.set_visible((r, c) in highlight)
                spine.set_edgecolor("#1a9641")
                spine.set_linewidth(3)
            if c < len(row):
                axis.imshow(row[c])
            if column_labels and r == 0 and c < len(column_labels):
                axis.set_title(column_labels[c], fontsize=7)
        if row_labels:
            axes[r, 0].set_ylabel(row_labels[r], rotation=0, ha="right", va="center", fontsize=7)
    figure.subplots_adjust(left=left / width, right=1 - right / width, bottom=0.05 / height,
                           top=1 - top / height, wspace=0.06, hspace=0.06)
    if colorbar:
        colormap, low, high = colorbar
        bar = figure.add_axes((1 - 0.75 / width, 0.15, 0.12 / width, 0.7))
        bar.imshow(np.linspace(1, 0, 256)[:, None], cmap=colormap, aspect="auto")
        bar.set_xticks([])
        bar.set_yticks([0, 255], [high, low], fontsize=7)
        bar.yaxis.tick_right()
    return figure


def plot_confusion(matrix, classes: list[str], title: str | None = None) -> Figure:
    """A confusion matrix (rows true, columns predicted) with counts in the cells."""
    counts = np.asarray(matrix.cpu() if hasattr(matrix, "cpu") else matrix)
    figure = Figure(figsize=(5.6, 5.0))
    axis = figure.subplots()
    axis.imshow(counts, cmap="Blues")
    axis.set_xticks(range(len(classes)), classes, rotation=45, ha="right", fontsize=11)
    axis.set_yticks(range(len(classes)), classes, fontsize=11)
    axis.set_xlabel("predicted", fontsize=11)
    axis.set_ylabel("true", fontsize=11)
    peak = counts.max() if counts.size else 0
    for (row, col), value in np.ndenumerate(counts):
        axis.text(col, row, str(value), ha="center", va="center", fontsize=14, fontweight="bold",
                  color="white" if value > peak / 2 else "black")
    if title:
        axis.set_title(title, fontsize=12)
    figure.tight_layout()
    return figure


@dataclass
class NeuronPanel:
    """One neuron's guided-backprop gradient (C, H, W) over the whole input, its channel, its
    activation and its receptive field's box (top, left, bottom, right) in input pixels,
    unclipped: it may pass the image border (``ReceptiveField.box``)."""

    channel: int
    activation: float
    box: tuple[int, int, int, int]
    gradient: torch.Tensor


def plot_neuron_gradients(image: np.ndarray, panels: list[NeuronPanel], title: str | None = None,
                          panel_inches: float = 1.25, outliers: float = 0.005) -> Figure:
    """Guided backprop of neurons as Springenberg et al. and Zeiler and Fergus show them: the top
    row each gradient cropped to its neuron's receptive field, the bottom row the whole-image
    gradient with that field framed; the image itself on the left. Every crop shows the field's
    full extent, so all crops of one layer are one size: the part outside the image is striped
    (``OUTSIDE_STRIPES``). Every panel is scaled on its own, symmetrically around zero (mid-grey;
    the ``outliers`` fraction of largest |values| saturates), and titled with the channel and its
    activation."""
    from .images import gradient_images

    figure = Figure(figsize=(panel_inches * (len(panels) + 1), panel_inches * 2 + (0.65 if title else 0.4)))
    axes = figure.subplots(2, len(panels) + 1, squeeze=False)
    for axis in axes.flat:
        axis.set_axis_off()
    axes[0, 0].imshow(image)
    axes[0, 0].set_title("image", fontsize=7)
    for column, panel in enumerate(panels, start=1):
        top, left, bottom, right = panel.box
        height, width = panel.gradient.shape[-2:]
        inside = (max(top, 0), max(left, 0), min(bottom, height), min(right, width))
        crop = panel.gradient[:, inside[0]:inside[2], inside[1]:inside[3]]
        picture = gradient_images(crop[None, None], symmetric=True, outliers=outliers)[0, 0]
        axes[0, column].imshow(_in_field(picture, panel.box, inside))
        axes[0, column].set_title(f"channel {panel.channel}\nact {panel.activation:.2f}", fontsize=7)
        axes[1, column].imshow(gradient_images(panel.gradient[None, None], symmetric=True, outliers=outliers)[0, 0])
        axes[1, column].add_patch(Rectangle((inside[1] - 0.5, inside[0] - 0.5), inside[3] - inside[1],
                                            inside[2] - inside[0], fill=False, edgecolor="#ffd700", linewidth=1.2))
    axes[1, 0].text(0.5, 0.5, "whole\nimage", ha="center", va="center", fontsize=7, transform=axes[1, 0].transAxes)
    if title:
        figure.suptitle(title, fontsize=9)
    figure.tight_layout(pad=0.3, h_pad=1.2, rect=(0, 0, 1, 1 - 0.3 / figure.get_figheight() if title else 1))
    return figure


OUTSIDE_STRIPES = ((196, 214, 232), (226, 235, 244))  # pale blue diagonal stripes: outside the image


def _in_field(picture: np.ndarray, box: tuple[int, int, int, int], inside: tuple[int, int, int, int]) -> np.ndarray:
    """``picture`` (the part of a field inside the image) placed in the field's full box, the rest striped."""
    top, left, bottom, right = box
    rows, columns = np.mgrid[0:bottom - top, 0:right - left]
    stripes = np.array(OUTSIDE_STRIPES, dtype=np.uint8)[((rows + columns) // 3) % 2]
    stripes[inside[0] - top:inside[2] - top, inside[1] - left:inside[3] - left] = picture
    return stripes


def plot_contact_sheet(images: torch.Tensor, labels: list[str], ncols: int | None = None,
                       panel_inches: float = 1.2) -> Figure:
    """Images (N, 1 or 3, H, W) in [0, 1] in a grid of ``ncols`` columns, each titled by its label."""
    if images.dim() != 4:
        raise InputError(f"a contact sheet shows 2-D images (N, C, H, W), got shape {tuple(images.shape)}")
    pictures = to_uint8_images(images.float())
    ncols = ncols or min(len(pictures), 8)
    nrows = math.ceil(len(pictures) / ncols)
    figure = Figure(figsize=(panel_inches * ncols, (panel_inches + 0.2) * nrows))
    axes = figure.subplots(nrows, ncols, squeeze=False)
    for index, axis in enumerate(axes.flat):
        axis.set_axis_off()
        if index < len(pictures):
            axis.imshow(pictures[index])
            axis.set_title(labels[index], fontsize=6, pad=1.5)
    figure.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=1 - 0.25 / figure.get_figheight(),
                           wspace=0.05, hspace=0.25)
    return figure


def save_visualisation(visualisation: "Visualisation", out_dir: str | os.PathLike) -> list[Path]:
    """Write ``unit_{i}.png`` per optimised image and ``contact_sheet.png`` (labelled) into ``out_dir``."""
    folder = Path(out_dir)
    if folder.exists() and not folder.is_dir():
        raise InputError(f"{folder} is a file, not a folder to save the images in; name a folder")
    if visualisation.images.dim() != 4:
        raise InputError(f"only 2-D images are saved as PNG, got shape {tuple(visualisation.images.shape)}")
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, picture in enumerate(to_uint8_images(visualisation.images.float())):
        paths.append(folder / f"unit_{i:03d}.png")
        write_png(paths[-1], picture)
    paths.append(folder / "contact_sheet.png")
    save_figure(paths[-1], plot_contact_sheet(visualisation.images, list(visualisation.labels)))
    return paths


def plot_top_patches(crops: list[list[torch.Tensor]], row_labels: list[str], crop_pixels: int = 48,
                     leading: torch.Tensor | None = None) -> Figure:
    """Rows of input crops (C, h, w), each min-max scaled and resized to ``crop_pixels`` square;
    ``leading`` (one image (C, H, W) in [0, 1] per row: a feature visualisation) opens each row,
    framed, under the column label "optimised"."""
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
    if leading is None:
        return plot_image_grid(rows, row_labels)
    if len(leading) != len(rows):
        raise InputError(f"{len(leading)} leading images for {len(rows)} rows of patches")
    openers = [cv2.resize(picture, (2 * crop_pixels, 2 * crop_pixels), interpolation=cv2.INTER_AREA)
               for picture in to_uint8_images(leading.float())]
    columns = ["optimised"] + [f"top {j + 1}" for j in range(max(map(len, rows), default=0))]
    return plot_image_grid([[opener, *row] for opener, row in zip(openers, rows)], row_labels, columns,
                           highlight=[(r, 0) for r in range(len(rows))])


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
    against the fraction of the input perturbed, one line per explainer, each with its own colour
    and dash (20 colours, then dashes), the legend in columns below."""
    names = list(dict.fromkeys(name for lines in panels.values() for name in lines))
    columns = 5
    legend_height = 0.2 * math.ceil(len(names) / columns) + 0.2
    figure = Figure(figsize=(4.6 * max(len(panels), 1), 3.3 + legend_height))
    axes = figure.subplots(1, max(len(panels), 1), squeeze=False)[0]
    colours = [matplotlib.colormaps["tab20"](i) for i in range(20)]
    for axis, (title, lines) in zip(axes, panels.items()):
        for label, (fractions, curve) in lines.items():
            i = names.index(label)
            axis.plot(fractions.cpu().numpy(), curve.cpu().numpy(), label=label, linewidth=1.2,
                      color=colours[i % len(colours)], linestyle=("-", "--", ":", "-.")[i // len(colours) % 4])
        axis.set_title(title, fontsize=9)
        axis.set_xlabel("fraction of the image perturbed", fontsize=8)
        axis.set_ylabel("probability of the class", fontsize=8)
        axis.tick_params(labelsize=7)
    handles, labels = axes[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="lower center", ncol=columns, fontsize=7, frameon=False)
    figure.tight_layout(rect=(0, legend_height / figure.get_figheight(), 1, 1))
    return figure
