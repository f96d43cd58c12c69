"""Every ratio of the GPU call-path table (issue 21) in one run, with the peers on the same work
and the host-device synchronisations of one call.

Run: python benchmarks/bench_gpu.py --device cuda            (full sizes, about 3 minutes on an H200)
     python benchmarks/bench_gpu.py --device cpu --proxies   (one 32 x 32 image, one thread: per-call costs)
     python benchmarks/bench_gpu.py --device cpu --small     (tiny sizes: a smoke run, also in the tests)

Each bare pass runs on a model no other library has hooked: pytorch-grad-cam's constructor
leaves hooks on the model it is given, so every peer gets its own copy.
"""

from __future__ import annotations

import argparse
import copy
import warnings

import torch
import torchvision

import interpkit
from common import backward_to, machine, report, time_all
from interpkit import TokenGrid
from interpkit.metrics import Deletion, randomisation_check


def sizes(small: bool) -> dict:
    if small:
        return {"image": 32, "batches": (1, 2), "big_batch": 2, "small_batch": 2, "classes": 3, "cnn": "resnet18",
                "vit": "vit_tiny_patch16_224", "rollout_vit": "vit_tiny_patch16_224", "repeats": 2, "steps": 4}
    return {"image": 224, "batches": (1, 16, 64), "big_batch": 64, "small_batch": 8, "classes": 10,
            "cnn": "resnet50", "vit": "vit_small_patch16_224", "rollout_vit": "vit_base_patch16_224", "repeats": 15,
            "steps": 20}


def images(batch: int, size: int, device: torch.device) -> torch.Tensor:
    return torch.randn(batch, 3, size, size, device=device)


def gradcam_cases(s: dict, device: torch.device) -> list[tuple[str, float, str]]:
    model = getattr(torchvision.models, s["cnn"])().eval().to(device)
    explainer = interpkit.GradCAM(model, layer="layer4")
    ratios = []
    for batch in s["batches"]:
        x = images(batch, s["image"], device)
        t = time_all({"bare": lambda: backward_to(model, model.layer4, x, 1),
                      "ours": lambda: explainer(x, target=1)}, device, repeats=s["repeats"])
        goal = "<= 1.25" if batch == 1 else "<= 1.10"
        ratios.append((f"GradCAM 1 class / bare, {s['cnn']} batch {batch}", t["ours"] / t["bare"], goal))
    x = images(s["big_batch"], s["image"], device)
    classes = torch.arange(s["classes"]).expand(len(x), -1)  # on the CPU: its range check costs no sync

    def floor():  # one forward, one batched backward of every class to the layer
        kept = []
        handle = model.layer4.register_forward_hook(lambda _m, _i, out: kept.append(out))
        logits = model(x)
        handle.remove()
        rows = torch.eye(s["classes"], device=device)
        grad_outputs = torch.zeros(s["classes"], *logits.shape, device=device)
        grad_outputs[:, :, :s["classes"]] = rows.unsqueeze(1)
        return torch.autograd.grad(logits, kept[0], grad_outputs, is_grads_batched=True)

    t = time_all({"floor": floor, "ours": lambda: explainer(x, target=classes)}, device, repeats=s["repeats"])
    ratios.append((f"GradCAM {s['classes']} classes / floor, {s['cnn']} batch {len(x)}", t["ours"] / t["floor"],
                   "<= 1.10"))
    return ratios


def resnet18_and_peers(s: dict, device: torch.device) -> list[tuple[str, float, str]]:
    from captum.attr import LayerGradCam
    from pytorch_grad_cam import GradCAM as PeerGradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model = torchvision.models.resnet18().eval().to(device)
    peer_model, captum_model = copy.deepcopy(model), copy.deepcopy(model)  # each peer hooks only its own copy
    x = images(s["small_batch"], s["image"], device)
    ours = interpkit.GradCAM(model, layer="layer4")
    captum = LayerGradCam(captum_model, captum_model.layer4)
    classes = torch.arange(s["classes"]).expand(len(x), -1)

    def peer():
        with PeerGradCAM(model=peer_model, target_layers=[peer_model.layer4]) as cam:
            return cam(input_tensor=x, targets=[ClassifierOutputTarget(1)] * len(x))

    cases = {"bare": lambda: backward_to(model, model.layer4, x, 1), "ours": lambda: ours(x, target=1),
             "peer": peer, "ours_k": lambda: ours(x, target=classes),
             "captum_k": lambda: [captum.attribute(x, target=c) for c in range(s["classes"])]}
    t = time_all(cases, device, repeats=s["repeats"])
    return [(f"GradCAM 1 class / bare, resnet18 batch {len(x)}", t["ours"] / t["bare"], "<= 1.25"),
            ("pytorch-grad-cam / interpkit, 1 class (speed-up)", t["peer"] / t["ours"], ">= 1"),
            (f"captum x{s['classes']} / interpkit {s['classes']} classes (speed-up)", t["captum_k"] / t["ours_k"],
             "> 1")]


def guided(s: dict, device: torch.device) -> list[tuple[str, float, str]]:
    model = getattr(torchvision.models, s["cnn"])().eval().to(device)
    x = images(s["batches"][-2] if len(s["batches"]) > 2 else s["small_batch"], s["image"], device)
    explainer = interpkit.GuidedBackprop(model)

    def plain():
        leaf = x.clone().requires_grad_(True)
        return torch.autograd.grad(model(leaf)[:, 1].sum(), leaf)

    t = time_all({"plain": plain, "ours": lambda: explainer(x, target=1)}, device, repeats=s["repeats"])
    return [(f"GuidedBackprop 1 class / plain input gradient, {s['cnn']} batch {len(x)}", t["ours"] / t["plain"],
             "<= 1.15")]


def transformers(s: dict, device: torch.device) -> list[tuple[str, float, str]]:
    import timm

    from interpkit_transformers import AttentionRollout

    size = s["image"]
    vit = timm.create_model(s["vit"], pretrained=False, img_size=size).eval().to(device)
    x = images(s["small_batch"], size, device)
    layer = vit.get_submodule(f"blocks.{len(vit.blocks) - 1}.norm1")
    ours = interpkit.GradCAM(vit, layer=(f"blocks.{len(vit.blocks) - 1}.norm1", TokenGrid()))
    t = time_all({"bare": lambda: backward_to(vit, layer, x, 1), "ours": lambda: ours(x, target=1)}, device,
                 repeats=s["repeats"])
    ratios = [(f"ViT token GradCAM / bare, {s['vit']} batch {len(x)}", t["ours"] / t["bare"], "<= 1.10")]
    big = timm.create_model(s["rollout_vit"], pretrained=False, img_size=size).eval().to(device)
    rollout = AttentionRollout(big)

    def forward():
        with torch.no_grad():
            return big(x)

    t = time_all({"forward": forward, "ours": lambda: rollout(x)}, device, repeats=s["repeats"])
    ratios.append((f"attention rollout / one forward, {s['rollout_vit']} batch {len(x)}", t["ours"] / t["forward"],
                   "<= 1.30"))
    return ratios


def metrics(s: dict, device: torch.device) -> list[tuple[str, float, str]]:
    model = torchvision.models.resnet18().eval().to(device)
    batch = 16 if s["image"] > 32 else 2
    x, maps = images(batch, s["image"], device), torch.rand(batch, s["image"], s["image"], device=device)
    labels = torch.arange(batch) % 10  # on the CPU: checked without a sync
    deletion = Deletion(steps=s["steps"])

    def forwards():
        with torch.no_grad():
            for _ in range(s["steps"] + 1):
                model(x)

    small = x[:4]
    layers = [m for m in model.modules() if any(True for _ in m.parameters(recurse=False))]

    def explanations():
        for _ in range(len(layers) + 1):
            interpkit.GradCAM(model, layer="layer4")(small)

    t = time_all({"forwards": forwards, "deletion": lambda: deletion(model, x, maps, targets=labels),
                  "explanations": explanations,
                  "check": lambda: randomisation_check(lambda m: interpkit.GradCAM(m, layer="layer4"), model, small)},
                 device, repeats=max(2, s["repeats"] // 5), warmup=1)
    return [(f"deletion, {s['steps']} steps / its {s['steps'] + 1} forwards, resnet18 batch {batch}",
             t["deletion"] / t["forwards"], "<= 1.10"),
            (f"randomisation check / its explanations, resnet18 batch {len(small)}", t["check"] / t["explanations"],
             "<= 1.10")]


def dataset(s: dict, device: torch.device) -> list[tuple[str, float, str]]:
    """explain_dataset against a bare loop over the same DataLoader (in-memory images: what is
    measured is interpkit's own cost, not decoding)."""
    import tempfile
    import time

    from torch.utils.data import DataLoader, TensorDataset

    model = torchvision.models.resnet18().eval().to(device)
    count, batch = (256, 64) if s["image"] > 32 else (8, 4)
    data = TensorDataset(torch.randn(count, 3, s["image"], s["image"]), torch.zeros(count, dtype=torch.long))

    def bare_loop():
        for x, _ in DataLoader(data, batch_size=batch):
            backward_to(model, model.layer4, x.to(device), 0)

    def ours():
        with tempfile.TemporaryDirectory() as out:
            interpkit.explain_dataset(interpkit.GradCAM(model, layer="layer4"), data, f"{out}/store",
                                      batch_size=batch, progress=False)

    seconds = {}
    for name, work in (("bare", bare_loop), ("ours", ours), ("bare", bare_loop), ("ours", ours)):
        start = time.perf_counter()
        work()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds[name] = min(seconds.get(name, float("inf")), time.perf_counter() - start)
    return [(f"explain_dataset / bare loop (throughput), resnet18 batch {batch}", seconds["bare"] / seconds["ours"],
             ">= 0.95")]


def syncs_per_call(device: torch.device, s: dict) -> list[tuple[str, float, str]]:
    """CUDA's sync debug mode, counted: the synchronisations of one steady-state call."""
    if device.type != "cuda":
        return []
    model = getattr(torchvision.models, s["cnn"])().eval().to(device)
    x = images(1, s["image"], device)
    explainer = interpkit.GradCAM(model, layer="layer4")
    explainer(x)
    torch.cuda.synchronize(device)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            explainer(x)
        finally:
            torch.cuda.set_sync_debug_mode(0)
    count = sum("synchroniz" in str(w.message) for w in caught)
    return [(f"host-device syncs in one GradCAM call, {s['cnn']} (a count)", float(count), "1: the finite check")]


def cpu_proxies(repeats: int) -> list[tuple[str, float, str]]:
    """Per-call costs without a GPU: one 32 x 32 image, one thread, where arithmetic hides little."""
    torch.set_num_threads(1)
    device, ratios = torch.device("cpu"), []
    x = images(1, 32, device)
    for depth in ("resnet18", "resnet50", "resnet152"):
        model = getattr(torchvision.models, depth)().eval()
        cam, guided = interpkit.GradCAM(model, layer="layer3"), interpkit.GuidedBackprop(model)

        def plain():
            leaf = x.clone().requires_grad_(True)
            return torch.autograd.grad(model(leaf)[:, 1].sum(), leaf)

        t = time_all({"bare": lambda: backward_to(model, model.layer3, x, 1), "cam": lambda: cam(x, target=1),
                      "plain": plain, "guided": lambda: guided(x, target=1)}, device, repeats=repeats)
        ratios += [(f"GradCAM / bare, {depth}, one 32 x 32 image, one thread", t["cam"] / t["bare"], "<= 1.10"),
                   (f"GuidedBackprop / plain gradient, {depth}, same", t["guided"] / t["plain"], "<= 1.15")]
    return ratios


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--small", action="store_true", help="tiny sizes: a smoke run")
    parser.add_argument("--proxies", action="store_true", help="only the CPU proxies: one 32 x 32 image, one thread")
    args = parser.parse_args()
    torch.manual_seed(0)
    device = torch.device(args.device)
    s = sizes(args.small)
    if args.proxies:
        ratios = cpu_proxies(repeats=21)
        report(f"CPU proxies of the call path, {machine(device)}", {}, ratios)
        return
    ratios = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for part in (gradcam_cases, resnet18_and_peers, guided, transformers, metrics, dataset):
            ratios += part(s, device)
    ratios += syncs_per_call(device, s)
    report(f"The call path, {machine(device)}", {}, ratios)


if __name__ == "__main__":
    main()
