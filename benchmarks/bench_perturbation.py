"""The perturbation explainers on torchvision resnet18 against the floor of their own perturbed
forwards, and against captum's defaults on the same work.

The floor of a method is the number of perturbed copies it scores, pushed through the model in
batches of ``max_batch`` under ``no_grad`` with nothing else (plus its one clean forward). Each
captum explainer runs on its own model copy; captum's KernelSHAP and LIME explain one image per
call (they loop over a batch) and fit their surrogate with scikit-learn on the CPU.
``--memory`` instead reports each method's peak resident memory at two sample counts, each in
a fresh process (flat when memory is bounded by ``max_batch``, not by the samples).

Run: python benchmarks/bench_perturbation.py [--device cuda] [--repeats 3] [--size 96] [--batch 4] [--threads 1] [--memory]
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import resource
import subprocess
import sys
import warnings

import torch
import torchvision

import interpkit
from common import machine, report, time_all

MAX_BATCH, SEGMENTS, SAMPLES, WINDOW, STRIDE = 64, 50, 200, 16, 8


def floor(model, images, copies: int):
    """``copies`` perturbed samples through the model in batches of MAX_BATCH, plus a clean forward."""
    dummy = torch.randn(MAX_BATCH, *images.shape[1:], device=images.device)

    def run():
        with torch.no_grad():
            model(images)
            for first in range(0, copies, MAX_BATCH):
                model(dummy[:min(MAX_BATCH, copies - first)])
    return run


def speed(args, device) -> None:
    torch.manual_seed(0)
    model = torchvision.models.resnet18().eval().to(device)
    images = torch.randn(args.batch, 3, args.size, args.size, device=device)
    n, windows = args.batch, (math.ceil((args.size - WINDOW) / STRIDE) + 1) ** 2
    mask = interpkit.explainers.grid_cells((args.size, args.size), SEGMENTS, device)[0]
    features = int(mask.max()) + 1
    ours = {
        "occlusion": (interpkit.Occlusion(model, window=WINDOW, stride=STRIDE, max_batch=MAX_BATCH), windows),
        "feature_ablation": (interpkit.FeatureAblation(model, features=mask, max_batch=MAX_BATCH), features),
        "shapley_value_sampling": (interpkit.ShapleyValueSampling(model, features=mask, samples=4, max_batch=MAX_BATCH),
                                   1 + 4 * features),
        "kernel_shap": (interpkit.KernelSHAP(model, features=mask, samples=SAMPLES, max_batch=MAX_BATCH), SAMPLES),
        "lime": (interpkit.LIME(model, features=mask, samples=SAMPLES, max_batch=MAX_BATCH), SAMPLES),
        "rise": (interpkit.RISE(model, masks=SAMPLES * 2, max_batch=MAX_BATCH), SAMPLES * 2),
    }
    from captum.attr import KernelShap, Occlusion

    occlusion_model, shap_model = copy.deepcopy(model), copy.deepcopy(model)
    # scikit-learn's BLAS threads (captum's surrogate fit) spin for a while after it returns: a first,
    # unreported case absorbs that in every round
    cases, ratios = {"settle (not reported)": floor(model, images, windows * n)}, []
    for name, (explainer, per_image) in ours.items():
        cases[f"floor: {name}, {per_image * n} copies"] = floor(model, images, per_image * n)
        cases[f"interpkit {name}"] = (lambda e: lambda: e(images, target=1))(explainer)
    cases["captum Occlusion, defaults"] = lambda: Occlusion(occlusion_model).attribute(
        images, sliding_window_shapes=(3, WINDOW, WINDOW), strides=(3, STRIDE, STRIDE), target=1, baselines=0.0)
    cases[f"captum KernelShap, defaults, {SAMPLES} samples"] = lambda: KernelShap(shap_model).attribute(
        images, target=1, baselines=0.0, feature_mask=mask[None, None], n_samples=SAMPLES)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t = time_all(cases, device, repeats=args.repeats, warmup=1)
    for name in ours:
        floor_name = next(k for k in cases if k.startswith(f"floor: {name},"))
        ratios.append((f"interpkit {name} / its floor", t[f"interpkit {name}"] / t[floor_name], "<= 1.1"))
    ratios.append(("captum Occlusion defaults / interpkit", t["captum Occlusion, defaults"] / t["interpkit occlusion"],
                   ">= 3"))
    ratios.append(("captum KernelShap defaults / interpkit",
                   t[f"captum KernelShap, defaults, {SAMPLES} samples"] / t["interpkit kernel_shap"], ">= 3"))
    report(f"Perturbation explainers, resnet18, batch {n}, {args.size}x{args.size}, {features} grid features, "
           f"{windows} windows, max_batch {MAX_BATCH}, {machine(device)}", t, ratios)


def child(method: str, samples: int, size: int) -> None:
    torch.manual_seed(0)
    model = torchvision.models.resnet18().eval()
    images = torch.randn(2, 3, size, size)
    options = {"rise": {"masks": samples}, "occlusion": {"window": 8, "stride": samples}}.get(
        method, {"samples": samples, "features": "grid"})
    if method == "feature_ablation":
        options = {"features": "grid", "segments": samples}
    explainer = interpkit.get_explainer(method)(model, max_batch=16, **options)
    with torch.no_grad():  # warm: allocator and kernels at the size of one chunk of copies
        model(torch.randn(16, 3, size, size))
    start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    explainer(images, target=0)
    print(json.dumps({"peak_mib": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - start) / 1024}))


def memory(size: int) -> None:
    print(f"Peak resident memory above the warmed process, resnet18, batch 2, {size}x{size}, max_batch 16")
    print("| method | setting | peak MiB | 4x the copies | peak MiB |")
    print("| --- | --- | --- | --- | --- |")
    for method in ("occlusion", "feature_ablation", "shapley_value_sampling", "kernel_shap", "lime", "rise"):
        low, high = {"shapley_value_sampling": (4, 16), "occlusion": (8, 4), "feature_ablation": (25, 100)}.get(method, (100, 400))
        peaks = []
        for samples in (low, high):
            out = subprocess.run([sys.executable, __file__, "--child", method, str(samples), str(size)], check=True,
                                 capture_output=True, text=True).stdout
            peaks.append(json.loads(out.splitlines()[-1])["peak_mib"])
        label = {"occlusion": "stride", "feature_ablation": "features"}.get(method, "samples")
        print(f"| {method} | {label} {low} | {peaks[0]:.1f} | {label} {high} | {peaks[1]:.1f} |")


def main() -> None:
    if sys.argv[1:2] == ["--child"]:
        child(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
        return
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--memory", action="store_true")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory:
        memory(args.size)
    else:
        speed(args, torch.device(args.device))


if __name__ == "__main__":
    main()
