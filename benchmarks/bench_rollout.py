"""Attention rollout on a ViT-B/16-sized model against one forward pass.

timm vit_base_patch16_224 (random weights, fused attention), batch 8, 224 x 224.

Run: python benchmarks/bench_rollout.py [--device cuda] [--repeats 5]
"""

from __future__ import annotations

import timm
import torch

from common import arguments, machine, report, time_all
from interpkit_transformers import AttentionRollout


def main() -> None:
    args, device = arguments(__doc__, repeats=5)
    model = timm.create_model("vit_base_patch16_224", pretrained=False).eval().to(device)
    images = torch.randn(8, 3, 224, 224, device=device)
    rollout = AttentionRollout(model)

    def forward():
        with torch.no_grad():
            return model(images)

    cases = {"one forward (no_grad)": forward, "interpkit AttentionRollout": lambda: rollout(images)}
    t = time_all(cases, device, repeats=args.repeats, warmup=1)
    names = list(cases)
    report(f"Attention rollout, ViT-B/16, batch 8, 224x224, {machine(device)}", t, [
        ("rollout / one forward", t[names[1]] / t[names[0]], "<= 1.3"),
    ])


if __name__ == "__main__":
    main()
