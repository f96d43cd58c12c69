"""Pixel flipping, faithfulness correlation, IROF and sensitivity-n against the floor of their own
forwards, and the first three against Quantus 0.6 on the same work.

torchvision resnet18 (random weights), a batch of images with element-wise attributions. Pixel
flipping removes ``--step`` features per step (Quantus needs a step that divides H x W), which
is 150,528 / step forwards of the batch; faithfulness correlation scores ``--runs`` random
subsets of 224 features (one forward of the batch each, and one clean). The floor pushes the
same number of copies through the model in the same batches under ``no_grad``. Quantus gets
NumPy arrays and its own model wrapper (``device``), as its users call it; each library has its
own model copy. IROF runs on one-channel images (Quantus' IROF fails on more; the model's stem
takes one channel) with scikit-image's SLIC (its defaults, as Quantus calls it) computed in the call by both
libraries; its floor is
one forward of the batch per segment of the most segmented image, and one clean. Sensitivity-n
(``--sizes`` subset sizes, ``--runs`` subsets each) has no Quantus counterpart computing the same
thing (its SensitivityN is another quantity; see docs/metrics.md).

Run: python benchmarks/bench_faithfulness.py [--device cuda] [--batch 8] [--size 224] [--step 3136] [--runs 20]
     [--sizes 4] [--threads 1] [--repeats 3]
"""

from __future__ import annotations

import argparse
import copy
import warnings

import numpy as np
import torch
import torchvision

from common import machine, report, time_all
from interpkit.metrics import IROF, FaithfulnessCorrelation, PixelFlipping, SensitivityN


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
    parser.add_argument("--sizes", type=int, default=4, help="sensitivity-n's subset sizes")
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

    if not hasattr(np, "trapz"):  # Quantus' IROF calls it; NumPy 2 removed it for np.trapezoid
        np.trapz = np.trapezoid

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
    gray_model = copy.deepcopy(model)
    gray_model.conv1 = torch.nn.Conv2d(1, 64, 7, 2, 3, bias=False).to(device)
    gray_peer = copy.deepcopy(gray_model)
    gray = images[:, :1].contiguous()
    count = int(max(len(np.unique(s)) for s in slic_segments(gray.cpu().numpy())))
    gray_maps = maps[:, :1].contiguous()
    sensitivity = SensitivityN(sizes=args.sizes, runs=args.runs)
    sizes = len(sensitivity._cardinalities(3 * args.size * args.size))

    def quantus_irof():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quantus.IROF(segmentation_method="slic", return_aggregate=False, disable_warnings=True)(
                model=gray_peer, x_batch=gray.cpu().numpy(), y_batch=y, a_batch=gray_maps.cpu().numpy(),
                softmax=True, device=args.device)

    cases.update({
        f"floor: {count + 1} forwards of the batch (one channel)": floor(gray_model, gray, count + 1),
        "interpkit IROF": lambda: IROF(segments=lambda x: torch.from_numpy(slic_segments(x.cpu().numpy())))(
            gray_model, gray, gray_maps, labels),
        "Quantus IROF": quantus_irof,
        f"floor: {sizes * args.runs + 1} forwards of the batch": floor(model, images, sizes * args.runs + 1),
        "interpkit sensitivity-n": lambda: sensitivity(model, images, maps, labels),
    })
    np.random.seed(0)
    t = time_all(cases, device, repeats=args.repeats, warmup=1)
    names = list(cases)
    ratios = [("interpkit pixel flipping / its floor", t[names[1]] / t[names[0]], "<= 1.1"),
              ("Quantus / interpkit pixel flipping", t[names[2]] / t[names[1]], ">= 5"),
              ("interpkit faithfulness correlation / its floor", t[names[4]] / t[names[3]], "<= 1.1"),
              ("Quantus / interpkit faithfulness correlation", t[names[5]] / t[names[4]], ">= 5"),
              ("interpkit IROF / its floor", t[names[7]] / t[names[6]], "<= 1.1"),
              ("Quantus / interpkit IROF", t[names[8]] / t[names[7]], ">= 5"),
              ("interpkit sensitivity-n / its floor", t[names[10]] / t[names[9]], "<= 1.1")]
    report(f"Faithfulness metrics, resnet18, batch {args.batch}, {args.size} px, {flips} flipping steps, "
           f"{args.runs} subsets, {count} IROF segments, {sizes} subset sizes, {machine(device)}", t, ratios)


def slic_segments(gray: np.ndarray) -> np.ndarray:
    """Quantus' IROF segmentation: scikit-image's SLIC of each image, channels last, in float64."""
    from skimage.segmentation import slic

    return np.stack([slic(np.moveaxis(x, 0, -1).astype("double"), start_label=0) for x in gray])


if __name__ == "__main__":
    main()
