"""Bundled split, image reading in every mode, ImageFolder splits."""

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from interpkit import InputError
from interpkit.data import SplitSizes, bundled_root, caltech5, image_folder, read_image

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data" / "caltech101"


def test_bundled_split_sizes_and_classes():
    sizes = {split: len(caltech5(split)) for split in ("train", "val", "test")}
    assert sizes == {"train": 250, "val": 50, "test": 100}
    data = caltech5("val")
    assert data.classes == ["bonsai", "hawksbill", "menorah", "scorpion", "sunflower"]
    assert np.bincount(data.labels).tolist() == [10] * 5
    image, label = data[0]
    assert image.dtype == torch.uint8 and image.shape[0] == 3 and label == 0
    assert (bundled_root() / "ATTRIBUTION.md").exists()
    with pytest.raises(InputError, match="split"):
        caltech5("validation")


@pytest.mark.skipif(not SHARED.exists(), reason="the shared data folder is beside the repository only in CI/dev")
def test_bundled_copy_equals_the_canonical_split():
    canonical = json.loads((SHARED / "caltech5_split.json").read_text())
    for split in ("train", "val", "test"):
        ours = caltech5(split)
        theirs = caltech5(split, root=SHARED)
        assert [p.name for p in ours.paths] == [Path(p).name for p in canonical[split]]
        assert all(a.read_bytes() == b.read_bytes() for a, b in zip(ours.paths, theirs.paths))


def _save(tmp_path, name, image, **kwargs):
    path = tmp_path / name
    image.save(path, **kwargs)
    return path


def test_every_image_mode_becomes_rgb_uint8(tmp_path):
    rgb = Image.fromarray(np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8))
    cases = {
        "gray.png": rgb.convert("L"),
        "cmyk.jpg": rgb.convert("CMYK"),
        "rgba.png": rgb.convert("RGBA"),
        "palette.png": rgb.convert("P"),
        "bw.png": rgb.convert("1"),
    }
    for name, image in cases.items():
        tensor = read_image(_save(tmp_path, name, image))
        assert tensor.shape == (3, 20, 30) and tensor.dtype == torch.uint8, name
    sixteen = Image.fromarray((np.arange(600, dtype=np.uint16).reshape(20, 30) * 100))
    tensor = read_image(_save(tmp_path, "deep.png", sixteen))
    assert tensor.shape == (3, 20, 30) and tensor.max() > 200  # 16-bit scaled, not clipped to 255 of 65535
    transparent = Image.new("RGBA", (4, 4), (10, 20, 30, 0))
    assert read_image(_save(tmp_path, "clear.png", transparent)).eq(255).all()  # composited on white


def test_corrupt_and_missing_files_name_the_file(tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(InputError, match="broken.jpg"):
        read_image(broken)
    with pytest.raises(InputError, match="not found"):
        read_image(tmp_path / "absent.png")
    truncated = tmp_path / "truncated.jpg"
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (1, 2, 3)).save(buffer, format="JPEG")
    truncated.write_bytes(buffer.getvalue()[:200])
    with pytest.raises(InputError, match="truncated.jpg"):
        read_image(truncated)


def test_an_image_too_large_to_open_safely_is_bad_input(tmp_path, monkeypatch):
    """PIL refuses an image whose header claims more than twice ``MAX_IMAGE_PIXELS`` (a 48 KB PNG
    claiming 20000 x 20000) with DecompressionBombError, which passed as a traceback."""
    path = _save(tmp_path, "huge.png", Image.new("RGB", (40, 40)))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(InputError, match="huge.png.*decompression bomb"):
        read_image(path)


def _folder(tmp_path, counts):
    for name, count in counts.items():
        (tmp_path / name).mkdir()
        for i in range(count):
            Image.new("RGB", (8, 8), (i, 0, 0)).save(tmp_path / name / f"{i:03d}.png")
    (tmp_path / "a" / "notes.txt").write_text("not an image")
    return tmp_path


def test_image_folder_split_is_seeded_disjoint_and_sized(tmp_path):
    root = _folder(tmp_path, {"a": 12, "b": 9, "c": 5})
    sizes = SplitSizes(4, 2, 3)
    first = image_folder(root, classes=["b", "a"], sizes=sizes, seed=3)
    again = image_folder(root, classes=["b", "a"], sizes=sizes, seed=3)
    other = image_folder(root, classes=["b", "a"], sizes=sizes, seed=4)
    assert [len(first[s]) for s in ("train", "val", "test")] == [8, 4, 6]
    assert first["train"].paths == again["train"].paths and first["train"].paths != other["train"].paths
    every = [p for s in ("train", "val", "test") for p in first[s].paths]
    assert len(set(every)) == len(every)
    assert first["train"].classes == ["b", "a"] and set(first["test"].labels) == {0, 1}
    with pytest.raises(InputError, match="fewer than"):
        image_folder(root, classes=["c"], sizes=sizes)
    with pytest.raises(InputError, match="not found"):
        image_folder(root, classes=["zebra"])
    with pytest.raises(InputError, match="not found"):
        image_folder(tmp_path / "nowhere")


def test_a_corrupt_file_in_a_loader_worker_is_reported_by_name(tmp_path):
    from torch.utils.data import DataLoader

    from interpkit.data import ImageDataset

    good = _save(tmp_path, "good.png", Image.new("RGB", (8, 8)))
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    loader = DataLoader(ImageDataset([good, bad], [0, 1], ["a", "b"]), batch_size=2, num_workers=1)
    with pytest.raises(InputError, match="bad.png"):
        next(iter(loader))


def test_torchvision_caltech101_offline_says_what_to_do(tmp_path):
    from interpkit.data import torchvision_caltech101

    with pytest.raises(InputError, match="download=True"):
        torchvision_caltech101(tmp_path, download=False)
