"""The CAM variants against GradCAM on the same call (torchvision resnet18, random weights,
batch 8, 224 x 224, layer4, one class): each variant's time over GradCAM's, one run. Then the
variants with their own floors and peers in the same run: ShapleyCAM against its bare pass (a
forward, a backward that keeps its graph, the Hessian-vector product) and pytorch-grad-cam's
ShapleyCAM; RefineCAM against GradCAM of the same three layers and pytorch-grad-cam's; FullGrad
against a bare forward + one backward to the input and every batch norm's output, and
pytorch-grad-cam's FullGrad; deep feature factorization (layer4, 5 concepts, joint) against
pytorch-grad-cam's (scikit-learn's NMF on the CPU). Each peer runs on its own model copy.

Run: python benchmarks/bench_cam_variants.py [--device cuda] [--repeats 7]
"""

from __future__ import annotations

import copy

import torch

import interpkit
from common import machine, report, resnet18_batch, time_all

VARIANTS = ("gradcam_plus_plus", "layercam", "xgradcam", "hirescam", "eigencam", "eigengradcam",
            "gradcam_elementwise", "seg_eigencam", "kpca_cam", "finercam", "shapleycam")


def shapley_floor(model, images):
    """A forward, the gradient to layer4 keeping its graph, and its product with the activation."""
    kept = []
    handle = model.layer4.register_forward_hook(lambda m, i, o: kept.append(o))
    try:
        logits = model(images)
    finally:
        handle.remove()
    score = logits[:, 1] + logits.log_softmax(dim=1)[:, 1]
    (gradient,) = torch.autograd.grad(score.sum(), kept[0], create_graph=True)
    return torch.autograd.grad(gradient, kept[0], grad_outputs=kept[0].detach())


def fullgrad_floor(model, images):
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    kept = []
    handles = [m.register_forward_hook(lambda m, i, o: kept.append(o)) for m in norms]
    x = images.clone().requires_grad_(True)
    try:
        logits = model(x)
    finally:
        for handle in handles:
            handle.remove()
    return torch.autograd.grad(logits[:, 1].sum(), [x] + kept)


def main() -> None:
    import pytorch_grad_cam
    from pytorch_grad_cam.feature_factorization.deep_feature_factorization import DeepFeatureFactorization
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputReST, ClassifierOutputTarget

    from interpkit_cam_variants import FullGrad, RefineCAM, ShapleyCAM, deep_feature_factorization, rest_target

    args, device, model, images = resnet18_batch(__doc__)
    explainers = {name: interpkit.get_explainer(name)(model, layer="layer4") for name in ("gradcam", *VARIANTS)}
    cases = {name: (lambda e: lambda: e(images, target=1))(e) for name, e in explainers.items()}
    # on a score with curvature ShapleyCAM adds its Hessian-vector product: against GradCAM of the same score
    cases["gradcam, ReST target"] = lambda: explainers["gradcam"](images, target=rest_target(1))
    cases["shapleycam, ReST target"] = lambda: explainers["shapleycam"](images, target=rest_target(1))
    t = time_all(cases, device, repeats=args.repeats)
    report(f"CAM variants / GradCAM, resnet18, batch 8, 224 x 224, layer4, {machine(device)}", t,
           [(f"{name} / gradcam", t[name] / t["gradcam"], "<= 1.2") for name in VARIANTS]
           + [("shapleycam / gradcam, ReST target", t["shapleycam, ReST target"] / t["gradcam, ReST target"], "<= 1.2")])

    layers = ["layer2", "layer3", "layer4"]
    copies = {name: copy.deepcopy(model) for name in ("shapley", "refine", "fullgrad", "dff")}
    theirs_shapley = pytorch_grad_cam.ShapleyCAM(copies["shapley"], [copies["shapley"].layer4])
    theirs_refine = pytorch_grad_cam.RefineCAM(copies["refine"], [getattr(copies["refine"], n) for n in layers])
    theirs_fullgrad = pytorch_grad_cam.FullGrad(copies["fullgrad"], [])
    theirs_dff = DeepFeatureFactorization(copies["dff"], copies["dff"].layer4)
    shapley, gradcams = ShapleyCAM(model, layer="layer4"), interpkit.GradCAM(model, layer=layers)
    refine, fullgrad = RefineCAM(model, layers), FullGrad(model)
    classes = [ClassifierOutputTarget(1)] * len(images)
    peers = {
        "bare: forward, gradient with graph, HVP": lambda: shapley_floor(model, images),
        "interpkit ShapleyCAM, ReST target": lambda: shapley(images, target=rest_target(1)),
        "pytorch-grad-cam ShapleyCAM, ReST target": lambda: theirs_shapley(images, [ClassifierOutputReST(1)] * len(images)),
        "interpkit GradCAM, layers 2-4": lambda: gradcams(images, target=1),
        "interpkit RefineCAM, layers 2-4": lambda: refine(images, target=1),
        "pytorch-grad-cam RefineCAM, layers 2-4": lambda: theirs_refine(images, classes),
        "bare: forward, backward to input and norms": lambda: fullgrad_floor(model, images),
        "interpkit FullGrad": lambda: fullgrad(images, target=1),
        "pytorch-grad-cam FullGrad": lambda: theirs_fullgrad(images, classes),
        "interpkit DFF, 5 concepts, joint": lambda: deep_feature_factorization(model, images, "layer4", joint=True),
        "pytorch-grad-cam DFF, 5 concepts": lambda: theirs_dff(images, n_components=5),
    }
    t = time_all(peers, device, repeats=args.repeats)
    n = list(peers)
    report(f"CAM variants with their floors and peers, resnet18, batch 8, 224 x 224, {machine(device)}", t, [
        ("ShapleyCAM / its bare pass", t[n[1]] / t[n[0]], "-"),
        ("pytorch-grad-cam ShapleyCAM / interpkit", t[n[2]] / t[n[1]], "-"),
        ("RefineCAM / GradCAM of the same layers", t[n[4]] / t[n[3]], "<= 1.2"),
        ("pytorch-grad-cam RefineCAM / interpkit", t[n[5]] / t[n[4]], "-"),
        ("FullGrad / its bare pass", t[n[7]] / t[n[6]], "-"),
        ("pytorch-grad-cam FullGrad / interpkit", t[n[8]] / t[n[7]], "-"),
        ("pytorch-grad-cam DFF / interpkit", t[n[10]] / t[n[9]], "-"),
    ])


if __name__ == "__main__":
    main()
