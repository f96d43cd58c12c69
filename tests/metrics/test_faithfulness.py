"""Pixel flipping, faithfulness estimate, faithfulness correlation and monotonicity: equal to Quantus
0.6 on the same inputs, maps and random subsets, right where the answer is known by construction,
batch-independent, and Quantus' monotonicity shown to restore nothing."""

import warnings

import numpy as np
import pytest
import torch
import torchvision
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from interpkit import InputError
from interpkit.metrics import FaithfulnessCorrelation, FaithfulnessEstimate, Monotonicity, NonSensitivity, PixelFlipping
from interpkit.testing import ConvStack
from interpkit.testing.metrics import check_metric

quantus = pytest.importorskip("quantus")


def case(seed=0, n=3, height=8, width=6):
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    images = torch.randn(n, 3, height, width, generator=generator)
    maps = torch.randn(n, 3, height, width, generator=generator)  # every element its own, tie-free
    return ConvStack().eval(), images, maps, torch.tensor([0, 2, 1, 3][:n])


def theirs(metric, model, images, maps, labels, softmax):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scores = metric(model=model, x_batch=images.numpy(), y_batch=labels.numpy(), a_batch=maps.numpy(),
                        softmax=softmax, device="cpu")
    return torch.tensor(np.array(scores, dtype=np.float64))


@pytest.mark.parametrize("step", [1, 4, 16])  # Quantus asks for a step that divides H x W
def test_pixel_flipping_equals_quantus(step):
    model, images, maps, labels = case()
    ours = PixelFlipping(features_in_step=step)(model, images, maps, labels)
    curves = theirs(quantus.PixelFlipping(features_in_step=step, disable_warnings=True), model, images, maps, labels,
                    True)
    torch.testing.assert_close(ours.curves.double(), curves, rtol=1e-5, atol=1e-6)
    # Quantus' own area (return_auc_per_sample) calls np.trapz, which NumPy 2 removed: the same
    # trapezoid with unit spacing over its curves
    torch.testing.assert_close(ours.scores.double(), torch.from_numpy(np.trapezoid(curves.numpy(), dx=1, axis=1)),
                               rtol=1e-5, atol=1e-5)
    if not hasattr(np, "trapz"):
        with pytest.raises(AttributeError, match="trapz"):
            theirs(quantus.PixelFlipping(features_in_step=step, return_auc_per_sample=True, disable_warnings=True),
                   model, images, maps, labels, True)


@pytest.mark.parametrize("step", [4, 24])
def test_faithfulness_estimate_equals_quantus(step):
    model, images, maps, labels = case(1)
    ours = FaithfulnessEstimate(features_in_step=step)(model, images, maps, labels)
    expected = theirs(quantus.FaithfulnessEstimate(features_in_step=step, disable_warnings=True), model, images, maps,
                      labels, False)
    torch.testing.assert_close(ours.scores, expected, rtol=1e-5, atol=1e-5)


def test_faithfulness_correlation_equals_quantus_given_its_subsets(monkeypatch):
    """Quantus' own draws are recorded (np.random.choice, one per image within each run; its
    baseline helper draws uniform numbers in between, so they cannot be replayed from the seed
    alone) and given to interpkit as ``subsets``."""
    model, images, maps, labels = case(2)
    drawn, choice = [], np.random.choice
    monkeypatch.setattr(np.random, "choice", lambda *a, **k: drawn.append(choice(*a, **k)) or drawn[-1])
    np.random.seed(11)
    expected = theirs(quantus.FaithfulnessCorrelation(nr_runs=12, subset_size=20, return_aggregate=False,
                                                      disable_warnings=True), model, images, maps, labels, False)
    subsets = torch.tensor(np.array(drawn)).reshape(12, len(images), 20).transpose(0, 1)
    ours = FaithfulnessCorrelation(runs=12, subset_size=20, subsets=subsets)(model, images, maps, labels)
    torch.testing.assert_close(ours.scores, expected, rtol=1e-5, atol=1e-5)


def test_monotonicity_restores_the_input_where_quantus_restores_the_baseline():
    """Quantus' Monotonicity replaces features of the baseline image by "the baseline" computed
    from that very image: every step leaves it unchanged, its curve is flat and every explanation
    passes. interpkit restores the input's own features, so the curve ends at the input's score."""
    model, images, maps, labels = case(3)
    ours = Monotonicity(features_in_step=16)(model, images, maps, labels)
    probabilities = model(images).softmax(1)[torch.arange(3), labels]
    torch.testing.assert_close(ours.curves[:, -1], probabilities.detach())  # every feature restored at the end
    assert (ours.curves[:, 0] != ours.curves[:, -1]).all()
    passes = theirs(quantus.Monotonicity(features_in_step=16, disable_warnings=True), model, images, maps, labels, True)
    assert passes.bool().all()  # Quantus: flat curves, so every map is monotonic
    assert not torch.equal(passes, ours.scores.double())  # ours: at least one map is not
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        inverse = quantus.Monotonicity(features_in_step=16, disable_warnings=True)(
            model=model, x_batch=images.numpy(), y_batch=labels.numpy(), a_batch=(-maps).numpy(), softmax=True,
            device="cpu")
    assert all(inverse)  # the reversed map passes too


class Linear(nn.Module):
    """f(x) = w . x: every feature's effect on the logit is its own weight times its value."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight)

    def forward(self, x):
        score = (x * self.weight).flatten(1).sum(1)
        return torch.stack([score, -score], dim=1)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**16), step=st.integers(1, 5))
def test_a_linear_model_explained_by_its_own_terms_correlates_perfectly(seed, step):
    generator = torch.Generator().manual_seed(seed)
    weight = torch.randn(1, 2, 5, 4, generator=generator, dtype=torch.float64)
    x = torch.randn(3, 2, 5, 4, generator=generator, dtype=torch.float64)
    model = Linear(weight)
    terms = weight * (x - x.flatten(1).amin(1).reshape(3, 1, 1, 1))  # each feature's drop to the "black" baseline
    estimate = FaithfulnessEstimate(features_in_step=step)(model, x, terms, targets=0)
    correlation = FaithfulnessCorrelation(runs=10, subset_size=6, seed=seed)(model, x, terms, targets=0)
    torch.testing.assert_close(estimate.scores, torch.ones(3, dtype=torch.float64), atol=1e-9, rtol=0)
    torch.testing.assert_close(correlation.scores, torch.ones(3, dtype=torch.float64), atol=1e-9, rtol=0)
    flipped = PixelFlipping(features_in_step=step, score="logit")(model, x, terms, targets=0)
    drops = -flipped.curves.diff(dim=1)  # each full step's drop is the sum of its terms, largest first
    assert (drops[:, :40 // step - 1].diff(dim=1) <= 1e-9).all()
    top = terms.flatten(1).sort(dim=1, descending=True).values[:, :step].sum(1)
    torch.testing.assert_close(flipped.curves[:, 0], model(x)[:, 0].detach() - top)
    rising = Monotonicity(features_in_step=step, score="logit")(model, x, terms.abs(), targets=0)
    assert rising.curves.shape == flipped.curves.shape


def test_positions_go_together_for_single_channel_maps():
    model, images, _, labels = case(4)
    position_maps = torch.randn(3, 8, 6)
    ours = PixelFlipping(features_in_step=2)(model, images, position_maps, labels)
    assert ours.curves.shape == (3, 24)  # 48 positions, two per step, all channels of each
    elements = PixelFlipping(features_in_step=6)(model, images, position_maps[:, None].expand(3, 3, 8, 6).clone()
                                                  + torch.tensor([0.0, -1e-6, -2e-6]).reshape(1, 3, 1, 1), labels)
    torch.testing.assert_close(elements.curves, ours.curves)  # the same removals, element by element


def test_scores_do_not_depend_on_the_batch():
    model, images, maps, labels = case(5, n=4)
    for metric in (PixelFlipping(features_in_step=24), FaithfulnessEstimate(features_in_step=12),
                   FaithfulnessCorrelation(runs=5, subset_size=10, seed=3), Monotonicity(features_in_step=24),
                   NonSensitivity(features_in_step=24)):
        together = metric(model, images, maps, labels).scores
        alone = torch.cat([metric(model, images[i:i + 1], maps[i:i + 1], labels[i:i + 1]).scores for i in range(4)])
        torch.testing.assert_close(together, alone, equal_nan=True, atol=1e-5, rtol=1e-5)  # batched rounding


def test_resnet18_pixel_flipping_equals_quantus():
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=5).eval()
    generator = torch.Generator().manual_seed(6)
    images = torch.randn(2, 3, 32, 32, generator=generator)
    maps = torch.randn(2, 3, 32, 32, generator=generator)
    labels = torch.tensor([1, 4])
    ours = PixelFlipping(features_in_step=256)(model, images, maps, labels)
    curves = theirs(quantus.PixelFlipping(features_in_step=256, disable_warnings=True), model, images, maps, labels,
                    True)
    torch.testing.assert_close(ours.curves.double(), curves, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("cls, options", [(PixelFlipping, {"features_in_step": 30}),
                                          (FaithfulnessEstimate, {"features_in_step": 30}),
                                          (FaithfulnessCorrelation, {"runs": 4, "subset_size": 8}),
                                          (Monotonicity, {"features_in_step": 30}),
                                          (NonSensitivity, {"features_in_step": 30})])
def test_the_contract(cls, options):
    check_metric(cls, options)


@pytest.mark.parametrize("make", [
    lambda: PixelFlipping(features_in_step=0),
    lambda: PixelFlipping(baseline="grey"),
    lambda: FaithfulnessCorrelation(runs=1),
    lambda: FaithfulnessCorrelation(subsets=torch.zeros(2, 3, 4)),
    lambda: Monotonicity(baseline=float("nan")),
])
def test_bad_options(make):
    with pytest.raises(InputError):
        make()


def test_bad_subsets_and_sizes_are_refused():
    model, images, maps, labels = case(7)
    with pytest.raises(InputError, match="exceeds"):
        FaithfulnessCorrelation(runs=2, subset_size=500)(model, images, maps, labels)
    repeated = torch.zeros(3, 2, 4, dtype=torch.long)
    with pytest.raises(InputError, match="distinct"):
        FaithfulnessCorrelation(runs=2, subset_size=4, subsets=repeated)(model, images, maps, labels)
    with pytest.raises(InputError, match="one row per input"):
        FaithfulnessCorrelation(runs=2, subset_size=4, subsets=repeated[:2] + torch.arange(4))(model, images, maps,
                                                                                               labels)


def test_fractions_count_the_features_moved_and_a_step_beyond_them_is_refused():
    model, images, _, labels = case(8)
    maps = torch.randn(3, 8, 6)  # 48 positions, 7 a step: 6 full steps and one of 6
    for metric in (PixelFlipping(features_in_step=7), Monotonicity(features_in_step=7)):
        fractions = metric(model, images, maps, labels).fractions
        torch.testing.assert_close(fractions, torch.tensor([7, 14, 21, 28, 35, 42, 48]) / 48)
    with pytest.raises(InputError, match="exceeds"):
        PixelFlipping(features_in_step=49)(model, images, maps, labels)


def test_non_sensitivity_equals_quantus_per_feature():
    """Quantus reads a < eps after normalising by the batch's largest value, so one image at a
    time; its features_in_step must be 1 (see below)."""
    from interpkit.metrics import NonSensitivity

    model, images, maps, labels = case(9, n=2)
    maps[maps.abs() < 0.8] = 0  # about half the elements get nothing
    for i in range(2):
        ours = NonSensitivity(eps=1e-3)(model, images[i:i + 1], maps[i:i + 1], labels[i:i + 1])
        expected = theirs(quantus.NonSensitivity(eps=1e-3, disable_warnings=True), model, images[i:i + 1],
                          maps[i:i + 1], labels[i:i + 1], True)
        torch.testing.assert_close(ours.scores.double(), expected)
        assert 0 < ours.scores[0] < 144


def test_quantus_non_sensitivity_fails_for_steps_of_several_features():
    """Quantus XORs (N, steps) prediction changes with (N, features) zero attributions: for a step
    of several features the shapes do not broadcast. interpkit compares groups with groups."""
    from interpkit.metrics import NonSensitivity

    model, images, maps, labels = case(10, n=1)
    with pytest.raises(ValueError):
        theirs(quantus.NonSensitivity(features_in_step=4, disable_warnings=True), model, images, maps, labels, True)
    assert NonSensitivity(features_in_step=4)(model, images, maps, labels).scores.shape == (1,)


def test_non_sensitivity_is_zero_for_a_linear_models_own_terms():
    from interpkit.metrics import NonSensitivity

    generator = torch.Generator().manual_seed(11)
    weight = torch.randn(1, 2, 5, 4, generator=generator, dtype=torch.float64)
    weight[weight.abs() < 0.7] = 0  # features the model ignores
    x = torch.randn(3, 2, 5, 4, generator=generator, dtype=torch.float64)
    terms = weight * (x - x.flatten(1).amin(1).reshape(3, 1, 1, 1))
    result = NonSensitivity(eps=1e-9, score="logit")(Linear(weight), x, terms, targets=0)
    assert (result.scores == 0).all()
    shuffled = terms.flatten(1)[:, torch.randperm(40, generator=generator)].reshape(terms.shape)
    assert (NonSensitivity(eps=1e-9, score="logit")(Linear(weight), x, shuffled, targets=0).scores > 0).all()


def test_selectivity_equals_quantus():
    from interpkit.metrics import Selectivity

    model, _, _, _ = case(12)
    generator = torch.Generator().manual_seed(12)
    images = torch.randn(3, 3, 30, 28, generator=generator)  # 8 does not divide: padded regions
    maps = torch.rand(3, 30, 28, generator=generator)
    labels = torch.tensor([0, 3, 1])
    ours = Selectivity(patch_size=8)(model, images, maps, labels)
    expected = theirs(quantus.Selectivity(patch_size=8, disable_warnings=True), model, images, maps[:, None], labels,
                      True)
    assert ours.curves.shape == (3, 16)  # 4 x 4 regions, every one removed
    torch.testing.assert_close(ours.curves.double(), expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ours.scores.double(), torch.from_numpy(np.trapezoid(expected.numpy(), axis=1)),
                               rtol=1e-5, atol=1e-5)
    check_metric(Selectivity, {"patch_size": 4})


def test_monotonicity_correlation_equals_quantus_given_its_values(monkeypatch):
    """Quantus' "uniform" baseline draws one value per image for every perturbation (recorded
    here, group by group and sample by sample) and gives it to all of the group's features."""
    from interpkit.metrics import MonotonicityCorrelation

    model, images, maps, labels = case(13)
    drawn, uniform = [], np.random.uniform
    monkeypatch.setattr(np.random, "uniform", lambda *a, **k: drawn.append(uniform(*a, **k)) or drawn[-1])
    expected = theirs(quantus.MonotonicityCorrelation(features_in_step=16, nr_samples=3, disable_warnings=True), model,
                      images, maps, labels, True)
    values = torch.tensor(np.array(drawn), dtype=torch.float32).reshape(9, 3, len(images)).permute(2, 0, 1)
    ours = MonotonicityCorrelation(features_in_step=16, samples=3, values=values)(model, images, maps, labels)
    torch.testing.assert_close(ours.scores, expected, rtol=1e-5, atol=1e-5)
    check_metric(MonotonicityCorrelation, {"features_in_step": 30, "samples": 2})
    with pytest.raises(InputError):
        MonotonicityCorrelation(samples=3, values=torch.zeros(2, 3, 4))
