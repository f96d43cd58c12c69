"""The perturbation engine's memory budget: peak resident memory of one Occlusion call on a 3-D
model whose activations are large (a 64-channel convolution over a 64^3 volume, 67 MB per copy),
with the budget (1 GiB, the default) and without it (64 copies per forward, ``max_batch``).

Run: python benchmarks/bench_perturbation_budget.py   (each setting in its own process, ~1 minute)
"""

from __future__ import annotations

import resource
import subprocess
import sys
import time

import torch
from torch import nn


def one(setting: str) -> None:
    import interpkit
    import interpkit.explainers.perturbation as engine

    if setting == "off":
        engine.MEMORY_BUDGET = 2**62
    model = nn.Sequential(nn.Conv3d(1, 64, 3, padding=1), nn.ReLU(), nn.Conv3d(64, 8, 3, padding=1),
                          nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Linear(8, 3)).eval()
    x = torch.randn(1, 1, 64, 64, 64)
    with torch.no_grad():
        model(x)
    warm = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    interpkit.Occlusion(model, window=16, stride=16, max_batch=64)(x, target=1)  # 64 windows
    peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - warm) / 1024
    print(f"  budget {setting:<4s} peak above a warm process {peak:7.0f} MiB   {time.perf_counter() - start:5.1f} s")


def main() -> None:
    if len(sys.argv) > 1:
        one(sys.argv[1])
        return
    print("## Occlusion, Conv3d 64 channels, 64^3 volume, 64 windows, max_batch 64")
    for setting in ("on", "off"):
        subprocess.run([sys.executable, __file__, setting], check=True)


if __name__ == "__main__":
    main()
