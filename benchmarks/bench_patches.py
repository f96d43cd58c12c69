"""top_patches over the Caltech-101 images against plain no_grad inference; receptive_field speed.

Run: python benchmarks/bench_patches.py [--data ../shared/data/caltech101/101_ObjectCategories]
     [--limit N] [--device cuda] [--workers 2]

Prints (1) images/s of plain inference and of top_patches over the same DataLoader, (2) the peak
resident memory of top_patches at two dataset sizes, each measured in a fresh process, and
(3) the time of receptive_field for resnet50 at 224 x 224.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch
import torchvision
from torch.utils.data import DataLoader, Subset
from torchvision import transforms

import interpkit
from common import machine, sync

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared/data/caltech101/101_ObjectCategories"


def dataset(root: Path, limit: int | None):
    tf = transforms.Compose([transforms.Resize((224, 224)), transforms.ToTensor(),
                             transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
    data = torchvision.datasets.ImageFolder(str(root), transform=tf)
    return Subset(data, range(min(limit, len(data)))) if limit else data


def throughput(args) -> None:
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = torchvision.models.resnet18().eval().to(device)
    data = dataset(Path(args.data), args.limit)
    loader = DataLoader(data, batch_size=64, num_workers=args.workers)

    def plain():
        with torch.no_grad():
            for images, _ in loader:
                model(images.to(device))

    def ours():
        interpkit.top_patches(model, args.layer, loader, k=9, progress=False)

    cases = {"plain no_grad inference": plain, f"top_patches ({args.layer}, k=9)": ours}
    times = {name: float("inf") for name in cases}
    for _ in range(args.rounds):  # alternate, keep each case's best round
        for name, fn in cases.items():
            sync(device)
            start = time.perf_counter()
            fn()
            sync(device)
            times[name] = min(times[name], time.perf_counter() - start)
    print(f"## top_patches throughput, resnet18, {len(data)} images at 224x224, batch 64, "
          f"{args.workers} loader workers, best of {args.rounds} alternating rounds, {machine(device)}")
    for name, seconds in times.items():
        print(f"  {name:<40s} {seconds:8.1f} s  {len(data) / seconds:7.1f} images/s")
    plain_t, ours_t = times.values()
    print(f"  throughput ratio top_patches / plain: {plain_t / ours_t:.2f}x   (goal: >= 0.9)")


def peak_memory(args) -> None:
    data = dataset(Path(args.data), args.limit)
    model = torchvision.models.resnet18().eval()
    interpkit.top_patches(model, args.layer, DataLoader(data, batch_size=64, num_workers=args.workers),
                          k=9, progress=False)
    print(json.dumps({"images": len(data), "max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def memory_at_two_sizes(args, sizes) -> None:
    print("## top_patches peak resident memory (fresh process each)")
    for size in sizes:
        out = subprocess.run([sys.executable, __file__, "--peak-memory", "--limit", str(size), "--data", args.data,
                              "--layer", args.layer, "--workers", "0"], capture_output=True, text=True, check=True)
        row = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"  {row['images']:6d} images: {row['max_rss_mib']:8.1f} MiB")


def receptive_field_speed() -> None:
    model = torchvision.models.resnet50()
    start = time.perf_counter()
    field = interpkit.receptive_field(model, "layer4", (224, 224))
    print(f"## receptive_field(resnet50, 'layer4', 224x224): {time.perf_counter() - start:.3f} s "
          f"(goal: < 1 s); {field}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--layer", default="layer4")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--peak-memory", action="store_true")
    parser.add_argument("--memory-sizes", default="500,4000")
    args = parser.parse_args()
    if args.peak_memory:
        return peak_memory(args)
    receptive_field_speed()
    throughput(args)
    memory_at_two_sizes(args, [int(s) for s in args.memory_sizes.split(",")])


if __name__ == "__main__":
    main()
