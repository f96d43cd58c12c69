"""The viewer: its site written from stores of the bundled Caltech split, then driven in Debian's
chromium through selenium (filters, sorting, detail pixels, two stores, the address's state)."""

import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import interpkit
from interpkit import GradCAM, get_model, read_store
from interpkit.dataset.run import explain_dataset
from interpkit.viewer import concentration, site, viewer_server, write_site
from interpkit.viz.images import overlay_maps

DOCS_IMAGES = Path(__file__).resolve().parents[2] / "docs" / "images"
CHROMEDRIVER = shutil.which("chromedriver") or ("/usr/bin/chromedriver" if os.access("/usr/bin/chromedriver", os.X_OK)
                                                 else None)


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """GradCAM of two zoo models over the bundled test split (100 images), with deletion scores."""
    root = tmp_path_factory.mktemp("stores")
    made = []
    for name in ("caltech5_arch1", "caltech5_arch2"):
        explain_dataset(GradCAM(get_model(name, weights="DEFAULT")), "caltech5:test", root / name,
                        metrics=["deletion"], progress=False)
        made.append(root / name)
    return made


@pytest.fixture(scope="module")
def viewer(stores, tmp_path_factory):
    out = tmp_path_factory.mktemp("viewer") / "site"
    return write_site(stores, out, progress=False)


def _overlay(store, index):
    """viz's overlay of the stored first map over the sample's image at the map's size."""
    maps = store.maps[index:index + 1, :1]
    picture = cv2.imread(store.files[index], cv2.IMREAD_COLOR)
    picture = cv2.cvtColor(cv2.resize(picture, maps.shape[-1:-3:-1], interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)
    return overlay_maps(torch.from_numpy(np.array(maps)), picture[None])[0, 0]


def test_site_files_and_columns(stores, viewer):
    out = viewer.parent
    first = read_store(stores[0])
    assert viewer.name == "index.html" and (out / "viewer.js").is_file()
    assert len(list((out / "maps" / "1").glob("*.jpg"))) == len(first) == 100
    text = (out / "data" / "store-0.js").read_text()
    columns = json.loads(text[text.index("(") + 1:text.rindex(")")])["columns"]
    assert columns["prediction"] == first.array("predictions").tolist()
    np.testing.assert_allclose(columns["metric:deletion"], first.metric("deletion"), rtol=1e-5)
    written = cv2.cvtColor(cv2.imread(str(out / "maps" / "0" / "000007.jpg")), cv2.COLOR_BGR2RGB)
    assert np.abs(written.astype(int) - _overlay(first, 7).astype(int)).mean() < 2.5


def test_concentration_of_flat_peaked_and_failed_maps():
    flat, peaked, failed = np.ones((10, 10)), np.zeros((10, 10)), np.full((10, 10), np.nan)
    peaked[2, 3] = 5.0
    values = concentration(np.stack([flat, peaked, failed]))
    assert values[0] == pytest.approx(0.1) and values[1] == pytest.approx(1.0) and np.isnan(values[2])


def test_rerun_renders_only_what_changed(stores, tmp_path, monkeypatch):
    out = tmp_path / "site"
    write_site(stores[:1], out, progress=False)
    written = []
    original = site._write_jpeg
    monkeypatch.setattr(site, "_write_jpeg", lambda path, rgb: (written.append(path), original(path, rgb)))
    write_site(stores[:1], out, progress=False)
    assert written == []
    (out / "maps" / "0" / "000005.jpg").unlink()
    (out / "index.html").unlink()  # as an interrupted run leaves it: resumed, not refused
    write_site(stores[:1], out, progress=False)
    assert [p.name for p in written] == ["000005.jpg", "000005.jpg"]  # the image and its map


def test_a_grown_store_renders_its_new_samples_only(tmp_path, monkeypatch):
    source = Path(read_store_files_root())
    folder = tmp_path / "images" / "bonsai"
    folder.mkdir(parents=True)
    files = sorted((source / "bonsai").glob("*.jpg"))[:8]
    for file in files[:5]:
        shutil.copy(file, folder / file.name)
    model = get_model("caltech5_arch2", weights="DEFAULT")
    explain_dataset(GradCAM(model), tmp_path / "images", tmp_path / "small", progress=False)
    write_site([tmp_path / "small"], tmp_path / "site", progress=False)
    for file in files[5:]:
        shutil.copy(file, folder / file.name)  # later names: the old samples keep their indices
    explain_dataset(GradCAM(model), tmp_path / "images", tmp_path / "grown", progress=False)
    written = []
    original = site._write_jpeg
    monkeypatch.setattr(site, "_write_jpeg", lambda path, rgb: (written.append(path.name), original(path, rgb)))
    write_site([tmp_path / "grown"], tmp_path / "site", progress=False)
    assert sorted(set(written)) == ["000005.jpg", "000006.jpg", "000007.jpg"]


def read_store_files_root():
    return Path(interpkit.data.__file__).parent / "caltech5"


def test_bad_input_leaves_nothing_half_written(stores, tmp_path):
    with pytest.raises(interpkit.InputError, match="no interpkit store"):
        write_site([tmp_path], tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()
    with pytest.raises(interpkit.InputError, match="at least one store"):
        write_site([], tmp_path / "out", progress=False)
    cropped = tmp_path / "cropped"
    shutil.copytree(stores[0], cropped)
    manifest = json.loads((cropped / "manifest.json").read_text())
    manifest["dataset"]["files"] = manifest["dataset"]["files"][::-1]
    (cropped / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(interpkit.InputError, match="same samples"):
        write_site([stores[0], cropped], tmp_path / "out", progress=False)
    partial = tmp_path / "partial"
    shutil.copytree(stores[0], partial)
    next((partial / "shards").iterdir()).joinpath("maps.npy").unlink()  # a shard being written now
    with pytest.raises(interpkit.InputError, match="incomplete|missing"):
        write_site([partial], tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    with pytest.raises(interpkit.InputError, match="not empty"):
        write_site(stores[:1], busy, progress=False)
    assert [p.name for p in busy.iterdir()] == ["notes.txt"]


def test_cli_view_writes_and_refuses_in_one_line(stores, tmp_path):
    run = [sys.executable, "-m", "interpkit", "view"]
    done = subprocess.run(run + [str(stores[0]), "--out", str(tmp_path / "site"), "--no-progress"],
                          capture_output=True, text=True)
    assert done.returncode == 0 and (tmp_path / "site" / "index.html").is_file(), done.stderr
    bad = subprocess.run(run + [str(tmp_path), "--out", str(tmp_path / "other")], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "no interpkit store" in bad.stderr
    served = subprocess.run(run + ["--serve", "--out", str(tmp_path / "nothing")], capture_output=True, text=True)
    assert served.returncode == 2 and "holds no viewer" in served.stderr


@pytest.fixture(scope="module")
def browser():
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is in interpkit's [test] extra")
    from selenium.webdriver.chrome.service import Service

    if CHROMEDRIVER is None and not os.environ.get("CI"):
        pytest.skip("needs Debian's chromium-driver; .ci/run installs it")
    assert CHROMEDRIVER is not None, "CI installs Debian's chromium and chromium-driver (.ci/run)"
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--window-size=1200,900"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def _shown(driver):
    return [int(i) for i in driver.execute_script(
        "return [...document.querySelectorAll('#grid .card:not([hidden])')].map(c => c.dataset.index)")]


def _choose(driver, control, value):
    from selenium.webdriver.support.ui import Select

    Select(driver.find_element("id", control)).select_by_value(value)


def _detail_pixels(driver, store):
    """The RGB pixels of the detail view's image of ``store``, decoded by the browser."""
    return np.array(driver.execute_script("""
        const image = document.querySelector(`#detail-panels img[data-store="${arguments[0]}"]`);
        const canvas = document.createElement('canvas');
        canvas.width = image.naturalWidth; canvas.height = image.naturalHeight;
        const context = canvas.getContext('2d');
        context.drawImage(image, 0, 0);
        const data = context.getImageData(0, 0, canvas.width, canvas.height).data;
        return [canvas.height, canvas.width, Array.from(data)];""", store)[2], dtype=np.uint8)


def _screenshot(driver, name, tmp_path):
    target = DOCS_IMAGES if os.environ.get("INTERPKIT_DOCS_SCREENSHOTS") else tmp_path
    path = target / name
    assert driver.save_screenshot(str(path)) and path.stat().st_size > 10_000


def test_the_page_in_chromium(stores, viewer, browser, tmp_path):
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    first, second = read_store(stores[0]), read_store(stores[1])
    browser.get(viewer.as_uri())
    WebDriverWait(browser, 20).until(lambda d: len(_shown(d)) == 100)
    assert browser.find_element("id", "count").text == "100 of 100 samples"
    assert len(browser.find_elements("css selector", "#grid .card[data-index]")) == 100
    # lazy: far below the fold nothing is loaded yet
    loaded = browser.execute_script(
        "return [...document.querySelectorAll('#grid img')].filter(i => i.complete && i.naturalWidth > 0).length")
    assert loaded < 100
    _screenshot(browser, "viewer-grid.png", tmp_path)

    labels, predictions = first.array("labels"), first.array("predictions")
    valid = first.array("valid").astype(bool)
    _choose(browser, "correct", "wrong")
    assert sorted(_shown(browser)) == np.flatnonzero(valid & (labels != predictions)).tolist()
    _choose(browser, "correct", "all")

    deletion = first.metric("deletion")
    _choose(browser, "sort", "0:metric:deletion")
    assert _shown(browser) == np.argsort(deletion, kind="stable").tolist()
    _choose(browser, "direction", "desc")
    assert _shown(browser) == np.argsort(-deletion, kind="stable").tolist()

    index = _shown(browser)[3]
    browser.find_element("css selector", f'#grid .card[data-index="{index}"]').click()
    WebDriverWait(browser, 10).until(lambda d: d.find_element("id", "detail").is_displayed())
    file_address = browser.current_url
    assert [e for e in browser.get_log("browser") if e["level"] == "SEVERE"] == []  # none from file:// either
    browser.get("about:blank")
    browser.get(file_address)  # the address restores the view from disk too
    WebDriverWait(browser, 20).until(lambda d: d.find_element("id", "detail").is_displayed())
    assert browser.execute_script("return viewer.detail") == index
    # a canvas cannot read file:// pixels (cross-origin): the same view over `interpkit view --serve`'s server
    server = viewer_server(viewer.parent, 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    browser.get(f"http://127.0.0.1:{server.server_address[1]}/index.html{file_address[file_address.index('#'):]}")
    WebDriverWait(browser, 10).until(lambda d: d.execute_script(
        "return [...document.querySelectorAll('#detail-panels img')].every(i => i.complete && i.naturalWidth > 0)"))
    for number, store in enumerate((first, second)):
        pixels = _detail_pixels(browser, str(number)).reshape(224, 224, 4)[..., :3].astype(int)
        assert np.abs(pixels - _overlay(store, index).astype(int)).mean() < 2.5
        assert np.abs(pixels - _overlay(store, (index + 1) % 100).astype(int)).mean() > 10  # the comparison can fail
    indices = browser.execute_script(
        "return [...document.querySelectorAll('#detail-panels img')].map(i => [i.dataset.store, i.dataset.index])")
    assert indices == [["image", str(index)], ["0", str(index)], ["1", str(index)]]  # side by side, one index
    rows = {row.find_elements("tag name", "td")[0].text: [c.text for c in row.find_elements("tag name", "td")[1:]]
            for row in browser.find_elements("css selector", "#detail-values tr")[1:]}
    assert rows["target"] == [first.classes[first.array("targets")[index, 0]], second.classes[second.array("targets")[index, 0]]]
    assert rows["prediction"] == [first.classes[first.array("predictions")[index]],
                                  second.classes[second.array("predictions")[index]]]
    headers = [c.text for c in browser.find_elements("css selector", "#detail-values th")]
    assert headers[1].startswith("caltech5_arch1 (gradcam") and headers[2].startswith("caltech5_arch2 (gradcam")
    _screenshot(browser, "viewer-detail.png", tmp_path)

    shown = _shown(browser)
    browser.find_element("tag name", "body").send_keys(Keys.ARROW_RIGHT)
    assert browser.execute_script("return viewer.detail") == shown[shown.index(index) + 1]
    address = browser.current_url
    assert "detail=" in address and "sort=0%3Ametric%3Adeletion" in address and "direction=desc" in address
    browser.find_element("tag name", "body").send_keys(Keys.ESCAPE)
    assert not browser.find_element("id", "detail").is_displayed()

    browser.get("about:blank")
    browser.get(address)  # the shared address restores the view
    WebDriverWait(browser, 20).until(lambda d: d.find_element("id", "detail").is_displayed())
    assert _shown(browser) == shown
    assert browser.execute_script("return viewer.detail") == shown[shown.index(index) + 1]
    errors = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert errors == []
    server.shutdown()
    server.server_close()


def test_a_shard_where_every_sample_failed_and_data_without_files(tmp_path):
    """Shards of (n, 0) maps (every sample failed) are drawn blank and marked failed; data that
    is not files gets grey images."""
    from interpkit.dataset.store import FORMAT, write_shard

    root = tmp_path / "store"
    root.mkdir()
    manifest = {"format": FORMAT, "dataset": {"length": 4}, "shard_size": 2, "metrics": [],
                "explainer": {"name": "gradcam"}, "model": {"class": "Net"}}
    (root / "manifest.json").write_text(json.dumps(manifest))
    good = {"maps": np.random.default_rng(0).random((2, 1, 8, 8), dtype=np.float32), "targets": np.zeros((2, 1), int),
            "scores": np.ones((2, 1), np.float32), "predictions": np.array([0, 1]), "probabilities": np.array([0.9, 0.8]),
            "labels": np.array([0, 0]), "valid": np.array([True, True])}
    failed = {"maps": np.zeros((2, 0), np.float32), "targets": np.zeros((2, 0), int), "scores": np.zeros((2, 0), np.float32),
              "predictions": np.array([-1, -1]), "probabilities": np.array([np.nan, np.nan]), "labels": np.array([1, 1]),
              "valid": np.array([False, False])}
    write_shard(root, 0, 2, good, [])
    write_shard(root, 2, 4, failed, [{"index": 2, "reason": "unreadable"}, {"index": 3, "reason": "unreadable"}])
    page = write_site([root], tmp_path / "site", progress=False)
    text = (page.parent / "data" / "store-0.js").read_text()
    columns = json.loads(text[text.index("(") + 1:text.rindex(")")])["columns"]
    assert columns["valid"] == [True, True, False, False] and columns["failure"]["3"] == "unreadable"
    assert columns["concentration"][2] is None and columns["prediction"][2] is None
    grey = cv2.imread(str(page.parent / "images" / "000000.jpg"))
    assert grey.shape == (8, 8, 3) and np.abs(grey.astype(int) - 128).max() <= 2
    assert cv2.imread(str(page.parent / "maps" / "0" / "000003.jpg")).shape == (224, 224, 3)


def test_an_interrupted_run_leaves_nothing_a_rerun_trusts(stores, tmp_path, monkeypatch):
    """Another store drawn into the same folder fails halfway; the first store's rerun draws its
    own maps again instead of trusting the record of its earlier run."""
    fresh = write_site(stores[:1], tmp_path / "fresh", progress=False).parent
    out = tmp_path / "site"
    write_site(stores[:1], out, progress=False)
    original, calls = site._write_jpeg, []

    def failing(path, rgb):
        calls.append(path)
        if len(calls) == 20:
            raise OSError("disk full")
        original(path, rgb)

    monkeypatch.setattr(site, "_write_jpeg", failing)
    with pytest.raises(OSError, match="disk full"):
        write_site(stores[1:], out, progress=False)
    monkeypatch.setattr(site, "_write_jpeg", original)
    write_site(stores[:1], out, progress=False)
    for picture in sorted((fresh / "maps" / "0").glob("*.jpg")):
        assert (out / "maps" / "0" / picture.name).read_bytes() == picture.read_bytes(), picture.name
    assert not list(out.rglob("*.tmp"))


def _tensor_store(path, seed):
    from torch.utils.data import TensorDataset

    generator = torch.Generator().manual_seed(seed)
    data = TensorDataset(torch.randn(6, 3, 16, 16, generator=generator), torch.zeros(6, dtype=torch.long))
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                                torch.nn.Flatten(), torch.nn.Linear(4, 3)).eval()
    explain_dataset(GradCAM(model), data, path, progress=False)
    return path


def test_data_without_files_is_told_apart_by_its_samples_hash(tmp_path, monkeypatch):
    """Two tensor datasets of the same length cannot be told apart sample by sample, only by the
    hash of their samples: the second store's maps are drawn, not the first's kept."""
    first, second = _tensor_store(tmp_path / "a", 1), _tensor_store(tmp_path / "b", 2)
    write_site([first], tmp_path / "site", progress=False)
    written = []
    original = site._write_jpeg
    monkeypatch.setattr(site, "_write_jpeg", lambda path, rgb: (written.append(path.name), original(path, rgb)))
    write_site([first], tmp_path / "site", progress=False)
    assert written == []  # the same samples (the store hashed them): nothing to draw
    write_site([second], tmp_path / "site", progress=False)
    assert sorted(set(written)) == [f"{i:06d}.jpg" for i in range(6)]
    text = (tmp_path / "site" / "data" / "store-0.js").read_text()
    shown = json.loads(text[text.index("(") + 1:text.rindex(")")])["columns"]["concentration"]
    np.testing.assert_allclose(shown, concentration(np.array(read_store(second).maps)[:, 0]), rtol=1e-5)


def test_stores_of_other_tensor_data_are_not_shown_side_by_side(tmp_path):
    first, second = _tensor_store(tmp_path / "a", 1), _tensor_store(tmp_path / "b", 2)  # same length and labels
    with pytest.raises(interpkit.InputError, match="holds other data"):
        write_site([first, second], tmp_path / "site", progress=False)
    assert not (tmp_path / "site").exists()


def test_a_file_replaced_in_place_is_drawn_again(tmp_path, monkeypatch):
    """Same path, label and store arguments: only the file's content changed, and with it the map."""
    source = sorted((read_store_files_root() / "bonsai").glob("*.jpg"))
    folder = tmp_path / "images" / "bonsai"
    folder.mkdir(parents=True)
    for file in source[:3]:
        shutil.copy(file, folder / file.name)
    model = get_model("caltech5_arch2", weights="DEFAULT")
    explain_dataset(GradCAM(model), tmp_path / "images", tmp_path / "before", progress=False)
    write_site([tmp_path / "before"], tmp_path / "site", progress=False)
    shutil.copy(source[5], folder / source[0].name)  # another picture under the first one's name
    explain_dataset(GradCAM(model), tmp_path / "images", tmp_path / "after", progress=False)
    written = []
    original = site._write_jpeg
    monkeypatch.setattr(site, "_write_jpeg", lambda path, rgb: (written.append(path.name), original(path, rgb)))
    write_site([tmp_path / "after"], tmp_path / "site", progress=False)
    assert sorted(set(written)) == ["000000.jpg"]


def test_maps_per_input_channel_show_their_summed_magnitude(tmp_path):
    """Saliency, LRP and other input-gradient maps (N, K, C, H, W) are drawn as |map| summed over
    the channels, as the metrics read them."""
    data = torch.utils.data.TensorDataset(torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(3)),
                                          torch.zeros(4, dtype=torch.long))
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                                torch.nn.Flatten(), torch.nn.Linear(4, 3)).eval()
    store = explain_dataset(interpkit.Saliency(model, absolute=False), data, tmp_path / "store", progress=False)
    assert store.maps.shape == (4, 1, 3, 16, 16) and store.manifest["map_kind"] == "input_channels"
    page = write_site([tmp_path / "store"], tmp_path / "site", progress=False)
    text = (page.parent / "data" / "store-0.js").read_text()
    shown = json.loads(text[text.index("(") + 1:text.rindex(")")])["columns"]["concentration"]
    np.testing.assert_allclose(shown, concentration(np.abs(store.maps[:, 0]).sum(axis=1)), rtol=1e-5)
    manifest = json.loads((tmp_path / "store" / "manifest.json").read_text())
    del manifest["map_kind"]  # as a store of an earlier version
    (tmp_path / "store" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(interpkit.InputError, match="resume it"):
        write_site([tmp_path / "store"], tmp_path / "other", progress=False)
    explain_dataset(interpkit.Saliency(model, absolute=False), data, tmp_path / "store", resume=True, progress=False)
    write_site([tmp_path / "store"], tmp_path / "other", progress=False)  # resumed: its kind recorded


def test_the_image_is_drawn_as_the_model_read_it(tmp_path):
    """A JPEG whose EXIF says "rotate 90 degrees" is read unrotated by the model's loader (PIL);
    the viewer draws it the same way (OpenCV would rotate it by default)."""
    from PIL import Image

    folder = tmp_path / "images" / "a"
    folder.mkdir(parents=True)
    picture = np.zeros((64, 96, 3), np.uint8)
    picture[:, :48] = (255, 0, 0)
    picture[:, 48:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    Image.fromarray(picture).save(folder / "turned.jpg", exif=exif, quality=95)
    model = get_model("caltech5_arch2", weights="DEFAULT")
    explain_dataset(GradCAM(model), tmp_path / "images", tmp_path / "store", progress=False)
    page = write_site([tmp_path / "store"], tmp_path / "site", progress=False)
    drawn = cv2.cvtColor(cv2.imread(str(page.parent / "images" / "000000.jpg")), cv2.COLOR_BGR2RGB).astype(int)
    height, width = drawn.shape[:2]
    assert drawn[height // 2, width // 8, 0] > 200 and drawn[height // 2, width // 8, 2] < 60  # red on the left
    assert drawn[height // 2, -width // 8, 2] > 200 and drawn[height // 2, -width // 8, 0] < 60  # blue on the right


def test_maps_not_over_images_are_refused_before_anything_is_written(tmp_path):
    from interpkit.dataset.store import FORMAT, write_shard

    root = tmp_path / "store"
    root.mkdir()
    manifest = {"format": FORMAT, "dataset": {"length": 2}, "shard_size": 2, "metrics": [],
                "explainer": {"name": "gradcam"}, "model": {"class": "Net"}}
    (root / "manifest.json").write_text(json.dumps(manifest))
    signals = {"maps": np.random.default_rng(0).random((2, 1, 8), dtype=np.float32), "targets": np.zeros((2, 1), int),
               "scores": np.ones((2, 1), np.float32), "predictions": np.array([0, 1]), "probabilities": np.array([0.9, 0.8]),
               "labels": np.array([0, 0]), "valid": np.array([True, True])}
    write_shard(root, 0, 2, signals, [])
    with pytest.raises(interpkit.InputError, match="maps over images"):
        write_site([root], tmp_path / "site", progress=False)
    assert not (tmp_path / "site").exists()


def test_concentration_of_large_values_does_not_overflow():
    flat, peaked = np.full((1, 224, 224), 1e35, np.float32), np.zeros((1, 224, 224), np.float32)
    peaked[0, 5, 5] = 3e37
    assert concentration(flat)[0] == pytest.approx(0.1, rel=1e-3) and concentration(peaked)[0] == pytest.approx(1.0)


def test_batches_are_submitted_a_few_at_a_time(stores, tmp_path, monkeypatch):
    """The pool never holds more than two batches per worker beyond those rendering: a store of
    many batches (here 100 of one sample) is not read into memory at once."""
    import threading

    monkeypatch.setattr(site, "BATCH", 1)
    yielded, ahead, lock = [0], [], threading.Lock()
    batches, render = site._batches, site._render_batch

    def counted(*args):
        for batch in batches(*args):
            with lock:
                yielded[0] += 1
            yield batch

    def rendering(maps, rows, chosen, *rest):
        with lock:
            ahead.append(yielded[0] - chosen[0])  # batches yielded beyond this one, which starts now
        return render(maps, rows, chosen, *rest)

    monkeypatch.setattr(site, "_batches", counted)
    monkeypatch.setattr(site, "_render_batch", rendering)
    write_site(stores[:1], tmp_path / "site", progress=False)
    assert len(ahead) == 100 and max(ahead) <= 2 * (os.cpu_count() or 1) + 1


def test_the_server_answers_a_path_no_file_can_have_without_a_traceback(tmp_path, capfd):
    """``GET /%00`` made the standard handler raise "embedded null byte": no response, and a
    traceback on the command's stderr."""
    import http.client

    (tmp_path / "data").mkdir()
    (tmp_path / "index.html").write_text("<p>viewer</p>")
    (tmp_path / "data" / "site.js").write_text("")
    server = viewer_server(tmp_path, 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        statuses = []
        for path in ("/%00", "/index.html%00.png", "/index.html"):
            connection = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=10)
            connection.request("GET", path)
            statuses.append(connection.getresponse().status)
            connection.close()
    finally:
        server.shutdown()
        server.server_close()
    assert statuses == [400, 400, 200]
    assert "Traceback" not in capfd.readouterr().err


@pytest.mark.parametrize("call", [lambda: concentration(np.zeros(5)), lambda: concentration("abc"),
                                  lambda: concentration(None), lambda: viewer_server(None)])
def test_the_viewers_functions_refuse_arguments_of_the_wrong_kind(call):
    """They raised IndexError, ValueError or TypeError."""
    with pytest.raises(interpkit.InputError):
        call()
