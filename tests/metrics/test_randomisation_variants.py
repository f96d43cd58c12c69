"""The smooth and efficient MPRT (Hedström et al., 2023): equal to Quantus 0.6 given its seeds and
noise, the histogram entropy equal to NumPy's histogram, and Quantus' smooth MPRT shown ignoring
the explanation function it is given."""

import copy
import warnings

import numpy as np
import pytest
import scipy.stats
import torch
import torchvision
from torch import nn

from interpkit import GradCAM, InputError
from interpkit.explainers import Saliency
from interpkit.metrics import efficient_randomisation_check, histogram_entropy, input_invariance, randomisation_check

quantus = pytest.importorskip("quantus")


def plane(explainer, inputs, targets):
    maps = explainer(torch.as_tensor(inputs), torch.as_tensor(targets)).maps[:, 0]
    return (maps.sum(1) if maps.dim() == 4 else maps)[:, None].detach().numpy()


def signed_saliency(model):
    return Saliency(model, absolute=False)


def resnet18():
    torch.manual_seed(0)
    return torchvision.models.resnet18(num_classes=6).eval()


@pytest.mark.parametrize("make, build", [(signed_saliency, None), (GradCAM, None), (signed_saliency, resnet18)],
                         ids=["saliency", "gradcam", "resnet18-saliency"])
def test_efficient_check_equals_quantus(small_cnn, images, make, build):
    small_cnn = build() if build else small_cnn.eval()
    labels = small_cnn(images).argmax(1)
    before = copy.deepcopy(small_cnn.state_dict())
    layers = len([m for m in small_cnn.modules() if hasattr(m, "reset_parameters") and list(m.parameters(False))])

    def explain(model, inputs, targets, **_):
        return plane(make(model), inputs, targets)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = quantus.EfficientMPRT(seed=42, disable_warnings=True)(
            model=small_cnn, x_batch=images.numpy(), y_batch=labels.numpy(), a_batch=explain(small_cnn, images, labels),
            explain_func=explain, device="cpu")
    ours = efficient_randomisation_check(make, small_cnn, images, labels, seed=[43] * layers)
    torch.testing.assert_close(ours.scores.double(), torch.tensor(theirs, dtype=torch.float64), rtol=1e-5, atol=1e-6)
    assert all(torch.equal(v, before[k]) for k, v in small_cnn.state_dict().items())


def test_histogram_entropy_equals_numpy_and_scipy():
    generator = torch.Generator().manual_seed(0)
    rows = [torch.randn(500, generator=generator), torch.arange(101.0),  # values on the edges themselves
            torch.full((50,), 3.0), torch.rand(64, generator=generator).round(decimals=1)]
    for row in rows:
        for bins in (1, 10, 100):
            expected = scipy.stats.entropy(np.histogram(row.numpy(), bins=bins)[0])
            assert histogram_entropy(row[None], bins).item() == pytest.approx(expected, abs=1e-12)


def test_a_constant_original_map_has_no_rise():
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 3)).eval()
    nn.init.zeros_(model[1].weight)  # every input gradient 0: a constant map, entropy 0
    result = efficient_randomisation_check(Saliency, model, torch.rand(2, 3, 4, 4), 0)
    assert torch.isnan(result.scores).all()


def draws_of(seed, count, shape):
    """interpkit's documented noise: standard normal draws (count, 1, *shape) from a CPU
    generator seeded with ``noise_seed``, shared by the images."""
    return torch.randn((count, 1, *shape), generator=torch.Generator().manual_seed(seed))


def quantus_smooth_mprt(monkeypatch, model, images, labels, samples, explain):
    """Quantus' smooth MPRT with its np.random.randn replaced by interpkit's draws, the same for
    every model it explains (it draws afresh for each)."""
    draws = draws_of(5, samples - 1, images.shape[1:]).expand(-1, len(images), *images.shape[1:]).double().numpy()
    calls = iter(range(10**6))
    monkeypatch.setattr(np.random, "randn", lambda *shape: draws[next(calls) % (samples - 1)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return quantus.SmoothMPRT(layer_order="top_down", seed=42, nr_samples=samples, disable_warnings=True,
                                  display_progressbar=False)(
            model=model, x_batch=images.numpy(), y_batch=labels.numpy(), a_batch=None, explain_func=explain,
            explain_func_kwargs={"method": "Saliency"}, device="cpu")


@pytest.mark.parametrize("build, samples", [(None, 4), pytest.param(resnet18, 2, marks=pytest.mark.slow)],
                         ids=["small", "resnet18"])
def test_smooth_check_equals_quantus_given_its_noise(small_cnn, images, monkeypatch, build, samples):
    small_cnn = build() if build else small_cnn.eval()
    labels = small_cnn(images).argmax(1)
    layers = len([m for m in small_cnn.modules() if hasattr(m, "reset_parameters") and list(m.parameters(False))])
    per_layer = quantus_smooth_mprt(monkeypatch, small_cnn, images, labels, samples, quantus.explain)
    ours = randomisation_check(Saliency, small_cnn, images, labels, seed=[43] * layers, smooth=samples, noise_seed=5)
    assert list(per_layer)[1:] == ours.layers
    theirs = torch.tensor(np.array([per_layer[name] for name in ours.layers]), dtype=torch.float32).T
    torch.testing.assert_close(ours.spearman_abs, theirs, rtol=1e-5, atol=1e-5)
    plain = randomisation_check(Saliency, small_cnn, images, labels, seed=[43] * layers)
    assert not torch.allclose(plain.spearman_abs, ours.spearman_abs, atol=1e-3)  # the smoothing did something


def test_quantus_smooth_mprt_ignores_the_explanation_function(small_cnn, images, monkeypatch):
    """It explains every noisy copy with ``quantus.explain`` (captum, by ``method``), whatever
    ``explain_func`` says: given GradCAM, it still scores saliency."""
    small_cnn.eval()
    labels = small_cnn(images).argmax(1)
    saliency = quantus_smooth_mprt(monkeypatch, small_cnn, images, labels, 3, quantus.explain)
    gradcam = quantus_smooth_mprt(monkeypatch, small_cnn, images, labels, 3,
                                  lambda model, inputs, targets, **_: plane(GradCAM(model), inputs, targets))
    for layer in saliency:
        np.testing.assert_array_equal(saliency[layer], gradcam[layer])
    ours_saliency = randomisation_check(Saliency, small_cnn, images, labels, smooth=3)
    ours_gradcam = randomisation_check(GradCAM, small_cnn, images, labels, smooth=3)
    assert not torch.allclose(ours_saliency.spearman_abs, ours_gradcam.spearman_abs, atol=1e-2)


def test_smoothing_leaves_the_model_and_draws_once(small_cnn, images):
    small_cnn.eval()
    before = copy.deepcopy(small_cnn.state_dict())
    first = randomisation_check(GradCAM, small_cnn, images, smooth=3, noise=0.2, noise_seed=1)
    again = randomisation_check(GradCAM, small_cnn, images, smooth=3, noise=0.2, noise_seed=1)
    torch.testing.assert_close(first.maps, again.maps)
    alone = randomisation_check(GradCAM, small_cnn, images[1:2], smooth=3, noise=0.2, noise_seed=1)
    torch.testing.assert_close(alone.maps[:, 0], first.maps[:, 1], rtol=1e-4, atol=1e-5)  # shared by the images
    assert all(torch.equal(v, before[k]) for k, v in small_cnn.state_dict().items())


@pytest.mark.parametrize("check", [randomisation_check, efficient_randomisation_check])
def test_the_layers_seeds_leave_the_users_generators_alone(small_cnn, images, monkeypatch, check):
    """Each layer is re-initialised under its seed; ``torch.manual_seed`` did it, which also reseeds
    every CUDA device's generator, and only the CPU's was given back."""
    reseeded = []
    monkeypatch.setattr(torch.cuda, "manual_seed_all", lambda seed: reseeded.append(seed))
    small_cnn.eval()
    state = torch.get_rng_state()
    first = check(GradCAM, small_cnn, images[:2])
    assert reseeded == [] and torch.equal(torch.get_rng_state(), state)
    again = check(GradCAM, small_cnn, images[:2])  # the seeds still decide
    torch.testing.assert_close(*(r.maps if hasattr(r, "maps") else r.scores for r in (again, first)))


def test_threads_checking_their_own_models_get_the_sequential_results():
    """Each layer's seeded draws come from the process's generator: threads drew from each
    other's seeds (5 of 10 rounds gave other maps) and gave back each other's states. A layer
    whose re-initialisation pauses between its draws lets the others run in between."""
    import time

    from threads import in_threads

    class Pausing(nn.Conv2d):
        def reset_parameters(self) -> None:
            super().reset_parameters()
            time.sleep(0.002)
            if self.bias is not None:
                nn.init.normal_(self.bias)

    def model():
        torch.manual_seed(0)
        return nn.Sequential(*[m for _ in range(3) for m in (Pausing(4, 4, 3, padding=1), nn.ReLU())],
                             nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)).eval()

    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    expected = randomisation_check(Saliency, model(), x, 0).maps
    for _ in range(2):
        models, found = [model() for _ in range(4)], [None] * 4
        torch.manual_seed(123)
        state = torch.get_rng_state()

        def check(i):
            found[i] = randomisation_check(Saliency, models[i], x, 0).maps

        assert not in_threads(check)
        assert all(torch.equal(maps, expected) for maps in found)
        assert torch.equal(torch.get_rng_state(), state)


def test_noisy_copies_explain_the_clean_inputs_top_class(images):
    """Loud noise changes the copies' own top classes; every copy still explains the clean one's."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Flatten(), nn.Linear(4 * 32 * 32, 6)).eval()
    top = model(images).argmax(1)
    noisy_tops = torch.stack([model(images + 3 * torch.randn_like(images)).argmax(1) for _ in range(4)])
    assert (noisy_tops != top).any()
    loud = randomisation_check(Saliency, model, images, smooth=4, noise=3.0)
    pinned = randomisation_check(Saliency, model, images, top, smooth=4, noise=3.0)
    torch.testing.assert_close(loud.spearman, pinned.spearman)  # the original's maps enter here
    torch.testing.assert_close(loud.maps, pinned.maps)


@pytest.mark.parametrize("call", [
    lambda m, x: randomisation_check(GradCAM, m, x, smooth=0),
    lambda m, x: randomisation_check(GradCAM, m, x, smooth=2, noise=-1.0),
    lambda m, x: randomisation_check(GradCAM, m, x, smooth=2, noise_seed=-1),
    lambda m, x: efficient_randomisation_check(GradCAM, m, x, bins=0),
    lambda m, x: efficient_randomisation_check(GradCAM, m, x, seed=[1, 2]),
    lambda m, x: efficient_randomisation_check(Saliency, nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()), x),
], ids=["smooth", "noise", "noise-seed", "bins", "seeds", "no-layers"])
def test_bad_input(small_cnn, images, call):
    with pytest.raises(InputError):
        call(small_cnn.eval(), images)


def conv_model(dims):
    conv, pool = {1: (nn.Conv1d, nn.AdaptiveAvgPool1d), 3: (nn.Conv3d, nn.AdaptiveAvgPool3d)}[dims]
    torch.manual_seed(0)
    return nn.Sequential(conv(2, 4, 3, padding=1), nn.ReLU(), pool(1), nn.Flatten(), nn.Linear(4, 3)).eval()


def test_1d_and_3d_maps_keep_their_grid():
    """A 3-D CAM keeps its depth and a 1-D gradient loses its channels (the maps' kind says
    which); SSIM, defined for images, is NaN for them and the rank correlations are computed."""
    volume, signal = torch.randn(2, 2, 4, 5, 6), torch.randn(3, 2, 15)
    cams = randomisation_check(GradCAM, conv_model(3), volume)
    assert cams.maps.shape == (2, 2, 4, 5, 6) and torch.isnan(cams.ssim).all()
    assert torch.isfinite(cams.spearman_abs).any()
    gradients = randomisation_check(Saliency, conv_model(1), signal)
    assert gradients.maps.shape == (2, 3, 15)
    cam = GradCAM(conv_model(3))(volume).maps[:, 0]
    efficient = efficient_randomisation_check(GradCAM, conv_model(3), volume, bins=10)
    trial = copy.deepcopy(conv_model(3))
    for module, seed in zip([trial[4], trial[0]], [0, 1]):  # top down, seeds 0 and 1
        torch.manual_seed(seed)
        module.reset_parameters()
    random_cam = GradCAM(trial)(volume, GradCAM(conv_model(3))(volume).targets).maps[:, 0]
    before, after = histogram_entropy(cam.flatten(1), 10), histogram_entropy(random_cam.flatten(1), 10)
    torch.testing.assert_close(efficient.scores.double(), ((after - before) / before), equal_nan=True)


@pytest.mark.parametrize("call", [
    lambda m, x: randomisation_check(lambda model: 5, m, x),
    lambda m, x: randomisation_check(GradCAM(m), m, x),
    lambda m, x: efficient_randomisation_check(lambda model: 5, m, x),
    lambda m, x: efficient_randomisation_check(Saliency, "model", x),
    lambda m, x: input_invariance(lambda model: None, m, x),
], ids=["factory-returns-junk", "an-instance", "efficient-junk", "efficient-not-a-model", "invariance-junk"])
def test_factories_and_models_are_checked(small_cnn, images, call):
    with pytest.raises(InputError, match="factory|must return|torch.nn.Module"):
        call(small_cnn.eval(), images)


def test_histogram_entropy_refuses_what_has_no_histogram_and_widens_a_range_beyond_its_dtype():
    for bad in (torch.tensor([[0.0, 1.0, float("inf")]]), torch.tensor([[0.0, float("nan")]]), torch.zeros(1, 0),
                torch.arange(3)[None]):
        with pytest.raises(InputError):
            histogram_entropy(bad, 10)
    for row in (torch.tensor([-3e38, 3e38, 0.0]), torch.tensor([0.0, 1e-45, 2e-45])):  # float32 range, width
        expected = scipy.stats.entropy(np.histogram(row.double().numpy(), bins=10)[0])  # NumPy float32 raises on one
        assert histogram_entropy(row[None], 10).item() == pytest.approx(expected, abs=1e-12)


def test_a_model_deepcopy_cannot_copy_is_refused_by_name():
    """The old hook-based weight norm keeps its weight as a tensor of a graph, which deepcopy
    refuses with torch's RuntimeError."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        model = nn.Sequential(torch.nn.utils.weight_norm(nn.Conv2d(3, 4, 3)), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                              nn.Flatten(), nn.Linear(4, 3)).eval()
    x = torch.randn(2, 3, 8, 8)
    model(x)
    for check in (randomisation_check, efficient_randomisation_check):
        with pytest.raises(InputError, match="copy.deepcopy could not copy it"):
            check(Saliency, model, x, 0)
