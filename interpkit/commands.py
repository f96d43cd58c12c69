"""What the command line does, as functions built from the public API."""

from __future__ import annotations

import inspect
import json
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from . import get_explainer, zoo
from .core.explanation import Explanation
from .data import ImageTransform, read_image
from .errors import InputError, TargetError
from .explainers.feature_maps import FeatureMapSet
from .viz import gradient_images, overlay_maps
from .viz.images import write_png
from .zoo.weights import WeightsError, sha256_file


def load_model(model: str | None, checkpoint: str | None, device: str) -> tuple[torch.nn.Module, ImageTransform, list[str]]:
    """A zoo model with its bundled weights, or weights written by ``interpkit train``."""
    if checkpoint is not None:
        path = Path(checkpoint)
        sidecar = path.with_suffix(".json")
        if not path.exists():
            raise InputError(f"checkpoint not found: {path}")
        if not sidecar.exists():
            raise InputError(f"{sidecar} is missing: --checkpoint takes weights written by 'interpkit train'")
        description = json.loads(sidecar.read_text())
        if sha256_file(path) != description["sha256"]:
            raise WeightsError(f"{path} does not match the checksum in {sidecar}; it is corrupt or was replaced")
        name = description["meta"].get("model")
        network = zoo.get_model(name, num_classes=len(description["meta"]["categories"]))
        network.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        spec = description["transforms"]
        transform = ImageTransform(tuple(spec["size"]), tuple(spec["mean"]), tuple(spec["std"]))
        categories = description["meta"]["categories"]
    else:
        if model is None:
            raise InputError("name a zoo model (--model) or weights written by 'interpkit train' (--checkpoint)")
        weights = zoo.get_weights(model)  # raises for an unknown model
        network = zoo.get_model(model, weights=weights)
        transform, categories = weights.transforms(), weights.meta["categories"]
    try:
        network = network.to(device)
    except (RuntimeError, AssertionError) as error:
        raise InputError(f"cannot use device {device!r}: {error}") from None
    return network.eval(), transform, categories


def parse_target(text: str | None, categories: Sequence[str]) -> Any:
    """None (top-1), 'all', a class index, or a class name."""
    if text is None or text == "top":
        return None
    if text == "all":
        return "all"
    if text.lstrip("-").isdigit():
        index = int(text)
        if not 0 <= index < len(categories):
            raise TargetError(f"class index {index} is out of range: the model has {len(categories)} classes")
        return index
    if text in categories:
        return list(categories).index(text)
    raise TargetError(f"unknown target {text!r}; use an index, 'all', or one of: {', '.join(categories)}")


def explain_images(images: Sequence[str], out: str | os.PathLike, model: str | None = None,
                   checkpoint: str | None = None, method: str = "gradcam", layer: str | None = None,
                   target: str | None = None, device: str = "cpu") -> list[Path]:
    """Explain each image file; writes overlays (PNG) and raw maps (.npy). Returns the paths."""
    network, transform, categories = load_model(model, checkpoint, device)
    cls = get_explainer(method)
    options = {"layer": layer} if layer is not None else {}
    if layer is not None and "layer" not in inspect.signature(cls).parameters:
        raise InputError(f"method '{method}' takes no layer")
    explainer = cls(network, **options)
    chosen = parse_target(target, categories)
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for file in images:
        pixels = read_image(file)
        batch = transform(pixels).unsqueeze(0).to(device)
        result = explainer(batch, chosen)
        written += _write(result, pixels, transform, folder / Path(file).stem, method, categories)
    return written


def _write(result: Any, pixels: torch.Tensor, transform: ImageTransform, stem: Path, method: str,
           categories: Sequence[str]) -> list[Path]:
    display = torch.nn.functional.interpolate(pixels[None].float(), size=transform.size, mode="bilinear",
                                              align_corners=False, antialias=True).round().clamp(0, 255).byte()
    paths: list[Path] = []
    if isinstance(result, FeatureMapSet):
        for name, activation in result.items():
            path = stem.parent / f"{stem.name}_{method}_{name}.png"
            result.plot(name).savefig(path, dpi=80)
            np.save(path.with_suffix(".npy"), activation.cpu().numpy())
            paths += [path, path.with_suffix(".npy")]
        return paths
    if not isinstance(result, Explanation):
        raise InputError(f"method '{method}' returned {type(result).__name__}, which the command line cannot save")
    pictures = gradient_images(result.maps)[0] if result.maps.dim() == 5 else overlay_maps(result.maps, display)[0]
    for k, picture in enumerate(pictures):
        index = int(result.targets[0, k])
        label = categories[index] if 0 <= index < len(categories) else str(index)
        path = stem.parent / f"{stem.name}_{method}_{label}.png"
        write_png(path, picture)
        paths.append(path)
    raw = stem.parent / f"{stem.name}_{method}.npy"
    np.save(raw, result.maps[0].detach().cpu().numpy())
    return paths + [raw]
