"""Checks that need the explainer itself: random logit (equal to Quantus 0.6 given its off classes
and similarity, batch-independent where Quantus' is not, bad input refused) and average
sensitivity (equal to Quantus given its noise)."""

import copy
import warnings

import numpy as np
import pytest
import torch
import torchvision

import interpkit
from interpkit import GradCAM, GuidedBackprop, InputError
from interpkit.metrics import random_logit

quantus = pytest.importorskip("quantus")


def setup(seed=0, n=3):
    torch.manual_seed(seed)
    model = torchvision.models.resnet18(num_classes=6).eval()
    images = torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))
    return model, images, torch.tensor([0, 5, 2, 3][:n])


def quantus_random_logit(model, explainer, images, labels, seed, classes):
    def explain(model, inputs, targets, **_):
        return explainer(torch.as_tensor(inputs), torch.as_tensor(targets)).maps.numpy()

    maps = explain(model, images.numpy(), labels.numpy())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scores = quantus.RandomLogit(num_classes=classes, seed=seed, normalise=False, disable_warnings=True,
                                     similarity_func=quantus.similarity_func.correlation_pearson)(
            model=model, x_batch=images.numpy(), y_batch=labels.numpy(), a_batch=maps, explain_func=explain,
            device="cpu")
    return torch.tensor(np.array(scores, dtype=np.float64))


def quantus_off_classes(seed, labels, classes):
    """The off classes Quantus 0.6 draws: np.random.seed(seed), one randint per image over the
    classes other than its own."""
    np.random.seed(seed)
    picks = np.random.randint(0, classes - 1, len(labels))
    return torch.tensor([[c for c in range(classes) if c != y][p] for y, p in zip(labels.tolist(), picks)])


def test_equals_quantus_given_its_off_classes():
    model, images, labels = setup()
    explainer = GradCAM(model, layer="layer1")
    expected = quantus_random_logit(model, explainer, images, labels, 42, 6)
    off = quantus_off_classes(42, labels, 6)
    ours = random_logit(explainer, images, labels, similarity="pearson", off_targets=off)
    assert torch.isfinite(expected).sum() >= 2  # an all-zero CAM (ReLU'd) has no correlation: NaN for both
    torch.testing.assert_close(ours.scores.double(), expected, rtol=1e-5, atol=1e-5, equal_nan=True)


def test_quantus_off_class_depends_on_the_batch_ours_does_not():
    """Quantus draws one index per position in the batch, so an image's off class (and score)
    changes with where it sits; interpkit's depends on the target and the seed only."""
    model, images, labels = setup(1, n=3)
    explainer = GradCAM(model, layer="layer3")
    together = quantus_off_classes(42, labels, 6)
    alone = torch.cat([quantus_off_classes(42, labels[i:i + 1], 6) for i in range(3)])
    assert not torch.equal(together, alone)
    ours = random_logit(explainer, images, labels, classes=6).scores
    ours_alone = torch.cat([random_logit(explainer, images[i:i + 1], labels[i:i + 1], classes=6).scores
                            for i in range(3)])
    torch.testing.assert_close(ours, ours_alone, rtol=1e-4, atol=1e-5)


def test_the_off_class_is_never_the_target_and_similarities_are_bounded():
    model, images, labels = setup(2, n=4)
    for seed in range(20):
        draw = torch.randint(5, (1,), generator=torch.Generator().manual_seed(seed))
        off = draw + (draw >= labels).long()
        assert not (off == labels).any() and (off < 6).all()
    for similarity in ("ssim", "spearman", "pearson"):
        scores = random_logit(GuidedBackprop(model), images, labels, similarity=similarity, seed=3).scores
        assert scores.shape == (4,) and (scores <= 1 + 1e-6).all() and (scores >= -1 - 1e-6).all()
        assert (scores < 1 - 1e-3).all()  # guided backprop of another class is another map


def test_a_class_blind_explanation_scores_one():
    """Guided backprop of a model whose classes share one score head explains every class alike."""
    class Blind(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.head = torch.nn.Conv2d(3, 1, 3)

        def forward(self, x):
            score = self.head(x).mean(dim=(1, 2, 3))
            return torch.stack([score, score, score], dim=1)

    torch.manual_seed(0)
    images = torch.randn(2, 3, 16, 16)
    scores = random_logit(GuidedBackprop(Blind(), strict=False), images, torch.tensor([0, 2]), similarity="pearson",
                          seed=1).scores
    torch.testing.assert_close(scores, torch.ones(2))


@pytest.mark.parametrize("call", [
    lambda e, x: random_logit("gradcam", x),
    lambda e, x: random_logit(e, x, similarity="cosine"),
    lambda e, x: random_logit(e, x, seed=-1),
    lambda e, x: random_logit(e, x, classes=1),
    lambda e, x: random_logit(e, x, torch.tensor([1, 1, 1]), off_targets=torch.tensor([2, 1, 3])),
    lambda e, x: random_logit(e, x, off_targets=torch.tensor([1.5, 2.0, 3.0])),
])
def test_bad_input(call):
    model, images, _ = setup()
    with pytest.raises(InputError):
        call(GradCAM(model, layer="layer3"), images)


def test_a_model_with_one_output_has_no_other_class_to_compare():
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=1).eval()
    with pytest.raises(InputError, match="one output"):
        random_logit(GradCAM(model, layer="layer3"), torch.randn(2, 3, 32, 32))


def test_avg_sensitivity_equals_quantus_given_its_noise(monkeypatch):
    """Quantus' AvgSensitivity draws uniform noise in [-0.2, 0.2] per element and sample (recorded
    here) and averages ||E(x + d) - E(x)|| / ||E(x)||; interpkit, given the same draws, agrees."""
    from interpkit.metrics import avg_sensitivity

    model, images, labels = setup(3, n=2)
    explainer = GuidedBackprop(model)

    def explain(model, inputs, targets, **_):
        return explainer(torch.as_tensor(inputs), torch.as_tensor(targets)).maps[:, 0].numpy()

    drawn, uniform = [], np.random.uniform
    monkeypatch.setattr(np.random, "uniform", lambda *a, **k: drawn.append(uniform(*a, **k)) or drawn[-1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = quantus.AvgSensitivity(nr_samples=4, disable_warnings=True)(
            model=model, x_batch=images.numpy(), y_batch=labels.numpy(), a_batch=explain(model, images, labels),
            explain_func=explain, device="cpu")
    noise = iter([torch.tensor(d.reshape(images.shape), dtype=torch.float32) for d in drawn
                  if np.shape(d) == (len(images), images[0].numel())])
    ours = avg_sensitivity(explainer, images, labels, samples=4, perturb=lambda x, g: x + next(noise))
    torch.testing.assert_close(ours.scores.double(), torch.tensor(np.array(expected, dtype=np.float64)), rtol=1e-4,
                               atol=1e-5)
    assert (ours.scores > 0).all()


def quantus_lle(model, explainer, images, labels, samples, normalise, monkeypatch=None, drawn=None):
    def explain(model, inputs, targets, **_):
        return explainer(torch.as_tensor(inputs), torch.as_tensor(targets)).maps[:, 0].numpy()

    if monkeypatch is not None:
        normal = np.random.normal
        monkeypatch.setattr(np.random, "normal", lambda *a, **k: drawn.append(normal(*a, **k)) or drawn[-1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scores = quantus.LocalLipschitzEstimate(nr_samples=samples, normalise=normalise, disable_warnings=True)(
            model=model, x_batch=images.numpy(), y_batch=labels.numpy(), a_batch=explain(model, images, labels),
            explain_func=explain, device="cpu")
    return torch.tensor(np.array(scores, dtype=np.float64))


def test_local_lipschitz_estimate_equals_quantus_given_its_noise(monkeypatch):
    from interpkit.metrics import local_lipschitz_estimate

    model, images, labels = setup(4, n=2)
    explainer = GuidedBackprop(model)
    drawn = []
    expected = quantus_lle(model, explainer, images, labels, 4, False, monkeypatch, drawn)
    noise = iter([torch.tensor(d.reshape(images.shape), dtype=torch.float32) for d in drawn])
    ours = local_lipschitz_estimate(explainer, images, labels, samples=4, perturb=lambda x, g: x + next(noise))
    torch.testing.assert_close(ours.scores.double(), expected, rtol=1e-4, atol=1e-6)
    seeded = [local_lipschitz_estimate(explainer, images, labels, samples=3, seed=s).scores for s in (0, 0, 1)]
    assert torch.equal(seeded[0], seeded[1]) and not torch.equal(seeded[0], seeded[2])
    alone = torch.cat([local_lipschitz_estimate(explainer, images[i:i + 1], labels[i:i + 1], samples=3).scores
                       for i in range(2)])
    torch.testing.assert_close(seeded[0], alone, rtol=1e-4, atol=1e-6)


def test_quantus_default_normalisation_makes_an_images_estimate_depend_on_its_batch():
    """With its default normalise=True Quantus divides every explanation by the largest value in
    the whole batch, so one image's Lipschitz estimate changes when another image joins it."""
    model, images, labels = setup(5, n=2)
    images[1] *= 5  # a second image with a larger explanation
    explainer = GuidedBackprop(model)
    scores = {}
    for normalise in (True, False):
        for n in (1, 2):
            np.random.seed(0)  # one sample: image 0 gets the same noise (the first draws) either way
            scores[normalise, n] = float(quantus_lle(model, explainer, images[:n], labels[:n], 1, normalise)[0])
    assert scores[False, 1] == pytest.approx(scores[False, 2], rel=1e-6)  # the same noise, the same estimate
    assert abs(scores[True, 1] - scores[True, 2]) > 1e-3 * abs(scores[True, 1])


def quantus_stability(metric, model, explainer, images, labels, monkeypatch, drawn, **kwargs):
    def explain(model, inputs, targets, **_):
        return explainer(torch.as_tensor(inputs), torch.as_tensor(targets)).maps[:, 0].numpy()

    uniform = np.random.uniform
    monkeypatch.setattr(np.random, "uniform", lambda *a, **k: drawn.append(uniform(*a, **k)) or drawn[-1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scores = metric(disable_warnings=True, **kwargs)(
            model=model, x_batch=images.numpy(), y_batch=labels.numpy(), a_batch=explain(model, images, labels),
            explain_func=explain, device="cpu", softmax=False)
    return torch.tensor(np.array(scores, dtype=np.float64))


@pytest.mark.parametrize("name", ["relative_input_stability", "relative_output_stability"])
def test_relative_stability_equals_quantus_given_its_noise(monkeypatch, name):
    import interpkit.metrics as metrics

    model, images, labels = setup(6, n=2)
    labels = model(images).argmax(1).detach()
    explainer = GuidedBackprop(model)
    peer = {"relative_input_stability": quantus.RelativeInputStability,
            "relative_output_stability": quantus.RelativeOutputStability}[name]
    drawn = []
    expected = quantus_stability(peer, model, explainer, images, labels, monkeypatch, drawn, nr_samples=3,
                                 perturb_func_kwargs={"lower_bound": 0.001, "upper_bound": 0.002})
    noise = iter([torch.tensor(d.reshape(images.shape), dtype=torch.float32) for d in drawn
                  if np.shape(d) == (len(images), images[0].numel())])
    ours = getattr(metrics, name)(explainer, images, labels, samples=3, perturb=lambda x, g: x + next(noise))
    assert torch.isfinite(expected).all()  # no prediction changed
    # Quantus divides by x' - x in float64 while its model sees x' in float32; interpkit uses the
    # float32 copy the model saw: with shifts of 1e-3 the two keep about four digits in common
    torch.testing.assert_close(ours.scores.double(), expected, rtol=2e-3, atol=0)


def test_relative_representation_stability_equals_quantus_given_its_noise(monkeypatch):
    """On layers that no in-place op rewrites and that are not Sequential containers (see the
    next test for both), equal to Quantus given its noise."""
    from interpkit.metrics import relative_representation_stability

    layers = ["layer1.0", "layer4.1.conv2", "fc"]
    model, images, labels = setup(6, n=2)
    labels = model(images).argmax(1).detach()
    explainer = GuidedBackprop(model)
    drawn = []
    expected = quantus_stability(quantus.RelativeRepresentationStability, model, explainer, images, labels,
                                 monkeypatch, drawn, nr_samples=3, layer_names=layers,
                                 perturb_func_kwargs={"lower_bound": 0.001, "upper_bound": 0.002})
    noise = iter([torch.tensor(d.reshape(images.shape), dtype=torch.float32) for d in drawn
                  if np.shape(d) == (len(images), images[0].numel())])
    ours = relative_representation_stability(explainer, images, labels, layers=layers, samples=3, max_batch=3,
                                             perturb=lambda x, g: x + next(noise))
    assert torch.isfinite(expected).all()
    # Quantus forms the representations' relative change and its norm in float32, interpkit in float64
    torch.testing.assert_close(ours.scores.double(), expected, rtol=1e-3, atol=0)
    with pytest.raises(interpkit.InterpkitError):
        relative_representation_stability(explainer, images, labels, layers="layer1")
    with pytest.raises(interpkit.LayerError):
        relative_representation_stability(explainer, images, labels, layers=["nope"])


def test_quantus_representation_drops_sequential_layers_and_reads_outputs_rewritten_in_place():
    """Quantus' representation silently leaves out a named layer that is a Sequential (ResNet's
    ``layer1``), and keeps views of outputs that a later in-place op rewrites: its "bn1" is
    ReLU(bn1), because torchvision's ResNet applies ``relu(inplace=True)`` to it. interpkit's
    default (every module, as Quantus means it) reads each output as the layer gave it."""
    from quantus.helpers.model.pytorch_model import PyTorchModel

    model, images, _ = setup(6, n=2)
    peer = PyTorchModel(model, channel_first=True, softmax=False, device="cpu")
    assert peer.get_hidden_representations(images.numpy(), ["layer1", "fc"], None).shape == (2, 6)  # fc alone
    kept = []
    handle = model.bn1.register_forward_hook(lambda m, i, o: kept.append(o.detach().clone()))
    with torch.no_grad():
        model(images)
    handle.remove()
    theirs = peer.get_hidden_representations(images.numpy(), ["bn1"], None)
    assert (kept[0] < 0).any() and (theirs >= 0).all()
    np.testing.assert_allclose(theirs, kept[0].clamp_min(0).flatten(1).numpy(), rtol=1e-6)


def test_quantus_stability_is_nan_when_one_copy_changes_the_prediction(monkeypatch):
    """Quantus marks a copy whose predicted class changes with NaN and then takes np.max, so one
    such copy makes the whole score NaN; interpkit takes the worst of the copies that keep it."""
    from interpkit.metrics import relative_input_stability

    model, images, labels = setup(7, n=2)
    labels = model(images).argmax(1).detach()
    explainer = GuidedBackprop(model)
    small = torch.full_like(images, 0.001)
    flipping = torch.randn(images.shape, generator=torch.Generator().manual_seed(2)) * 3
    assert (model(images + flipping).argmax(1) != labels).tolist() == [True, False]
    shifts = [small, flipping]
    given = iter([s.flatten(1).double().numpy() for s in shifts])
    monkeypatch.setattr(np.random, "uniform", lambda *a, **k: next(given))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = quantus.RelativeInputStability(nr_samples=2, disable_warnings=True)(
            model=model, x_batch=images.numpy(), y_batch=labels.numpy(),
            a_batch=explainer(images, labels).maps[:, 0].numpy(),
            explain_func=lambda model, inputs, targets, **_: explainer(torch.as_tensor(inputs),
                                                                       torch.as_tensor(targets)).maps[:, 0].numpy(),
            device="cpu")
    assert np.isnan(theirs[0]) and np.isfinite(theirs[1])
    pending = list(shifts)
    ours = relative_input_stability(explainer, images, labels, samples=2, perturb=lambda x, g: x + pending.pop(0))
    only_small = relative_input_stability(explainer, images, labels, samples=1, perturb=lambda x, g: x + small)
    assert torch.isfinite(ours.scores).all()
    torch.testing.assert_close(ours.scores[0], only_small.scores[0])  # the flipping copy left out


def test_input_invariance_tells_gradients_from_zero_baselines():
    from interpkit import Occlusion
    from interpkit.metrics import input_invariance
    from interpkit.testing import ModelFingerprint, assert_model_unchanged

    model, images, labels = setup(8, n=2)
    before = ModelFingerprint.of(model)
    for make in (lambda m: GuidedBackprop(m), lambda m: GradCAM(m, layer="layer3")):
        assert input_invariance(make, model, images, labels).scores.tolist() == [1.0, 1.0]
    zero_baseline = input_invariance(lambda m: Occlusion(m, window=8, stride=8, baseline=0.0), model, images, labels)
    assert zero_baseline.scores.tolist() == [0.0, 0.0]  # the shifted input's occluded copies are other inputs
    assert_model_unchanged(before, model)
    for bad in (lambda: input_invariance("gradcam", model, images), lambda: input_invariance(GradCAM, "model", images),
                lambda: input_invariance(GradCAM, model, images, shift=float("nan")),
                lambda: input_invariance(GradCAM, model, images, atol=-1.0)):
        with pytest.raises(InputError):
            bad()


def test_quantus_shifted_model_is_not_the_same_function():
    """Quantus moves the first layer's bias by the smallest value of its output on a constant
    image (``torch.unique(...)[0]``), a border value under zero padding, so its shifted model does
    not compute the model's function on the shifted input; and a first convolution without bias
    (every ResNet's) stops it with a TypeError. interpkit's shifted copy is the same function."""
    from quantus.helpers.model.pytorch_model import PyTorchModel

    model, images, _ = setup(9, n=2)
    with pytest.raises(TypeError):
        PyTorchModel(model, channel_first=True, device="cpu").add_mean_shift_to_first_layer(-1.0, (1, 3, 32, 32))
    torch.manual_seed(9)
    padded = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
                                 torch.nn.Linear(4 * 32 * 32, 3)).eval()
    theirs = PyTorchModel(padded, channel_first=True, device="cpu").add_mean_shift_to_first_layer(-1.0, (1, 3, 32, 32))
    ours = copy.deepcopy(padded)
    ours.register_forward_pre_hook(lambda _m, args: (args[0] + 1.0,))
    with torch.no_grad():
        reference = padded(images)
        assert (theirs(images - 1.0) - reference).abs().max() > 1e-3
        torch.testing.assert_close(ours(images - 1.0), reference, rtol=1e-4, atol=1e-5)
