"""GradCAM speed on torchvision resnet18, batch 8, 224 x 224, against a bare pass and the peers.

Run: python benchmarks/bench_gradcam.py [--device cuda] [--repeats 7]
"""

from __future__ import annotations

import warnings

import torch

import interpkit
from common import backward_to, machine, report, resnet18_batch, time_all

CLASSES = [1, 2, 3, 4, 5]


def main() -> None:
    args, device, model, images = resnet18_batch(__doc__)
    layer = model.layer4

    def bare_pass(to=layer):
        return backward_to(model, to, images, CLASSES[0])

    def forward_only():
        with torch.no_grad():
            return model(images)

    ours = interpkit.GradCAM(model, layer="layer4")
    three_layers = interpkit.GradCAM(model, layer=["layer2", "layer3", "layer4"])
    from captum.attr import LayerGradCam
    from pytorch_grad_cam import GradCAM as PeerGradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    captum = LayerGradCam(model, layer)

    def captum_five():
        return [captum.attribute(images, target=c, relu_attributions=True) for c in CLASSES]

    def peer_one():
        with PeerGradCAM(model=model, target_layers=[layer]) as cam:
            return cam(input_tensor=images, targets=[ClassifierOutputTarget(CLASSES[0])] * 8)

    five = torch.tensor(CLASSES, device=device).expand(8, -1)
    cases = {
        "bare forward + backward to layer4": bare_pass,
        "interpkit GradCAM, 1 class": lambda: ours(images, target=CLASSES[0]),
        "interpkit GradCAM, 5 classes": lambda: ours(images, target=five),
        "interpkit GradCAM, 3 layers x 5 classes": lambda: three_layers(images, target=five),
        "interpkit GradCAM, 3 layers x 1 class": lambda: three_layers(images, target=CLASSES[0]),
        "bare forward + backward to layer2": lambda: bare_pass(model.layer2),
        "forward only (no_grad)": forward_only,
        "captum LayerGradCam x 5 classes": captum_five,
        "pytorch-grad-cam GradCAM, 1 class": peer_one,
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t = time_all(cases, device, repeats=args.repeats)
    names = list(cases)
    report(f"GradCAM, resnet18, batch 8, 224x224, {machine(device)}", t, [
        ("1 class / bare pass", t[names[1]] / t[names[0]], "<= 1.10"),
        ("5 classes / 1 class", t[names[2]] / t[names[1]], "<= 1.7"),
        ("3 layers x 5 classes / 1 layer x 1 class", t[names[3]] / t[names[1]], "<= 1.15 (see RESULTS.md)"),
        ("3 layers x 1 class / bare pass to layer2 (several layers, one pass)", t[names[4]] / t[names[5]], "-"),
        ("3 layers x 5 classes / floor F + 5 B(layer2)", t[names[3]] / (t[names[6]] + 5 * (t[names[5]] - t[names[6]])),
         "-"),
        ("captum x5 / interpkit 5 classes (speed-up)", t[names[7]] / t[names[2]], ">= 2.5"),
        ("pytorch-grad-cam / interpkit 1 class (speed-up)", t[names[8]] / t[names[1]], ">= 2"),
    ])


if __name__ == "__main__":
    main()
