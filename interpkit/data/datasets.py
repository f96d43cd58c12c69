"""Image datasets: the bundled canonical split, any ImageFolder tree, torchvision's Caltech101."""

from __future__ import annotations

import json
import numbers
import os
import random
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch.utils.data import Dataset

from ..errors import InputError
from .images import IMAGE_SUFFIXES, read_image
from .transforms import resize_uint8

SPLITS = ("train", "val", "test")


class ImageDataset(Dataset):
    """(image, label) pairs from files; images are RGB uint8 (3, H, W) unless ``transform`` maps them."""

    def __init__(self, paths: Sequence[Path], labels: Sequence[int], classes: Sequence[str],
                 transform: Callable | None = None) -> None:
        if len(paths) != len(labels):
            raise InputError("paths and labels differ in length")
        self.paths, self.labels, self.classes = list(paths), list(labels), list(classes)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        image = read_image(self.paths[index])
        return (self.transform(image) if self.transform else image), self.labels[index]

    def tensors(self, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Every image decoded once and resized: uint8 (N, 3, H, W) and labels (N,)."""
        images = torch.stack([resize_uint8(read_image(p), size) for p in self.paths]) if self.paths \
            else torch.zeros(0, 3, *size, dtype=torch.uint8)
        return images, torch.tensor(self.labels, dtype=torch.long)


def bundled_root() -> Path:
    """Folder of the canonical five-class split shipped in the package."""
    return Path(str(resources.files("interpkit.data") / "caltech5"))


def caltech5(split: str = "train", transform: Callable | None = None, root: str | os.PathLike | None = None) -> ImageDataset:
    """The canonical five-class Caltech-101 split (250 train / 50 val / 100 test).

    Reads the bundled copy, or ``root`` holding ``split.json`` (paths relative to it) or the
    shared ``caltech5_split.json``.
    """
    if split not in SPLITS:
        raise InputError(f"split must be one of {', '.join(SPLITS)}, not {split!r}")
    folder = Path(root) if root is not None else bundled_root()
    listing = next((folder / n for n in ("split.json", "caltech5_split.json") if (folder / n).exists()), None)
    if listing is None:
        raise InputError(f"no split.json or caltech5_split.json in {folder}")
    try:
        spec = json.loads(listing.read_text())
    except (OSError, ValueError) as error:
        raise InputError(f"{listing} is not a readable split file ({type(error).__name__}: {error})") from None
    if not (isinstance(spec, dict) and isinstance(spec.get("classes"), list) and isinstance(spec.get(split), list)
            and all(isinstance(name, str) for name in spec["classes"] + spec[split])):
        raise InputError(f"{listing} is not a split file: it needs 'classes' and '{split}', lists of names and of "
                         "image paths (class folder/file)")
    classes = spec["classes"]
    outside = [rel for rel in spec[split] if Path(rel).parent.name not in classes]
    if outside:
        raise InputError(f"{listing} lists {outside[0]!r} in '{split}', whose folder is not one of its classes "
                         f"({', '.join(classes)})")
    paths = [folder / rel for rel in spec[split]]
    labels = [classes.index(Path(rel).parent.name) for rel in spec[split]]
    return ImageDataset(paths, labels, classes, transform)


@dataclass(frozen=True)
class SplitSizes:
    """Images per class in each split."""

    train: int = 50
    val: int = 10
    test: int = 20


def image_folder(root: str | os.PathLike, classes: Sequence[str] | None = None, sizes: SplitSizes = SplitSizes(),
                 seed: int = 0, transform: Callable | None = None) -> dict[str, ImageDataset]:
    """A seeded per-class split of an ImageFolder tree (one folder per class) into train/val/test."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"data directory not found: {root}")
    available = sorted(p.name for p in root.iterdir() if p.is_dir())
    if isinstance(classes, str):
        raise InputError(f"classes must be a sequence of folder names, not the string {classes!r:.80}")
    chosen = list(classes) if classes is not None else available  # once: an iterator is used up by reading
    if not all(isinstance(c, str) for c in chosen):
        raise InputError(f"classes must be a sequence of folder names, not {chosen!r:.80}")
    if len(set(chosen)) != len(chosen):  # one folder twice: its files in two splits under two labels
        raise InputError(f"classes names a folder twice: {', '.join(sorted({c for c in chosen if chosen.count(c) > 1}))}")
    counts = (sizes.train, sizes.val, sizes.test)
    if not all(isinstance(n, numbers.Integral) and not isinstance(n, bool) and n >= 0 for n in counts):
        raise InputError(f"split sizes must be counts (ints of at least 0), got {sizes}")
    sizes = SplitSizes(*(int(n) for n in counts))
    missing = [c for c in chosen if c not in available]
    if missing:
        raise InputError(f"classes not found in {root}: {', '.join(missing)}")
    rng = random.Random(seed)
    parts: dict[str, tuple[list[Path], list[int]]] = {s: ([], []) for s in SPLITS}
    for label, name in enumerate(chosen):
        files = sorted(p for p in (root / name).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        need = sizes.train + sizes.val + sizes.test
        if len(files) < need:
            raise InputError(f"class '{name}' has {len(files)} images, fewer than the {need} the split asks for")
        rng.shuffle(files)
        bounds = {"train": (0, sizes.train), "val": (sizes.train, sizes.train + sizes.val),
                  "test": (sizes.train + sizes.val, need)}
        for split, (start, stop) in bounds.items():
            parts[split][0].extend(files[start:stop])
            parts[split][1].extend([label] * (stop - start))
    return {s: ImageDataset(paths, labels, chosen, transform) for s, (paths, labels) in parts.items()}


def caltech101_categories(root: str | os.PathLike, exclude: Sequence[str], holdout_every: int = 10,
                          transform: Callable | None = None) -> dict[str, ImageDataset]:
    """Every Caltech-101 category in ``root`` (a ``101_ObjectCategories`` folder) except
    ``exclude`` and the BACKGROUND_Google clutter, split per class into ``train`` and ``val``
    (every ``holdout_every``-th image of a class, in file-name order): the source data for
    pretraining a network that is then transferred to the excluded classes."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"Caltech-101 folder not found: {root} (pass the 101_ObjectCategories folder)")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and p.name not in set(exclude)
                     and not p.name.startswith("BACKGROUND"))
    if not classes:
        raise InputError(f"no categories left in {root} after excluding {', '.join(exclude)}")
    parts: dict[str, tuple[list[Path], list[int]]] = {"train": ([], []), "val": ([], [])}
    for label, name in enumerate(classes):
        files = sorted(p for p in (root / name).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        for position, path in enumerate(files):
            split = "val" if position % holdout_every == holdout_every - 1 else "train"
            parts[split][0].append(path)
            parts[split][1].append(label)
    return {split: ImageDataset(paths, labels, classes, transform) for split, (paths, labels) in parts.items()}


def torchvision_caltech101(root: str | os.PathLike, classes: Sequence[str] | None = None, download: bool = True,
                           sizes: SplitSizes = SplitSizes(), seed: int = 0,
                           transform: Callable | None = None) -> dict[str, ImageDataset]:
    """torchvision's Caltech101 download (needs internet once), split like ``image_folder``."""
    from torchvision.datasets import Caltech101

    try:
        dataset = Caltech101(str(root), target_type="category", download=download)
    except RuntimeError as error:
        raise InputError(f"Caltech101 is not available in {root} ({error}); pass download=True with internet access, "
                         "or point image_folder() at an extracted 101_ObjectCategories folder") from None
    return image_folder(Path(dataset.root) / "101_ObjectCategories", classes, sizes, seed, transform)
