"""LeGrad on torchvision's ViT-B/16 (random weights, head drawn from a normal: torchvision starts
it at zero), batch 4, 224 x 224, the last 4 blocks, one class: interpkit against torchcam 0.5
(each on its own model copy), and a bare forward + backward to the input for scale, one run.

Run: python benchmarks/bench_legrad.py [--device cuda] [--repeats 3]
"""

from __future__ import annotations

import copy

import torch
import torchvision

from common import arguments, machine, report, time_all
from interpkit_transformers import LeGrad


def main() -> None:
    from torchcam.methods import LeGrad as TorchcamLeGrad

    args, device = arguments(__doc__, repeats=3)
    model = torchvision.models.vit_b_16().eval().to(device)
    torch.nn.init.normal_(model.heads.head.weight, std=0.02)
    theirs_model = copy.deepcopy(model)
    images = torch.randn(4, 3, 224, 224, device=device)
    ours = LeGrad(model, layers=4)
    theirs = TorchcamLeGrad(theirs_model, list(theirs_model.encoder.layers)[-4:])

    def bare():
        x = images.clone().requires_grad_(True)
        return torch.autograd.grad(model(x)[:, 1].sum(), x)

    def torchcam():
        return theirs(1, theirs_model(images))

    cases = {"bare forward + backward to the input": bare, "interpkit LeGrad, last 4 blocks": lambda: ours(images, 1),
             "torchcam LeGrad, last 4 blocks": torchcam}
    t = time_all(cases, device, repeats=args.repeats, warmup=1)
    names = list(cases)
    report(f"LeGrad, torchvision ViT-B/16, batch 4, 224x224, {machine(device)}", t, [
        ("interpkit / bare pass", t[names[1]] / t[names[0]], "-"),
        ("torchcam / interpkit", t[names[2]] / t[names[1]], "-"),
    ])


if __name__ == "__main__":
    main()
