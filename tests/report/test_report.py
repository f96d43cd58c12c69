"""The report from the bundled models and data, checked in headless Chromium."""

import os
import re
import shutil
import subprocess
import sys

import pytest
from tiny_split import tiny_caltech5, with_fewer_forwards

import interpkit
from interpkit import read_store
from interpkit.report import build_report

pytestmark = pytest.mark.slow  # subprocesses of the command line and the whole report

# found by PATH, else where Debian puts it: a PATH without /usr/bin must not turn the check into a skip
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or next(
    (path for path in ("/usr/bin/chromium", "/usr/lib/chromium/chromium") if os.access(path, os.X_OK)), None)
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    done = subprocess.run([sys.executable, "-m", "interpkit", "report", "--out", str(out), "--no-progress"],
                          capture_output=True, text=True, timeout=2400)  # the whole study: minutes, more beside other tests
    assert done.returncode == 0, done.stderr
    return out


def test_every_part_of_the_study_is_there(report):
    html = (report / "index.html").read_text()
    for anchor in ("task1", "accuracy", "best", "feature-maps", "patches", "guided", "gradcam", "top-patches", "task2"):
        assert f'id="{anchor}"' in html
    for name in ("caltech5_arch1", "caltech5_arch2", "caltech5_arch3"):
        assert f"<h3 id=\"{name}\">" in html
        assert f'src="images/top_patches_{name}.png"' in html  # each CNN's patches beside its visualisations
    assert "353,013" in html and "158,997" in html and "324,949" in html
    assert "ImageNet" in html  # the Task 2 section says what it shows instead of ImageNet VGG19
    assert 'id="vgg19_slim_caltech5"' in html and "stand-in" in html and 'id="vgg-guided"' in html
    for name in ("vgg_gradcam.png", "vgg_guided_scorpion.png", "vgg_patch_scorpion.png",
                 "confusion_vgg19_slim_caltech5_test.png"):
        assert f'src="images/{name}"' in html
    sources = re.findall(r'<img src="([^"]+)"', html)
    assert len(sources) >= 40 and all((report / s).stat().st_size > 1000 for s in sources)
    assert not list(report.rglob("*.tmp*"))
    mask = os.umask(0)
    os.umask(mask)
    assert {p.stat().st_mode & 0o777 for p in report.rglob("*") if p.is_file()} == {0o666 & ~mask}
    assert "93.0%" in html  # the study's VGG19 test accuracy, beside ours
    assert 'id="dataset"' in html and 'href="viewer/index.html"' in html  # the test split's viewer, linked
    assert (report / "viewer" / "index.html").is_file() and len(list((report / "viewer" / "maps" / "0").glob("*.jpg"))) == 100
    assert len(read_store(report / "test-split-store")) == 100


def test_a_reader_is_told_what_the_figures_show(report):
    html = (report / "index.html").read_text()
    contents = re.search(r'<nav class="toc".*?</nav>', html, re.S).group(0)
    anchors = set(re.findall(r'href="#([\w-]+)"', contents))
    assert anchors >= {"task1", "feature-maps", "patches", "guided", "gradcam", "faithfulness", "task2"}
    assert all(f'id="{a}"' in html for a in anchors)  # every entry leads somewhere
    text = " ".join(re.sub(r"<[^>]+>", " ", html).split())
    for metric in ("deletion", "insertion", "average drop", "faithfulness correlation", "sparseness", "complexity"):
        assert re.search(rf"{metric} \w+ / \w+, GradCAM \d+ of \d+", text), metric  # each default metric's ranks
    assert re.search(r"field of 252 x 252 pixels, larger than the image itself", text)  # the stand-in at 160 px
    assert "striped pale blue" in text and re.search(r"the \w+ image, first column", text)


@pytest.mark.skipif(CHROMIUM is None and not os.environ.get("CI"), reason="needs Debian's chromium; .ci/run installs it")
def test_page_in_headless_chromium(report, tmp_path):
    assert CHROMIUM is not None, "CI installs Debian's chromium (.ci/run); without it the page is not checked"
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
def tiny_data(tmp_path, monkeypatch):
    """A canonical-split folder with 2 train, 1 val and 1 test image per class; reports built
    from it run their explainers with fewer forwards."""
    with_fewer_forwards(monkeypatch)
    return tiny_caltech5(tmp_path / "data")


def test_two_reports_in_one_process_are_both_complete(tmp_path, tiny_data):
    """One model each and one curve metric (every explainer still scored): what one report leaves
    in the process must not change the next."""
    for out, model in ((tmp_path / "a", "caltech5_arch2"), (tmp_path / "b", "caltech5_arch3")):
        html = build_report(out, models=[model], data_dir=tiny_data, progress=False, metrics=["deletion"]).read_text()
        for figure in ("images/patch_scorpion.png", "images/gradcam.png", "images/guided_scorpion.png",
                       f"images/top_patches_{model}.png", "images/feature_maps_0.png", "images/faithfulness_curves.png",
                       "images/randomisation.png"):
            assert f'src="{figure}"' in html and (out / figure).exists()
        assert 'id="faithfulness"' in html and "one metric scores the explanations" in " ".join(html.split())
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
                            progress=False, metrics=["sparseness"])  # no metric forwards: the VGG section is tested
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


def test_weak_predicted_maps_and_ranks_are_found_from_the_numbers():
    import torch

    from interpkit.report import _empty_predictions, _ranks

    maps = torch.zeros(2, 3, 4, 4)
    maps[0, 1, 0, 0], maps[0, 2, 1, 1] = 1.0, 0.3  # row 0 predicts class 2: its map is 30% of the row's strongest
    maps[1, 0, 2, 2] = 2.0  # row 1 predicts class 0, the strongest: nothing to say
    signed = torch.tensor([[[[1.0, -1.0], [-1.0, -1.0]]], [[[1.0, 1.0], [1.0, 1.0]]]])
    found = _empty_predictions(maps, signed, torch.full((2, 3), 0.5), [2, 0], ["a", "b", "c"])
    assert [(f["image"], f["predicted"], f["share"], f["strongest"], f["positive"]) for f in found] == [
        ("a", "c", "30%", "b", "25%")]
    from interpkit.dataset.evaluation import EvaluationRow

    def row(method, **means):
        return {"method": method, "scores": {name: EvaluationRow(method, name, mean, 0.0, 5, better)
                                             for name, (mean, better) in means.items()}}

    nan = float("nan")
    rows = [row("gradcam", deletion=(0.5, "lower"), insertion=(0.6, "higher"), pearson=(nan, "higher")),
            row("other", deletion=(0.4, "lower"), insertion=(0.7, "higher"), pearson=(0.2, "higher")),
            row("third", deletion=(0.45, "lower"), insertion=(0.65, "higher"), pearson=(0.3, "higher")),
            row("blank", deletion=(0.9, "lower"), insertion=(0.1, "higher"), pearson=(nan, "higher"))]
    assert _ranks(rows) == {"deletion": {"best": "other", "worst": "blank", "gradcam": 3, "of": 4},
                            "insertion": {"best": "other", "worst": "blank", "gradcam": 3, "of": 4},
                            "pearson": {"best": "third", "worst": "other", "gradcam": None, "of": 2}}
    assert _ranks([row("gradcam", pearson=(nan, "higher"))]) == {}  # undefined everywhere: no ranking at all


def test_the_faithfulness_table_scores_the_metrics_asked_for(tmp_path, tiny_data):
    out = tmp_path / "out"
    html = build_report(out, models=["caltech5_arch2"], data_dir=tiny_data, progress=False,
                        metrics=(m for m in ["sparseness", "effective_complexity", "sparseness"])).read_text()  # read once
    table = re.search(r'id="faithfulness".*?</table>', html, re.S).group(0)
    headers = re.findall(r"<th>([^<]*)</th>", table)
    assert headers == ["explainer", "sparseness &uarr;", "effective complexity &darr;"]  # each once, in order
    assert "deletion" not in table and not (out / "images" / "faithfulness_curves.png").exists()
    gradcam = re.search(r"<td>gradcam</td>(.*?)</tr>", table).group(1)
    assert len(re.findall(r'<td class="num">[-0-9.]+', gradcam)) == 2


def test_bad_report_metrics_are_refused_before_anything_is_written(tmp_path):
    out = tmp_path / "never"
    for metrics, words in ((["nope"], "nope"), (["pointing_game"], "masks"), ("deletion", "at least one"),
                           ([["deletion"]], "at least one"),
                           ([], "at least one")):
        with pytest.raises(interpkit.InterpkitError, match=words):
            build_report(out, models=["caltech5_arch2"], metrics=metrics, progress=False)
    assert not out.exists()
    done = subprocess.run([sys.executable, "-m", "interpkit", "report", "--out", str(out), "--metrics", "deletion,nope"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "nope" in done.stderr and done.stderr.count("\n") == 1 and not out.exists()


def test_the_report_help_names_the_default_metrics():
    from interpkit.cli.main import build_parser
    from interpkit.report import REPORT_METRICS

    report = next(a for a in build_parser()._subparsers._group_actions[0].choices.values() if a.prog.endswith("report"))
    help_text = " ".join(next(a.help for a in report._actions if a.dest == "metrics").split())
    assert all(name in help_text for name in REPORT_METRICS)


def test_a_folder_of_the_users_is_refused_and_an_earlier_reports_is_taken(tmp_path):
    """The report removed ``viewer/`` and ``test-split-store/`` and replaced ``index.html`` in any
    folder it was given: a folder holding the user's own files lost them."""
    from interpkit.report import MARKER, claim_folder

    mine = tmp_path / "mine"
    (mine / "viewer").mkdir(parents=True)
    (mine / "viewer" / "notes.txt").write_text("keep me")
    with pytest.raises(interpkit.InputError, match="not an interpkit report"):
        build_report(mine, models=["caltech5_arch2"], progress=False)
    assert (mine / "viewer" / "notes.txt").read_text() == "keep me" and not (mine / MARKER).exists()
    done = subprocess.run([sys.executable, "-m", "interpkit", "report", "--out", str(mine)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "not an interpkit report" in done.stderr and done.stderr.count("\n") == 1
    fresh = tmp_path / "fresh"
    claim_folder(fresh)
    (fresh / "index.html").write_text("an earlier page")
    claim_folder(fresh)  # a rerun into its own folder
    with pytest.raises(interpkit.InputError, match="is a file"):
        claim_folder(fresh / "index.html")


def test_data_whose_classes_are_not_the_models_in_order_is_refused_before_writing(tmp_path, tiny_data):
    """The split's labels index its own class list: listed in another order, every accuracy and
    confusion matrix was silently of other classes."""
    import json

    split = json.loads((tiny_data / "split.json").read_text())
    split["classes"] = split["classes"][::-1]
    (tiny_data / "split.json").write_text(json.dumps(split))
    with pytest.raises(interpkit.InputError, match="not caltech5_arch2's .* in its output order"):
        build_report(tmp_path / "out", models=["caltech5_arch2"], data_dir=tiny_data, progress=False)
    assert not (tmp_path / "out").exists()
