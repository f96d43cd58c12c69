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
    with pytest.raises(InputError, match="names a folder twice: a"):  # its files went to train and test
        image_folder(root, classes=["a", "a"], sizes=SplitSizes(2, 1, 1))
    with pytest.raises(InputError, match="sequence of folder names"):  # "ab" was read as ["a", "b"]
        image_folder(root, classes="ab")
    with pytest.raises(InputError, match="split sizes"):
        image_folder(root, sizes=SplitSizes(-1, 1, 1))
    import numpy as np

    taken = image_folder(root, classes=(name for name in ["b", "a"]), sizes=SplitSizes(*np.array([4, 2, 3])), seed=3)
    assert taken["train"].paths == first["train"].paths  # an iterator of classes is read once, not used up


def test_image_files_keep_the_same_name_of_a_folder_reached_twice(tmp_path):
    """Of a folder and a symlink to it, the name kept followed the file system's listing order."""
    import os

    from interpkit.data.images import image_files

    for letter in "bdfhkmprtx":
        (tmp_path / f"real_{letter}").mkdir()
        Image.new("L", (2, 2)).save(tmp_path / f"real_{letter}" / "img.png")
        os.symlink(f"real_{letter}", tmp_path / f"alias_{letter}")
    assert {p.parent.name for p in image_files(tmp_path)} == {f"alias_{letter}" for letter in "bdfhkmprtx"}


def test_writes_keep_the_replaced_files_mode_and_threads_leave_the_umask(tmp_path):
    import os
    import threading

    from interpkit.files import default_mode, write_text

    target = tmp_path / "secret.txt"
    target.write_text("t")
    target.chmod(0o600)
    write_text(target, "u")
    assert target.stat().st_mode & 0o777 == 0o600 and target.read_text() == "u"
    previous = os.umask(0o077)
    try:
        threads = [threading.Thread(target=lambda: [default_mode() for _ in range(20000)]) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert os.umask(0o077) == 0o077
    finally:
        os.umask(previous)


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


def test_greyscale_depths_and_transparency_decode_by_format_not_by_value(tmp_path):
    """A 16-bit PGM opened as mode I was scaled by 255 when its maximum was at most 255 and by
    65535 above: the same pixels 257x brighter than from a PNG. A float image with one NaN was
    all black. Alpha was dropped from a uint8 tensor, and an RGB colour key was ignored."""
    import cv2
    import numpy as np

    from interpkit.data import ImageTransform, read_image

    dark = np.array([[0, 100, 200, 65535]], np.uint16)
    cv2.imwrite(str(tmp_path / "a.png"), dark)
    cv2.imwrite(str(tmp_path / "a.pgm"), dark)
    assert read_image(tmp_path / "a.png")[0].tolist() == read_image(tmp_path / "a.pgm")[0].tolist() == [[0, 0, 1, 255]]
    Image.fromarray(np.array([[0.0, np.nan, 1.0]], np.float32)).save(tmp_path / "f.tif")
    assert read_image(tmp_path / "f.tif")[0].tolist() == [[0, 0, 255]]
    rgba = np.zeros((4, 4, 4), np.uint8)
    transform = ImageTransform(size=(4, 4))
    torch.testing.assert_close(transform(torch.from_numpy(rgba).permute(2, 0, 1)), transform(Image.fromarray(rgba, "RGBA")))
    keyed = np.array([[[255, 0, 0], [0, 0, 255]]], np.uint8)
    Image.fromarray(keyed).save(tmp_path / "rgb.png", transparency=(255, 0, 0))
    assert read_image(tmp_path / "rgb.png")[:, 0].tolist() == [[255, 0], [255, 0], [255, 255]]
    Image.fromarray(np.array([[0, 1000, 2000]], np.uint16)).save(tmp_path / "key16.png", transparency=1000)
    assert read_image(tmp_path / "key16.png")[0].tolist() == [[0, 255, 8]]


def test_image_transform_options_are_checked():
    from interpkit.data import ImageTransform

    assert ImageTransform(size=224).size == (224, 224) and ImageTransform(size=[10, 20]).size == (10, 20)
    import numpy as np

    numpy_made = ImageTransform(size=tuple(np.array([64, 48])), mean=tuple(np.full(3, 0.5, np.float32)))
    assert numpy_made.size == (64, 48) and numpy_made.mean == (0.5, 0.5, 0.5)
    for options, words in (({"mean": (0.5,)}, "mean"), ({"size": (0, 5)}, "size"), ({"std": (0, 1, 1)}, "std"),
                           ({"size": "a"}, "size"), ({"std": (1, float("nan"), 1)}, "std")):
        with pytest.raises(InputError, match=words):
            ImageTransform(**options)
