"""ScoreCAM against its floor (the masked forward passes it must run) and pytorch-grad-cam's.

torchvision resnet18 (random weights, eval), layer4 (512 channels), 224 x 224: one masked copy
of each image per channel. The floor runs exactly those masked copies through the model in the
same batches, with the masks prepared beforehand.

Run: python benchmarks/bench_scorecam.py [--device cuda] [--repeats 1] [--batch 8]
"""

from __future__ import annotations

import argparse
import warnings

import torch
import torchvision

from common import machine, report, time_all
from interpkit_cam_variants import ScoreCAM


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--max-batch", type=int, default=64)
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = torchvision.models.resnet18().eval().to(device)
    images = torch.randn(args.batch, 3, 224, 224, device=device)
    targets = list(range(1, args.batch + 1))
    with torch.no_grad():
        kept = []
        handle = model.layer4.register_forward_hook(lambda m, i, o: kept.append(o))
        model(images)
        handle.remove()
        masks = torch.nn.functional.interpolate(kept[0], size=(224, 224), mode="bilinear", align_corners=False)
    per_call = max(1, args.max_batch // args.batch)

    def floor():  # the masked forwards alone, batched as ScoreCAM batches them
        with torch.no_grad():
            for first in range(0, masks.shape[1], per_call):
                channels = masks[:, first:first + per_call].transpose(0, 1)
                model((images.unsqueeze(0) * channels.unsqueeze(2)).flatten(0, 1))

    ours = ScoreCAM(model, layer="layer4", max_batch=args.max_batch)
    from pytorch_grad_cam import ScoreCAM as PeerScoreCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    def theirs():
        with warnings.catch_warnings(), PeerScoreCAM(model=model, target_layers=[model.layer4]) as peer:
            warnings.simplefilter("ignore")
            peer.batch_size = args.max_batch
            return peer(images, [ClassifierOutputTarget(c) for c in targets])

    cases = {f"masked forwards of {args.batch} x 512 copies": floor,
             "interpkit ScoreCAM": lambda: ours(images, target=targets),
             "pytorch-grad-cam ScoreCAM": theirs}
    t = time_all(cases, device, repeats=args.repeats, warmup=0)
    names = list(cases)
    report(f"ScoreCAM, resnet18 layer4, batch {args.batch}, 224x224, {machine(device)}", t, [
        ("interpkit / its masked forwards", t[names[1]] / t[names[0]], "<= 1.1"),
        ("pytorch-grad-cam / interpkit (speed-up)", t[names[2]] / t[names[1]], ">= 1"),
    ])


if __name__ == "__main__":
    main()
