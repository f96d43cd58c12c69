"""Sensitivity-n: 1 at every n for attributions that satisfy it by construction (a linear model,
w (x - x0)), batch-independent, its drops equal Quantus 0.6's on the same feature sets, and
Quantus' three departures from Ancona et al. shown."""

import warnings

import numpy as np
import pytest
import torch
import torchvision
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from interpkit import InputError
from interpkit.metrics import SensitivityN, TargetScores
from interpkit.metrics.faithfulness import subset_drops, subset_sums
from interpkit.testing.metrics import check_metric

quantus = pytest.importorskip("quantus")


def small_case(n=4):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                          nn.Linear(16, 5)).eval()
    generator = torch.Generator().manual_seed(1)
    return model, torch.rand(n, 1, 8, 8, generator=generator), torch.randn(n, 1, 8, 8, generator=generator), \
        torch.tensor([1, 3, 0, 2, 4][:n])


def linear_case(seed, channels, width, n=2):
    """f(x) = W x + b in float64 with attributions w_t * (x - x0): exact for every subset."""
    generator = torch.Generator().manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(channels * width * width, 3)).double().eval()
    with torch.no_grad():
        model[1].weight.copy_(torch.randn(3, channels * width * width, generator=generator, dtype=torch.float64))
    images = torch.rand(n, channels, width, width, generator=generator, dtype=torch.float64)
    baseline = torch.rand(channels, width, width, generator=generator, dtype=torch.float64)
    targets = torch.randint(0, 3, (n,), generator=generator)
    maps = model[1].weight[targets].detach().view(n, channels, width, width) * (images - baseline)
    return model, images, maps, targets, baseline


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**16), channels=st.integers(1, 3), width=st.integers(2, 6))
def test_exact_attributions_of_a_linear_model_correlate_one_at_every_n(seed, channels, width):
    model, images, maps, targets, baseline = linear_case(seed, channels, width)
    result = SensitivityN(sizes=4, runs=6, baseline=baseline)(model, images, maps, targets)
    torch.testing.assert_close(result.curves, torch.ones_like(result.curves), rtol=0, atol=1e-9)
    assert 0 < result.fractions.max() <= 0.8 + 1e-9


def test_scores_do_not_depend_on_the_batch():
    model, images, maps, labels = small_case()
    metric = SensitivityN(sizes=[1, 5, 20], runs=10)
    together = metric(model, images, maps, labels)
    alone = metric(model, images[2:3], maps[2:3], labels[2:3])
    torch.testing.assert_close(alone.curves, together.curves[2:3], rtol=1e-5, atol=1e-5)  # float32 batches
    torch.testing.assert_close(SensitivityN(sizes=[1, 5, 20], runs=10, max_batch=3)(model, images, maps, labels).scores,
                               together.scores, rtol=1e-5, atol=1e-5)
    assert together.fractions.tolist() == [1 / 64, 5 / 64, 20 / 64]


def quantus_steps(model, images, maps, labels, step):
    metric = quantus.SensitivityN(features_in_step=step, normalise=False, abs=False, disable_warnings=True)
    wrapped = quantus.helpers.utils.get_wrapped_model(model, channel_first=True, softmax=False, device="cpu")
    out = metric.evaluate_batch(model=wrapped, x_batch=images.numpy(), y_batch=labels.numpy(), a_batch=maps.numpy())[0]
    return torch.tensor(out["pred_deltas"]).double(), torch.tensor(out["att_sums"]).double()


def resnet_case():
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=6).eval()
    generator = torch.Generator().manual_seed(2)
    return model, torch.randn(3, 3, 16, 16, generator=generator), torch.randn(3, 3, 16, 16, generator=generator), \
        torch.tensor([0, 5, 2])


@pytest.mark.parametrize("case, step", [(small_case, 4), (resnet_case, 48)], ids=["small", "resnet18"])
def test_quantus_drops_equal_ours_but_it_sums_only_each_steps_new_features(case, step):
    """Quantus' step k removes the k * step most attributed features (cumulatively) and records the
    drop of the whole set, but the attribution sum of the step's own features only; given the
    same sets, its drops equal interpkit's, and its sums are the increments of the set's sums."""
    model, images, maps, labels = case()
    drops, step_sums = quantus_steps(model, images, maps, labels, step=step)
    order = maps.flatten(1).argsort(dim=1, descending=True)
    metric = SensitivityN(score="logit")
    score = TargetScores(model, labels, 64, metric.score, False)
    before = score(images, torch.arange(len(images)))
    for k in (0, 3, 10):
        subsets = order[:, None, :step * (k + 1)]  # each image's own set: (N, 1, size)
        sums = subset_sums(maps.flatten(1), subsets)
        ours = subset_drops(metric, images, maps[0].numel(), subsets, score, before)
        torch.testing.assert_close(ours[:, 0].double(), drops[:, k], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(sums[:, 0].double(), step_sums[:, :k + 1].sum(1), rtol=1e-5, atol=1e-6)
        if k:
            assert not torch.allclose(sums[:, 0].double(), step_sums[:, k], atol=1e-3)


def test_quantus_fails_attributions_that_satisfy_sensitivity_n_and_needs_several_images():
    """Exact attributions of a linear model score 1 at every n here; Quantus' per-step sums and
    its correlation across the batch's images score them below 1, any two images +-1 whatever
    their maps, and a single image raises."""
    model, images, maps, targets, baseline = linear_case(3, 1, 4, n=6)
    baseline = torch.full_like(baseline, 0.5)
    maps = model[1].weight[targets].detach().view(6, 1, 4, 4) * (images - 0.5)
    ours = SensitivityN(sizes=5, runs=8, baseline=baseline)(model, images, maps, targets)
    assert torch.allclose(ours.scores, torch.ones(6, dtype=torch.float64), atol=1e-9)

    def theirs(count, attributions):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            metric = quantus.SensitivityN(features_in_step=2, normalise=False, abs=False, perturb_baseline=0.5,
                                          disable_warnings=True, return_aggregate=False)
            return np.array(metric(model=model.float(), x_batch=images[:count].float().numpy(),
                                   y_batch=targets[:count].numpy(), a_batch=attributions[:count].float().numpy(),
                                   device="cpu", softmax=False), dtype=np.float64)

    assert (theirs(6, maps) < 0.99).any()
    assert np.allclose(np.abs(theirs(2, torch.randn(6, 1, 4, 4))), 1.0)
    with pytest.raises(ValueError, match="length at least 2"):
        theirs(1, maps)


def test_a_constant_drop_has_no_correlation_and_numpy_sizes_are_sizes():
    """At n = all the features every subset is the same: the correlation is undefined (NaN), not
    the float64 rounding of a mean subtracted from equal values."""
    model, images, maps, targets, baseline = linear_case(5, 2, 3, n=3)
    features = 2 * 3 * 3
    result = SensitivityN(sizes=[np.int64(features)], runs=100, baseline=baseline)(model, images, maps, targets)
    assert torch.isnan(result.scores).all()
    assert SensitivityN(sizes=[np.int64(3)]).sizes == [3]


def test_the_contract_and_bad_input():
    check_metric(SensitivityN, {"sizes": 3, "runs": 4})
    model, images, maps, labels = small_case()
    for options in ({"sizes": 0}, {"sizes": [0, 3]}, {"sizes": [100]}, {"sizes": "all"}, {"runs": 1}, {"seed": -1},
                    {"sizes": True}):
        with pytest.raises(InputError):
            SensitivityN(**options)(model, images, maps, labels)
