"""LRP, DeepLift, Saliency, InputXGradient and GradientShap against a plain input gradient, and
against zennit 0.5 (LRP) and captum 0.9 (DeepLift, GradientShap) on the same work, in one run.

The plain input gradient is one forward and one ``torch.autograd.grad`` of the target's summed
score with respect to the input. Models: torchvision VGG16 (LRP with EpsilonPlusFlat, as the
issue's goal names), timm's ViT-Tiny and a small HuggingFace Llama (LRP with AttnLRP's rules), VGG11 (no batch norm; captum's
DeepLift runs on it, one ReLU module per use) and resnet18 (captum's DeepLift refuses its reused
ReLUs, so only interpkit's is timed).
Each peer runs on its own model copy. Beside the goals stand two bounds timed in the same run.
LRP's z+ rule runs each convolution after the first once more (with the positive weights), so no
implementation of it costs less than the plain gradient plus those convolutions. DeepLift runs the
baseline through the model apart from the input (one row for a shared baseline), so it costs at
least the plain gradient plus that forward; only folding the baseline into the input's batch, as
captum does, which assumes every op keeps the rows apart, could cost less.

Run: python benchmarks/bench_propagation.py [--device cuda] [--repeats 7] [--size 64] [--batch 8] [--threads 1]
"""

from __future__ import annotations

import argparse
import copy
import warnings

import torch
import torchvision

import interpkit
from common import machine, report, time_all


def plain_gradient(model, images, target: int):
    def run():
        x = images.clone().requires_grad_(True)
        torch.autograd.grad(model(x)[:, target].sum(), x)
    return run


def five_gradients(model, images):
    """The floor of five classes: one forward and five input gradients from it."""
    def run():
        x = images.clone().requires_grad_(True)
        logits = model(x)
        for k in range(5):
            torch.autograd.grad(logits[:, k].sum(), x, retain_graph=k < 4)
    return run


def zplus_convolutions(model, images):
    """What LRP's z+ rule adds to a gradient at least: VGG's convolutions after the first (the flat
    rule's) run once more with their positive weights and biases, under no_grad, on the first
    layer's output (made once, outside the timing)."""
    features = copy.deepcopy(model.features)
    with torch.no_grad():
        for layer in features:
            if isinstance(layer, torch.nn.Conv2d):
                layer.weight.clamp_(min=0)
                layer.bias.clamp_(min=0)
        first = features[:2](images)

    def run():
        with torch.no_grad():
            features[2:](first)
    return run


def baseline_forward(model, images):
    """What DeepLift's separate baseline pass costs at least: one row's forward under no_grad."""
    def run():
        with torch.no_grad():
            model(images[:1])
    return run


def lrp_cases(model, images):
    import torch.nn.functional as F
    from zennit.attribution import Gradient
    from zennit.composites import EpsilonPlusFlat

    theirs = copy.deepcopy(model)
    one_hot = F.one_hot(torch.full((len(images),), 1, device=images.device), 10).to(images)

    def zennit():
        with Gradient(model=theirs, composite=EpsilonPlusFlat()) as attributor:
            attributor(images, one_hot)

    lrp = interpkit.LRP(model, "epsilon_plus_flat")
    return {
        "vgg16: plain input gradient": plain_gradient(model, images, 1),
        "vgg16: interpkit lrp epsilon_plus_flat": lambda: lrp(images, target=1),
        "vgg16: zennit EpsilonPlusFlat": zennit,
        "vgg16: floor of 5 classes (1 forward, 5 gradients)": five_gradients(model, images),
        "vgg16: interpkit lrp, 5 classes": lambda: lrp(images, target=torch.arange(5).expand(len(images), 5)),
        "vgg16: z+ rule's convolutions alone": zplus_convolutions(model, images),
    }


def vit_cases(images):
    """AttnLRP on timm's ViT-Tiny (random weights, fused attention) against its plain gradient:
    LXT, its authors' library, costs about one gradient (its rules are gradient changes)."""
    import timm

    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=images.shape[-1], num_classes=10)
    model = model.eval().to(images.device)
    lrp = interpkit.LRP(model, "epsilon")
    return {"vit_tiny: plain input gradient": plain_gradient(model, images, 1),
            "vit_tiny: interpkit lrp epsilon (AttnLRP)": lambda: lrp(images, target=1)}


def llama_cases(batch: int, device):
    """AttnLRP on a small HuggingFace Llama (from a config: 4 layers, width 256, random weights),
    whose RMS norms are written out in Python, for the last token's logits of 64-token sequences
    given as embeddings, against the same plain input gradient."""
    import transformers

    config = transformers.LlamaConfig(vocab_size=1000, hidden_size=256, intermediate_size=512, num_hidden_layers=4,
                                      num_attention_heads=8, num_key_value_heads=4, max_position_embeddings=128)
    llama = transformers.LlamaForCausalLM(config).eval().to(device)

    class LastToken(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.llama = llama

        def forward(self, embeddings):
            return self.llama(inputs_embeds=embeddings).logits[:, -1]

    model = LastToken().eval()
    embeddings = torch.randn(batch, 64, 256, device=device)
    lrp = interpkit.LRP(model, "epsilon")
    return {"llama: plain input gradient": plain_gradient(model, embeddings, 1),
            "llama: interpkit lrp epsilon (AttnLRP)": lambda: lrp(embeddings, target=1)}


def cases_for(name: str, model, images, captum_too: bool):
    from captum.attr import DeepLift as CaptumDeepLift
    from captum.attr import GradientShap as CaptumGradientShap

    baselines = torch.zeros(4, *images.shape[1:], device=images.device)
    cases = {
        f"{name}: plain input gradient": plain_gradient(model, images, 1),
        f"{name}: interpkit saliency": (lambda e: lambda: e(images, target=1))(interpkit.Saliency(model, absolute=False)),
        f"{name}: interpkit input_x_gradient": (lambda e: lambda: e(images, target=1))(interpkit.InputXGradient(model)),
        f"{name}: interpkit deeplift": (lambda e: lambda: e(images, target=1))(interpkit.DeepLift(model)),
        f"{name}: floor of 5 classes (1 forward, 5 gradients)": five_gradients(model, images),
        f"{name}: the baseline's forward alone (1 row)": baseline_forward(model, images),
        f"{name}: interpkit deeplift, 5 classes": (lambda e: lambda: e(images, target=torch.arange(5).expand(len(images), 5)))(
            interpkit.DeepLift(model)),
        f"{name}: interpkit gradient_shap, 5 samples": (lambda e: lambda: e(images, target=1))(
            interpkit.GradientShap(model, baselines=baselines, samples=5)),
    }
    if captum_too:
        deeplift, shap = CaptumDeepLift(copy.deepcopy(model)), CaptumGradientShap(copy.deepcopy(model))
        cases[f"{name}: captum DeepLift"] = lambda: deeplift.attribute(images, target=1)
        cases[f"{name}: captum GradientShap, 5 samples"] = lambda: shap.attribute(images, baselines=baselines,
                                                                                   n_samples=5, target=1)
    return cases


def lrp_ratios(t: dict[str, float]) -> list[tuple[str, float, str]]:
    """LRP's ratios against the goals, each beside its bound: what the z+ rule's convolutions
    alone add to the plain gradient and to the floor of five."""
    plain, floor, zplus = (t["vgg16: plain input gradient"], t["vgg16: floor of 5 classes (1 forward, 5 gradients)"],
                           t["vgg16: z+ rule's convolutions alone"])
    return [("vgg16: interpkit lrp / plain gradient", t["vgg16: interpkit lrp epsilon_plus_flat"] / plain, "<= 1.5"),
            ("vgg16: bound, (plain gradient + z+ convolutions) / plain gradient", (plain + zplus) / plain,
             "LRP's least"),
            ("vgg16: interpkit lrp 5 classes / floor of 5 gradients", t["vgg16: interpkit lrp, 5 classes"] / floor,
             "<= 1.1"),
            ("vgg16: bound, (floor + z+ convolutions) / floor", (floor + zplus) / floor, "LRP's least")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--lrp-only", action="store_true",
                        help="only VGG16's plain gradient, LRP for one and five classes and their floor, interleaved")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    images = torch.randn(args.batch, 3, args.size, args.size, device=device)
    models = {"vgg11": torchvision.models.vgg11(num_classes=10), "resnet18": torchvision.models.resnet18(num_classes=10)}
    cases = lrp_cases(torchvision.models.vgg16(num_classes=10).eval().to(device), images)
    if args.lrp_only:  # the five-class case swings when interleaved with the peers: timed with its own only
        del cases["vgg16: zennit EpsilonPlusFlat"]
        t = time_all(cases, device, repeats=args.repeats, warmup=1)
        report(f"LRP alone, batch {args.batch}, {args.size}x{args.size}, {machine(device)}", t, lrp_ratios(t))
        return
    for name, model in models.items():
        cases.update(cases_for(name, model.eval().to(device), images, captum_too=name == "vgg11"))
    cases.update(vit_cases(images))
    cases.update(llama_cases(args.batch, device))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t = time_all(cases, device, repeats=args.repeats, warmup=1)
    ratios = lrp_ratios(t) + [("vgg16: zennit / interpkit lrp", t["vgg16: zennit EpsilonPlusFlat"]
                               / t["vgg16: interpkit lrp epsilon_plus_flat"], "> 1")]
    for name in models:
        plain = t[f"{name}: plain input gradient"]
        for method in ("saliency", "input_x_gradient", "deeplift"):
            goal = "<= 1.2" if method == "deeplift" else "<= 1.1"
            ratios.append((f"{name}: interpkit {method} / plain gradient", t[f"{name}: interpkit {method}"] / plain, goal))
        ratios.append((f"{name}: bound, (plain gradient + baseline's forward) / plain gradient",
                       (plain + t[f"{name}: the baseline's forward alone (1 row)"]) / plain,
                       "DeepLift's least with the baseline's own pass"))
        ratios.append((f"{name}: interpkit deeplift 5 classes / floor of 5 gradients",
                       t[f"{name}: interpkit deeplift, 5 classes"] / t[f"{name}: floor of 5 classes (1 forward, 5 gradients)"],
                       "none set (DeepLift adds the baseline's forward)"))
    ratios.append(("vgg11: captum DeepLift / interpkit", t["vgg11: captum DeepLift"] / t["vgg11: interpkit deeplift"],
                   "> 1"))
    ratios.append(("vgg11: captum GradientShap / interpkit", t["vgg11: captum GradientShap, 5 samples"]
                   / t["vgg11: interpkit gradient_shap, 5 samples"], "> 1"))
    ratios.append(("vit_tiny: interpkit lrp (AttnLRP) / plain gradient", t["vit_tiny: interpkit lrp epsilon (AttnLRP)"]
                   / t["vit_tiny: plain input gradient"], "none set"))
    ratios.append(("llama: interpkit lrp (AttnLRP) / plain gradient", t["llama: interpkit lrp epsilon (AttnLRP)"]
                   / t["llama: plain input gradient"], "none set"))
    report(f"Gradient and propagation explainers, batch {args.batch}, {args.size}x{args.size}, {machine(device)}", t,
           ratios)


if __name__ == "__main__":
    main()
