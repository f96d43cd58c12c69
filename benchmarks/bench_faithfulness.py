"""Pixel flipping and faithfulness correlation against the floor of their own forwards and against
Quantus 0.6 on the same work.

torchvision resnet18 (random weights), a batch of images with element-wise attributions. Pixel
flipping removes ``--step`` features per step (Quantus needs a step that divides H x W), which
is 150,528 / step forwards of the batch; faithfulness correlation scores ``--runs`` random
subsets of 224 features (one forward of the batch each, and one clean). The floor pushes the
same number of copies through the model in the same batches under ``no_grad``. Quantus gets
NumPy arrays and its own model wrapper (``device``), as its users call it; each library has its
own model copy.

Run: python benchmarks/bench_faithfulness.py [--device cuda] [--batch 8] [--size 224] [--step 3136] [--runs 20]
     [--threads 1] [--repeats 3]
"""

from __future__ import annotations

import argparse
import copy
import warnings

import numpy as np
import torch
import torchvision

from common import machine, report, time_all
from interpkit.metrics import FaithfulnessCorrelation, PixelFlipping


def floor(model, images, forwards: int):
    """``forwards`` forwards of a batch shaped like ``images`` under ``no_grad``."""
    copies = images.clone()

    def run():
        with torch.no_grad():
            for _ in range(forwards):
                model(copies)
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--step", type=int, default=3136, help="pixel flipping's features per step")
    parser.add_argument("--runs", type=int, default=20, help="faithfulness correlation's subsets")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = torchvision.models.resnet18().eval().to(device)
    peer = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(1)
    images = torch.randn(args.batch, 3, args.size, args.size, generator=generator).to(device)
    maps = torch.randn(args.batch, 3, args.size, args.size, generator=generator).to(device)
    labels = torch.arange(args.batch) % 1000
    flips = -(-3 * args.size * args.size // args.step)
    import quantus

    x, a, y = images.cpu().numpy(), maps.cpu().numpy(), labels.numpy()

    def quantus_call(metric, softmax):
        def run():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                metric(model=peer, x_batch=x, y_batch=y, a_batch=a, softmax=softmax, device=args.device)
        return run

    cases = {
        f"floor: {flips} forwards of the batch": floor(model, images, flips),
        "interpkit pixel flipping": lambda: PixelFlipping(features_in_step=args.step)(model, images, maps, labels),
        "Quantus pixel flipping": quantus_call(quantus.PixelFlipping(features_in_step=args.step, disable_warnings=True),
                                               True),
        f"floor: {args.runs + 1} forwards of the batch": floor(model, images, args.runs + 1),
        "interpkit faithfulness correlation": lambda: FaithfulnessCorrelation(runs=args.runs)(model, images, maps,
                                                                                               labels),
        "Quantus faithfulness correlation": quantus_call(quantus.FaithfulnessCorrelation(
            nr_runs=args.runs, return_aggregate=False, disable_warnings=True), False),
    }
    np.random.seed(0)
    t = time_all(cases, device, repeats=args.repeats, warmup=1)
    names = list(cases)
    ratios = [("interpkit pixel flipping / its floor", t[names[1]] / t[names[0]], "<= 1.1"),
              ("Quantus / interpkit pixel flipping", t[names[2]] / t[names[1]], ">= 5"),
              ("interpkit faithfulness correlation / its floor", t[names[4]] / t[names[3]], "<= 1.1"),
              ("Quantus / interpkit faithfulness correlation", t[names[5]] / t[names[4]], ">= 5")]
    report(f"Faithfulness metrics, resnet18, batch {args.batch}, {args.size} px, {flips} flipping steps, "
           f"{args.runs} subsets, {machine(device)}", t, ratios)


if __name__ == "__main__":
    main()
