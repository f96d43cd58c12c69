"""Token-layout GradCAM on a vision transformer against a bare forward + backward to the layer.

timm vit_small_patch16_224 (random weights, no download), batch 8, 224 x 224, the last block's
attention input (blocks.11.norm1, 1 class token + 14 x 14 patches), one class.
Run: python benchmarks/bench_vit.py [--device cuda] [--repeats 7]
"""

from __future__ import annotations

import torch

import interpkit
from common import arguments, backward_to, machine, report, time_all
from interpkit import TokenGrid


def main() -> None:
    import timm

    args, device = arguments(__doc__)
    model = timm.create_model("vit_small_patch16_224", pretrained=False).eval().to(device)
    images = torch.randn(8, 3, 224, 224, device=device)
    layer = model.get_submodule("blocks.11.norm1")

    def bare_pass():
        return backward_to(model, layer, images, 1)

    ours = interpkit.GradCAM(model, layer=("blocks.11.norm1", TokenGrid()))
    chosen = interpkit.GradCAM(model)
    cases = {
        "bare forward + backward to blocks.11.norm1": bare_pass,
        "interpkit GradCAM, TokenGrid layer, 1 class": lambda: ours(images, target=1),
        "interpkit GradCAM, layer=None (chosen once), 1 class": lambda: chosen(images, target=1),
    }
    t = time_all(cases, device, repeats=args.repeats)
    names = list(cases)
    report(f"ViT GradCAM, timm vit_small_patch16_224, batch 8, 224x224, {machine(device)}", t, [
        ("token-layout GradCAM / bare pass", t[names[1]] / t[names[0]], "<= 1.10"),
        ("layer=None GradCAM / bare pass", t[names[2]] / t[names[0]], "-"),
    ])


if __name__ == "__main__":
    main()
