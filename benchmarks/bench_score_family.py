"""SSCAM, ISCAM and SmoothGrad-CAM++ against the floor of the passes each must run, and torchcam.

torchvision resnet18 (random weights), layer4 (512 channels), batch 2, 64 x 64, 4 samples, one
class, one run. SSCAM's and ISCAM's floor: their 4 x 512 masked copies of each image (noisy or
scaled masks prepared beforehand) through the model under no_grad, batched as interpkit batches
them (``max_batch`` 64); SmoothGrad-CAM++'s: a forward and backward to layer4 of the clean batch
and of its 4 noisy copies. torchcam runs on its own model copy.

Run: python benchmarks/bench_score_family.py [--device cuda] [--repeats 3]
"""

from __future__ import annotations

import copy

import torch
import torchvision

from common import arguments, backward_to, machine, report, time_all
from interpkit_cam_variants import ISCAM, SSCAM, SmoothGradCAMPlusPlus

SAMPLES, MAX_BATCH = 4, 64


def masked_forwards(model, images, versions):
    """Every version's masked copies through the model in forwards of MAX_BATCH samples."""
    per_call = max(1, MAX_BATCH // len(images))
    with torch.no_grad():
        for masks in versions:
            for first in range(0, masks.shape[1], per_call):
                channels = masks[:, first:first + per_call].transpose(0, 1)
                model((images.unsqueeze(0) * channels.unsqueeze(2)).flatten(0, 1))


def main() -> None:
    from torchcam.methods import ISCAM as TorchcamISCAM
    from torchcam.methods import SSCAM as TorchcamSSCAM

    args, device = arguments(__doc__, repeats=3)
    model = torchvision.models.resnet18().eval().to(device)
    images = torch.randn(2, 3, 64, 64, device=device)
    with torch.no_grad():
        kept = []
        handle = model.layer4.register_forward_hook(lambda m, i, o: kept.append(o))
        model(images)
        handle.remove()
    flat = kept[0].flatten(2)
    unit = ((flat - flat.amin(-1, keepdim=True)) / (flat.amax(-1, keepdim=True) - flat.amin(-1, keepdim=True) + 1e-8))
    masks = torch.nn.functional.interpolate(unit.view_as(kept[0]), size=(64, 64), mode="bilinear", align_corners=False)
    noisy = [masks + 2.0 * torch.randn(masks.shape[1:], device=device) for _ in range(SAMPLES)]
    scaled = [masks * (s + 1) / SAMPLES for s in range(SAMPLES)]
    noisy_inputs = [images + 0.3 * torch.randn(images.shape[1:], device=device) for _ in range(SAMPLES)]

    theirs_model = copy.deepcopy(model)

    def torchcam(method):  # constructed per call as its context manager requires; hooks removed on exit
        with method(theirs_model, "layer4", batch_size=MAX_BATCH, num_samples=SAMPLES, input_shape=(3, 64, 64)) as cam:
            with torch.no_grad():
                scores = theirs_model(images)
            return cam(class_idx=1, scores=scores)

    sscam = SSCAM(model, layer="layer4", samples=SAMPLES, max_batch=MAX_BATCH)
    iscam = ISCAM(model, layer="layer4", samples=SAMPLES, max_batch=MAX_BATCH)
    smooth = SmoothGradCAMPlusPlus(model, layer="layer4", samples=SAMPLES, max_batch=MAX_BATCH)
    cases = {
        "floor: SSCAM's masked forwards": lambda: masked_forwards(model, images, noisy),
        "interpkit SSCAM": lambda: sscam(images, target=1),
        "torchcam SSCAM": lambda: torchcam(TorchcamSSCAM),
        "floor: ISCAM's masked forwards": lambda: masked_forwards(model, images, scaled),
        "interpkit ISCAM": lambda: iscam(images, target=1),
        "torchcam ISCAM": lambda: torchcam(TorchcamISCAM),
        "floor: 1 + 4 forward and backward passes to layer4": lambda: [backward_to(model, model.layer4, x, 1)
                                                                       for x in [images, *noisy_inputs]],
        "interpkit SmoothGrad-CAM++": lambda: smooth(images, target=1),
    }
    t = time_all(cases, device, repeats=args.repeats, warmup=1)
    n = list(cases)
    report(f"Score-CAM family and SmoothGrad-CAM++, resnet18 layer4, batch 2, 64 x 64, {SAMPLES} samples, "
           f"{machine(device)}", t, [
               ("SSCAM / its masked forwards", t[n[1]] / t[n[0]], "<= 1.1"),
               ("torchcam SSCAM / interpkit", t[n[2]] / t[n[1]], "-"),
               ("ISCAM / its masked forwards", t[n[4]] / t[n[3]], "<= 1.1"),
               ("torchcam ISCAM / interpkit", t[n[5]] / t[n[4]], "-"),
               ("SmoothGrad-CAM++ / its passes", t[n[7]] / t[n[6]], "-"),
           ])


if __name__ == "__main__":
    main()
