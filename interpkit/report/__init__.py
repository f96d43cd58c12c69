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
from functools import partial
from pathlib import Path
from typing import Any, Callable, Sequence

import jinja2
import numpy as np
import torch
from tqdm.auto import tqdm

import interpkit
from interpkit.commands import parse_device
from interpkit.data import caltech5
from interpkit.errors import InputError, WeightsError
from interpkit.files import save_figure, write_text
from interpkit.train import Split, evaluate
from interpkit.core import MapKind
from interpkit.metrics import AverageDrop, Deletion, Insertion, randomisation_check, scored_maps
from interpkit.viz import (
    colorize, gradient_images, plot_confusion, plot_image_grid, plot_metric_curves, to_uint8_images,
)

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


@dataclass
class _Build:
    """One report being built: where it goes, what it reads, and what it has loaded so far."""

    page: Page
    out: Path
    data_dir: Any
    device: torch.device
    loaded: dict[tuple, Any] = field(default_factory=dict)

    def figure(self, name: str, figure: Any) -> str:
        """Save a figure under ``images/``; returns its page-relative path."""
        save_figure(self.out / "images" / f"{name}.png", figure)
        return f"images/{name}.png"

    def split(self, name: str, size: tuple[int, int]) -> tuple[Split, list[str]]:
        """A split of the canonical data decoded once per build."""
        key = ("split", name, size)
        if key not in self.loaded:
            dataset = caltech5(name, root=self.data_dir)
            self.loaded[key] = (Split(*dataset.tensors(size)), dataset.classes)
        return self.loaded[key]

    def best(self) -> "_Subject":
        """The best CNN, loaded once; its figures go to the page's main sections."""
        key = ("best", self.page.best)
        if key not in self.loaded:
            self.loaded[key] = _subject(self.page.best, self.device, self.page.figures)
        return self.loaded[key]


def build_report(out: str | os.PathLike = "interpkit-report", models: Sequence[str] | None = None,
                 data_dir: str | os.PathLike | None = None, device: str = "cpu", progress: bool = True) -> Path:
    """Write the report into ``out`` and return the path of ``index.html``."""
    names = list(models) if models else [*CNNS, "vgg19_caltech5"]
    cnns = [n for n in names if n != "vgg19_caltech5"]
    unknown = [n for n in names if n not in interpkit.list_models()]
    if unknown or not cnns:
        raise InputError(f"the report needs at least one of {', '.join(CNNS)}; unknown: {', '.join(unknown) or '-'}")
    torch_device = parse_device(device)
    page = Page(generated=datetime.datetime.now().strftime("%Y-%m-%d %H:%M"))
    build = _Build(page, Path(out), data_dir, torch_device)
    steps: list[Callable[[], None]] = [partial(_cnn_section, build, n) for n in cnns]
    steps += [partial(_choose_best, page), partial(_feature_maps, build)]
    steps += [partial(_best_section, section, build)
              for section in (_patches, _guided, _gradcam, _top_patches, _faithfulness)]
    steps.append(partial(_vgg, build, "vgg19_caltech5" in names))
    for step in tqdm(steps, desc="report", unit="step", disable=not progress):
        step()
    index = Path(out) / "index.html"
    write_text(index, _template().render(page=page))
    return index


def _template() -> jinja2.Template:
    environment = jinja2.Environment(loader=jinja2.PackageLoader("interpkit", "report"),
                                     autoescape=jinja2.select_autoescape(["html"]))
    return environment.get_template("template.html")


@dataclass
class _Subject:
    """A model explained on the page, and where its figures go."""

    name: str
    model: torch.nn.Module
    transform: Any
    figures: dict[str, Any]
    prefix: str


def _subject(name: str, device: torch.device, figures: dict[str, Any], prefix: str = "") -> _Subject:
    weights = interpkit.get_weights(name)
    model = interpkit.get_model(name, weights=weights).to(device).eval()
    return _Subject(name, model, weights.transforms(), figures, prefix)


def _model_section(build: _Build, subject: _Subject) -> ModelSection:
    rows = interpkit.layer_table(subject.model, subject.transform.size)
    accuracy, confusions = {}, {}
    for split in SPLITS:
        data, build.page.classes = build.split(split, subject.transform.size)
        scores = evaluate(subject.model, data, subject.transform.normalize, len(build.page.classes))
        accuracy[split] = scores.accuracy
        confusions[split] = build.figure(f"confusion_{subject.name}_{split}", plot_confusion(
            scores.confusion, build.page.classes, f"{subject.name}, {split}: {scores.accuracy:.1%}"))
    params = sum(p.numel() for p in subject.model.parameters())
    return ModelSection(subject.name, rows, params, accuracy, confusions)


def _cnn_section(build: _Build, name: str) -> None:
    build.page.models.append(_model_section(build, _subject(name, build.device, {})))


def _best_section(section: Callable[[_Subject, _Build], None], build: _Build) -> None:
    section(build.best(), build)


def _choose_best(page: Page) -> None:
    best = max(page.models, key=lambda m: (m.accuracy["val"], m.accuracy["train"]))
    page.best = best.name
    page.best_reason = (f"highest validation accuracy ({best.accuracy['val']:.1%}), ties broken by training accuracy, "
                        f"as in the study; its test accuracy is {best.accuracy['test']:.1%}")


def _samples(build: _Build, transform: Any) -> tuple[torch.Tensor, list[str]]:
    """The first test image of each class, as the model's input batch."""
    data, classes = build.split("test", transform.size)
    picks = [int((data.labels == c).nonzero()[0]) for c in range(len(classes))]
    return transform.normalize(data.images[picks]), classes


def _display(transform: Any, batch: torch.Tensor) -> np.ndarray:
    return to_uint8_images(transform.denormalize(batch.cpu()))


def _last_conv(model: torch.nn.Module) -> str:
    return [n for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)][-1]


def _feature_maps(build: _Build) -> None:
    subject = build.best()
    batch, classes = _samples(build, subject.transform)
    index = classes.index("sunflower") if "sunflower" in classes else 0
    sunflower = batch[index:index + 1]
    maps = interpkit.feature_maps(subject.model, sunflower.to(build.device))
    subject.figures["sample"] = build.figure("sunflower", plot_image_grid(
        [[_display(subject.transform, sunflower)[0]]], panel_inches=2.5))
    subject.figures["feature_maps"] = [(name, build.figure(f"feature_maps_{i}", maps.figure(name)))
                                       for i, name in enumerate(maps.layers)]


def _patches(subject: _Subject, build: _Build) -> None:
    batch, classes = _samples(build, subject.transform)
    layer = _last_conv(subject.model)
    explanation = interpkit.MaxActivatingPatches(subject.model, layer=layer, k=3)(
        batch.to(build.device), target=list(range(len(classes))))
    pictures = _display(subject.transform, batch)
    subject.figures["patch_layer"] = layer
    subject.figures["receptive_field"] = repr(explanation.receptive_field)
    subject.figures["patches"] = [(classes[i], build.figure(f"{subject.prefix}patch_{classes[i]}", explanation.figure(
        pictures, sample=i, title=f"{classes[i]}: box {explanation.box(i, 0)}"))) for i in range(len(classes))]


def _guided(subject: _Subject, build: _Build) -> None:
    batch, classes = _samples(build, subject.transform)
    layer = _last_conv(subject.model)
    activation = interpkit.feature_maps(subject.model, batch.to(build.device), layers=[layer])[layer]
    rows = []
    for i in range(len(classes)):
        channels = activation[i].flatten(1).amax(1).topk(6).indices.tolist()
        neurons = [interpkit.Neuron(layer, c) for c in channels]
        maps = interpkit.GuidedBackprop(subject.model)(batch[i:i + 1].to(build.device), target=neurons).maps
        rows.append([_display(subject.transform, batch[i:i + 1])[0], *gradient_images(maps)[0]])
    columns = ["image"] + [f"top {k + 1} channel" for k in range(6)]
    subject.figures["guided_layer"] = layer
    subject.figures["guided"] = build.figure(f"{subject.prefix}guided_backprop",
                                             plot_image_grid(rows, classes, columns, panel_inches=1.3))


def _gradcam(subject: _Subject, build: _Build) -> None:
    batch, classes = _samples(build, subject.transform)
    explanation = interpkit.GradCAM(subject.model)(batch.to(build.device), target="all")
    pictures = _display(subject.transform, batch)
    overlays = explanation.overlay(pictures, alpha=0.45)
    rows = [[pictures[i], *overlays[i]] for i in range(len(classes))]
    subject.figures["gradcam_layer"] = explanation.layer
    subject.figures["gradcam"] = build.figure(f"{subject.prefix}gradcam", plot_image_grid(
        rows, [f"{c} image" for c in classes], ["image"] + [f"for {c}" for c in classes], panel_inches=1.3))


def _top_patches(subject: _Subject, build: _Build) -> None:
    layer = _last_conv(subject.model)
    dataset = caltech5("train", transform=subject.transform, root=build.data_dir)
    result = interpkit.top_patches(subject.model, layer, dataset, k=8, channels=list(range(8)), batch_size=50,
                                   progress=False)
    subject.figures["top_layer"] = layer
    subject.figures["top_patches"] = build.figure(f"{subject.prefix}top_patches", result.figure(crop_pixels=40))


FAITHFULNESS_IMAGES_PER_CLASS = 5


def _faithfulness(subject: _Subject, build: _Build) -> None:
    """Every registered explainer scored by deletion, insertion and average drop on the first
    test images of each class, with the mean deletion and insertion curves."""
    data, classes = build.split("test", subject.transform.size)
    picks = torch.cat([(data.labels == c).nonzero()[:FAITHFULNESS_IMAGES_PER_CLASS, 0] for c in range(len(classes))])
    images = subject.transform.normalize(data.images[picks]).to(build.device)
    metrics = {"deletion": Deletion(steps=10), "insertion": Insertion(steps=10), "average_drop": AverageDrop()}
    rows: list[dict[str, str]] = []
    panels: dict[str, dict[str, Any]] = {"deletion (lower is better)": {}, "insertion (higher is better)": {}}
    for method in interpkit.list_explainers():
        maps, targets = scored_maps(interpkit.get_explainer(method)(subject.model)(images), images)
        results = {name: metric(subject.model, images, maps, targets) for name, metric in metrics.items()}
        rows.append({"method": method, **{name: f"{r.mean.item():.3f}" for name, r in results.items()}})
        for title, name in zip(panels, ("deletion", "insertion")):
            curves = results[name].curves
            assert curves is not None  # deletion and insertion are curve metrics
            panels[title][method] = (results[name].fractions, curves.mean(dim=0))
    subject.figures["faithfulness"] = {
        "rows": rows, "images": len(images), "layer": _last_conv(subject.model),
        "curves": build.figure(f"{subject.prefix}faithfulness_curves", plot_metric_curves(panels)),
        "sanity": build.figure(f"{subject.prefix}randomisation", _randomisation_figure(subject, images[:1])),
    }


def _randomisation_figure(subject: _Subject, image: torch.Tensor) -> Any:
    """Adebayo et al.'s figure 2: one image's maps as the layers are randomised from the top."""
    rows, labels, columns = [], [], []
    for name, make in (("GradCAM", interpkit.GradCAM), ("guided\nbackprop", interpkit.GuidedBackprop)):
        result = randomisation_check(make, subject.model, image)
        original = make(subject.model)(image).maps
        planes = [original[0, 0].abs().sum(0) if original.dim() == 5 else original[0, 0]]
        planes += [m[0].abs() for m in result.maps]
        rows.append([colorize(p[None, None], MapKind.INPUT_GRID, "inferno")[0, 0] for p in planes])
        labels.append(f"{name}\nrho = {result.mean_spearman_abs[0]:.2f}")
        columns = ["original"] + [f"{layer} random" for layer in result.layers]
    return plot_image_grid(rows, labels, columns, panel_inches=1.2)


def _vgg(build: _Build, wanted: bool) -> None:
    """Task 2: the same study for the fine-tuned VGG19, when its weights can be loaded."""
    if not wanted:
        build.page.vgg = {"available": False, "why": "not requested (--models left it out).", "how": ""}
        return
    try:
        subject = _subject("vgg19_caltech5", build.device, {}, "vgg_")
    except WeightsError as error:
        build.page.vgg = {"available": False, "why": str(error).rstrip(".") + ".", "how": (
            "The VGG19 section needs torchvision's ImageNet VGG19 weights (downloaded once with internet access) "
            "and a trained head: run 'interpkit train --models vgg19_caltech5 --out DIR', then copy "
            "DIR/vgg19_caltech5_head.pt and .json into interpkit/zoo/weights/.")}
        return
    section = _model_section(build, subject)
    for part in (_patches, _guided, _gradcam):
        part(subject, build)
    build.page.vgg = {"available": True, "model": section, "figures": subject.figures}
