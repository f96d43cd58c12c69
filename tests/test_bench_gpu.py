"""The GPU benchmark script runs end to end on the CPU at tiny sizes and prints every ratio of
the call-path table (its figures are not checked: no timings in the test suite)."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_bench_gpu_smoke_run_prints_every_ratio():
    done = subprocess.run([sys.executable, "benchmarks/bench_gpu.py", "--device", "cpu", "--small"], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    for label in ("GradCAM 1 class / bare, resnet18 batch 1", "classes / floor", "pytorch-grad-cam / interpkit",
                  "captum x3 / interpkit", "GuidedBackprop 1 class / plain input gradient", "ViT token GradCAM / bare",
                  "attention rollout / one forward", "deletion, 4 steps / its 5 forwards",
                  "randomisation check / its explanations", "explain_dataset / bare loop"):
        assert label in done.stdout, label
