"""Occlusion on torchvision resnet18 against the floor of its own occluded forwards and captum.

The floor is the same number of occluded copies pushed through the model in batches of
``max_batch`` under ``no_grad``, with nothing else. Each peer runs on its own model copy.

Run: python benchmarks/bench_occlusion.py [--device cuda] [--repeats 3] [--size 64] [--batch 2]
"""

from __future__ import annotations

import argparse
import copy
import math
import warnings

import torch
import torchvision

import interpkit
from common import machine, report, time_all

WINDOW, STRIDE, MAX_BATCH = 16, 8, 64


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=2)
    args = parser.parse_args()
    torch.manual_seed(0)
    device = torch.device(args.device)
    model = torchvision.models.resnet18().eval().to(device)
    images = torch.randn(args.batch, 3, args.size, args.size, device=device)
    windows = (math.ceil((args.size - WINDOW) / STRIDE) + 1) ** 2
    copies = torch.randn(MAX_BATCH, 3, args.size, args.size, device=device)

    def floor():
        with torch.no_grad():
            for first in range(0, windows * args.batch, MAX_BATCH):
                model(copies[:min(MAX_BATCH, windows * args.batch - first)])

    ours = interpkit.Occlusion(model, window=WINDOW, stride=STRIDE, max_batch=MAX_BATCH)
    from captum.attr import Occlusion as CaptumOcclusion

    captum_model = copy.deepcopy(model)
    captum = CaptumOcclusion(captum_model)

    def captum_run(per_eval: int):
        return captum.attribute(images, sliding_window_shapes=(3, WINDOW, WINDOW), strides=(3, STRIDE, STRIDE),
                                target=1, baselines=0.0, perturbations_per_eval=per_eval)

    cases = {
        f"floor: {windows * args.batch} occluded forwards, batches of {MAX_BATCH}": floor,
        "interpkit Occlusion": lambda: ours(images, target=1),
        "captum Occlusion, defaults (1 per eval)": lambda: captum_run(1),
        f"captum Occlusion, perturbations_per_eval={MAX_BATCH // args.batch}": lambda: captum_run(MAX_BATCH // args.batch),
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t = time_all(cases, device, repeats=args.repeats, warmup=1)
    names = list(cases)
    report(f"Occlusion {WINDOW}x{WINDOW} stride {STRIDE}, resnet18, batch {args.batch}, {args.size}x{args.size}, "
           f"{windows} windows, {machine(device)}", t, [
        ("interpkit / floor", t[names[1]] / t[names[0]], "<= 1.1"),
        ("captum defaults / interpkit (speed-up)", t[names[2]] / t[names[1]], ">= 3"),
        ("captum tuned / interpkit (speed-up)", t[names[3]] / t[names[1]], ">= 1"),
    ])


if __name__ == "__main__":
    main()
