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
import os
import shutil
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np
import torch
from tqdm.auto import tqdm

from ..core import MapKind
from ..data.images import read_image
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
    for store in opened:  # before anything is written
        _check_maps(store)
    if not isinstance(out, (str, os.PathLike)):
        raise InputError(f"out is the viewer's folder, a path, not {type(out).__name__}")
    root = Path(out)
    try:
        record = _open_out(root)
    except OSError as error:
        raise InputError(f"cannot write the viewer into {root} ({error.strerror or error}); give a writable folder"
                         ) from None
    identities = _identities(opened[0])
    keys = _keys(opened)
    todo = [_pending(record, key, identities, root) for key in keys]
    _forget(record, keys, todo, root)  # an interrupted run leaves no image a rerun would trust
    total = sum(len(indices) for indices in todo)
    with tqdm(total=total, desc="viewer", unit="image", disable=not progress or total == 0) as bar:
        for number, (store, key, indices) in enumerate(zip(opened, keys, todo)):
            known = _known_concentration(record, key, len(store), set(indices))
            known.update(_render(store, number, indices, root, write_images=number == 0, bar=bar))
            columns[number]["concentration"] = _floats(np.array([known[i] for i in range(len(store))], np.float64))
    _write_data(root, opened, columns)
    record["stores"] = {key: {"files": identities, "concentration": values["concentration"]}
                        for key, values in zip(keys, columns)}
    with replacing(root / RECORD) as temporary:
        temporary.write_text(json.dumps(record))
    for asset in ("viewer.js", "viewer.css", "index.html"):  # the page last: it appears whole
        with replacing(root / asset) as temporary:
            shutil.copyfile(ASSETS / asset, temporary)
    return root / "index.html"


def _check_maps(store: MapStore) -> None:
    """An InputError unless every shard holds maps over images, (N, K, H, W) or per channel
    (N, K, C, H, W), or none (all failed)."""
    rank = 5 if _per_channel(store) else 4
    for shard in range(-(-len(store) // int(store.manifest["shard_size"]))):
        maps = store.shard_array("maps", shard)
        if maps.ndim == 5 and "map_kind" not in store.manifest:
            raise InputError(f"{store.path} was written before stores recorded their maps' kind, so its maps "
                             f"{maps.shape[1:]} per sample may be per input channel or over volumes; resume it with "
                             "the same arguments (resume=True, or --resume) to record it")
        if maps.ndim != rank and not (maps.ndim == 2 and maps.shape[1] == 0):
            raise InputError(f"the viewer shows maps over images (N, K, H, W); {store.path} holds maps of shape "
                             f"{maps.shape[1:]} per sample")


def _per_channel(store: MapStore) -> bool:
    """Whether the store's maps keep the input's channels (input gradients, LRP, ...)."""
    return store.manifest.get("map_kind") == MapKind.INPUT_CHANNELS.value


def _shard_maps(store: MapStore):
    """Each shard's maps (n, K, H, W), memory-mapped, with the index of its first sample."""
    size = int(store.manifest["shard_size"])
    for shard in range(-(-len(store) // size)):
        maps = store.shard_array("maps", shard)
        if maps.ndim == 2:  # every sample of the shard failed: nothing to draw (made lazily, one shard at a time)
            maps = np.full((len(maps), 1, LONGEST, LONGEST), np.nan, np.float32)
        yield shard * size, maps


def _known_concentration(record: dict[str, Any], key: str, length: int, pending: set[int]) -> dict[int, float]:
    """The concentrations an earlier run recorded for the samples not rendered again."""
    before = record["stores"].get(key, {}).get("concentration", [])
    return {i: np.nan if i >= len(before) or before[i] is None else float(before[i])
            for i in range(length) if i not in pending}


def _columns(store: MapStore) -> dict[str, Any]:
    """The per-sample values the page filters and sorts by, as JSON-ready lists."""
    valid = store.array("valid").astype(bool)
    probabilities = store.array("probabilities")
    columns: dict[str, Any] = {
        "label": _ints(store.array("labels")),
        "prediction": _ints(store.array("predictions")),
        "confidence": _floats(probabilities),
        "valid": valid.tolist(),
    }
    for name, column, convert in (("targets", "target", _ints), ("scores", "score", _floats)):
        values = store.array(name)  # (N, K): the first target's
        columns[column] = convert(values[:, 0]) if values.shape[1] else [None] * len(store)
    for name in store.manifest.get("metrics") or []:
        columns[f"metric:{name}"] = _floats(store.metric(name))
    columns["failure"] = {str(f["index"]): str(f.get("reason", "")) for f in store.failures}
    return columns


def concentration(maps: Any) -> np.ndarray:
    """How concentrated each map (N, H, W) is: the share of its positive mass in its top 10 % of
    positions (0.1 for a flat map, 1 for a map whose mass all lies there); NaN for failed maps
    (all NaN) and maps with no positive mass."""
    try:
        array = np.asarray(maps, dtype=np.float32)
    except (TypeError, ValueError):
        raise InputError(f"maps must be numbers (N, H, W), not {type(maps).__name__}") from None
    if array.ndim < 2:
        raise InputError(f"maps must be (N, H, W) or (N, positions), not of shape {array.shape}")
    flat = torch.as_tensor(array).flatten(1)
    failed = torch.zeros(len(flat), dtype=torch.bool)
    odd = ~torch.isfinite(flat.sum(dim=1, dtype=torch.float64))  # a NaN or an infinity: only those rows searched
    if bool(odd.any()):
        failed[odd] = flat[odd].isnan().all(dim=1)
        flat = flat.nan_to_num(0.0)
    flat = flat.clamp_min(0)
    top = max(1, flat.shape[1] // 10)
    mass = flat.sum(dim=1, dtype=torch.float64)  # float64: sums of large float32 values do not overflow
    heaviest = flat.topk(top, dim=1, sorted=False).values.sum(dim=1, dtype=torch.float64)
    share = torch.where(mass > 0, heaviest / torch.where(mass > 0, mass, 1.0), torch.nan)
    return torch.where(failed, torch.nan, share).double().numpy()


def _ints(values: np.ndarray) -> list[int | None]:
    return [None if v < 0 else int(v) for v in np.asarray(values).tolist()]


def _floats(values: np.ndarray) -> list[float | None]:
    return [None if not np.isfinite(v) else round(float(v), 6) for v in np.asarray(values, dtype=np.float64).tolist()]


def _check_same_data(stores: list[MapStore]) -> None:
    first = stores[0]
    for other in stores[1:]:
        hashed = [(store.manifest.get("dataset") or {}).get("samples_sha256") for store in (first, other)]
        if (len(other) != len(first) or other.files != first.files or other.classes != first.classes
                or hashed[0] != hashed[1]):
            raise InputError(f"{other.path} holds other data than {first.path} ({len(other)} against {len(first)} "
                             "samples, or other files or classes); stores side by side must explain the same samples "
                             "in the same order")


def _keys(stores: list[MapStore]) -> list[str]:
    """Each store's identity for incremental rendering: its manifest without the data's extent
    (its length, files, labels and classes, which grow with it; files and labels are compared
    sample by sample)."""
    keys = []
    for number, store in enumerate(stores):
        described = {k: v for k, v in store.manifest.items() if k != "dataset"}
        described["dataset"] = {k: v for k, v in (store.manifest.get("dataset") or {}).items()
                                if k not in ("length", "files", "labels_sha256", "classes")}
        digest = hashlib.sha256(json.dumps(described, sort_keys=True, default=str).encode()).hexdigest()[:16]
        keys.append(f"{number}:{digest}")
    return keys


def _identities(store: MapStore) -> list[str | None]:
    """What each sample's images depend on besides the store's key: its file and label. Data
    without files is identified whole by the key where the store hashed its samples (tensors),
    else not at all: None, rendered every time."""
    if not store.files:
        hashed = "samples_sha256" in (store.manifest.get("dataset") or {})
        return [str(i) if hashed else None for i in range(len(store))]
    labels = store.array("labels").tolist()
    return [f"{file}\t{label}\t{_stamp(file)}" for file, label in zip(store.files, labels)]


def _stamp(file: str) -> str:
    """The file's size and modification time: a file replaced in place renders again."""
    try:
        status = os.stat(file)
    except OSError:
        return "missing"
    return f"{status.st_size}\t{status.st_mtime_ns}"


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
    fresh: dict[str, Any] = {"stores": {}}
    with replacing(root / RECORD) as temporary:  # first: an interrupted first run leaves a folder a rerun resumes
        temporary.write_text(json.dumps(fresh))
    return fresh


def _pending(record: dict[str, Any], key: str, identities: list[str | None], root: Path) -> list[int]:
    """The samples whose images must be rendered for the store ``key``."""
    before = record["stores"].get(key, {}).get("files", [])
    number = key.split(":")[0]
    folders = [root / "maps" / number] + ([root / "images"] if number == "0" else [])
    present = [{p.name for p in folder.glob("*.jpg")} if folder.is_dir() else set() for folder in folders]
    return [i for i, identity in enumerate(identities) if identity is None or i >= len(before)
            or before[i] != identity or any(f"{i:06d}.jpg" not in names for names in present)]


def _forget(record: dict[str, Any], keys: list[str], todo: list[list[int]], root: Path) -> None:
    """Record, before rendering, that the pending samples' images are not rendered (and drop the
    entries of other stores drawn into the same folders), so that a run interrupted halfway
    leaves a record under which a rerun renders them again."""
    numbers = {key.split(":")[0]: key for key in keys}
    for key in list(record["stores"]):
        if numbers.get(key.split(":")[0], key) != key:
            del record["stores"][key]
    for key, indices in zip(keys, todo):
        files = record["stores"].get(key, {}).get("files")
        if files:
            for i in indices:
                if i < len(files):
                    files[i] = None
    with replacing(root / RECORD) as temporary:
        temporary.write_text(json.dumps(record))


def _render(store: MapStore, number: int, indices: list[int], root: Path, write_images: bool, bar: tqdm
            ) -> dict[int, float]:
    """Each sample's first map over its image (and the image alone, once for all stores), in
    batches within a shard (each reads only its rows of the shard's memory map); returns their
    concentrations."""
    files = store.files
    pending = set(indices)
    found: dict[int, float] = {}
    for name in ("images", f"maps/{number}"):
        (root / name).mkdir(parents=True, exist_ok=True)
    # every step of a batch (OpenCV's reading, resizing and encoding, torch's arithmetic) releases
    # the GIL: whole batches run in a pool, one thread per core, collected in order, at most two
    # per thread submitted at a time (memory)
    folder = root / "maps" / str(number)
    workers = os.cpu_count() or 1
    running: deque[tuple[list[int], Future]] = deque()

    def collect() -> None:
        chosen, future = running.popleft()
        found.update(zip(chosen, future.result()))
        bar.update(len(chosen))

    with ThreadPoolExecutor(max_workers=workers) as pool:
        for maps, rows, chosen in _batches(store, pending):  # lazily: a few batches in memory at a time
            running.append((chosen, pool.submit(_render_batch, maps, rows, chosen, files, folder,
                                                 root / "images" if write_images else None)))
            if len(running) > 2 * workers:
                collect()
        while running:
            collect()
    return found


def _render_batch(maps: Any, rows: Any, chosen: list[int], files: list[str] | None, folder: Path,
                  images_folder: Path | None) -> list[float]:
    """One batch: each sample's first map over its image (and the image alone into
    ``images_folder`` when given), written as JPEGs; returns the maps' concentrations."""
    planes = torch.from_numpy(np.array(maps[rows, :1], dtype=np.float32))  # a copy: the map is read-only
    if planes.dim() == 5:  # per input channel: their magnitudes summed, as the metrics read such maps
        planes = planes.abs().sum(dim=2)
    values = concentration(planes[:, 0]).tolist()
    height, width = _size((int(planes.shape[-2]), int(planes.shape[-1])))
    if not bool(torch.isfinite(planes.sum())):
        planes.nan_to_num_(0.0)  # a failed map is drawn as zeros
    heat = planes if planes.shape[-2:] == (height, width) else torch.nn.functional.interpolate(
        planes, size=(height, width), mode="bilinear", align_corners=False)
    images = np.stack([_image(files[i] if files else None, height, width) for i in chosen])
    overlays = overlay_maps(heat, images)[:, 0]
    for k, index in enumerate(chosen):
        _write_jpeg(folder / f"{index:06d}.jpg", overlays[k])
        if images_folder is not None:
            _write_jpeg(images_folder / f"{index:06d}.jpg", images[k])
    return values


def _batches(store: MapStore, pending: set[int]):
    """The pending samples in batches of at most BATCH within a shard: (the shard's maps, the
    rows to read, the samples' indices)."""
    for start, maps in _shard_maps(store):
        mine = [i for i in range(start, start + len(maps)) if i in pending]
        for first in range(0, len(mine), BATCH):
            chosen = mine[first:first + BATCH]
            rows = (slice(chosen[0] - start, chosen[-1] - start + 1) if chosen[-1] - chosen[0] == len(chosen) - 1
                    else [i - start for i in chosen])  # a slice of the memory map reads far faster
            yield maps, rows, chosen


def _size(grid: tuple[int, int]) -> tuple[int, int]:
    """The rendered size: the map's, its longer side at most LONGEST."""
    height, width = grid
    scale = min(1.0, LONGEST / max(height, width))
    return max(1, round(height * scale)), max(1, round(width * scale))


def _image(file: str | None, height: int, width: int) -> np.ndarray:
    """The sample's image as RGB uint8 at the map's size (grey where the data has no files or the
    file cannot be read now), decoded as the model's loader (``read_image``) decodes it."""
    picture = _decoded(file) if file else None
    if picture is None:
        return np.full((height, width, 3), 128, np.uint8)
    return cv2.resize(picture, (width, height), interpolation=cv2.INTER_AREA)


def _decoded(file: str) -> np.ndarray | None:
    """RGB uint8 (H, W, 3) as ``read_image`` gives it, or None if unreadable: JPEGs by OpenCV
    (faster; told to ignore the EXIF orientation, which ``read_image`` does not apply either),
    other formats by ``read_image`` itself (transparency over white, 16-bit, palettes)."""
    if Path(file).suffix.lower() in (".jpg", ".jpeg"):
        bgr = cv2.imread(file, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
        return None if bgr is None else cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    try:
        return np.ascontiguousarray(read_image(file).permute(1, 2, 0).numpy())
    except InputError:
        return None


def _write_jpeg(path: Path, rgb: np.ndarray) -> None:
    """Encode and write beside, then rename: a reader sees the old image or the new, never half
    (a plain temporary name: mkstemp per image cost as much as the encoding)."""
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, QUALITY])
    if not ok:
        raise InputError(f"could not encode an image of shape {rgb.shape} as JPEG")
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        temporary.write_bytes(data.tobytes())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


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
