"""Occlusion equals captum's on the same windows, strides and baselines, and is exact on models
whose answer is known by construction."""

import pytest
import torch
import torchvision
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from interpkit import InputError, Occlusion, TargetError
from interpkit.testing import Conv1dNet, Conv3dNet

captum_attr = pytest.importorskip("captum.attr", reason="captum is part of the [test] extra")


@pytest.mark.parametrize("window, stride, baseline", [((8, 8), (4, 4), 0.0), ((5, 7), (3, 2), -0.5),
                                                      ((4, 4), (4, 4), 0.25), ((30, 26), (1, 1), 0.0)])
def test_equals_captum_on_resnet18(window, stride, baseline):
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=5).eval()
    x = torch.randn(2, 3, 30, 26)
    ours = Occlusion(model, window=window, stride=stride, baseline=baseline, max_batch=16)(x, target=[1, 3]).maps
    theirs = captum_attr.Occlusion(model).attribute(x, sliding_window_shapes=(3, *window), strides=(3, *stride),
                                                    target=[1, 3], baselines=baseline, perturbations_per_eval=8)
    assert ours.shape == (2, 1, 30, 26) and ours.abs().max() > 0
    torch.testing.assert_close(ours[:, 0], theirs[:, 0], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(theirs[:, 0], theirs[:, 2])  # captum's channels, occluded together, agree


@pytest.mark.parametrize("make, shape, window, stride", [(Conv1dNet, (2, 2, 40), (6,), (4,)),
                                                         (Conv3dNet, (2, 1, 6, 10, 8), (2, 4, 3), (2, 3, 3))])
def test_equals_captum_in_one_and_three_dimensions(make, shape, window, stride):
    torch.manual_seed(0)
    model, x = make().eval(), torch.randn(*shape)
    ours = Occlusion(model, window=window, stride=stride)(x, target=1).maps
    theirs = captum_attr.Occlusion(model).attribute(x, sliding_window_shapes=(shape[1], *window),
                                                    strides=(shape[1], *stride), target=1)
    torch.testing.assert_close(ours[:, 0], theirs[:, 0], rtol=1e-6, atol=1e-6)


@settings(max_examples=25, deadline=None)
@given(height=st.integers(1, 6), width=st.integers(1, 6), channels=st.integers(1, 3),
       baseline=st.floats(-2, 2), seed=st.integers(0, 2**16))
def test_a_linear_model_gets_its_weights_times_the_change(height, width, channels, baseline, seed):
    """For f(x) = w . x + b, one-position windows give sum_c w_c (x_c - x0) at each position."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(2, channels, height, width, generator=generator, dtype=torch.float64)
    linear = nn.Sequential(nn.Flatten(), nn.Linear(channels * height * width, 3)).double()
    maps = Occlusion(linear, window=1, stride=1, baseline=baseline)(x, target=2).maps
    weights = linear[1].weight[2].detach().view(channels, height, width)
    expected = (weights * (x - baseline)).sum(1)
    torch.testing.assert_close(maps[:, 0].double(), expected, rtol=1e-4, atol=1e-5)


def test_bad_options_and_targets():
    model = Conv1dNet().eval()
    for options in ({"window": 0}, {"window": (2, 0)}, {"stride": 1.5}, {"baseline": float("nan")},
                    {"baseline": "zero"}, {"max_batch": 0}):
        with pytest.raises(InputError):
            Occlusion(model, **options)
    with pytest.raises(InputError, match="1 axes"):
        Occlusion(model, window=(2, 2))(torch.randn(1, 2, 40))
    from interpkit import Neuron

    with pytest.raises(TargetError, match="neurons"):
        Occlusion(model, window=4)(torch.randn(1, 2, 40), target=Neuron("features.0", 0))
