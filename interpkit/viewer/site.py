"""Writing the viewer's static site for one or more stores of the same data.

Layout under ``out``::

    index.html, viewer.js, viewer.css    the page (copied from the package)
    data/site.js                         the stores' names, the samples' files and classes
    data/store-0.js ...                  one per store: its per-sample columns (JSON in a call)
    images/000123.jpg                    each sample's image at its map's size
    maps/0/000123.jpg ...                each store's first map over the image
    .interpkit-view.json                 what was rendered from which file, for incremental reruns

The data files are JSON wrapped in a function call, loaded by script tags, so the page works
from ``file://`` in every browser (Chromium refuses ``fetch`` of ``file://`` URLs).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np
import torch
from tqdm.auto import tqdm

from ..dataset.store import MapStore, read_store
from ..errors import InputError
from ..files import replacing
from ..viz.images import overlay_maps

ASSETS = Path(__file__).parent / "assets"
RECORD = ".interpkit-view.json"
LONGEST = 224  # the longer side of the rendered images, in pixels
QUALITY = 92  # JPEG quality of the rendered images
BATCH = 64  # samples rendered per step


def write_site(stores: Sequence[str | Path | MapStore], out: str | Path, progress: bool = True) -> Path:
    """Write (or update) the viewer of ``stores`` into ``out``; returns ``out / "index.html"``.

    Every store must be complete and of the same data (same samples in the same order). Images
    are rendered once: a rerun renders only the samples whose file or store changed (a store that
    grew renders its new samples). ``out`` must be empty, absent or a viewer written before."""
    opened = [store if isinstance(store, MapStore) else read_store(store) for store in stores]
    if not opened:
        raise InputError("give at least one store to view")
    columns = [_columns(store) for store in opened]  # reads every shard: an incomplete store is refused here
    _check_same_data(opened)
    root = Path(out)
    record = _open_out(root)
    files = opened[0].files
    todo = [_pending(record, key, files, len(opened[0]), root) for key in _keys(opened)]
    total = sum(len(indices) for indices in todo)
    with tqdm(total=total, desc="viewer", unit="image", disable=not progress or total == 0) as bar:
        for number, (store, indices) in enumerate(zip(opened, todo)):
            _render(store, number, indices, root, write_images=number == 0, bar=bar)
    _write_data(root, opened, columns)
    rendered: list[str | None] = list(files) if files else [None] * len(opened[0])
    record["stores"] = {key: {"files": rendered} for key in _keys(opened)}
    with replacing(root / RECORD) as temporary:
        temporary.write_text(json.dumps(record))
    for asset in ("viewer.js", "viewer.css", "index.html"):  # the page last: it appears whole
        with replacing(root / asset) as temporary:
            shutil.copyfile(ASSETS / asset, temporary)
    return root / "index.html"


def _columns(store: MapStore) -> dict[str, Any]:
    """The per-sample values the page filters and sorts by, as JSON-ready lists."""
    maps = store.maps
    if maps.ndim != 4:
        raise InputError(f"the viewer shows maps over images (N, K, H, W); {store.path} holds maps of shape "
                         f"{maps.shape}")
    valid = store.array("valid").astype(bool)
    probabilities = store.array("probabilities")
    columns: dict[str, Any] = {
        "label": _ints(store.array("labels")),
        "prediction": _ints(store.array("predictions")),
        "confidence": _floats(probabilities),
        "valid": valid.tolist(),
        "target": _ints(store.array("targets")[:, 0]) if store.array("targets").shape[1] else [None] * len(store),
        "score": _floats(store.array("scores")[:, 0]) if store.array("scores").shape[1] else [None] * len(store),
        "concentration": _floats(concentration(maps[:, 0] if maps.shape[1] else np.full(maps.shape[:1] + maps.shape[2:],
                                                                                       np.nan, np.float32))),
    }
    for name in store.manifest.get("metrics") or []:
        columns[f"metric:{name}"] = _floats(store.metric(name))
    columns["failure"] = {str(f["index"]): str(f.get("reason", "")) for f in store.failures}
    return columns


def concentration(maps: np.ndarray) -> np.ndarray:
    """How concentrated each map (N, H, W) is: the share of its positive mass in its top 10 % of
    positions (0.1 for a flat map, 1 for a map whose mass all lies there); NaN for failed maps."""
    flat = np.clip(np.nan_to_num(np.asarray(maps, dtype=np.float64).reshape(len(maps), -1), nan=0.0), 0, None)
    top = max(1, flat.shape[1] // 10)
    mass = flat.sum(axis=1)
    heaviest = -np.partition(-flat, top - 1, axis=1)[:, :top].sum(axis=1)
    share = np.divide(heaviest, mass, out=np.full(len(flat), np.nan), where=mass > 0)
    failed = np.isnan(np.asarray(maps, dtype=np.float32).reshape(len(maps), -1)).all(axis=1)
    return np.where(failed, np.nan, share)


def _ints(values: np.ndarray) -> list[int | None]:
    return [None if v < 0 else int(v) for v in np.asarray(values).tolist()]


def _floats(values: np.ndarray) -> list[float | None]:
    return [None if not np.isfinite(v) else round(float(v), 6) for v in np.asarray(values, dtype=np.float64).tolist()]


def _check_same_data(stores: list[MapStore]) -> None:
    first = stores[0]
    for other in stores[1:]:
        if len(other) != len(first) or other.files != first.files or other.classes != first.classes:
            raise InputError(f"{other.path} holds other data than {first.path} ({len(other)} against {len(first)} "
                             "samples, or other files or classes); stores side by side must explain the same samples "
                             "in the same order")


def _keys(stores: list[MapStore]) -> list[str]:
    """Each store's identity for incremental rendering: its manifest without the data's extent."""
    keys = []
    for number, store in enumerate(stores):
        described = {k: v for k, v in store.manifest.items() if k != "dataset"}
        digest = hashlib.sha256(json.dumps(described, sort_keys=True, default=str).encode()).hexdigest()[:16]
        keys.append(f"{number}:{digest}")
    return keys


def _open_out(root: Path) -> dict[str, Any]:
    """The record of an earlier viewer in ``root``; ``root`` must be empty, absent or such a viewer."""
    if root.exists() and not root.is_dir():
        raise InputError(f"{root} is a file; give a folder for the viewer")
    if (root / RECORD).is_file():
        try:
            record = json.loads((root / RECORD).read_text())
            if isinstance(record, dict) and isinstance(record.get("stores"), dict):
                return record
        except ValueError:
            pass
        return {"stores": {}}  # a damaged record: everything is rendered again
    if root.exists() and any(root.iterdir()):
        raise InputError(f"{root} is not empty and holds no viewer; give an empty or new folder")
    return {"stores": {}}


def _pending(record: dict[str, Any], key: str, files: list[str] | None, length: int, root: Path) -> list[int]:
    """The samples whose images must be rendered for the store ``key``."""
    before = record["stores"].get(key, {}).get("files", [])
    number = key.split(":")[0]
    current: list[str | None] = list(files) if files else [None] * length
    return [i for i in range(length)
            if i >= len(before) or before[i] != current[i] or not (root / "maps" / number / f"{i:06d}.jpg").is_file()]


def _render(store: MapStore, number: int, indices: list[int], root: Path, write_images: bool, bar: tqdm) -> None:
    """Each sample's first map over its image (and the image alone, once for all stores)."""
    files = store.files
    maps = store.maps
    for first in range(0, len(indices), BATCH):
        chosen = indices[first:first + BATCH]
        planes = np.nan_to_num(np.asarray(maps[chosen, :1], dtype=np.float32))  # (B, 1, H, W); failed: zeros
        height, width = _size(planes.shape[-2:])
        images = np.stack([_image(files[i] if files else None, height, width) for i in chosen])
        heat = torch.from_numpy(planes)
        overlays = overlay_maps(torch.nn.functional.interpolate(heat, size=(height, width), mode="bilinear",
                                                                align_corners=False), images)[:, 0]
        for position, index in enumerate(chosen):
            if write_images:
                _write_jpeg(root / "images" / f"{index:06d}.jpg", images[position])
            _write_jpeg(root / "maps" / str(number) / f"{index:06d}.jpg", overlays[position])
        bar.update(len(chosen))


def _size(grid: tuple[int, int]) -> tuple[int, int]:
    """The rendered size: the map's, its longer side at most LONGEST."""
    height, width = grid
    scale = min(1.0, LONGEST / max(height, width))
    return max(1, round(height * scale)), max(1, round(width * scale))


def _image(file: str | None, height: int, width: int) -> np.ndarray:
    """The sample's image as RGB uint8 at the map's size (grey where the data has no files or the
    file cannot be read now)."""
    picture = cv2.imread(file, cv2.IMREAD_COLOR) if file else None
    if picture is None:
        return np.full((height, width, 3), 128, np.uint8)
    return cv2.cvtColor(cv2.resize(picture, (width, height), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)


def _write_jpeg(path: Path, rgb: np.ndarray) -> None:
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, QUALITY])
    if not ok:
        raise InputError(f"could not encode an image of shape {rgb.shape} as JPEG")
    with replacing(path) as temporary:
        temporary.write_bytes(data.tobytes())


def _write_data(root: Path, stores: list[MapStore], columns: list[dict[str, Any]]) -> None:
    """data/site.js (what the stores share) and data/store-N.js (each store's columns)."""
    first = stores[0]
    site = {
        "length": len(first),
        "classes": first.classes,
        "files": [Path(f).name for f in first.files] if first.files else None,
        "stores": [_describe(store) for store in stores],
    }
    _write_call(root / "data" / "site.js", "interpkitSite", site)
    for number, values in enumerate(columns):
        _write_call(root / "data" / f"store-{number}.js", "interpkitStore", {"number": number, "columns": values})


def _describe(store: MapStore) -> dict[str, Any]:
    manifest = store.manifest
    explainer = manifest.get("explainer")
    model = manifest.get("model")
    method = explainer.get("name") if isinstance(explainer, dict) else explainer
    architecture = model.get("name") or model.get("class") if isinstance(model, dict) else model
    return {"name": f"{store.path.resolve().name} ({method or 'maps'} · {architecture or 'model'})", "path": str(store.path),
            "metrics": list(manifest.get("metrics") or [])}


def _write_call(path: Path, function: str, payload: Any) -> None:
    text = json.dumps(payload, separators=(",", ":"), allow_nan=False)
    with replacing(path) as temporary:
        temporary.write_text(f"{function}({text});\n")
