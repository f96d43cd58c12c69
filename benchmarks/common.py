"""Shared timing helpers: interleaved repeats, median seconds, device synchronisation."""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from typing import Callable

import torch


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_all(cases: dict[str, Callable[[], object]], device: torch.device, repeats: int = 7,
             warmup: int = 2) -> dict[str, float]:
    """Median wall time of each case; cases are interleaved so machine noise hits all alike."""
    for fn in cases.values():
        for _ in range(warmup):
            fn()
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(repeats):
        for name, fn in cases.items():
            sync(device)
            start = time.perf_counter()
            fn()
            sync(device)
            samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in samples.items()}


def machine(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}"
    return (f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
            f"torch {torch.__version__}")


def report(title: str, times: dict[str, float], ratios: list[tuple[str, float, str]]) -> None:
    """Print times and the ratios with their goals; ratios are (label, value, goal text)."""
    print(f"## {title}")
    for name, seconds in times.items():
        print(f"  {name:<45s} {seconds * 1000:9.1f} ms")
    for label, value, goal in ratios:
        print(f"  {label:<60s} {value:6.2f}x   (goal: {goal})")


def arguments(description: str, repeats: int = 7) -> tuple[argparse.Namespace, torch.device]:
    """Parse --device and --repeats; seed torch."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=repeats)
    args = parser.parse_args()
    torch.manual_seed(0)
    return args, torch.device(args.device)


def resnet18_batch(description: str) -> tuple[argparse.Namespace, torch.device, torch.nn.Module, torch.Tensor]:
    """Parse --device/--repeats; a seeded torchvision resnet18 in eval mode and a batch 8 x 224 x 224."""
    import torchvision

    args, device = arguments(description)
    model = torchvision.models.resnet18().eval().to(device)
    return args, device, model, torch.randn(8, 3, 224, 224, device=device)


def backward_to(model: torch.nn.Module, layer: torch.nn.Module, images: torch.Tensor, target: int):
    """The bare pass an explainer builds on: a forward keeping ``layer``'s output, and the
    gradient of the target's score with respect to it."""
    kept = []
    handle = layer.register_forward_hook(lambda m, i, o: kept.append(o))
    try:
        logits = model(images)
    finally:
        handle.remove()
    return torch.autograd.grad(logits[:, target].sum(), kept[0])
