"""The reference study reproduced from the public API, as a self-contained web page.

``build_report()`` evaluates the bundled models on the bundled canonical split and writes
``index.html`` with its images beside it: layer tables, accuracy table and confusion matrices,
the best model's feature maps, maximally activating patches, guided backprop of last-layer
neurons, GradCAM for every class, each CNN's top patches over the training set beside feature
visualisations of the same channels, and the VGG19 section.
"""

from __future__ import annotations

import datetime
import math
import os
import shutil
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable, Sequence

import jinja2
import numpy as np
import torch
from tqdm.auto import tqdm

import interpkit
from interpkit.analysis import channel
from interpkit.core import MapKind, parse_device
from interpkit.data import caltech5
from interpkit.dataset.evaluation import metric_scorers, score_explanations, summarise
from interpkit.errors import InputError, InterpkitError, WeightsError
from interpkit.files import save_figure, write_text
from interpkit.metrics import randomisation_check, scored_maps
from interpkit.train import STUDY, Split, evaluate
from interpkit.viz import (
    NeuronPanel,
    colorize,
    plot_confusion,
    plot_image_grid,
    plot_metric_curves,
    plot_neuron_gradients,
    to_uint8_images,
)

CNNS = ("caltech5_arch1", "caltech5_arch2", "caltech5_arch3")
STAND_IN = "vgg19_slim_caltech5"
TASK2 = ("vgg19_caltech5", STAND_IN)  # ImageNet VGG19 where its weights load, else the offline stand-in
SPLITS = ("train", "val", "test")
#: what the faithfulness section scores unless ``metrics=`` says otherwise: the forward-cheap
#: faithfulness metrics and two map-only complexity measures
REPORT_METRICS = ("deletion", "insertion", "average_drop", "faithfulness_correlation", "sparseness", "complexity")
REPORT_SETTINGS = {"deletion": {"steps": 10}, "insertion": {"steps": 10}}  # a tenth of the image per step


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
    units: list[dict[str, str]] = field(default_factory=list)
    viewer: dict[str, Any] = field(default_factory=dict)
    study: dict[str, dict[str, str]] = field(default_factory=dict)


@dataclass
class _Build:
    """One report being built: where it goes, what it reads, and what it has loaded so far."""

    page: Page
    out: Path
    data_dir: Any
    device: torch.device
    metrics: dict[str, Any]  # the faithfulness section's scorers by name
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
                 data_dir: str | os.PathLike | None = None, device: str = "cpu", progress: bool = True,
                 metrics: Sequence[str] | None = None) -> Path:
    """Write the report into ``out`` and return the path of ``index.html``. ``metrics``: the
    registered metrics that score every explainer in the faithfulness section (default:
    ``REPORT_METRICS``)."""
    names = list(models) if models else [*CNNS, "vgg19_caltech5"]
    cnns = [n for n in names if n not in TASK2]
    unknown = [n for n in names if n not in interpkit.list_models()]
    if unknown or not cnns:
        raise InputError(f"the report needs at least one of {', '.join(CNNS)}; unknown: {', '.join(unknown) or '-'}")
    torch_device = parse_device(device)
    metrics = REPORT_METRICS if metrics is None else metrics
    if not isinstance(metrics, str):
        metrics = list(metrics)  # a generator is read once
    if isinstance(metrics, str) or not metrics or not all(isinstance(name, str) for name in metrics):
        raise InputError("metrics must name at least one registered metric, e.g. ['deletion', 'insertion']")
    scorers = metric_scorers(list(dict.fromkeys(metrics)), REPORT_SETTINGS)  # refused before anything is written
    page = Page(generated=datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
                study={name: {split: "-" if value is None else f"{value:.1%}" for split, value in row.items()}
                       for name, row in STUDY.items()})
    classes = caltech5("test", root=data_dir).classes
    for name in cnns:  # before anything is written
        _check_classes(name, classes)
    claim_folder(Path(out))
    build = _Build(page, Path(out), data_dir, torch_device, scorers)
    steps: list[Callable[[], None]] = [partial(_cnn_section, build, n) for n in cnns]
    steps += [partial(_choose_best, page), partial(_feature_maps, build)]
    steps += [partial(_best_section, section, build)
              for section in (_patches, _guided, _gradcam, _faithfulness)]
    steps.append(partial(_test_split_viewer, build))
    steps += [partial(_units, build, n) for n in cnns]
    steps.append(partial(_vgg, build, any(n in TASK2 for n in names)))
    for step in tqdm(steps, desc="report", unit="step", disable=not progress):
        step()
    index = Path(out) / "index.html"
    write_text(index, _template().render(page=page))
    return index


MARKER = ".interpkit-report"  # in a folder a report writes: a rerun may replace what it holds


def claim_folder(out: Path) -> None:
    """Take ``out`` for a report: a new or empty folder, or an earlier report's (its marker, or
    the page and store of one made before the marker), whose viewer and store a rerun replaces.
    Any other folder holds the user's files and is refused before anything is written."""
    if out.exists() and not out.is_dir():
        raise InputError(f"{out} is a file; give a folder for the report")
    earlier = (out / MARKER).is_file() or ((out / "index.html").is_file() and (out / "test-split-store").is_dir())
    if out.is_dir() and any(out.iterdir()) and not earlier:
        raise InputError(f"{out} holds files that are not an interpkit report; give a new or empty folder (the report "
                         "writes index.html, images/, viewer/ and test-split-store/ there, replacing an earlier report's)")
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / MARKER).write_text("written by interpkit report: a rerun replaces this folder's report\n")
    except OSError as error:
        raise InputError(f"cannot write the report into {out} ({error.strerror or error}); give a writable folder"
                         ) from None


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


def _check_classes(name: str, classes: Sequence[str]) -> None:
    """The data's labels index the model's outputs only when its classes are the model's, in order."""
    categories = list(interpkit.get_weights(name).meta.get("categories") or [])
    if categories != list(classes):
        raise InputError(f"the data's classes ({', '.join(classes)}) are not {name}'s ({', '.join(categories)}) in its "
                         "output order, so its labels would name other classes; give a split of the model's classes "
                         "in that order")


def _model_section(build: _Build, subject: _Subject) -> ModelSection:
    _check_classes(subject.name, build.split("test", subject.transform.size)[1])
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


def _last_conv_activation(subject: "_Subject", device: torch.device) -> str:
    """The activation module after the last convolution: the study's (Keras) last conv layer."""
    probe = torch.zeros(1, 3, *subject.transform.size, device=device)
    return interpkit.feature_maps(subject.model, probe, layers=[_last_conv(subject.model)],
                                  after_activation=True).layers[-1]


def _feature_maps(build: _Build) -> None:
    subject = build.best()
    batch, classes = _samples(build, subject.transform)
    index = classes.index("sunflower") if "sunflower" in classes else 0
    sunflower = batch[index:index + 1]
    maps = interpkit.feature_maps(subject.model, sunflower.to(build.device), after_activation=True)
    subject.figures["sample"] = build.figure("sunflower", plot_image_grid(
        [[_display(subject.transform, sunflower)[0]]], panel_inches=2.5))
    convolutions = [n for n, m in subject.model.named_modules() if isinstance(m, torch.nn.Conv2d)]
    subject.figures["feature_maps"] = [
        (conv, layer, build.figure(f"feature_maps_{i}", maps.figure(layer, title=f"conv layer {i + 1} ({conv}), "
                                                                          f"after its activation ({layer})")))
        for i, (conv, layer) in enumerate(zip(convolutions, maps.layers))]


def _patches(subject: _Subject, build: _Build) -> None:
    batch, classes = _samples(build, subject.transform)
    layer = _last_conv(subject.model)
    explanation = interpkit.MaxActivatingPatches(subject.model, layer=layer, k=3)(
        batch.to(build.device), target=list(range(len(classes))))
    pictures = _display(subject.transform, batch)
    subject.figures["patch_layer"] = layer
    subject.figures["receptive_field"] = repr(explanation.receptive_field)
    subject.figures["patch_note"] = _field_note(explanation.receptive_field, layer, subject.transform.size)
    subject.figures["patches"] = [(classes[i], build.figure(f"{subject.prefix}patch_{classes[i]}", explanation.figure(
        pictures, sample=i, title=f"{classes[i]}: box {explanation.box(i, 0)}"))) for i in range(len(classes))]


def _field_note(field: Any, layer: str, size: tuple[int, int]) -> str:
    """What a reader must know when one unit's field is larger than the image: every patch is most of it."""
    if field is None:
        return ""
    top, left, bottom, right = field.box(0, 0)
    if bottom - top <= size[0] and right - left <= size[1]:
        return ""
    return (f"At this input size ({size[0]} x {size[1]}) each unit of {layer} sees a field of {bottom - top} x "
            f"{right - left} pixels, larger than the image itself: clipped to the image, every 'patch' below spans "
            "most or all of it, so the box says which unit contributes most rather than which part of the image it "
            "looks at.")


NEURONS_SHOWN = 6


def _guided(subject: _Subject, build: _Build) -> None:
    """For each sample image, the most active channels of the last convolution: each channel's
    maximal position as a neuron, its guided-backprop gradient cropped to its receptive field."""
    batch, classes = _samples(build, subject.transform)
    layer = _last_conv(subject.model)
    activation = interpkit.feature_maps(subject.model, batch.to(build.device), layers=[layer])[layer]
    field = interpkit.receptive_field(subject.model, layer, subject.transform.size)
    pictures = _display(subject.transform, batch)
    figures = []
    for i, name in enumerate(classes):
        peaks, positions = activation[i].flatten(1).max(dim=1)
        channels = peaks.topk(NEURONS_SHOWN).indices.tolist()
        width = activation.shape[-1]
        places = [(c, int(positions[c]) // width, int(positions[c]) % width) for c in channels]
        neurons = [interpkit.Neuron(layer, c, y, x) for c, y, x in places]
        maps = interpkit.GuidedBackprop(subject.model)(batch[i:i + 1].to(build.device), target=neurons).maps[0]
        panels = [NeuronPanel(c, float(peaks[c]), field.box(y, x), maps[k].cpu())
                  for k, (c, y, x) in enumerate(places)]
        figures.append((name, build.figure(f"{subject.prefix}guided_{name}", plot_neuron_gradients(
            pictures[i], panels, f"{name}: the {NEURONS_SHOWN} most active channels of {layer}"))))
    subject.figures["guided_layer"] = layer
    subject.figures["guided"] = figures


def _gradcam(subject: _Subject, build: _Build) -> None:
    """GradCAM at the last convolution for every class, one colour scale per image (row), the
    predicted class framed."""
    batch, classes = _samples(build, subject.transform)
    layer = _last_conv_activation(subject, build.device)
    images = batch.to(build.device)
    explanation = interpkit.GradCAM(subject.model, layer=layer)(images, target="all")
    with torch.no_grad():
        probabilities = subject.model(images).softmax(dim=1).cpu()
    predicted = probabilities.argmax(dim=1).tolist()
    pictures = _display(subject.transform, batch)
    overlays = explanation.overlay(pictures, alpha=0.45, scale="sample")
    rows = [[pictures[i], *overlays[i]] for i in range(len(classes))]
    labels = [f"{c} image\npredicted {classes[p]}\n({probabilities[i, p]:.0%})"
              for i, (c, p) in enumerate(zip(classes, predicted))]
    subject.figures["gradcam_layer"] = layer
    subject.figures["gradcam"] = build.figure(f"{subject.prefix}gradcam", plot_image_grid(
        rows, labels, ["image"] + [f"for {c}" for c in classes], panel_inches=1.3,
        highlight=[(i, p + 1) for i, p in enumerate(predicted)],
        colorbar=("jet", "0", "row's\nmax")))
    signed = interpkit.GradCAM(subject.model, layer=layer, relu=False, upsample=False)(images, target=predicted).maps
    subject.figures["gradcam_empty"] = _empty_predictions(explanation.maps, signed, probabilities, predicted, classes)


WEAK = 0.5  # a predicted class's map below this share of its row's strongest map is pointed out


def _empty_predictions(maps: torch.Tensor, signed: torch.Tensor, probabilities: torch.Tensor, predicted: list[int],
                       classes: list[str]) -> list[dict[str, str]]:
    """The rows whose predicted class has a weak GradCAM map (below ``WEAK`` of the row's
    strongest), with what its map was before GradCAM's ReLU: the facts a reader needs to see
    that the method, not the page, shows little."""
    found = []
    for i, p in enumerate(predicted):
        peak, row_peak = float(maps[i, p].max()), float(maps[i].max())
        if peak < WEAK * row_peak or row_peak == 0:
            before = signed[i, 0]
            found.append({"image": classes[i], "predicted": classes[p], "probability": f"{probabilities[i, p]:.0%}",
                          "peak": f"{peak:.2g}", "row_peak": f"{row_peak:.2g}", "share": f"{peak / row_peak:.0%}",
                          "strongest": classes[int(maps[i].flatten(1).amax(1).argmax())],
                          "positive": f"{float((before > 0).float().mean()):.0%}"})
    return found


def _test_split_viewer(build: _Build) -> None:
    """The best CNN's GradCAM of every test image into a store, with deletion scores, and the
    viewer over it (written fresh beside the page, so a rerun never resumes another model's store)."""
    subject = build.best()
    store, site = build.out / "test-split-store", build.out / "viewer"
    for folder in (store, site):
        if folder.exists():
            shutil.rmtree(folder)
    dataset = caltech5("test", transform=subject.transform, root=build.data_dir)
    explained = interpkit.explain_dataset(interpkit.GradCAM(subject.model), dataset, store, metrics=["deletion"],
                                          batch_size=50, progress=False)
    interpkit.view([explained], site, progress=False)
    labels, predictions = explained.array("labels"), explained.array("predictions")
    build.page.viewer = {"href": "viewer/index.html", "samples": len(explained), "model": subject.name,
                         "wrong": int((labels != predictions).sum()), "store": store.name,
                         "wrong_href": "viewer/index.html#correct=wrong&sort=0%3Ametric%3Adeletion&direction=desc"}


UNIT_CHANNELS = 8  # channels of each CNN's last convolution shown with their patches and visualisations
VISUALISE_STEPS = 256


def _units(build: _Build, name: str) -> None:
    """For eight channels of a CNN's last convolution: the training images' top patches (one
    streaming pass), each row opened by the image optimised to excite the channel."""
    subject = _subject(name, build.device, {})
    layer = _last_conv(subject.model)
    channels = list(range(UNIT_CHANNELS))
    dataset = caltech5("train", transform=subject.transform, root=build.data_dir)
    patches = interpkit.top_patches(subject.model, layer, dataset, k=8, channels=channels, batch_size=50,
                                    progress=False)
    optimised = interpkit.visualise(subject.model, channel(layer, channels), steps=VISUALISE_STEPS,
                                    preprocess=subject.transform.standardize, input_size=subject.transform.size)
    figure = build.figure(f"top_patches_{name}", patches.figure(crop_pixels=40, visualisation=optimised))
    build.page.units.append({"model": name, "layer": layer, "figure": figure, "steps": str(VISUALISE_STEPS)})


FAITHFULNESS_IMAGES_PER_CLASS = 5
CURVES = ("deletion", "insertion")  # drawn as mean curves below the table
DESCRIPTIONS = {
    "deletion": "the area under the class probability as the most relevant pixels are set to zero, a tenth at "
                "a time (a faithful map removes the evidence first)",
    "insertion": "the area under the probability as they are restored onto a black image",
    "average_drop": "how much the probability falls when the image is multiplied by the map",
    "faithfulness_correlation": "the correlation, over 100 random sets of 224 pixels, between the attribution a "
                                "set holds and the fall of the class logit when the set is made black",
    "sparseness": "the Gini index of the absolute map: near 1 when few pixels hold the attribution",
    "complexity": "the entropy of the absolute map's shares: low when few pixels hold the attribution",
}


def _faithfulness(subject: _Subject, build: _Build) -> None:
    """Every registered explainer scored by each of the report's metrics on the first test
    images of each class, with the mean deletion and insertion curves."""
    data, classes = build.split("test", subject.transform.size)
    picks = torch.cat([(data.labels == c).nonzero()[:FAITHFULNESS_IMAGES_PER_CLASS, 0] for c in range(len(classes))])
    images = subject.transform.normalize(data.images[picks]).to(build.device)
    factories = {method: interpkit.get_explainer(method) for method in interpkit.list_explainers()}
    explained, refused = {}, {}
    for method, factory in factories.items():
        try:
            explained[method] = factory(subject.model)(images)
        except InterpkitError as error:  # a method for another kind of model (a transformer's)
            refused[method] = " ".join(str(error).split())
    scored = {method: scored_maps(explanation, images) for method, explanation in explained.items()}
    results = {name: score_explanations(metric, factories, subject.model, images, scored)
               for name, metric in build.metrics.items()}
    rows: list[dict[str, Any]] = [
        {"method": method, "skipped": refused[method]} if method in refused else
        {"method": method, "scores": {name: summarise(method, name, metric, results[name][method].scores)
                                      for name, metric in build.metrics.items()}}
        for method in factories]
    panels: dict[str, dict[str, Any]] = {}
    for name in (name for name in CURVES if name in results):
        better = "higher" if build.metrics[name].higher_is_better else "lower"
        for method, result in results[name].items():
            if result.curves is not None:
                panels.setdefault(f"{name} ({better} is better)", {})[method] = (result.fractions,
                                                                                 result.curves.mean(dim=0))
    ranked = [r for r in rows if "skipped" not in r]
    gradcam = explained["gradcam"]  # as scored: the layer it chose itself
    grid = interpkit.GradCAM(subject.model, layer=gradcam.layer, upsample=False)(images[:1]).maps.shape[2:]
    subject.figures["faithfulness"] = {
        "rows": rows, "images": len(images), "layer": _last_conv(subject.model), "ranks": _ranks(ranked),
        "metrics": [{"name": name, "higher": metric.higher_is_better,
                     "about": DESCRIPTIONS.get(name, "see the metrics page of interpkit's documentation")}
                    for name, metric in build.metrics.items()],
        "scored": len(ranked), "gradcam_layer": gradcam.layer, "gradcam_grid": " x ".join(map(str, grid)),
        "gradcam_empty": int((gradcam.maps.flatten(1).amax(1) == 0).sum()),
        "curves": build.figure(f"{subject.prefix}faithfulness_curves", plot_metric_curves(panels)) if panels else None,
        "sanity": build.figure(f"{subject.prefix}randomisation", _randomisation_figure(subject, images[:1])),
        "sanity_image": classes[int(data.labels[picks[0]])],
    }


def _ranks(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per metric: the best and the worst explainer, and GradCAM's rank (1 = best) among the
    ``rows`` where the metric is defined for some image."""
    found = {}
    for metric in rows[0]["scores"] if rows else ():
        defined = [r for r in rows if not math.isnan(r["scores"][metric].mean)]
        if not defined:
            continue
        higher = defined[0]["scores"][metric].better == "higher"
        order = sorted(defined, key=lambda r: r["scores"][metric].mean, reverse=higher)
        rank = next((i + 1 for i, r in enumerate(order) if r["method"] == "gradcam"), None)
        found[metric] = {"best": order[0]["method"], "worst": order[-1]["method"], "gradcam": rank,
                         "of": len(order)}
    return found


def _randomisation_figure(subject: _Subject, image: torch.Tensor) -> Any:
    """Adebayo et al.'s figure 2: one image's maps as the layers are randomised from the top."""
    rows, labels, columns = [], [], []
    for name, make in (("GradCAM", interpkit.GradCAM), ("guided\nbackprop", interpkit.GuidedBackprop)):
        result = randomisation_check(make, subject.model, image)
        original = make(subject.model)(image).maps
        planes = [original[0, 0].abs().sum(0) if original.dim() == 5 else original[0, 0]]
        planes += [m[0].abs() for m in result.maps]
        picture = _display(subject.transform, image)[0]
        rows.append([picture] + [colorize(p[None, None], MapKind.INPUT_GRID, "inferno")[0, 0] for p in planes])
        labels.append(f"{name}\nrho = {result.mean_spearman_abs[0]:.2f}")
        columns = ["image", "trained model"] + [f"{layer} random" for layer in result.layers]
    return plot_image_grid(rows, labels, columns, panel_inches=1.2)


def _vgg(build: _Build, wanted: bool) -> None:
    """Task 2: the fine-tuned ImageNet VGG19 where its weights load, else the bundled stand-in
    (VGG19's layout at 1/8 width, transfer-learned from Caltech-101's other categories)."""
    if not wanted:
        build.page.vgg = {"available": False, "why": "not requested (--models left it out).", "how": ""}
        return
    how = ""
    try:
        subject = _subject("vgg19_caltech5", build.device, {}, "vgg_")
        stand_in = False
    except WeightsError:
        how = ("ImageNet VGG19 itself needs torchvision's ImageNet weights (a download) and a head trained on "
               "them, which interpkit cannot bundle; with those weights, 'interpkit train --models vgg19_caltech5' "
               "trains the head and this section shows VGG19.")
        try:
            subject = _subject(STAND_IN, build.device, {}, "vgg_")
        except WeightsError as missing:
            build.page.vgg = {"available": False, "why": str(missing).rstrip(".") + ".", "how": how}
            return
        stand_in = True
    section = _model_section(build, subject)
    for part in (_patches, _guided, _gradcam):
        part(subject, build)
    meta = interpkit.get_weights(subject.name).meta
    build.page.vgg = {"available": True, "stand_in": stand_in, "model": section, "figures": subject.figures,
                      "how": how, "pretraining": meta.get("pretraining", {}).get("summary", "")}
    build.page.study[section.name] = build.page.study.get("vgg19_caltech5", {})
