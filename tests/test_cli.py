"""The command line: every command, and bad input as exit code 2 with one line."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import interpkit
from interpkit import __version__
from interpkit.data import caltech5

pytestmark = pytest.mark.slow  # subprocesses of the command line and the whole report


def run(*args, timeout=300, cwd=None):
    return subprocess.run([sys.executable, "-m", "interpkit", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd)


def test_version_and_help():
    assert run("--version").stdout.strip() == f"interpkit {__version__}"
    for command in ("report", "explain", "train", "zoo", "plugins"):
        done = run(command, "--help")
        assert done.returncode == 0 and "usage: interpkit" in done.stdout


def test_zoo_and_plugins():
    zoo = run("zoo").stdout
    assert "caltech5_arch2" in zoo and "val" in zoo and "vgg19_caltech5" in zoo and "no bundled weights" in zoo
    plugins = run("plugins").stdout
    assert "gradcam" in plugins and "guided_backprop" in plugins and "caltech5_arch1" in plugins


@pytest.fixture
def image_files(tmp_path):
    data = caltech5("test")
    sunflower = data.paths[data.labels.index(4)]
    gray = tmp_path / "gray16.png"
    Image.fromarray((np.arange(64 * 48, dtype=np.uint16).reshape(64, 48) * 20)).save(gray)
    rgba = tmp_path / "rgba.png"
    Image.new("RGBA", (50, 40), (200, 10, 10, 128)).save(rgba)
    cmyk = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (40, 30), (10, 200, 30, 0)).save(cmyk)
    return [sunflower, gray, rgba, cmyk]


@pytest.mark.parametrize("method, extra", [("gradcam", ["--target", "all"]), ("guided_backprop", ["--target", "sunflower"]),
                                           ("max_activating_patches", ["--layer", "features.7"])])
def test_explain_writes_overlays_and_raw_maps(tmp_path, image_files, method, extra):
    out = tmp_path / "out"
    done = run("explain", *image_files, "--model", "caltech5_arch2", "--method", method, *extra, "--out", out)
    assert done.returncode == 0, done.stderr
    assert len(list(out.rglob("*.png"))) >= len(image_files)
    assert len(list(out.rglob("*.npy"))) == len(image_files)
    if method == "gradcam":
        assert len(list(out.rglob(f"{Path(image_files[0]).stem}_gradcam_menorah.png"))) == 1


def test_feature_maps_command_draws_each_layer(tmp_path, image_files):
    out = tmp_path / "out"
    done = run("feature-maps", image_files[0], "--model", "caltech5_arch2", "--layers", "features.1,features.4",
               "--out", out)
    assert done.returncode == 0, done.stderr
    stem = Path(image_files[0]).stem
    assert {p.name for p in out.iterdir()} == {f"{stem}_feature_maps_features.{i}.{ext}" for i in (1, 4)
                                                for ext in ("png", "npy")}
    assert np.load(out / f"{stem}_feature_maps_features.4.npy").shape == (1, 16, 27, 27)


def test_feature_maps_refuses_an_empty_layer_list(tmp_path, image_files):
    done = run("feature-maps", image_files[0], "--model", "caltech5_arch2", "--layers", ",", "--out", tmp_path / "f")
    assert done.returncode == 2 and "--layers" in done.stderr and not (tmp_path / "f").exists()


def test_feature_maps_refuses_a_layer_without_maps_before_writing(tmp_path, image_files, capsys):
    """A classifier among the layers was found while drawing, after the first layer's files were written."""
    from interpkit.cli.main import main

    out = tmp_path / "f"
    assert main(["feature-maps", str(image_files[0]), "--model", "caltech5_arch2", "--layers", "features.1,classifier",
                 "--out", str(out)]) == 2
    assert "layer 'classifier'" in capsys.readouterr().err and not out.exists()


def test_explain_from_a_trained_checkpoint(tmp_path, image_files):
    weights = interpkit.get_weights("caltech5_arch3").value.path
    done = run("explain", image_files[0], "--checkpoint", weights, "--out", tmp_path)
    assert done.returncode == 0, done.stderr


BAD = [
    (["explain", "missing.jpg", "--model", "caltech5_arch2", "--out", "o"], "not found"),
    (["explain", "{image}", "--model", "resnet9000", "--out", "o"], "no model named"),
    (["explain", "{image}", "--model", "caltech5_arch2", "--method", "nope", "--out", "o"], "no explainer named"),
    (["explain", "{image}", "--model", "caltech5_arch2", "--layer", "features.77", "--out", "o"],
     "--layer features.77: the model has no such layer"),
    (["explain", "{image}", "--model", "caltech5_arch2", "--target", "9", "--out", "o"], "out of range"),
    (["explain", "{image}", "--model", "caltech5_arch2", "--target", "zebra", "--out", "o"], "unknown target"),
    (["explain", "{image}", "--checkpoint", "{broken}", "--out", "o"], "missing"),
    (["explain", "{image}", "--out", "o"], "one of the arguments"),
    (["frobnicate"], "invalid choice"),
    (["explain", "{image}", "--model", "caltech5_arch2", "--device", "tpu9", "--out", "o"], "unknown device"),
    (["explain", "{image}", "--model", "caltech5_arch2", "--device", "gpu", "--out", "o"], "did you mean 'cuda'"),
    (["explain", "{image}", "--model", "caltech5_arch2", "--device", "meta", "--out", "o"], "meta device"),
]


@pytest.mark.parametrize("args, words", BAD)
def test_bad_input_exits_2_with_one_line(tmp_path, image_files, args, words):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"garbage")
    args = [a.format(image=image_files[0], broken=broken) for a in args]
    done = run(*args, cwd=tmp_path)  # relative outputs land in the test's folder
    assert not (tmp_path / "o").exists()  # nothing is left behind by a run refused before it wrote
    assert done.returncode == 2, done.stderr
    assert words in done.stderr
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_evaluate_writes_the_table_as_csv_and_json(tmp_path):
    import csv
    import json

    out = tmp_path / "eval"
    done = run("evaluate", "--model", "caltech5_arch2", "--methods", "gradcam,guided_backprop", "--metrics",
               "deletion,insertion", "--limit", "4", "--batch-size", "2", "--out", out, "--no-progress")
    assert done.returncode == 0, done.stderr
    rows = json.loads((out / "evaluation.json").read_text())
    assert [(r["method"], r["metric"]) for r in rows] == [("gradcam", "deletion"), ("gradcam", "insertion"),
                                                          ("guided_backprop", "deletion"),
                                                          ("guided_backprop", "insertion")]
    assert all(r["n"] == 4 and 0 <= r["mean"] <= 1 for r in rows)
    assert [r["better"] for r in rows] == ["lower", "higher", "lower", "higher"]
    with (out / "evaluation.csv").open() as handle:
        assert [row["metric"] for row in csv.DictReader(handle)] == [r["metric"] for r in rows]
    assert "guided_backprop" in done.stdout and "4 images (0 unreadable" in done.stdout


@pytest.mark.parametrize("args, words", [
    (["--metrics", "delition"], "did you mean 'deletion'"),
    (["--metrics", "pointing_game"], "masks"),
    (["--methods", "gradkam"], "did you mean 'gradcam'"),
    (["--limit", "0"], "--limit"),
    (["--batch-size", "0"], "--batch-size"),
    (["--methods", ""], "at least one method"),
    (["--images", "nowhere"], "not a folder"),
])
def test_evaluate_bad_input_exits_2(tmp_path, args, words):
    done = run("evaluate", "--model", "caltech5_arch2", "--limit", "2", "--out", tmp_path / "e", *args)
    assert done.returncode == 2 and words in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "e").exists()


def test_evaluate_images_skips_a_broken_image_and_explains_outputs(tmp_path, capsys):
    import json
    import shutil

    from interpkit.cli.main import main
    from interpkit.data import bundled_root

    folder = tmp_path / "images"
    folder.mkdir()
    for image in sorted((bundled_root() / "bonsai").glob("*.jpg"))[:2]:
        shutil.copy(image, folder / image.name)
    (folder / "broken.jpg").write_bytes(b"garbage")
    assert main(["explain", str(folder / "image_0001.jpg"), "--model", "caltech5_arch2", "--out", str(folder / "out"),
                 "--no-progress"]) == 0  # its overlays are not images to evaluate
    assert main(["evaluate", "--model", "caltech5_arch2", "--images", str(folder), "--methods", "gradcam", "--metrics",
                 "deletion", "--out", str(tmp_path / "e"), "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert "skipped:" in captured.err and "broken.jpg" in captured.err
    assert json.loads((tmp_path / "e" / "evaluation.json").read_text())[0]["n"] == 2


@pytest.mark.parametrize("delay", [0.3, 1.0])
def test_ctrl_c_while_starting_ends_with_one_line_and_130(tmp_path, delay):
    import signal
    import time

    script = Path(sys.executable).parent / "interpkit"
    process = subprocess.Popen([str(script), "zoo"], stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                               cwd=tmp_path)
    time.sleep(delay)  # torch and interpkit are still importing
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    if process.returncode == 0:
        pytest.fail("the command finished before the interrupt; the test needs a slower start")
    assert process.returncode == 130 and err.strip() == "interpkit: interrupted", err


def test_visualise_writes_images_and_a_contact_sheet(tmp_path):
    done = run("visualise", "--model", "caltech5_arch1", "--layer", "features.4", "--channels", "0-2,5", "--size", "32",
               "--steps", "3", "--out", tmp_path / "vis", "--no-progress")
    assert done.returncode == 0, done.stderr
    names = sorted(p.name for p in (tmp_path / "vis").iterdir())
    assert names == ["contact_sheet.png", "unit_000.png", "unit_001.png", "unit_002.png", "unit_003.png"]
    image = np.asarray(Image.open(tmp_path / "vis" / "unit_000.png"))
    assert image.shape == (32, 32, 3)
    for bad in (["--channels", "4-2"], ["--channels", "0,99"], ["--channels", "a"], ["--layer", "features.44"]):
        args = {"--layer": "features.4", "--channels": "0", **dict(zip(bad[::2], bad[1::2]))}
        failed = run("visualise", "--model", "caltech5_arch1", *[x for kv in args.items() for x in kv], "--steps", "1",
                     "--out", tmp_path / "bad", "--no-progress")
        assert failed.returncode == 2 and failed.stderr.count("\n") == 1 and "Traceback" not in failed.stderr, bad


def test_running_out_of_memory_is_one_line_and_other_errors_stay_tracebacks(monkeypatch, capsys):
    """``visualise --size 100000`` asked torch's allocator for 240 GB: its RuntimeError was a traceback."""
    from interpkit.cli import commands
    from interpkit.cli.main import main

    def asks_too_much(*args, **kwargs):
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 240004800000 bytes.")

    monkeypatch.setattr(commands, "visualise_channels", asks_too_much)
    arguments = ["visualise", "--model", "caltech5_arch1", "--layer", "features.0", "--channels", "0", "--out", "never",
                 "--size", "100000"]
    assert main(arguments) == 2
    error = capsys.readouterr().err
    assert error.startswith("interpkit: error: out of memory") and error.count("\n") == 1

    def fails(*args, **kwargs):
        raise RuntimeError("a bug of interpkit's: its traceback must show")

    monkeypatch.setattr(commands, "visualise_channels", fails)
    with pytest.raises(RuntimeError, match="a bug"):
        main(arguments)


def test_weights_whose_description_names_another_model_are_refused(tmp_path):
    """The description's sha256 matched its weights, so only ``load_state_dict`` saw the mismatch,
    as a traceback."""
    import json
    import shutil

    from interpkit.cli.commands import load_model

    bundled = Path(interpkit.__file__).parent / "zoo" / "weights"
    shutil.copy(bundled / "caltech5_arch1.pt", tmp_path / "m.pt")
    description = json.loads((bundled / "caltech5_arch1.json").read_text())
    description["meta"]["model"] = "caltech5_arch2"
    (tmp_path / "m.json").write_text(json.dumps(description))
    with pytest.raises(interpkit.WeightsError, match="does not fit caltech5_arch2"):
        load_model(None, str(tmp_path / "m.pt"), "cpu")


@pytest.mark.parametrize("mine", [
    {"manifest.json": '{"project": "my dataset"}', "manifest.csv": "id,file\n1,a.jpg\n"},
    {"manifest.csv": "id,file\n1,a.jpg\n"},
    {"manifest.json": '[{"input": "a.jpg", "status": "done", "predicted": "x", "probability": 1, "requested": "top-1", '
                      '"outputs": 7, "reason": ""}]'},  # damaged: outputs is no list
])
def test_explain_keeps_a_manifest_it_did_not_write_unless_overwrite(tmp_path, image_files, capsys, mine):
    """Files named manifest.json or manifest.csv that interpkit did not write were replaced without
    --overwrite, and a damaged one of its own (outputs not a list) crashed with a TypeError."""
    from interpkit.cli.main import main

    out = tmp_path / "out"
    out.mkdir()
    for name, text in mine.items():
        (out / name).write_text(text)
    arguments = ["explain", str(image_files[0]), "--model", "caltech5_arch2", "--out", str(out), "--no-progress"]
    assert main(arguments) == 2
    error = capsys.readouterr().err
    assert "is not a manifest interpkit explain wrote" in error and error.count("\n") == 1
    assert all((out / name).read_text() == text for name, text in mine.items())
    assert main([*arguments, "--overwrite"]) == 0
    assert json.loads((out / "manifest.json").read_text())[0]["status"] == "done"


def test_feature_maps_writes_nothing_for_bad_input_and_keeps_inputs_named_alike_apart(tmp_path, image_files, capsys):
    """It made --out and drew the first image before reading the second (a corrupt one: exit 2
    with files left), and ``a/x.jpg`` and ``b/x.jpg`` wrote the same names (two figures lost)."""
    from interpkit.cli.main import main

    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    out = tmp_path / "maps"
    for extra in ([str(corrupt)], ["--layers", "nope"]):
        assert main(["feature-maps", str(image_files[0]), *extra, "--model", "caltech5_arch1", "--out", str(out)]) == 2
        assert not out.exists() and capsys.readouterr().err.count("\n") == 1
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        Image.open(image_files[0]).convert("RGB").save(tmp_path / folder / "x.jpg")
    assert main(["feature-maps", str(tmp_path / "a" / "x.jpg"), str(tmp_path / "b" / "x.jpg"), "--model",
                 "caltech5_arch1", "--layers", "features.0", "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "x-2_feature_maps_features.0.npy", "x-2_feature_maps_features.0.png", "x_feature_maps_features.0.npy",
        "x_feature_maps_features.0.png"]


def test_view_refuses_a_bad_port_before_writing_the_viewer(tmp_path, capsys):
    from interpkit.cli.main import main

    out = tmp_path / "viewer"
    assert main(["view", str(tmp_path / "store"), "--out", str(out), "--serve", "--port", "99999"]) == 2
    assert "port must be" in capsys.readouterr().err and not out.exists()


def _contents(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.mark.parametrize("command", [
    ["visualise", "--model", "caltech5_arch1", "--layer", "features.1", "--channels", "0-1", "--size", "16",
     "--steps", "1", "--no-progress"],
    ["evaluate", "--model", "caltech5_arch2", "--methods", "gradcam", "--metrics", "deletion", "--limit", "1",
     "--no-progress"],
    ["feature-maps", "IMAGE", "--model", "caltech5_arch2", "--layers", "features.1"],
])
def test_commands_refuse_to_replace_an_earlier_run_without_overwrite(tmp_path, image_files, capsys, command):
    """visualise, evaluate and feature-maps replaced the files of an earlier run without a word."""
    from interpkit.cli.main import main

    out = tmp_path / "out"
    command = [str(image_files[0]) if part == "IMAGE" else part for part in command] + ["--out", str(out)]
    assert main(command) == 0
    before = _contents(out)
    capsys.readouterr()
    assert main(command) == 2
    err = capsys.readouterr().err
    assert "--overwrite" in err and err.count("\n") == 1 and _contents(out) == before
    assert main([*command, "--overwrite"]) == 0
    assert set(_contents(out)) == set(before)


def test_visualise_overwrite_leaves_no_units_of_the_earlier_run(tmp_path):
    from interpkit.cli.main import main

    command = ["visualise", "--model", "caltech5_arch1", "--layer", "features.1", "--size", "16", "--steps", "1",
               "--no-progress", "--out", str(tmp_path), "--overwrite"]
    (tmp_path / "notes.txt").write_text("mine")
    assert main([*command, "--channels", "0-2"]) == 0
    assert main([*command, "--channels", "4"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["contact_sheet.png", "notes.txt", "unit_000.png"]
