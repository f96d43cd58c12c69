"""The registered checks that re-run the explainer: each equals the function it wraps, takes
the explainer's factory and refuses anything else, and ``interpkit evaluate`` scores with them."""

import pytest
import torch

import interpkit
from interpkit import GradCAM, GuidedBackprop, InputError
from interpkit.dataset.evaluation import evaluate_explainers
from interpkit.metrics import (
    BUILTIN_CHECKS,
    MPRT,
    Continuity,
    EfficientMPRT,
    ExplainerCheck,
    InputInvariance,
    MaxSensitivity,
    SmoothMPRT,
    continuity,
    efficient_randomisation_check,
    input_invariance,
    max_sensitivity,
    randomisation_check,
)


def test_each_check_equals_its_function(small_cnn, images):
    model = small_cnn.eval()
    pairs = [
        (Continuity(steps=5)(GuidedBackprop, model, images), continuity(GuidedBackprop(model), images, steps=5)),
        (MaxSensitivity(samples=3)(GradCAM, model, images, 1), max_sensitivity(GradCAM(model), images, 1, samples=3)),
        (EfficientMPRT(bins=20)(GradCAM, model, images), efficient_randomisation_check(GradCAM, model, images, bins=20)),
        (InputInvariance()(GradCAM, model, images), input_invariance(GradCAM, model, images)),
    ]
    for check, function in pairs:
        torch.testing.assert_close(check.scores, function.scores, equal_nan=True)
    mprt = MPRT(seed=3)(GradCAM, model, images)
    expected = randomisation_check(GradCAM, model, images, seed=3)
    torch.testing.assert_close(mprt.scores, expected.mean_spearman_abs)
    torch.testing.assert_close(mprt.curves, expected.spearman_abs)
    assert mprt.name == "mprt" and mprt.fractions[-1] == 1


def test_smooth_mprt_smooths_by_default(small_cnn, images):
    model = small_cnn.eval()
    assert SmoothMPRT().options["smooth"] == 50 and MPRT().options == {}
    smoothed = SmoothMPRT(smooth=3)(GradCAM, model, images)
    torch.testing.assert_close(smoothed.curves, randomisation_check(GradCAM, model, images, smooth=3).spearman_abs)


def test_every_check_is_registered_with_its_direction():
    names = interpkit.list_metrics()
    for check in BUILTIN_CHECKS:
        assert check.name in names and interpkit.get_metric(check.name) is check
    assert EfficientMPRT.higher_is_better and InputInvariance.higher_is_better and not Continuity.higher_is_better


def test_bad_input(small_cnn, images):
    model = small_cnn.eval()
    with pytest.raises(InputError, match="takes no option stps"):
        Continuity(stps=3)
    with pytest.raises(InputError, match="factory"):
        Continuity()(GradCAM(model), model, images)
    with pytest.raises(InputError, match="must return an interpkit Explainer"):
        Continuity()(lambda m: m, model, images)
    with pytest.raises(InputError, match="torch.nn.Module"):
        MPRT()(GradCAM, "resnet", images)
    with pytest.raises(InputError, match="by name"):
        Continuity(10)
    with pytest.raises(InputError, match="names no function"):
        ExplainerCheck()
    for check in (MPRT(), EfficientMPRT(), InputInvariance(), SmoothMPRT(smooth=2)):
        with pytest.raises(InputError, match="must return an interpkit Explainer"):
            check(lambda m: 5, model, images)


def test_evaluate_scores_with_a_check(small_cnn, images):
    rows = evaluate_explainers(small_cnn.eval(), images, ["gradcam"], ["deletion", "continuity", "efficient_mprt"],
                               batch_size=2, progress=False)
    by_metric = {row.metric: row for row in rows}
    assert by_metric["continuity"].better == "lower" and by_metric["efficient_mprt"].better == "higher"
    expected = continuity(GradCAM(small_cnn), images).scores  # the explanation's targets: the top classes
    assert by_metric["continuity"].mean == pytest.approx(expected[~expected.isnan()].mean().item(), rel=1e-5)
