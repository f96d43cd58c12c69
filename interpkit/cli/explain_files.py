"""Explaining image files in bulk (``interpkit explain``): nothing lost, nothing overwritten.

Every input gets its own outputs, named by mirroring its path relative to the working directory
(Caltech folders share names such as ``image_0038.jpg``); a folder stands for the images under
it, and names stay unique within a run. Existing files are kept unless
``overwrite``; an image that cannot be read or explained is recorded and skipped, the rest are
done. A manifest (``manifest.csv`` and ``manifest.json``) records for each input its prediction
and probability, the requested target, the files written and any failure. Every file appears
whole or not at all, and the output folder is only created once there is something to write.
"""

from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from matplotlib.figure import Figure
from tqdm.auto import tqdm

from ..core import Explainer, Explanation, MapKind
from ..data import read_image
from ..data.images import image_files
from ..data.transforms import resize_uint8
from ..errors import InputError, InterpkitError
from ..explainers import PatchExplanation
from ..files import replacing, write_text
from ..viz import gradient_images, overlay_maps, plot_patch, to_uint8_images, write_png
from .commands import load_model, make_explainer, numbered, parse_target

MAX_DISPLAY_SIDE = 640  # overlays are drawn on the image at its own aspect ratio, at most this large


@dataclass
class ImageRecord:
    """What happened to one input image."""

    input: str  # as given
    path: str = ""  # absolute: the same name given from another folder is another input
    status: str = "pending"  # "done", "failed" or "skipped" (its outputs existed)
    predicted: str = ""
    probability: float | None = None
    requested: str = "top-1"
    outputs: list[str] = field(default_factory=list)
    reason: str = ""


@dataclass
class ExplainRun:
    records: list[ImageRecord]
    out: Path

    def count(self, status: str) -> int:
        return sum(r.status == status for r in self.records)

    @property
    def complete(self) -> bool:
        return all(r.status == "done" for r in self.records)

    def summary(self) -> str:
        lines = [f"{self.count('done')} of {len(self.records)} images explained; "
                 f"{sum(len(r.outputs) for r in self.records)} files written to {self.out}/"]
        lines += [f"  {r.status}: {r.input}: {r.reason}" for r in self.records if r.status != "done"]
        return "\n".join(lines)


def explain_files(images: Sequence[str | os.PathLike], out_dir: str | os.PathLike, model: str | None = None,
                  checkpoint: str | None = None, method: str = "gradcam", layer: str | None = None,
                  target: str | None = None, device: str = "cpu", overwrite: bool = False,
                  progress: bool = True) -> ExplainRun:
    """Explain each image file with ``method``; see the module docstring. Everything the run
    needs (model, method, layer, target) is checked before any file is written."""
    images = _expand(images)
    missing = [str(p) for p in images if not Path(p).is_file()]
    if missing:
        raise InputError(f"image file not found: {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
    network, transform, categories = load_model(model, checkpoint, device)
    explainer = make_explainer(network, method, layer)
    chosen = parse_target(target, categories)
    stems = _output_stems([Path(p) for p in images])
    out = Path(out_dir)
    _refuse_a_foreign_manifest(out, overwrite)
    records = [ImageRecord(str(p), os.path.abspath(p), requested=target or "top-1") for p in images]
    # whose each file is: this run's and earlier runs' (from the folder's manifest); never another input's
    owners = {Path(o): _key(row) for row in _earlier_manifest(out) for o in row["outputs"]}
    try:
        for record, stem in tqdm(list(zip(records, stems)), desc="explain", unit="image", disable=not progress):
            _explain_one(record, out / stem, explainer, network, transform, categories, chosen, overwrite, owners)
    finally:  # also after Ctrl-C: the manifest lists what was done
        if any(r.outputs for r in records) or out.exists():
            _write_manifest(out, records)
    return ExplainRun(records, out)


def _expand(images: Sequence[str | os.PathLike]) -> list[Path]:
    """The files given, with each folder replaced by the images under it (recursively, sorted)."""
    if not images:
        raise InputError("no images given")
    files: list[Path] = []
    for item in map(Path, images):
        if item.is_dir():
            files += image_files(item)  # refuses a folder without images, saying which suffixes it looked for
        else:
            files.append(item)
    return files


def _output_stems(paths: list[Path]) -> list[Path]:
    """Each input's path relative to the working directory (relative to the common folder of
    the inputs that lie outside it), without its suffix, or with it where two inputs differ only
    by suffix; so a run's names do not depend on which other images it was given."""
    resolved = [p.resolve() for p in paths]
    if len(set(resolved)) != len(resolved):
        raise InputError("the same image is given more than once; give each file once")
    here = Path.cwd().resolve()
    outside = [p.parent for p in resolved if not p.is_relative_to(here)]
    elsewhere = Path(os.path.commonpath(outside)) if outside else here
    relative = [p.relative_to(here if p.is_relative_to(here) else elsewhere) for p in resolved]
    plain = [r.with_suffix("") for r in relative]
    stems = [s if plain.count(s) == 1 else r.with_name(r.name.replace(".", "_")) for r, s in zip(relative, plain)]
    return numbered(stems)


def _explain_one(record: ImageRecord, stem: Path, explainer: Explainer, network: torch.nn.Module, transform: Any,
                 categories: Sequence[str], target: Any, overwrite: bool, owners: dict[Path, str]) -> None:
    try:
        pixels = read_image(record.input)
        batch = transform(pixels).unsqueeze(0).to(next(network.parameters()).device)
        with torch.no_grad():
            probabilities = network(batch).softmax(dim=1)[0]
        top = int(probabilities.argmax())
        record.predicted, record.probability = categories[top], round(float(probabilities[top]), 4)
        result = explainer(batch, target)
        files = _renderings(result, pixels, transform.size, categories, stem)
    except (InterpkitError, OSError, ValueError, RuntimeError) as error:
        record.status, record.reason = "failed", " ".join(str(error).split())
        return
    clashing = [(path, owners[path]) for path in files if owners.get(path, record.path) != record.path]
    if clashing:
        path, other = clashing[0]
        record.status, record.reason = "failed", f"{path} is the output of another input ({other}); use another --out"
        return
    existing = [str(path) for path in files if path.exists()]
    if existing and not overwrite:
        record.status, record.reason = "skipped", f"{existing[0]} exists (pass --overwrite to replace it)"
        return
    for path, write in files.items():
        write(path)
        owners[path] = record.path
        record.outputs.append(str(path))
    record.status = "done"


def _renderings(result: Explanation, pixels: torch.Tensor, model_size: tuple[int, int], categories: Sequence[str],
                stem: Path) -> dict[Path, Any]:
    """The files one explanation becomes, as path -> writer (nothing is written yet)."""
    display = _display(pixels)
    name = f"{stem.name}_{result.method}"
    files: dict[Path, Any] = {}
    if isinstance(result, PatchExplanation):  # boxes, not maps over the image
        for k in range(result.maps.shape[1]):
            box = _scaled_box(result.box(0, k), model_size, display.shape[:2])
            label = _label(result, k, categories)
            top, left, bottom, right = box
            files[stem.with_name(f"{name}_{label}.png")] = _figure_writer(plot_patch(display, box, title=label))
            files[stem.with_name(f"{name}_{label}_crop.png")] = _png_writer(display[top:bottom, left:right])
    else:
        if result.kind is MapKind.INPUT_CHANNELS:
            pictures = [_resized(p, display.shape[:2]) for p in gradient_images(result.maps, symmetric=True)[0]]
        else:
            pictures = list(overlay_maps(result.maps, display[None], result.kind)[0])
        for k, picture in enumerate(pictures):
            files[stem.with_name(f"{name}_{_label(result, k, categories)}.png")] = _png_writer(picture)
    files[stem.with_name(f"{name}.npy")] = _npy_writer(result.maps[0].detach().cpu().numpy())
    return files


def _display(pixels: torch.Tensor) -> np.ndarray:
    """The image at its own aspect ratio, its longer side at most MAX_DISPLAY_SIDE."""
    height, width = pixels.shape[-2:]
    scale = min(1.0, MAX_DISPLAY_SIDE / max(height, width))
    size = (max(1, round(height * scale)), max(1, round(width * scale)))  # a 5000 x 2 image keeps a row
    return to_uint8_images(resize_uint8(pixels, size))[0]


def _resized(picture: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    import cv2

    return cv2.resize(picture, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)


def _scaled_box(box: tuple[int, int, int, int], model_size: tuple[int, int],
                display_size: tuple[int, int]) -> tuple[int, int, int, int]:
    """A box in model-input pixels moved onto the displayed image (the input was resized per axis)."""
    sy, sx = display_size[0] / model_size[0], display_size[1] / model_size[1]
    top, left, bottom, right = box
    return (int(top * sy), int(left * sx), max(int(round(bottom * sy)), int(top * sy) + 1),
            max(int(round(right * sx)), int(left * sx) + 1))


def _label(result: Explanation, k: int, categories: Sequence[str]) -> str:
    index = int(result.targets[0, k])
    return categories[index] if 0 <= index < len(categories) else str(index)


def _png_writer(picture: np.ndarray) -> Any:
    return lambda path: write_png(path, np.ascontiguousarray(picture))


def _figure_writer(figure: Figure) -> Any:
    def write(path: Path) -> None:
        with replacing(path) as temporary:
            figure.savefig(temporary, dpi=100)
    return write


def _npy_writer(array: np.ndarray) -> Any:
    def write(path: Path) -> None:
        with replacing(path) as temporary:
            np.save(temporary, array)
    return write


MANIFEST_FIELDS = ("input", "path", "status", "predicted", "probability", "requested", "outputs", "reason")


def _key(row: dict[str, Any]) -> str:
    return row.get("path") or row["input"]  # manifests of earlier versions name inputs as given only


def _write_manifest(out: Path, records: list[ImageRecord]) -> None:
    """The manifest of this run merged into the folder's earlier one: inputs of earlier runs
    stay listed, and an input skipped now keeps the record of the run that wrote its files."""
    merged = {_key(row): row for row in _earlier_manifest(out)}
    for record in records:
        if not (record.status == "skipped" and merged.get(record.path, {}).get("status") == "done"):
            merged[record.path] = asdict(record)
    rows = list(merged.values())
    write_text(out / "manifest.json", json.dumps(rows, indent=1))
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=MANIFEST_FIELDS)
    writer.writeheader()
    for row in rows:
        writer.writerow({**row, "outputs": ";".join(row["outputs"]),
                         "probability": "" if row["probability"] is None else row["probability"]})
    write_text(out / "manifest.csv", text.getvalue())


def _refuse_a_foreign_manifest(out: Path, overwrite: bool) -> None:
    """The run writes ``manifest.json`` and ``manifest.csv`` into ``out``: files of those names that
    no run of ``interpkit explain`` wrote (or damaged past reading) are the user's, replaced only
    with ``overwrite``."""
    present = [name for name in ("manifest.json", "manifest.csv") if (out / name).exists()]
    if overwrite or not present or _earlier_manifest(out):
        return
    raise InputError(f"{out / present[0]} is not a manifest interpkit explain wrote (or it is damaged); give another "
                     "--out, or pass --overwrite to replace it")


def _earlier_manifest(out: Path) -> list[dict[str, Any]]:
    try:
        rows = json.loads((out / "manifest.json").read_text())
    except (OSError, ValueError):
        return []  # none yet, or unreadable: this run's manifest replaces it
    if not isinstance(rows, list):
        return []
    return [{"path": "", **row} for row in rows if isinstance(row, dict) and set(MANIFEST_FIELDS) - {"path"} <= set(row)
            and isinstance(row["outputs"], list) and all(isinstance(o, str) for o in row["outputs"])]
