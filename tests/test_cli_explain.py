"""``interpkit explain`` over many images loses nothing: unique names, a manifest, no overwrite,
bad images skipped, complete files only, the image's aspect ratio kept."""

import csv
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from interpkit.data import caltech5

pytestmark = pytest.mark.slow  # subprocesses of the command line and the whole report


def run(*args, cwd, timeout=300):
    return subprocess.run([sys.executable, "-m", "interpkit", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd)


@pytest.fixture
def folders(tmp_path):
    """Two folders holding images of the same file name (as Caltech's class folders do)."""
    data = caltech5("test")
    for folder, label in (("dupA", 0), ("dupB", 2)):
        (tmp_path / folder).mkdir()
        shutil.copy(data.paths[data.labels.index(label)], tmp_path / folder / "x.jpg")
    return tmp_path


def manifest(out):
    rows = json.loads((out / "manifest.json").read_text())
    with (out / "manifest.csv").open() as handle:
        assert [r["input"] for r in csv.DictReader(handle)] == [r["input"] for r in rows]
    return {r["input"]: r for r in rows}


def test_same_names_in_two_folders_get_their_own_outputs_and_a_manifest(folders):
    done = run("explain", "dupA/x.jpg", "dupB/x.jpg", "--model", "caltech5_arch2", "--target", "all", "--out", "out",
               "--no-progress", cwd=folders)
    assert done.returncode == 0, done.stderr
    out = folders / "out"
    assert len(list((out / "dupA").glob("x_gradcam_*.png"))) == 5 == len(list((out / "dupB").glob("x_gradcam_*.png")))
    assert not np.array_equal(np.load(out / "dupA" / "x_gradcam.npy"), np.load(out / "dupB" / "x_gradcam.npy"))
    rows = manifest(out)
    assert rows["dupA/x.jpg"]["predicted"] == "bonsai" and rows["dupB/x.jpg"]["predicted"] == "menorah"
    assert all(0 < r["probability"] <= 1 and r["requested"] == "all" and r["status"] == "done" for r in rows.values())
    assert all(Path(folders / f).exists() for r in rows.values() for f in r["outputs"])
    assert "2 of 2 images explained" in done.stdout


def test_existing_outputs_are_kept_unless_overwrite(folders):
    args = ("explain", "--model", "caltech5_arch2", "--out", "out", "--no-progress", "dupA/x.jpg")
    assert run(*args, cwd=folders).returncode == 0
    written = folders / "out" / "dupA" / "x_gradcam_bonsai.png"
    written.write_bytes(b"mine")  # the user's file now
    again = run(*args, "dupB/x.jpg", cwd=folders)
    assert again.returncode == 1 and "--overwrite" in again.stdout
    assert written.read_bytes() == b"mine"
    rows = manifest(folders / "out")
    assert rows["dupA/x.jpg"]["status"] == "done"  # the record of the run that wrote its files is kept
    assert rows["dupB/x.jpg"]["status"] == "done"
    assert run(*args, "--overwrite", cwd=folders).returncode == 0
    assert written.read_bytes() != b"mine"


def test_a_corrupt_image_is_reported_and_the_rest_are_done(folders):
    (folders / "dupB" / "corrupt.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    done = run("explain", "dupA/x.jpg", "dupB/corrupt.jpg", "dupB/x.jpg", "--model", "caltech5_arch2", "--out", "out",
               "--no-progress", cwd=folders)
    assert done.returncode == 1
    assert "2 of 3 images explained" in done.stdout and "failed: dupB/corrupt.jpg" in done.stdout
    rows = manifest(folders / "out")
    assert rows["dupB/corrupt.jpg"]["status"] == "failed" and "cannot read image" in rows["dupB/corrupt.jpg"]["reason"]
    assert rows["dupB/x.jpg"]["status"] == "done"


def test_a_run_that_fails_before_writing_leaves_nothing(folders):
    for args in (["--layer", "features.99"], ["--target", "zebra"], ["--method", "nope"]):
        done = run("explain", "dupA/x.jpg", "--model", "caltech5_arch2", "--out", "out", *args, cwd=folders)
        assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1
        assert not (folders / "out").exists()
    (folders / "only.jpg").write_bytes(b"garbage")
    done = run("explain", "only.jpg", "--model", "caltech5_arch2", "--out", "out", "--no-progress", cwd=folders)
    assert done.returncode == 1 and not (folders / "out").exists()


def test_messages_speak_in_flags(folders):
    done = run("explain", "dupA/x.jpg", "--model", "caltech5_arch2", "--out", "out", "--layer", "features.99",
               cwd=folders)
    assert "--layer features.99" in done.stderr and "named_modules" not in done.stderr
    done = run("explain", "dupA/x.jpg", "--model", "caltech5_arch2", "--method", "guided_backprop", "--layer",
               "features.4", "--out", "out", cwd=folders)
    assert done.returncode == 2 and "drop --layer" in done.stderr


def test_overlays_keep_the_aspect_ratio_and_patches_write_the_box_and_crop(folders):
    Image.open(folders / "dupA" / "x.jpg").convert("RGB").resize((300, 150)).save(folders / "wide.png")
    done = run("explain", "wide.png", "--model", "caltech5_arch2", "--out", "out", "--no-progress", cwd=folders)
    assert done.returncode == 0, done.stderr
    (overlay,) = (folders / "out").glob("wide_gradcam_*.png")
    assert Image.open(overlay).size == (300, 150)
    done = run("explain", "wide.png", "--model", "caltech5_arch2", "--method", "max_activating_patches", "--out",
               "patches", "--no-progress", cwd=folders)
    assert done.returncode == 0, done.stderr
    names = sorted(p.name for p in (folders / "patches").glob("*.png"))
    assert len(names) == 2 and names[0].endswith("_crop.png") is False and names[1].endswith("_crop.png")
    crop = Image.open(folders / "patches" / names[1])
    assert 0 < crop.size[0] < 300 and 0 < crop.size[1] <= 150


def test_an_interrupted_run_leaves_only_complete_files(folders):
    images = []
    for i in range(60):
        target = folders / "many" / f"img{i:02d}.jpg"
        target.parent.mkdir(exist_ok=True)
        shutil.copy(folders / "dupA" / "x.jpg", target)
        images.append(f"many/img{i:02d}.jpg")
    process = subprocess.Popen([sys.executable, "-m", "interpkit", "explain", *images, "--model", "caltech5_arch2",
                                "--method", "guided_backprop", "--out", "out", "--no-progress"], cwd=folders,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and len(list((folders / "out").rglob("*.png"))) < 3:
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    files = [p for p in (folders / "out").rglob("*") if p.is_file()]
    assert not [p for p in files if ".tmp" in p.name]
    for path in files:
        if path.suffix == ".png":
            Image.open(path).verify()
        elif path.suffix == ".npy":
            np.load(path)
    rows = manifest(folders / "out")
    done = [r for r in rows.values() if r["status"] == "done"]
    assert 0 < len(done) < 60 and all((folders / f).exists() for r in done for f in r["outputs"])


def test_file_modes_follow_the_umask(folders):
    done = run("explain", "dupA/x.jpg", "--model", "caltech5_arch2", "--out", "out", "--no-progress", cwd=folders)
    assert done.returncode == 0
    import os

    mask = os.umask(0)
    os.umask(mask)
    modes = {p.stat().st_mode & 0o777 for p in (folders / "out").rglob("*") if p.is_file()}
    assert modes == {0o666 & ~mask}  # 0644 under the usual umask, not a temporary file's 0600


def test_a_folder_stands_for_the_images_under_it(folders, monkeypatch, capsys):
    from interpkit.cli.main import main

    monkeypatch.chdir(folders)
    (folders / "dupA" / "deeper").mkdir()
    shutil.copy(folders / "dupA" / "x.jpg", folders / "dupA" / "deeper" / "y.jpg")
    assert main(["explain", "dupA", "--model", "caltech5_arch2", "--out", "out", "--no-progress"]) == 0
    rows = manifest(folders / "out")
    assert set(rows) == {"dupA/deeper/y.jpg", "dupA/x.jpg"}
    assert (folders / "out" / "dupA" / "deeper" / "y_gradcam.npy").exists()
    (folders / "empty").mkdir()
    assert main(["explain", "empty", "--model", "caltech5_arch2", "--out", "out2", "--no-progress"]) == 2
    assert "no image files under empty" in capsys.readouterr().err and not (folders / "out2").exists()


def test_output_names_are_unique_within_a_run(folders, monkeypatch):
    from interpkit.cli.main import main

    monkeypatch.chdir(folders / "dupA")
    image = Path("x.jpg").read_bytes()
    for name in ("a.b.jpg", "a.b.png", "a_b_jpg.png"):
        Path(name).write_bytes(image)
    outside = folders / "dupB" / "x.jpg"
    for overwrite in ([], ["--overwrite"]):
        out = f"out{len(overwrite)}"
        code = main(["explain", "a.b.jpg", "a.b.png", "a_b_jpg.png", "./x.jpg", str(outside), "--model",
                     "caltech5_arch2", "--out", out, "--no-progress", *overwrite])
        rows = manifest(Path(out))
        assert code == 0 and all(r["status"] == "done" for r in rows.values())
        outputs = [o for r in rows.values() for o in r["outputs"]]
        assert len(outputs) == len(set(outputs)) == 10  # an overlay and the maps per input, none shared


def test_store_mode_refuses_a_layer_for_a_method_without_one_and_bad_workers(folders, capsys):
    from interpkit.cli.main import main

    base = ["explain", "--model", "caltech5_arch2", "--data", str(folders / "dupA"), "--no-progress"]
    for extra, words in ((["--method", "guided_backprop", "--layer", "features.1"], "takes no layer"),
                         (["--workers", "-1"], "num_workers")):
        assert main([*base, "--out", str(folders / "s"), *extra]) == 2
        err = capsys.readouterr().err
        assert words in err and len(err.strip().splitlines()) == 1 and not (folders / "s").exists()


def test_overwrite_never_replaces_another_inputs_outputs_from_an_earlier_run(folders, monkeypatch):
    from interpkit.cli.main import main

    out = folders / "G"
    args = ["--model", "caltech5_arch2", "--out", str(out), "--no-progress"]
    monkeypatch.chdir(folders / "dupA")
    assert main(["explain", "x.jpg", *args]) == 0
    first = (out / "x_gradcam.npy").read_bytes()
    monkeypatch.chdir(folders / "dupB")
    assert main(["explain", "x.jpg", *args, "--overwrite"]) == 1  # same name, another image
    assert (out / "x_gradcam.npy").read_bytes() == first
    rows = {r["path"]: r for r in json.loads((out / "manifest.json").read_text())}
    assert rows[str(folders / "dupA" / "x.jpg")]["status"] == "done"
    failed = rows[str(folders / "dupB" / "x.jpg")]
    assert failed["status"] == "failed" and "output of another input" in failed["reason"]


def test_a_very_thin_image_is_explained(tmp_path, monkeypatch):
    from PIL import Image

    from interpkit.cli.main import main

    monkeypatch.chdir(tmp_path)
    Image.new("RGB", (2, 5000), (120, 30, 200)).save("thin.png")
    assert main(["explain", "thin.png", "--model", "caltech5_arch2", "--out", "o", "--no-progress"]) == 0
