"""Guided backprop speed on torchvision resnet18, batch 8, 224 x 224, against a plain input gradient.

Run: python benchmarks/bench_guided.py [--device cuda] [--repeats 7]
"""

from __future__ import annotations

import torch

import interpkit
from common import machine, report, resnet18_batch, time_all

CLASSES = [1, 2, 3, 4, 5]


def main() -> None:
    args, device, model, images = resnet18_batch(__doc__)

    def plain_gradient():
        x = images.clone().requires_grad_(True)
        return torch.autograd.grad(model(x)[:, CLASSES[0]].sum(), x)[0]

    def forward_only():
        with torch.no_grad():
            return model(images)

    guided = interpkit.GuidedBackprop(model)
    five = torch.tensor(CLASSES, device=device).expand(8, -1)
    cases = {
        "plain input gradient, 1 class": plain_gradient,
        "forward only (no_grad)": forward_only,
        "interpkit GuidedBackprop, 1 class": lambda: guided(images, target=CLASSES[0]),
        "interpkit GuidedBackprop, 5 classes": lambda: guided(images, target=five),
    }
    try:
        from captum.attr import GuidedBackprop as PeerGuided

        peer = PeerGuided(model)
        import warnings

        def captum_five():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return [peer.attribute(images, target=c) for c in CLASSES]

        cases["captum GuidedBackprop x 5 classes"] = captum_five
    except ImportError:
        pass
    t = time_all(cases, device, repeats=args.repeats)
    names = list(cases)
    plain, forward, one, five_t = (t[n] for n in names[:4])
    backward = plain - forward  # one input-gradient backward pass
    ratios = [
        ("guided 1 class / plain gradient", one / plain, "<= 1.15"),
        ("guided 5 classes / guided 1 class", five_t / one, "<= 2"),
        ("arithmetic floor (F + 5B) / (F + B) for 5 input gradients", (forward + 5 * backward) / plain, "-"),
    ]
    if len(names) > 4:
        ratios.append(("captum x5 / interpkit 5 classes (speed-up)", t[names[4]] / five_t, "none set"))
    report(f"Guided backprop, resnet18, batch 8, 224x224, {machine(device)}", t, ratios)


if __name__ == "__main__":
    main()
