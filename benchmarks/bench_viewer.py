"""The viewer at the scale of the whole Caltech-101 (9,060 images): writing its site against
the floor of encoding its thumbnails alone, a rerun after 100 more samples, and the page in
headless chromium (first paint, the grid built, lazy images while scrolling, frame times).

The stores are real ``explain_dataset`` runs (GradCAM, 224 x 224, maps in float16) of a small
random CNN, so that the benchmark times the viewer and not a model: the viewer's cost does not
depend on how the maps were made. The first store holds all but the last 100 images (in the
folder's sorted order), the second all of them, written into the same viewer folder.

    python benchmarks/bench_viewer.py --data ../shared/data/caltech101/101_ObjectCategories [--repeats 3]

The floor and the whole site run ``--repeats`` times, interleaved, each into a fresh folder, and
their medians are compared (single runs of 18,000 file writes vary by 1.5x on a shared disk).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import cv2
import torch

from interpkit import GradCAM, explain_dataset
from interpkit.viewer import write_site

ADDED = 100


def tiny_cnn() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 8, stride=8), torch.nn.ReLU(), torch.nn.Conv2d(8, 16, 3, padding=1),
                               torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                               torch.nn.Linear(16, 102)).eval()


def linked_folder(source: Path, target: Path, files: list[Path]) -> None:
    for file in files:
        link = target / file.parent.name / file.name
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.exists():
            os.symlink(file, link)


def encode_floor(files: list[str], out: Path) -> float:
    """Read, resize to 224 and JPEG-encode each image twice (its image and one map), writing the files."""
    out.mkdir(parents=True)
    start = time.perf_counter()
    for index, file in enumerate(files):
        picture = cv2.resize(cv2.imread(file, cv2.IMREAD_COLOR), (224, 224), interpolation=cv2.INTER_AREA)
        for kind in ("image", "map"):
            ok, data = cv2.imencode(".jpg", picture, [cv2.IMWRITE_JPEG_QUALITY, 92])
            (out / f"{kind}-{index:06d}.jpg").write_bytes(data.tobytes())
    return time.perf_counter() - start


def browser_figures(page: Path) -> dict[str, float]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--window-size=1280,900"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver") or "/usr/bin/chromedriver"), options=options)
    try:
        driver.get(page.as_uri())
        WebDriverWait(driver, 60).until(lambda d: d.execute_script("return typeof viewer !== 'undefined' && viewer.ready"))
        paint = driver.execute_script(
            "return performance.getEntriesByName('first-contentful-paint')[0].startTime")
        ready = driver.execute_script("return viewer.ready")
        cards = driver.execute_script("return document.querySelectorAll('#grid .card:not([hidden])').length")
        frames = driver.execute_async_script("""
            const done = arguments[0]; const deltas = []; let last = performance.now(); let count = 0;
            function frame(now) { deltas.push(now - last); last = now; window.scrollBy(0, 300);
              if (++count < 120) requestAnimationFrame(frame); else done(deltas); }
            requestAnimationFrame(frame);""")
        time.sleep(1.0)
        loaded = driver.execute_script(
            "return [...document.querySelectorAll('#grid img')].filter(i => i.complete && i.naturalWidth > 0).length")
        frames = sorted(frames[1:])
        return {"first contentful paint (ms)": paint, "grid built (ms)": ready, "cards": cards,
                "images loaded after scrolling 120 frames x 300 px": loaded,
                "frame time median (ms)": frames[len(frames) // 2],
                "frame time 95th percentile (ms)": frames[int(len(frames) * 0.95)]}
    finally:
        driver.quit()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="101_ObjectCategories")
    parser.add_argument("--repeats", type=int, default=3, help="runs of the floor and the site (medians)")
    args = parser.parse_args()
    files = sorted(Path(args.data).resolve().glob("*/*.jpg"))
    work = Path(tempfile.mkdtemp(prefix="bench-viewer-"))
    try:
        folder = work / "images"
        explainer = GradCAM(tiny_cnn())
        linked_folder(Path(args.data), folder, files[:-ADDED])
        explain_dataset(explainer, folder, work / "smaller", dtype="float16", batch_size=64, num_workers=2, progress=False)
        linked_folder(Path(args.data), folder, files[-ADDED:])
        explain_dataset(explainer, folder, work / "all", dtype="float16", batch_size=64, num_workers=2, progress=False)
        sources = [str(folder / f.parent.name / f.name) for f in files]
        floors, sites = [], []
        for repeat in range(args.repeats):  # interleaved, each into a fresh folder: the disk's pace varies
            shutil.rmtree(work / "floor", ignore_errors=True)
            shutil.rmtree(work / "site", ignore_errors=True)
            floors.append(encode_floor(sources[:-ADDED], work / "floor"))
            start = time.perf_counter()
            write_site([work / "smaller"], work / "site", progress=False)
            sites.append(time.perf_counter() - start)
        floor, written = statistics.median(floors), statistics.median(sites)
        before = time.time()
        start = time.perf_counter()
        page = write_site([work / "all"], work / "site", progress=False)
        rerun = time.perf_counter() - start
        fresh = [p for p in (work / "site").rglob("*.jpg") if p.stat().st_mtime >= before]
        print(f"## Viewer, {len(files) - ADDED} then {len(files)} samples, 224 x 224 maps")
        print(f"  floor: read, resize and encode both thumbnails      {floor:8.1f} s   (median of {args.repeats})")
        print(f"  interpkit view (whole site)                         {written:8.1f} s   (median of {args.repeats})")
        print(f"  site / floor                                        {written / floor:8.2f}x   (goal: <= 1.2)")
        print(f"  rerun after {ADDED} more samples                        {rerun:8.1f} s, "
              f"{len(fresh)} images written ({ADDED} samples x 2 expected)")
        for name, value in browser_figures(page).items():
            print(f"  {name:<52s} {value:10.1f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
