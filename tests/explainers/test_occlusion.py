"""Occlusion equals captum's on the same windows, strides and baselines, and is exact on models
whose answer is known by construction."""

import pytest
import torch
import torchvision
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from interpkit import InputError, Occlusion, TargetError
from interpkit.core import model_cache
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


def test_live_peak_counts_what_the_batch_holds_at_once_not_views_in_place_results_or_weights():
    from interpkit.core import ModelInputs
    from interpkit.explainers.perturbation import LivePeak

    batch, weight = torch.ones(1000), torch.ones(50, 40)
    with LivePeak(ModelInputs(args=(batch,))) as peak:
        a = batch * 1  # 4,000 bytes
        b = a * 2  # 8,000 held
        del a
        c = b + 1  # b and c: 8,000 again
        b.add_(1)  # in place: nothing new
        views = c.view(10, 100), weight.t()  # views, of a tensor made here and of one that was not
        cast = weight.to(torch.float64)  # made from a weight alone (as autocast's copies): 16,000 not counted
        del b, c, views
        d = torch.ones(1500)  # a factory op may be sized by the batch: 6,000 counted, after the others are gone
    assert peak.bytes == 8000 and len(d) == 1500 and cast.dtype == torch.float64


def test_copies_per_forward_stay_within_the_memory_budget(monkeypatch):
    import interpkit.explainers.perturbation as engine

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(16, 3)).eval()
    x = torch.randn(2, 3, 12, 12)
    batches = []
    model.register_forward_pre_hook(lambda _m, args: batches.append(len(args[0])))
    explainer = Occlusion(model, window=2, stride=2, max_batch=64)  # 36 windows
    first = explainer(x, target=1).maps
    assert batches == [2, 64, 8]  # the clean forward (measured, the first time), then the copies
    (per_sample,) = [v for k, v in model_cache(model).items() if k[0] == "peak bytes"]
    assert 16 * 12 * 12 * 4 <= per_sample < 10 * 16 * 12 * 12 * 4  # the conv's output, the copy, a few more
    monkeypatch.setattr(engine, "MEMORY_BUDGET", 5 * 2 * per_sample)  # room for five copies of the batch
    batches.clear()
    torch.testing.assert_close(explainer(x, target=1).maps, first)
    assert batches[0] == 2 and set(batches[1:-1]) == {10} and len(batches) == 1 + 36 // 5 + 1
    monkeypatch.setattr(engine, "MEMORY_BUDGET", 1)  # below one copy: one copy per forward, never none
    batches.clear()
    torch.testing.assert_close(explainer(x, target=1).maps, first)
    assert set(batches) == {2} and len(batches) == 37
    longer = torch.randn(2, 3, 24, 24)  # other shapes are measured again
    explainer(longer, target=1)
    peaks = [v for k, v in model_cache(model).items() if k[0] == "peak bytes"]
    assert len(peaks) == 2 and max(peaks) > per_sample


def test_a_caller_without_the_clean_forward_gets_a_measured_forward_that_draws_nothing():
    import interpkit.explainers.perturbation as engine
    from interpkit.core import Call, ModelInputs

    class Noisy(nn.Module):  # draws random numbers in eval: the measuring forward must not consume them
        def forward(self, x):
            return x.flatten(1)[:, :3] + torch.rand(len(x), 3)

    model, x = Noisy(), torch.rand(2, 3, 4, 4)
    call = Call(ModelInputs(args=(x,)), 0)

    def scores():
        torch.manual_seed(0)
        return engine.perturbed_scores(model, call, torch.zeros(2, 1, dtype=torch.long), 3,
                                       lambda a, b: x.expand(b - a, *x.shape), max_batch=4)

    first = scores()
    assert len([k for k in model_cache(model) if k[0] == "peak bytes"]) == 1
    torch.testing.assert_close(scores(), first, rtol=0, atol=0)


def test_the_measure_ignores_autocast_weight_copies_and_follows_the_model_s_modules():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(48, 4096), nn.ReLU(), nn.Linear(4096, 3)).eval()
    x = torch.randn(1, 3, 4, 4)
    explainer = Occlusion(model, window=2, stride=2)

    def peaks():
        return sorted(v for k, v in model_cache(model).items() if k[0] == "peak bytes")

    with torch.autocast("cpu", dtype=torch.bfloat16):  # casts each weight once: 0.4 MB, the same for any batch
        explainer(x, target=1)
    explainer(x, target=1)
    assert len(peaks()) == 2 and max(peaks()) < 4096 * 4 * 4  # a few activations of one sample, no weight
    model[1], model[3] = nn.Linear(48, 16384), nn.Linear(16384, 3)  # four times wider: measured again
    explainer(x, target=1)
    assert len(peaks()) == 1 and peaks()[0] >= 16384 * 4
