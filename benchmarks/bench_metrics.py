"""A deletion-style metric against its floor: the forward passes of its perturbed copies.

torchvision resnet18 (random weights, eval), batch 16, 224 x 224, 20 steps (21 points per
sample, the first and last included), copies in batches of 16 (the default: the inputs' batch),
targets given, against 21 plain forward passes of the same batch under no_grad.
Run: python benchmarks/bench_metrics.py [--device cuda] [--repeats 3]
"""

from __future__ import annotations

import torch

from common import arguments, machine, report, time_all
from interpkit import GradCAM
from interpkit.metrics import Deletion, RegionPerturbation, randomisation_check


def main() -> None:
    import torchvision

    args, device = arguments(__doc__, repeats=3)
    model = torchvision.models.resnet18().eval().to(device)
    images = torch.randn(16, 3, 224, 224, device=device)
    maps = torch.rand(16, 224, 224, device=device)
    metric = Deletion(steps=20)  # copies in batches of the inputs' size, 16
    labels = torch.arange(16, device=device) % 1000

    def floor():
        with torch.no_grad():
            for _ in range(21):
                model(images)

    import warnings

    import quantus

    regions = RegionPerturbation(patch_size=16, regions=20)

    def quantus_regions():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return quantus.RegionPerturbation(patch_size=16, regions_evaluation=20, normalise=False,
                                              disable_warnings=True)(
                model=model, x_batch=images.cpu().numpy(), y_batch=labels.cpu().numpy(),
                a_batch=maps[:, None].cpu().numpy(), softmax=True, device=str(device))

    cases = {"21 forward passes of the batch (no_grad)": floor,
             "interpkit Deletion, 20 steps": lambda: metric(model, images, maps, targets=labels),
             "interpkit RegionPerturbation, 20 regions of 16 x 16": lambda: regions(model, images, maps, labels),
             "Quantus RegionPerturbation, same": quantus_regions}
    layers = [m for m in model.modules() if any(True for _ in m.parameters(recurse=False))]

    def explanations():  # the floor of the sanity check: one explanation per randomisation step, plus one
        for _ in range(len(layers) + 1):
            GradCAM(model, layer="layer4")(images[:4])

    cases["GradCAM of 4 images, (layers + 1) times"] = explanations
    cases["randomisation_check(GradCAM), cascading"] = lambda: randomisation_check(
        lambda m: GradCAM(m, layer="layer4"), model, images[:4])
    t = time_all(cases, device, repeats=args.repeats, warmup=1)
    names = list(cases)
    report(f"Deletion, resnet18, batch 16, 224x224, {machine(device)}", t, [
        ("deletion / its forward passes", t[names[1]] / t[names[0]], "<= 1.1"),
        ("Quantus / interpkit region perturbation (speed-up)", t[names[3]] / t[names[2]], ">= 1"),
        ("randomisation check / its (layers + 1) explanations", t[names[5]] / t[names[4]], "<= 1.1"),
    ])


if __name__ == "__main__":
    main()
