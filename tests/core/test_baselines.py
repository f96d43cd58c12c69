"""Baselines as DeepLift, the gradient family and the perturbation methods take them: one row per
sample follows the call's rows (a sample explained alone, copies of the batch), a callable sees
a copy of the inputs, and bad ones are refused naming what is wrong."""

import pytest
import torch
from torch import nn

from interpkit import InputError
from interpkit.explainers import DeepLift, FeatureAblation, Occlusion

EXPLAINERS = {
    "occlusion": lambda model, baseline: Occlusion(model, window=4, baseline=baseline),
    "feature_ablation": lambda model, baseline: FeatureAblation(model, features="grid", segments=4, baseline=baseline),
    "deeplift": lambda model, baseline: DeepLift(model, baseline=baseline, strict=False),
}


def _net(mixes: bool) -> nn.Module:
    """A small CNN; with ``mixes`` its batch norm has no running statistics, so it is explained one sample at a time."""
    torch.manual_seed(0)
    norm = nn.BatchNorm2d(4, track_running_stats=False) if mixes else nn.BatchNorm2d(4)
    return nn.Sequential(nn.Conv2d(3, 4, 3), norm, nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3)).eval()


@pytest.mark.parametrize("name", list(EXPLAINERS))
@pytest.mark.parametrize("mixes", [False, True])
def test_each_sample_gets_its_own_baseline_row_however_the_batch_is_explained(name, mixes):
    make = EXPLAINERS[name]
    model, x = _net(mixes), torch.randn(3, 3, 8, 8)
    baseline = torch.randn(3, 3, 8, 8)
    together = make(model, baseline)(x, target=[0, 1, 2]).maps
    alone = torch.cat([make(model, baseline[i])(x[i:i + 1], target=i).maps for i in range(3)])
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-6)
    halved = make(model, lambda inputs: 0.5 * inputs)(x, target=[0, 1, 2]).maps
    torch.testing.assert_close(halved, make(model, 0.5 * x)(x, target=[0, 1, 2]).maps, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", list(EXPLAINERS))
def test_a_callable_that_writes_its_input_leaves_the_users_input_alone(name):
    model, x = _net(False), torch.randn(2, 3, 8, 8)
    kept = x.clone()
    written = EXPLAINERS[name](model, lambda inputs: inputs.mul_(0))(x, target=1).maps
    torch.testing.assert_close(x, kept, rtol=0, atol=0)
    torch.testing.assert_close(written, EXPLAINERS[name](model, 0.0)(x, target=1).maps)


def test_bad_baselines_are_refused_naming_the_problem():
    model, x = _net(True), torch.randn(3, 3, 8, 8)
    for name, make in EXPLAINERS.items():
        with pytest.raises(InputError, match="2 baselines for 3 inputs"):  # the user's batch, not the one sample
            make(model, torch.zeros(2, 3, 8, 8))(x, target=0)
        with pytest.raises(InputError, match="must be dense"):
            make(model, torch.zeros(3, 8, 8).to_sparse())
        with pytest.raises(InputError, match="dense floating tensor"):
            make(model, lambda inputs: inputs.to_sparse())(x, target=0)
        half = _net(False).half()
        with pytest.raises(InputError, match="beyond the range of the inputs' torch.float16"):
            make(half, torch.full((3, 8, 8), 1e5))(x.half(), target=0)
        with pytest.raises(InputError, match="NaN or Inf"):
            make(half, lambda inputs: inputs.float() * 1e5)(x.half(), target=0)


def test_a_vector_as_long_as_the_channels_is_refused_as_ambiguous():
    """A (C,) tensor broadcasts along the last axis, not the channels: where that axis has C
    positions too, per-channel means would silently become per-column values."""
    model, x = _net(False), torch.randn(2, 3, 8, 8)
    for make in EXPLAINERS.values():
        with pytest.raises(InputError, match=r"ambiguous: give one value per channel as \(3, 1, 1\)"):
            make(model, torch.tensor([0.1, 0.2, 0.3]))(x, target=0)
    per_channel = EXPLAINERS["deeplift"](model, torch.tensor([0.1, 0.2, 0.3]).view(3, 1, 1))(x, target=0).maps
    full = EXPLAINERS["deeplift"](model, torch.tensor([0.1, 0.2, 0.3]).view(3, 1, 1).expand(3, 8, 8))(x, target=0).maps
    torch.testing.assert_close(per_channel, full)
