"""explain_dataset against its floor, and its memory over a long run.

Throughput: GradCAM over every image of ``101_ObjectCategories`` (9,060 at 224 x 224) into a
store, against a bare loop over the same DataLoader (same dataset, batch size and workers) that
runs the forward and the backward to the explained layer and keeps nothing. Memory: the peak
resident set size of the process after 1,000 and after all images, each in a fresh process.

    python benchmarks/bench_dataset.py --data ../shared/data/caltech101/101_ObjectCategories
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Subset

import interpkit
from interpkit import GradCAM, explain_dataset
from interpkit.data import ImageTransform
from interpkit.dataset import image_folder_dataset


def build(model_name: str, device: torch.device) -> tuple[torch.nn.Module, str]:
    if model_name == "resnet18":
        import torchvision

        return torchvision.models.resnet18().eval().to(device), "layer4"
    return interpkit.get_model(model_name, weights="DEFAULT").eval().to(device), "features.7"


def bare_loop(model: torch.nn.Module, layer: str, loader: DataLoader, device: torch.device) -> int:
    """Forward, and backward of the top score to the layer's output: the work GradCAM cannot skip."""
    module = model.get_submodule(layer)
    captured: list[torch.Tensor] = []
    handle = module.register_forward_hook(lambda _m, _i, out: captured.append(out))
    seen = 0
    try:
        for images, _ in loader:
            captured.clear()
            logits = model(images.to(device))
            torch.autograd.grad(logits.max(dim=1).values.sum(), captured[0])
            seen += len(images)
    finally:
        handle.remove()
    return seen


def measure(args: argparse.Namespace) -> None:
    device = torch.device(args.device)
    dataset = image_folder_dataset(Path(args.data), ImageTransform())
    if args.limit:
        dataset = Subset(dataset, range(min(args.limit, len(dataset))))  # type: ignore[assignment]
    model, layer = build(args.model, device)
    loader = DataLoader(dataset, batch_size=args.batch_size, num_workers=args.workers)
    start = time.perf_counter()
    bare_loop(model, layer, loader, device)
    bare = time.perf_counter() - start
    out = Path(tempfile.mkdtemp())
    try:
        start = time.perf_counter()
        explain_dataset(GradCAM(model, layer=layer, upsample=False), loader, out / "store", precision=args.precision,
                        progress=False)
        ours = time.perf_counter() - start
    finally:
        shutil.rmtree(out)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"images": len(dataset), "bare_s": bare, "ours_s": ours, "peak_rss_mib": peak}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="an image folder, e.g. .../101_ObjectCategories")
    parser.add_argument("--model", default="caltech5_arch2", help="caltech5_arch2 (bundled) or resnet18 (random)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--precision", default=None)
    parser.add_argument("--limit", type=int, default=0)
    parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)  # one run, in this process
    args = parser.parse_args()
    if args.measure:
        measure(args)
        return
    runs = {}
    for limit in (1000, 0):  # each in a fresh process, so the peak RSS is that run's own
        command = [sys.executable, __file__, "--measure", "--data", args.data, "--model", args.model, "--device",
                   args.device, "--batch-size", str(args.batch_size), "--workers", str(args.workers),
                   "--limit", str(limit)] + (["--precision", args.precision] if args.precision else [])
        done = subprocess.run(command, capture_output=True, text=True, check=True)
        runs[limit] = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"## explain_dataset, {args.model}, GradCAM, batch {args.batch_size}, {args.workers} workers, "
          f"{args.device}, torch {torch.__version__}")
    for run in runs.values():
        print(f"  {run['images']:5d} images: bare loop {run['images'] / run['bare_s']:7.1f} img/s, explain_dataset "
              f"{run['images'] / run['ours_s']:7.1f} img/s ({run['bare_s'] / run['ours_s']:.2f}x the bare throughput; "
              "goal >= 0.85), peak RSS %.0f MiB" % run["peak_rss_mib"])
    print(f"  peak RSS all / 1000 images: {runs[0]['peak_rss_mib'] / runs[1000]['peak_rss_mib']:.2f}x (goal: 1.0, flat)")


if __name__ == "__main__":
    main()
