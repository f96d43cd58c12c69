"""Feature visualisation of many channels at once against its floor and against one run per channel.

interpkit optimises the images of ``--channels`` channels of resnet18 ``layer4`` together:
``--steps`` steps, each one forward and one backward of the whole batch (spectral images,
colour decorrelation, lucent's random transforms, Adam). The floor is the same number of bare
forward + backward passes (the gradient of the channels' mean with respect to a 64-image input
at the size the model sees, size + 2 x 12 px of padding): the model's arithmetic and nothing
else. The separate runs optimise one channel per call, as lucent does one objective at a time;
``--separate K`` of them are timed and scaled by channels / K (each run is the same work on
another channel). The last ratio is the most batching can save on the device: the bare
passes of one image, times the channels, over the bare passes of the batch. Each case also runs
for twice the steps: the difference is the cost of ``steps`` steps without the run's fixed part
(its setup and final scoring forward), from which the ratio at ``--project`` steps is projected.

Run: python benchmarks/bench_visualise.py [--device cuda] [--steps 256] [--project 256] [--size 128]
     [--channels 64] [--separate 2] [--threads 1] [--repeats 3]
"""

from __future__ import annotations

import argparse

import torch
import torchvision

from common import machine, report, time_all
from interpkit.analysis import channel, visualise

PAD = 12  # lucent's padding, which the model sees around every image


def floor(model: torch.nn.Module, layer: torch.nn.Module, batch: int, size: int, steps: int, device: torch.device):
    """``steps`` bare forward + backward passes of a batch to its input, reading ``layer``."""
    images = torch.rand(batch, 3, size + 2 * PAD, size + 2 * PAD, device=device, requires_grad=True)
    kept = []
    handle = layer.register_forward_hook(lambda m, i, o: kept.append(o))

    def run():
        try:
            for _ in range(steps):
                kept.clear()
                model(images)
                score = kept[0][torch.arange(batch), torch.arange(batch) % kept[0].shape[1]].mean(dim=(1, 2)).sum()
                torch.autograd.grad(score, images)
        finally:
            kept.clear()
    return run, handle


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=256)
    parser.add_argument("--project", type=int, default=256, help="steps to project the measured ratio to")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--channels", type=int, default=64)
    parser.add_argument("--separate", type=int, default=2, help="separate runs timed, then scaled to every channel")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = torchvision.models.resnet18().eval().to(device)
    floor_model = torchvision.models.resnet18().eval().to(device)  # the floor's hook stays off the measured model
    floor_model.load_state_dict(model.state_dict())
    n, steps = args.channels, args.steps
    bare, handle = floor(floor_model, floor_model.layer4, n, args.size, steps, device)
    bare_twice, handle_twice = floor(floor_model, floor_model.layer4, n, args.size, 2 * steps, device)
    bare_one, handle_one = floor(floor_model, floor_model.layer4, 1, args.size, steps, device)

    def together(count):
        return lambda: visualise(model, channel("layer4", range(n)), size=args.size, steps=count, max_batch=n)

    def separate():
        for c in range(args.separate):
            visualise(model, channel("layer4", c), size=args.size, steps=steps)

    names = [f"floor: {steps} forward + backward, batch {n}", f"interpkit visualise, {n} channels, {steps} steps",
             f"floor: {2 * steps} forward + backward, batch {n}", f"interpkit visualise, {n} channels, {2 * steps} steps",
             f"floor: {steps} forward + backward, batch 1", f"interpkit visualise, {args.separate} channels one at a time"]
    cases = dict(zip(names, [bare, together(steps), bare_twice, together(2 * steps), bare_one, separate]))
    t = time_all(cases, device, repeats=args.repeats, warmup=1)
    for h in (handle, handle_twice, handle_one):
        h.remove()
    per_step = (t[names[3]] - t[names[1]]) / steps  # the run's fixed part (setup, the final forward) cancels
    floor_step = (t[names[2]] - t[names[0]]) / steps
    projected = ((t[names[1]] + (args.project - steps) * per_step) / (t[names[0]] + (args.project - steps) * floor_step))
    one_at_a_time = t[names[5]] * n / args.separate
    ratios = [(f"together / its floor, {steps} steps", t[names[1]] / t[names[0]], "<= 1.15"),
              ("together / floor, per step (2S-step run minus S-step run)", per_step / floor_step, "<= 1.15"),
              (f"together / floor projected to {args.project} steps", projected, "<= 1.15"),
              (f"{n} separate runs (scaled from {args.separate}) / together", one_at_a_time / t[names[1]], ">= 10"),
              ("one separate run / its floor (batch 1)", t[names[5]] / args.separate / t[names[4]], "per-call cost"),
              (f"floor of {n} separate runs / floor together (the most batching can save)",
               t[names[4]] * n / t[names[0]], "bound")]
    report(f"Feature visualisation, resnet18 layer4, {n} channels, {args.size} px (the model sees "
           f"{args.size + 2 * PAD} px), {machine(device)}", t, ratios)


if __name__ == "__main__":
    main()
