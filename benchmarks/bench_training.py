"""Training speed: the whole Task 1 table from scratch, and the VGG19 head on cached features.

Run: python benchmarks/bench_training.py [--skip-vgg] [--skip-cnns]

(1) Trains the three Caltech CNNs with the bundled recipe on the canonical split (goal: under
5 minutes on 2 CPU cores). (2) Times one inference pass of VGG19 over the 400 images, then the
VGG19 head fine-tuning with a cold feature cache (goal: under 1.3x that pass). VGG19 has random
weights here: timing does not depend on them, and ImageNet weights cannot be downloaded offline.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch
import torchvision

from common import machine
from interpkit.data import ImageTransform
from interpkit.train import TrainConfig, load_splits, train_models
from interpkit.zoo import vgg


def cnns() -> None:
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        rows = train_models(["caltech5_arch1", "caltech5_arch2", "caltech5_arch3"], out, progress=False)
        seconds = time.perf_counter() - start
    print(f"## Task 1 table: three CNNs trained from scratch, {machine(torch.device('cpu'))}")
    for row in rows:
        print(f"  {row['model']}: val {row['val_accuracy']:.1%}, test {row['test_accuracy']:.1%}, "
              f"best epoch {row['best_epoch']}")
    print(f"  total {seconds:.1f} s   (goal: < 300 s)")


def vgg_head() -> None:
    torch.manual_seed(0)
    state = torchvision.models.vgg19().state_dict()
    transform = ImageTransform()
    splits, _ = load_splits(None, transform.size)
    model = vgg.build(5, state).eval()
    images = torch.cat([splits[s].images for s in ("train", "val", "test")])
    start = time.perf_counter()
    with torch.no_grad():
        for i in range(0, len(images), 25):
            model(transform.normalize(images[i:i + 25]))
    inference = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        train_models(["vgg19_caltech5"], out, TrainConfig(), backbone=state, progress=False)
        training = time.perf_counter() - start
    print(f"## VGG19 head fine-tuning, {len(images)} images at 224x224, {machine(torch.device('cpu'))}")
    print(f"  one inference pass over the images     {inference:8.1f} s")
    print(f"  head fine-tuning, cold feature cache   {training:8.1f} s")
    print(f"  ratio {training / inference:.2f}x   (goal: < 1.3)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--skip-cnns", action="store_true")
    parser.add_argument("--skip-vgg", action="store_true")
    args = parser.parse_args()
    if not args.skip_cnns:
        cnns()
    if not args.skip_vgg:
        vgg_head()


if __name__ == "__main__":
    main()
