"""Occlusion on torchvision resnet18 against the floor of its own occluded forwards and captum.

The floor is the same number of occluded copies pushed through the model in batches of
``max_batch`` under ``no_grad``, with nothing else. Each peer runs on its own model copy.

On the CPU interpkit also caps a forward's per-sample bytes (``CPU_CHUNK_BYTES``); the case
"interpkit, chunks of max_batch" lifts that cap, so the two show what it gains.

Run: python benchmarks/bench_occlusion.py [--device cuda] [--repeats 3] [--size 64] [--batch 2]
     [--model resnet18] [--window 16] [--stride 8]
"""

from __future__ import annotations

import argparse
import copy
import math
import warnings

import torch
import torchvision

import interpkit
import interpkit.explainers.perturbation as engine
from common import machine, report, time_all

MAX_BATCH = 64


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--model", default="resnet18", help="a torchvision model name")
    parser.add_argument("--window", type=int, default=16)
    parser.add_argument("--stride", type=int, default=8)
    args = parser.parse_args()
    window, stride = args.window, args.stride
    torch.manual_seed(0)
    device = torch.device(args.device)
    model = getattr(torchvision.models, args.model)().eval().to(device)
    images = torch.randn(args.batch, 3, args.size, args.size, device=device)
    windows = (math.ceil((args.size - window) / stride) + 1) ** 2
    copies = torch.randn(MAX_BATCH, 3, args.size, args.size, device=device)

    def floor():
        with torch.no_grad():
            for first in range(0, windows * args.batch, MAX_BATCH):
                model(copies[:min(MAX_BATCH, windows * args.batch - first)])

    ours = interpkit.Occlusion(model, window=window, stride=stride, max_batch=MAX_BATCH)

    def uncapped():
        cap, engine.CPU_CHUNK_BYTES = engine.CPU_CHUNK_BYTES, 2**62
        try:
            return ours(images, target=1)
        finally:
            engine.CPU_CHUNK_BYTES = cap
    from captum.attr import Occlusion as CaptumOcclusion

    captum_model = copy.deepcopy(model)
    captum = CaptumOcclusion(captum_model)

    def captum_run(per_eval: int):
        return captum.attribute(images, sliding_window_shapes=(3, window, window), strides=(3, stride, stride),
                                target=1, baselines=0.0, perturbations_per_eval=per_eval)

    cases = {
        f"floor: {windows * args.batch} occluded forwards, batches of {MAX_BATCH}": floor,
        "interpkit Occlusion": lambda: ours(images, target=1),
        f"interpkit, chunks of max_batch ({MAX_BATCH})": uncapped,
        "captum Occlusion, defaults (1 per eval)": lambda: captum_run(1),
        f"captum Occlusion, perturbations_per_eval={MAX_BATCH // args.batch}": lambda: captum_run(MAX_BATCH // args.batch),
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t = time_all(cases, device, repeats=args.repeats, warmup=1)
    names = list(cases)
    report(f"Occlusion {window}x{window} stride {stride}, {args.model}, batch {args.batch}, {args.size}x{args.size}, "
           f"{windows} windows, {machine(device)}", t, [
        ("interpkit / floor", t[names[1]] / t[names[0]], "<= 1.1"),
        ("chunks of max_batch / interpkit (the CPU cap's gain)", t[names[2]] / t[names[1]], "-"),
        ("captum defaults / interpkit (speed-up)", t[names[3]] / t[names[1]], ">= 3"),
        ("captum tuned / interpkit (speed-up)", t[names[4]] / t[names[1]], ">= 1"),
    ])


if __name__ == "__main__":
    main()
