"""What the command line does, as functions built from the public API."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ..analysis import channel, feature_maps, visualise
from ..core import Explainer, LayerExplainer, parse_device
from ..data import ImageTransform, read_image
from ..errors import InputError, LayerNotFoundError, TargetError, WeightsError
from ..registry import get_explainer, get_model, get_weights
from ..zoo import WeightsFile, vgg
from .arguments import comma_names, refuse_to_replace


def load_model(model: str | None, checkpoint: str | None, device: str) -> tuple[torch.nn.Module, ImageTransform, list[str]]:
    """A zoo model with its bundled weights, or weights written by ``interpkit train``."""
    if checkpoint is not None:
        if not Path(checkpoint).exists():
            raise InputError(f"checkpoint not found: {checkpoint}")
        weights = WeightsFile(checkpoint)
        categories, name = weights.meta["categories"], weights.meta.get("model")
        if not isinstance(name, str):
            raise WeightsError(f"{weights.path.with_suffix('.json')} names no model; write it again with 'interpkit train'")
        network = get_model(name, num_classes=len(categories))
        state = weights.state_dict()
        if not isinstance(state, dict):
            raise WeightsError(f"{checkpoint} holds a {type(state).__name__}, not a state dict; write it again with "
                               "'interpkit train'")
        trained = vgg.head(network) if name == "vgg19_caltech5" else network  # its weights file is the head alone
        try:
            trained.load_state_dict(state)
        except RuntimeError as error:  # the description names another model than the weights are of
            found = " ".join(str(error).split())[:160]
            raise WeightsError(f"{checkpoint} does not fit {name}, the model its description names ({found}); "
                               "write both again with 'interpkit train'") from None
        transform = weights.transforms()
    else:
        if model is None:
            raise InputError("name a zoo model (--model) or weights written by 'interpkit train' (--checkpoint)")
        bundled = get_weights(model)  # raises for an unknown model
        network = get_model(model, weights=bundled)
        transform, categories = bundled.transforms(), bundled.meta["categories"]
    return network.to(parse_device(device)).eval(), transform, categories


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


def feature_map_images(images: Sequence[str], out_dir: str | os.PathLike, model: str | None = None,
                       checkpoint: str | None = None, layers: str | None = None, device: str = "cpu",
                       overwrite: bool = False) -> list[Path]:
    """Draw the feature maps of each image file; writes one figure (PNG) and raw maps (.npy) per layer,
    replacing earlier ones only with ``overwrite``."""
    network, transform, _ = load_model(model, checkpoint, device)
    chosen = comma_names(layers)
    if chosen == []:
        raise InputError("--layers names no layer; give dotted names separated by commas, or drop --layers")
    # every image read and the layers tried before anything is written; two inputs named alike get two names
    pictures = [read_image(file) for file in images]
    stems = numbered([Path(Path(file).stem) for file in images])
    results = [feature_maps(network, transform(pictures[0]).unsqueeze(0).to(device), chosen)]
    for name, activation in results[0].items():
        if activation.dim() != 4:
            raise InputError(f"layer '{name}' gives {tuple(activation.shape[1:])} per image, not feature maps "
                             "(channels, height, width); choose convolutional layers")
    folder = Path(out_dir)
    figures = {(stem, name): folder / f"{stem}_feature_maps_{name}.png" for stem in stems for name, _ in results[0].items()}
    refuse_to_replace([p for figure in figures.values() for p in (figure, figure.with_suffix(".npy"))], overwrite)
    folder.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for index, (picture, stem) in enumerate(zip(pictures, stems)):
        result = results[0] if index == 0 else feature_maps(network, transform(picture).unsqueeze(0).to(device), chosen)
        for name, activation in result.items():
            path = figures[stem, name]
            result.figure(name).savefig(path, dpi=80)
            np.save(path.with_suffix(".npy"), activation.cpu().numpy())
            written += [path, path.with_suffix(".npy")]
    return written


def numbered(stems: list[Path]) -> list[Path]:
    """The stems with a repeated one (``a.b.jpg`` made ``a_b_jpg`` beside ``a_b_jpg.png``; ``./x``
    and ``/elsewhere/x``) numbered ``-2``, ``-3`` from its second use on, in input order; compared
    ignoring case, for file systems that do."""
    taken = {str(s).lower() for s in stems}
    seen: set[str] = set()
    unique = []
    for stem in stems:
        candidate, number = stem, 1
        while str(candidate).lower() in seen or (candidate != stem and str(candidate).lower() in taken):
            number += 1
            candidate = stem.with_name(f"{stem.name}-{number}")
        seen.add(str(candidate).lower())
        unique.append(candidate)
    return unique


def make_explainer(network: torch.nn.Module, method: str, layer: str | None) -> Explainer:
    """The registered ``method`` on ``network``, with ``layer`` where it takes one (refused where not)."""
    cls = get_explainer(method)
    if layer is None:
        return cls(network)
    if not issubclass(cls, LayerExplainer):
        raise InputError(f"method '{method}' takes no layer; drop --layer")
    try:
        return cls(network, layer=layer)
    except LayerNotFoundError:
        names = [n for n, _ in network.named_modules() if n]
        raise LayerNotFoundError(f"--layer {layer}: the model has no such layer; its layers are "
                                 f"{', '.join(names[:40])}{' ...' if len(names) > 40 else ''}") from None


def visualise_channels(out_dir: str | os.PathLike, *, model: str | None, checkpoint: str | None, layer: str,
                       channels: list[int], size: int, steps: int, seed: int, max_batch: int, device: str,
                       progress: bool, overwrite: bool = False) -> list[Path]:
    """Optimise one image per channel of ``layer`` (the model's normalisation before it, seen at
    the model's input size) and write them with a contact sheet; returns the paths, the sheet last.
    An earlier visualisation in ``out_dir`` is replaced (its images removed) only with ``overwrite``."""
    folder = Path(out_dir)
    earlier = sorted(folder.glob("unit_[0-9][0-9][0-9].png")) + [folder / "contact_sheet.png"]
    refuse_to_replace(earlier, overwrite)
    network, transform, _ = load_model(model, checkpoint, device)
    result = visualise(network, channel(layer, channels), size=size, steps=steps, seed=seed, max_batch=max_batch,
                       preprocess=transform.standardize, input_size=transform.size, progress=progress)
    paths = result.save(out_dir)
    for stale in set(earlier) - set(paths):  # a smaller run must not leave the last run's units beside its own
        stale.unlink(missing_ok=True)
    return paths
