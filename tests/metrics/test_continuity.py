"""Continuity: equal to Quantus 0.6 with per-image normalisation, the known ratio of a linear model,
batch-independent where Quantus' default is not, bad input refused."""

import warnings

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from interpkit import GradCAM, GuidedBackprop, InputError, TargetError
from interpkit.explainers import InputXGradient, Saliency
from interpkit.metrics import continuity
from interpkit.metrics.continuity import translated

quantus = pytest.importorskip("quantus")


def setup(n=3):
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=6).eval()
    images = torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    return model, images, torch.tensor([0, 5, 2, 3][:n])


def quantus_continuity(explainer, model, images, labels, **options):
    def explain(model, inputs, targets, **_):
        return explainer(torch.as_tensor(inputs), torch.as_tensor(targets)).maps[:, 0].numpy()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scores = quantus.Continuity(disable_warnings=True, **options)(
            model=model, x_batch=images.numpy(), y_batch=labels.numpy(), a_batch=explain(model, images, labels),
            explain_func=explain, device="cpu")
    return torch.tensor(np.array(scores, dtype=np.float64))


@pytest.mark.parametrize("make", [GuidedBackprop, lambda m: GradCAM(m, layer="layer2")], ids=["guided", "gradcam"])
def test_equals_quantus_with_each_map_normalised_by_its_own_maximum(make):
    model, images, labels = setup()
    explainer = make(model)
    expected = quantus_continuity(explainer, model, images, labels, normalise_func_kwargs={"normalise_axes": (1, 2, 3)})
    ours = continuity(explainer, images, labels)
    defined = torch.isfinite(expected)  # Quantus divides an all-zero CAM by its zero maximum: NaN
    assert defined.sum() >= 2
    torch.testing.assert_close(ours.scores.double()[defined], expected[defined], rtol=1e-5, atol=1e-5)
    assert torch.isfinite(ours.scores).all()


def test_quantus_default_makes_an_images_score_depend_on_its_batch():
    """Quantus divides every map by the largest value of the whole batch before the L1 distance,
    which is not scale-invariant: an image's continuity changes with the images beside it."""
    model, images, labels = setup(n=3)
    explainer = GuidedBackprop(model)
    together = quantus_continuity(explainer, model, images, labels)
    alone = quantus_continuity(explainer, model, images[:1], labels[:1])
    assert not torch.allclose(together[:1], alone, rtol=1e-3)
    ours_together = continuity(explainer, images, labels).scores
    torch.testing.assert_close(continuity(explainer, images[:1], labels[:1]).scores, ours_together[:1])
    torch.testing.assert_close(continuity(explainer, images, labels, max_batch=2).scores, ours_together)


def test_a_linear_models_ratio_is_known():
    """f(x) = w . x on a 1-D input: the saliency w does not move (continuity 0); input x gradient
    moves by w * (x - x'), so each translation's ratio is ||w * d||_1 / ||d||_2, d = x - x'."""
    torch.manual_seed(1)
    model = nn.Sequential(nn.Flatten(), nn.Linear(2 * 20, 3)).double().eval()
    inputs = torch.rand(2, 2, 20, dtype=torch.float64)
    raw = dict(normalise=False, absolute=False)
    assert continuity(Saliency(model), inputs, 1, **raw).scores.abs().max() == 0
    result = continuity(InputXGradient(model), inputs, 1, steps=10, baseline=0.5, **raw)
    shifts = (result.fractions * 20).round().long().tolist()
    assert 0 not in shifts and len(shifts) == 9  # dx = 41 // 10 = 4: -16, ..., 20 without 0
    w = model[1].weight[1].detach().view(2, 20)
    for step, shift in enumerate(shifts):
        moved = translated(inputs, torch.full_like(inputs, 0.5), [shift])[0]
        d = inputs - moved
        expected = (w * d).flatten(1).abs().sum(1) / (d.flatten(1).norm(dim=1) + 1e-9)
        torch.testing.assert_close(result.curves[:, step].double(), expected, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(result.scores, result.curves.amax(dim=1))


def test_translation_moves_the_last_axis_and_fills_with_the_baseline():
    inputs = torch.arange(10.0).view(1, 1, 2, 5)
    right, left, gone = translated(inputs, torch.full_like(inputs, -1.0), [2, -1, 5])
    assert right[0, 0, 0].tolist() == [-1, -1, 0, 1, 2] and right[0, 0, 1].tolist() == [-1, -1, 5, 6, 7]
    assert left[0, 0, 0].tolist() == [1, 2, 3, 4, -1]
    assert (gone == -1).all()


@pytest.mark.parametrize("call", [
    lambda e, x: continuity(e, x, steps=0),
    lambda e, x: continuity(e, x, steps=100),  # a 32-wide grid has 65 translations
    lambda e, x: continuity(e.model, x),
    lambda e, x: continuity(e, x, baseline=torch.zeros(5)),
    lambda e, x: continuity(e, x[:, :, 0, 0]),
    lambda e, x: continuity(e, x, [0, 1]),
    lambda e, x: continuity(e, x, baseline="purple"),
    lambda e, x: continuity(e, x, baseline=None),
    lambda e, x: continuity(e, x, baseline=True),
    lambda e, x: continuity(e, x, baseline=float("nan")),
    lambda e, x: continuity(e, x[..., :10], steps=28),  # an explicit 28 on a grid 10 wide: 21 translations
], ids=["no-steps", "too-many-steps", "a-model", "baseline-shape", "no-grid", "targets", "baseline-name",
        "baseline-none", "baseline-bool", "baseline-nan", "steps-beyond-narrow-grid"])
def test_bad_input(call):
    model, images, _ = setup(n=3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises((InputError, TargetError)):
        call(GuidedBackprop(model), images)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
