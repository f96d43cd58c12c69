"""Heatmaps, overlays and PNG files with OpenCV colormaps."""

from __future__ import annotations

import numbers
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
import torch

from ..core.maps import MapKind, normalize_maps
from ..errors import InputError
from ..files import replacing

if TYPE_CHECKING:
    from ..core.explanation import Explanation

COLORMAPS = {
    name[len("COLORMAP_"):].lower(): getattr(cv2, name) for name in dir(cv2) if name.startswith("COLORMAP_")
}


def _colormap_id(colormap: int | str) -> int:
    if isinstance(colormap, str):
        if colormap.lower() not in COLORMAPS:
            raise InputError(f"unknown colormap {colormap!r}; choose one of {', '.join(sorted(COLORMAPS))}")
        return COLORMAPS[colormap.lower()]
    if colormap not in COLORMAPS.values():
        raise InputError(f"unknown OpenCV colormap id {colormap!r}; pass a name such as 'jet'")
    return int(colormap)


STRIP_HEIGHT = 24  # pixels of a 1-D map drawn as a heat strip


def _plane(maps: torch.Tensor, kind: MapKind) -> torch.Tensor:
    """One value per grid position (N, K, *grid): channels (input gradients) by their largest |value|."""
    planes = maps.abs().amax(dim=2) if kind.has_channels else maps
    if not 3 <= planes.dim() <= 5:
        raise InputError(f"{kind.value} maps of shape {tuple(maps.shape)} have no 1-D, 2-D or 3-D grid to draw")
    return planes


SCALES = {"map": 2, "sample": 1}  # normalised over each map, or over all of a sample's maps together


def colorize(maps: torch.Tensor, kind: MapKind = MapKind.INPUT_GRID, colormap: int | str = "jet",
             scale: str = "map") -> np.ndarray:
    """Normalise each map into [0, 1] over its whole grid (``scale="map"``), or over all the maps
    of a sample together (``"sample"``: the K maps of an image stay comparable), and colour it:
    uint8 RGB (N, K, H, W, 3) for 2-D maps, (N, K, D, H, W, 3) for 3-D maps (one scale across the
    frames), and heat strips (N, K, STRIP_HEIGHT, T, 3) for 1-D maps."""
    code = _colormap_id(colormap)
    if scale not in SCALES:
        raise InputError(f"scale must be 'map' or 'sample', got {scale!r}")
    levels = _levels(_plane(maps.detach(), kind).float(), start_dim=SCALES[scale])
    if levels.ndim == 3:  # a 1-D map: the same row repeated into a strip
        levels = np.repeat(levels[:, :, None], STRIP_HEIGHT, axis=2)
    width = levels.shape[-1]
    coloured = cv2.applyColorMap(levels.reshape(-1, width), code)
    return cv2.cvtColor(coloured, cv2.COLOR_BGR2RGB).reshape(*levels.shape, 3)


def _levels(planes: torch.Tensor, start_dim: int) -> np.ndarray:
    """Each map (flattened from ``start_dim``) min-max scaled to colour levels 0..255 over its
    finite values (NaN and -inf drawn at level 0, +inf at 255), uint8 on the host. In float32
    where every span is a normal float32 (a sync or two, as the copy to the host is);
    ``normalize_maps``' float64 otherwise (subnormal or overflowing spans)."""
    flat = planes.flatten(start_dim)
    finite = torch.isfinite(flat)
    hot = None
    if not bool(finite.all()):  # scaled over the finite values; NaN and -inf at level 0, +inf at 255
        low = torch.where(finite, flat, torch.inf).amin(dim=-1, keepdim=True).nan_to_num(0.0, 0.0, 0.0)
        hot = flat == torch.inf
        flat = torch.where(finite, flat, low)
        planes = flat.reshape(planes.shape)
    low, high = flat.amin(dim=-1, keepdim=True), flat.amax(dim=-1, keepdim=True)
    span = high - low
    if bool((torch.isfinite(span) & ((span == 0) | (span >= torch.finfo(torch.float32).tiny))).all()):
        scaled = (flat - low) / torch.where(span > 0, span, 1.0)
    else:
        scaled = normalize_maps(planes, start_dim).flatten(start_dim)
    if hot is not None:
        scaled = torch.where(hot, 1.0, scaled)
    return (scaled * 255).round().to(torch.uint8).reshape(planes.shape).cpu().numpy()


def to_uint8_images(images: Any) -> np.ndarray:
    """Images as uint8 RGB (N, H, W, 3) from uint8 NHWC/NCHW or float NCHW in [0, 1] (a float
    image outside it, a normalised model input say, is refused rather than clipped)."""
    if isinstance(images, torch.Tensor):  # bfloat16 and others NumPy has no type for, as float32
        images = images.detach().cpu()
        array = (images.float() if images.is_floating_point() else images).numpy()
    else:
        array = np.asarray(images)
    if array.ndim == 3:
        array = array[None]
    if array.ndim != 4:
        raise InputError(f"images must be (N, H, W, 3) or (N, 3, H, W), got shape {array.shape}")
    # channels first where the axis allows it: always for float images and torch tensors (torch's
    # convention), for a NumPy uint8 array only where its last axis cannot be channels
    channels_first = array.shape[1] in (1, 3) and (
        array.shape[-1] not in (1, 3) or isinstance(images, torch.Tensor) or array.dtype != np.uint8)
    if channels_first:
        array = array.transpose(0, 2, 3, 1)
    if array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=-1)
    if array.shape[-1] != 3:
        raise InputError(f"images need 1 or 3 channels, got shape {array.shape}")
    if array.dtype == np.uint8:
        return np.ascontiguousarray(array)
    if not np.issubdtype(array.dtype, np.floating):
        raise InputError(f"images must be uint8 or float in [0, 1], got {array.dtype}")
    # clipped where resampling (bicubic overshoots by about 0.15) or rounding left them a little out of
    # [0, 1]; refused where they are on another scale (0..255, a normalised model input spans -2.1..2.6)
    if array.size and not (np.isfinite(array).all() and array.min() >= -0.5 and array.max() <= 1.5):
        raise InputError(f"float images must be in [0, 1], these span {np.nanmin(array):.4g} to {np.nanmax(array):.4g}"
                         " (or hold NaN); pass the uint8 image, or undo the model's normalisation "
                         "(ImageTransform.denormalize)")
    return (np.clip(array, 0.0, 1.0) * 255).round().astype(np.uint8)


def overlay_maps(maps: torch.Tensor, images: Any, kind: MapKind = MapKind.INPUT_GRID, alpha: float = 0.5,
                 colormap: int | str = "jet", scale: str = "map") -> np.ndarray:
    """Blend colour-mapped ``maps`` over ``images``: uint8 RGB (N, K, H, W, 3).

    Maps of another size than the images are resized bilinearly. ``alpha`` is the heatmap's
    weight; ``scale`` as in ``colorize``.
    """
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not 0.0 <= alpha <= 1.0:
        raise InputError(f"alpha must be a number in [0, 1], got {alpha!r}")
    planes = _plane(maps.detach(), kind)
    if planes.dim() == 3:  # 1-D: nothing to blend onto; the heat strips, one per map
        if _batch_of(images) != planes.shape[0]:
            raise InputError(f"got {_batch_of(images)} signals for {planes.shape[0]} explained samples")
        return colorize(planes, MapKind.INPUT_GRID, colormap, scale)
    if planes.dim() == 5:  # 3-D: every frame blended with its own
        return _overlay_frames(planes, images, alpha, colormap, scale)
    base = to_uint8_images(images)
    if base.shape[0] != planes.shape[0]:
        raise InputError(f"got {base.shape[0]} images for {planes.shape[0]} explained samples")
    height, width = base.shape[1:3]
    if planes.shape[-2:] != (height, width):
        planes = torch.nn.functional.interpolate(
            planes.float(), size=(height, width), mode="bilinear", align_corners=False
        )
    heat = colorize(planes, MapKind.INPUT_GRID, colormap, scale)
    for i, picture in enumerate(base):  # OpenCV's rounded, saturating blend: no float copy of the batch
        for coloured in heat[i]:
            cv2.addWeighted(coloured, alpha, picture, 1.0 - alpha, 0.0, dst=coloured)
    return heat


def _batch_of(images: Any) -> int:
    return int(images.shape[0]) if hasattr(images, "shape") else len(images)


def _overlay_frames(planes: torch.Tensor, videos: Any, alpha: float, colormap: int | str, scale: str) -> np.ndarray:
    """3-D maps (N, K, D, H, W) over videos (N, C, D, H, W): (N, K, D, H, W, 3), one scale per map."""
    if not isinstance(videos, torch.Tensor) or videos.dim() != 5 or videos.shape[0] != planes.shape[0]:
        raise InputError(f"3-D maps are drawn over videos or volumes (N, C, D, H, W) with N = {planes.shape[0]}")
    n, k, depth = planes.shape[:3]
    size = tuple(videos.shape[-2:])
    if tuple(planes.shape[-3:]) != tuple(videos.shape[-3:]):
        planes = torch.nn.functional.interpolate(planes.float(), size=videos.shape[-3:], mode="trilinear",
                                                 align_corners=False)
        depth = planes.shape[2]
    heat = colorize(planes, MapKind.INPUT_GRID, colormap, scale).astype(np.float32)  # (N, K, D, H, W, 3)
    frames = to_uint8_images(videos.transpose(1, 2).flatten(0, 1)).reshape(n, depth, *size, 3)
    return (alpha * heat + (1.0 - alpha) * frames[:, None].astype(np.float32)).round().astype(np.uint8)


def montage(frames: np.ndarray, gap: int = 2) -> np.ndarray:
    """Frames (D, H, W, 3) side by side with a white gap: one (H, D * (W + gap) - gap, 3) image."""
    depth, height, width = frames.shape[:3]
    out = np.full((height, depth * (width + gap) - gap, 3), 255, dtype=np.uint8)
    for i, frame in enumerate(frames):
        out[:, i * (width + gap):i * (width + gap) + width] = frame
    return out


def save_maps(explanation: "Explanation", out_dir: str | os.PathLike, colormap: int | str = "jet") -> list[Path]:
    """Write ``{method}_{sample}_{column}_{target}.png`` per map (unique even when two columns
    name the same target, such as one channel of two layers): 2-D maps as images, 1-D maps as
    heat strips, 3-D maps as a montage of their frames; each file appears whole or not at all."""
    folder = Path(out_dir)
    if folder.exists() and not folder.is_dir():
        raise InputError(f"{folder} is a file, not a folder to save the maps in; name a folder")
    folder.mkdir(parents=True, exist_ok=True)
    coloured = colorize(explanation.maps, explanation.kind, colormap)
    targets = explanation.targets.cpu().tolist()
    paths = []
    for n, row in enumerate(coloured):
        for k, image in enumerate(row):
            path = folder / f"{explanation.method}_{n}_{k}_{targets[n][k]}.png"
            write_png(path, montage(image) if image.ndim == 4 else image)
            paths.append(path)
    return paths


def write_png(path: Path, rgb: np.ndarray) -> None:
    """Write an RGB image atomically: to a temporary file beside it, then rename."""
    ok, data = cv2.imencode(".png", cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR))
    if not ok:
        raise InputError(f"could not encode an image of shape {rgb.shape} as PNG")
    with replacing(path) as temporary:
        temporary.write_bytes(data.tobytes())


def gradient_images(maps: torch.Tensor, positive_only: bool = False, symmetric: bool = False,
                    outliers: float = 0.0) -> np.ndarray:
    """Input-gradient maps (N, K, C, H, W) as viewable uint8 images (N, K, H, W, C).

    Each map is scaled on its own over all its channels: min-max into [0, 255] (after keeping
    only the positive part when ``positive_only``), or with ``symmetric`` around zero, so that
    zero is mid-grey in every panel and the largest |value| reaches black or white; with
    ``outliers`` that fraction of the largest |values| saturates instead (a few extreme pixels
    would otherwise leave the rest of the panel grey).
    """
    if maps.dim() != 5:
        raise InputError(f"gradient maps must have shape (N, K, C, H, W), got {tuple(maps.shape)}")
    values = maps.detach().float()
    if positive_only:
        values = values.clamp_min(0)
    if not 0.0 <= outliers < 1.0:
        raise InputError(f"outliers must lie in [0, 1), got {outliers}")
    if symmetric:
        magnitudes = values.abs().flatten(2)
        peak = (torch.quantile(magnitudes, 1.0 - outliers, dim=2) if outliers else magnitudes.amax(dim=2))
        peak = peak.view(*values.shape[:2], 1, 1, 1)
        scaled = (0.5 + 0.5 * values / torch.where(peak > 0, peak, 1.0)).clamp(0, 1)
    else:
        scaled = normalize_maps(values, start_dim=2)
    return (scaled * 255).round().to(torch.uint8).permute(0, 1, 3, 4, 2).cpu().numpy()
