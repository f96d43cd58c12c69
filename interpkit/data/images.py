"""Reading images of any common mode into RGB uint8 tensors, with the file named on failure."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from ..errors import InputError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}


def image_files(folder: Path) -> list[Path]:
    """Every image file under ``folder`` (subfolders too, symlinked ones followed once), in sorted
    path order, leaving out the overlays ``interpkit explain`` wrote (a folder whose manifest.json
    is its manifest); an InputError when ``folder`` is not a folder or holds no image."""
    if not folder.is_dir():
        raise InputError(f"image folder not found: {folder} is not a folder")
    paths, seen = [], set()
    for root, folders, files in os.walk(folder, followlinks=True):
        real = os.path.realpath(root)
        if real in seen or _explain_output(Path(root)):  # a symlink loop, or explain's own outputs
            folders.clear()
            continue
        seen.add(real)
        folders.sort()  # walked in sorted order: of two names for one folder, always the same one is kept
        paths += [Path(root) / name for name in files if Path(name).suffix.lower() in IMAGE_SUFFIXES]
    if not paths:
        raise InputError(f"no image files under {folder} (looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
    return sorted(paths)


def _explain_output(folder: Path) -> bool:
    """True for a folder ``interpkit explain`` wrote into: its manifest.json lists inputs and outputs."""
    if not (folder / "manifest.csv").is_file():
        return False
    try:
        rows = json.loads((folder / "manifest.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(rows, list) and bool(rows) and all(isinstance(r, dict) and {"input", "outputs"} <= set(r)
                                                         for r in rows)


def read_image(path: str | os.PathLike) -> torch.Tensor:
    """The image at ``path`` as RGB uint8 (3, H, W); grayscale, palette, CMYK, alpha and 16-bit
    images are converted. An unreadable or corrupt file raises InputError naming it."""
    path = Path(path)
    try:
        with Image.open(path) as image:
            image.load()
            return pil_to_tensor(image)
    except FileNotFoundError:
        raise InputError(f"image file not found: {path}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise InputError(f"cannot read image {path}: {error}; is it a valid image file?") from None


def pil_to_tensor(image: Image.Image) -> torch.Tensor:
    """A PIL image of any mode as RGB uint8 (3, H, W): integer greyscale (16-bit PNG, PGM, TIFF)
    scaled from 0..65535 whatever its values, floating greyscale stretched from its finite minimum
    to its maximum (NaN black), transparent pixels (alpha, or a colour key) over white."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        array = np.asarray(image, dtype=np.float64)
        top = 65535.0
        if image.mode == "F":
            finite = array[np.isfinite(array)]
            low, high = (finite.min(), finite.max()) if finite.size else (0.0, 0.0)
            array = np.nan_to_num(array, nan=low, posinf=high, neginf=low)
            array, top = (array - low) / (high - low if high > low else 1.0), 1.0
        gray = np.clip(np.round(array / top * 255.0), 0, 255).astype(np.uint8)
        key = image.info.get("transparency")
        if isinstance(key, (int, float)) and image.mode != "F":  # a colour key: those pixels over white
            gray[np.asarray(image) == key] = 255
        return torch.from_numpy(np.repeat(gray[None], 3, axis=0).copy())
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, rgba)  # transparent areas become white, not black
    array = np.asarray(image.convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()


def as_rgb_uint8(image: object) -> torch.Tensor:
    """Accept a PIL image or a uint8 tensor (C, H, W) / (H, W) with 1, 3 or 4 channels."""
    if isinstance(image, Image.Image):
        return pil_to_tensor(image)
    if not isinstance(image, torch.Tensor):
        raise InputError(f"expected a PIL image or a uint8 tensor (C, H, W), not {type(image).__name__}")
    if image.dim() == 2:
        image = image.unsqueeze(0)
    if image.dim() != 3 or image.shape[0] not in (1, 3, 4):
        raise InputError(f"expected an image tensor (C, H, W) with 1, 3 or 4 channels, got {tuple(image.shape)}")
    if image.dtype != torch.uint8:
        raise InputError(f"expected a uint8 image tensor as torchvision.io.decode_image returns, got {image.dtype}")
    if image.shape[0] == 1:
        return image.expand(3, -1, -1)
    if image.shape[0] == 4:  # over white, as a PIL image with alpha is
        alpha = image[3:].to(torch.int32)
        return ((image[:3].to(torch.int32) * alpha + 255 * (255 - alpha) + 127) // 255).to(torch.uint8)
    return image
