"""The report from the bundled models and data, checked in headless Chromium."""

import re
import shutil
import subprocess
import sys

import pytest

import interpkit
from interpkit.report import build_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    done = subprocess.run([sys.executable, "-m", "interpkit", "report", "--out", str(out), "--no-progress"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return out


def test_every_part_of_the_study_is_there(report):
    html = (report / "index.html").read_text()
    for anchor in ("task1", "accuracy", "best", "feature-maps", "patches", "guided", "gradcam", "top-patches", "task2"):
        assert f'id="{anchor}"' in html
    for name in ("caltech5_arch1", "caltech5_arch2", "caltech5_arch3"):
        assert f"<h3 id=\"{name}\">" in html
    assert "353,013" in html and "158,997" in html and "324,949" in html
    assert "ImageNet" in html  # the Task 2 section says what it shows instead of ImageNet VGG19
    assert 'id="vgg19_slim_caltech5"' in html and "stand-in" in html and 'id="vgg-guided"' in html
    for name in ("vgg_gradcam.png", "vgg_guided_scorpion.png", "vgg_patch_scorpion.png",
                 "confusion_vgg19_slim_caltech5_test.png"):
        assert f'src="images/{name}"' in html
    sources = re.findall(r'<img src="([^"]+)"', html)
    assert len(sources) >= 40 and all((report / s).stat().st_size > 1000 for s in sources)
    assert not list(report.rglob("*.tmp*"))
    import os

    mask = os.umask(0)
    os.umask(mask)
    assert {p.stat().st_mode & 0o777 for p in report.rglob("*") if p.is_file()} == {0o666 & ~mask}
    assert "93.0%" in html  # the study's VGG19 test accuracy, beside ours


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium; .ci/run installs it")
def test_page_in_headless_chromium(report, tmp_path):
    page = (report / "index.html").as_uri()
    dom = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'a'}", "--virtual-time-budget=10000",
                          "--enable-logging=stderr", "--v=0", "--dump-dom", page],
                         capture_output=True, text=True, timeout=120)
    counted = re.search(r'data-images="(\d+) images, (\d+) broken"', dom.stdout)
    assert counted, "the page's load handler did not run"
    assert int(counted.group(1)) >= 40 and counted.group(2) == "0"  # Task 2's images included
    console_errors = [line for line in dom.stderr.splitlines() if "CONSOLE" in line and ("Error" in line or "Uncaught" in line)]
    assert not console_errors, console_errors
    shot = tmp_path / "page.png"
    subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'b'}", "--window-size=1200,3000",
                    f"--screenshot={shot}", page], capture_output=True, timeout=120, check=True)
    from PIL import Image

    with Image.open(shot) as image:
        assert image.size == (1200, 3000)
        colours = image.convert("L").getextrema()
        assert colours[1] - colours[0] > 100  # not a blank page


def test_bad_arguments_are_one_line(tmp_path):
    for args, words in ((["--models", "nope"], "needs at least one"), (["--device", "tpu9"], "unknown device")):
        done = subprocess.run([sys.executable, "-m", "interpkit", "report", "--out", str(tmp_path), *args],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 2 and words in done.stderr and done.stderr.count("\n") == 1


@pytest.fixture
def tiny_data(tmp_path):
    """A canonical-split folder with 2 train, 1 val and 1 test image per class."""
    import json

    from interpkit.data import caltech5

    data = tmp_path / "data"
    split = {"classes": caltech5("train").classes}
    for name, per_class in (("train", 2), ("val", 1), ("test", 1)):
        source = caltech5(name)
        split[name] = []
        for c in range(5):
            for path in [p for p, label in zip(source.paths, source.labels) if label == c][:per_class]:
                target = data / path.parent.name / path.name
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(path.read_bytes())
                split[name].append(f"{path.parent.name}/{path.name}")
    (data / "split.json").write_text(json.dumps(split))
    return data


def test_two_reports_in_one_process_are_both_complete(tmp_path, tiny_data):
    for out, models in ((tmp_path / "a", ["caltech5_arch2"]), (tmp_path / "b", ["caltech5_arch2", "caltech5_arch3"])):
        html = build_report(out, models=models, data_dir=tiny_data, progress=False).read_text()
        for figure in ("images/patch_scorpion.png", "images/gradcam.png", "images/guided_scorpion.png",
                       "images/top_patches.png", "images/feature_maps_0.png", "images/faithfulness_curves.png",
                       "images/randomisation.png"):
            assert f'src="{figure}"' in html and (out / figure).exists()
        assert 'id="faithfulness"' in html
        for method in interpkit.list_explainers():  # every registered explainer has a row of scores
            assert f"<td>{method}</td>" in html


def test_vgg19_section_when_its_weights_are_installed(tmp_path, tiny_data, monkeypatch):
    """With a (random, local) ImageNet backbone and an installed head, Task 2 gets the full study."""
    import hashlib
    import json

    import torch
    import torchvision

    from interpkit.zoo import vgg

    torch.manual_seed(0)
    backbone = torchvision.models.vgg19().state_dict()
    monkeypatch.setattr(vgg, "imagenet_state_dict", lambda source: backbone)
    head = tmp_path / "vgg19_caltech5_head.pt"
    torch.save(torch.nn.Linear(4096, 5).state_dict(), head)
    head.with_suffix(".json").write_text(json.dumps({
        "sha256": hashlib.sha256(head.read_bytes()).hexdigest(),
        "transforms": {"size": [224, 224], "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
        "meta": {"categories": ["bonsai", "hawksbill", "menorah", "scorpion", "sunflower"], "metrics": {}}}))
    member = vgg.Vgg19Caltech5Weights.CALTECH5_V1.value
    monkeypatch.setattr(member, "path", head)
    try:
        page = build_report(tmp_path / "out", models=["caltech5_arch2", "vgg19_caltech5"], data_dir=tiny_data,
                            progress=False)
    finally:
        vars(member).pop("sidecar", None)  # forget the test's description of the head
    html = page.read_text()
    assert 'id="vgg19_caltech5"' in html and 'id="vgg-patches"' in html and 'id="vgg-gradcam"' in html
    assert "features.34" in html  # VGG19's last convolution, for patches and guided backprop
    assert "This section is not generated" not in html
    assert "stand-in" not in html
    for name in ("vgg_gradcam.png", "vgg_guided_scorpion.png", "vgg_patch_scorpion.png",
                 "confusion_vgg19_caltech5_test.png"):
        assert (tmp_path / "out" / "images" / name).stat().st_size > 1000
