"""The reference study reproduced from the public API, as a self-contained web page.

``build_report()`` evaluates the bundled models on the bundled canonical split and writes
``index.html`` with its images beside it: layer tables, accuracy table and confusion matrices,
the best model's feature maps, maximally activating patches, guided backprop of last-layer
neurons, GradCAM for every class, top patches over the training set, and the VGG19 section.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass, field
from pathlib import Path
from functools import partial
from typing import Any, Callable, Sequence

import jinja2
import numpy as np
import torch
from tqdm.auto import tqdm

import interpkit
from interpkit import zoo
from interpkit.data import caltech5
from interpkit.errors import InputError
from interpkit.train import Split, evaluate
from interpkit.viz import gradient_images, overlay_maps, plot_confusion, plot_image_grid, to_uint8_images
from interpkit.zoo.weights import WeightsError

CNNS = ("caltech5_arch1", "caltech5_arch2", "caltech5_arch3")
SPLITS = ("train", "val", "test")


@dataclass
class ModelSection:
    name: str
    layers: list[Any]
    params: int
    accuracy: dict[str, float]
    confusions: dict[str, str]


@dataclass
class Page:
    title: str = "interpkit: the Caltech-101 study, reproduced"
    generated: str = ""
    version: str = interpkit.__version__
    models: list[ModelSection] = field(default_factory=list)
    best: str = ""
    best_reason: str = ""
    classes: list[str] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)
    vgg: dict[str, Any] = field(default_factory=dict)


class _Writer:
    """Saves figures and images under ``images/`` and returns their page-relative paths."""

    def __init__(self, out: Path) -> None:
        self.folder = out / "images"
        self.folder.mkdir(parents=True, exist_ok=True)

    def figure(self, name: str, figure: Any) -> str:
        target = self.folder / f"{name}.png"
        tmp = self.folder / f".{name}.tmp.png"
        figure.savefig(tmp, dpi=90)
        os.replace(tmp, target)
        return f"images/{name}.png"


def build_report(out: str | os.PathLike = "interpkit-report", models: Sequence[str] | None = None,
                 data_dir: str | os.PathLike | None = None, device: str = "cpu", progress: bool = True) -> Path:
    """Write the report into ``out`` and return the path of ``index.html``."""
    names = list(models) if models else [*CNNS, "vgg19_caltech5"]
    cnns = [n for n in names if n != "vgg19_caltech5"]
    unknown = [n for n in names if n not in zoo.list_models()]
    if unknown or not cnns:
        raise InputError(f"the report needs at least one of {', '.join(CNNS)}; unknown: {', '.join(unknown) or '-'}")
    try:
        torch_device = torch.device(device)
        torch.empty(0, device=torch_device)
    except (RuntimeError, AssertionError) as error:
        raise InputError(f"cannot use device {device!r}: {' '.join(str(error).split())}") from None
    folder = Path(out)
    writer = _Writer(folder)
    page = Page(generated=datetime.datetime.now().strftime("%Y-%m-%d %H:%M"))
    steps: list[Callable[[], None]] = [partial(_model_section, page, writer, n, data_dir, torch_device) for n in cnns]
    steps.append(partial(_choose_best, page))
    steps += [partial(section, page, writer, data_dir, torch_device)
              for section in (_feature_maps, _patches, _guided, _gradcam, _top_patches)]
    steps.append(partial(_vgg, page, "vgg19_caltech5" in names))
    for step in tqdm(steps, desc="report", unit="step", disable=not progress):
        step()
    html = _template().render(page=page)
    index = folder / "index.html"
    tmp = folder / ".index.html.tmp"
    tmp.write_text(html, encoding="utf-8")
    os.replace(tmp, index)
    return index


def _template() -> jinja2.Template:
    environment = jinja2.Environment(loader=jinja2.PackageLoader("interpkit", "report"),
                                     autoescape=jinja2.select_autoescape(["html"]))
    return environment.get_template("template.html")


_cache: dict[tuple, Any] = {}


def _model(name: str, device: torch.device) -> tuple[torch.nn.Module, Any]:
    weights = zoo.get_weights(name)
    return zoo.get_model(name, weights=weights).to(device).eval(), weights.transforms()


def _split(name: str, data_dir: Any, size: tuple[int, int]) -> tuple[Split, list[str]]:
    key = (name, str(data_dir), size)
    if key not in _cache:
        dataset = caltech5(name, root=data_dir)
        _cache[key] = (Split(*dataset.tensors(size)), dataset.classes)
    return _cache[key]


def _model_section(page: Page, writer: _Writer, name: str, data_dir: Any, device: torch.device) -> None:
    model, transform = _model(name, device)
    rows = interpkit.layer_table(model, (3, *transform.size))
    accuracy, confusions = {}, {}
    for split in SPLITS:
        data, page.classes = _split(split, data_dir, transform.size)
        scores = evaluate(model, data, transform.normalize, len(page.classes))
        accuracy[split] = scores.accuracy
        confusions[split] = writer.figure(f"confusion_{name}_{split}", plot_confusion(
            scores.confusion, page.classes, f"{name}, {split}: {scores.accuracy:.1%}"))
    params = sum(p.numel() for p in model.parameters())
    page.models.append(ModelSection(name, rows, params, accuracy, confusions))


def _choose_best(page: Page) -> None:
    best = max(page.models, key=lambda m: (m.accuracy["val"], m.accuracy["train"]))
    page.best = best.name
    page.best_reason = (f"highest validation accuracy ({best.accuracy['val']:.1%}), ties broken by training accuracy, "
                        f"as in the study; its test accuracy is {best.accuracy['test']:.1%}")


def _samples(data_dir: Any, transform: Any) -> tuple[torch.Tensor, list[int], list[str]]:
    """The first test image of each class, as the model's input batch."""
    data, classes = _split("test", data_dir, transform.size)
    picks = [int((data.labels == c).nonzero()[0]) for c in range(len(classes))]
    return transform.normalize(data.images[picks]), picks, classes


def _display(transform: Any, batch: torch.Tensor) -> np.ndarray:
    return to_uint8_images(transform.denormalize(batch.cpu()))


def _last_conv(model: torch.nn.Module) -> str:
    return [n for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)][-1]


def _feature_maps(page: Page, writer: _Writer, data_dir: Any, device: torch.device) -> None:
    model, transform = _model(page.best, device)
    batch, picks, classes = _samples(data_dir, transform)
    sunflower = batch[classes.index("sunflower"):classes.index("sunflower") + 1] if "sunflower" in classes else batch[:1]
    maps = interpkit.FeatureMaps(model)(sunflower.to(device))
    page.figures["sample"] = writer.figure("sunflower", plot_image_grid([[_display(transform, sunflower)[0]]], size=2.5))
    page.figures["feature_maps"] = [(name, writer.figure(f"feature_maps_{i}", maps.plot(name)))
                                    for i, name in enumerate(maps)]


def _patches(page: Page, writer: _Writer, data_dir: Any, device: torch.device) -> None:
    model, transform = _model(page.best, device)
    batch, _, classes = _samples(data_dir, transform)
    layer = _last_conv(model)
    explanation = interpkit.MaxActivatingPatches(model, layer=layer, top=3)(batch.to(device),
                                                                              target=list(range(len(classes))))
    pictures = _display(transform, batch)
    page.figures["patch_layer"] = layer
    page.figures["receptive_field"] = repr(explanation.receptive_field)
    page.figures["patches"] = [(classes[i], writer.figure(f"patch_{classes[i]}", explanation.figure(
        pictures, sample=i, title=f"{classes[i]}: box {explanation.box(i, 0)}"))) for i in range(len(classes))]


def _guided(page: Page, writer: _Writer, data_dir: Any, device: torch.device) -> None:
    model, transform = _model(page.best, device)
    batch, _, classes = _samples(data_dir, transform)
    layer = _last_conv(model)
    activation = interpkit.FeatureMaps(model, layers=[layer])(batch.to(device))[layer]
    rows, labels = [], []
    for i, name in enumerate(classes):
        channels = activation[i].flatten(1).amax(1).topk(6).indices.tolist()
        neurons = [interpkit.Neuron(layer, c) for c in channels]
        maps = interpkit.GuidedBackprop(model)(batch[i:i + 1].to(device), target=neurons).maps
        rows.append([_display(transform, batch[i:i + 1])[0], *gradient_images(maps)[0]])
        labels.append(name)
    columns = ["image"] + [f"top {k + 1} channel" for k in range(6)]
    page.figures["guided_layer"] = layer
    page.figures["guided"] = writer.figure("guided_backprop", plot_image_grid(rows, labels, columns, size=1.3))


def _gradcam(page: Page, writer: _Writer, data_dir: Any, device: torch.device) -> None:
    model, transform = _model(page.best, device)
    batch, _, classes = _samples(data_dir, transform)
    explanation = interpkit.GradCAM(model)(batch.to(device), target="all")
    overlays = overlay_maps(explanation.maps, _display(transform, batch), alpha=0.45)
    rows = [[_display(transform, batch)[i], *overlays[i]] for i in range(len(classes))]
    page.figures["gradcam_layer"] = explanation.layer
    page.figures["gradcam"] = writer.figure("gradcam", plot_image_grid(
        rows, [f"{c} image" for c in classes], ["image"] + [f"for {c}" for c in classes], size=1.3))


def _top_patches(page: Page, writer: _Writer, data_dir: Any, device: torch.device) -> None:
    model, transform = _model(page.best, device)
    layer = _last_conv(model)
    dataset = caltech5("train", transform=transform, root=data_dir)
    result = interpkit.top_patches(model, layer, dataset, k=8, channels=list(range(8)), batch_size=50,
                                   progress=False)
    page.figures["top_layer"] = layer
    page.figures["top_patches"] = writer.figure("top_patches", result.figure(size=40))


def _vgg(page: Page, wanted: bool) -> None:
    if not wanted:
        page.vgg = {"available": False, "why": "not requested (--models left it out)."}
        return
    try:
        zoo.get_weights("vgg19_caltech5").state_dict()
    except WeightsError as error:
        page.vgg = {"available": False, "why": str(error), "how": (
            "The VGG19 section needs torchvision's ImageNet VGG19 weights (downloaded once with internet access) "
            "and a trained head: run 'interpkit train --models vgg19_caltech5 --out DIR', then copy "
            "DIR/vgg19_caltech5_head.pt and .json into interpkit/zoo/weights/.")}
        return
    page.vgg = {"available": True, "why": "", "how": ""}
