"""The gradient CAM variants against GradCAM on the same call (torchvision resnet18, random
weights, batch 8, 224 x 224, layer4, one class): each variant's time over GradCAM's, one run.

Run: python benchmarks/bench_cam_variants.py [--device cuda] [--repeats 7]
"""

from __future__ import annotations

import interpkit
from common import machine, report, resnet18_batch, time_all

VARIANTS = ("gradcam_plus_plus", "layercam", "xgradcam", "hirescam", "eigencam", "eigengradcam",
            "gradcam_elementwise", "seg_eigencam", "kpca_cam")


def main() -> None:
    args, device, model, images = resnet18_batch(__doc__)
    explainers = {name: interpkit.get_explainer(name)(model, layer="layer4") for name in ("gradcam", *VARIANTS)}
    cases = {name: (lambda e: lambda: e(images, target=1))(e) for name, e in explainers.items()}
    t = time_all(cases, device, repeats=args.repeats)
    report(f"CAM variants / GradCAM, resnet18, batch 8, 224 x 224, layer4, {machine(device)}", t,
           [(f"{name} / gradcam", t[name] / t["gradcam"], "<= 1.2") for name in VARIANTS])


if __name__ == "__main__":
    main()
