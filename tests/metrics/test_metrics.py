"""Metrics: the contract for every registered metric, and differential tests against torchcam."""

import warnings
from functools import partial

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import interpkit
from interpkit import GradCAM, InputError
from interpkit.metrics import AverageDrop, Deletion, IncreaseInConfidence, Insertion, baseline_of
from interpkit.testing import check_metric

#: defaults sized for 224 px images: on the kit's 12 x 10 grid every position lies within them, and every map scores alike
SMALL_GRID = {"top_k_intersection": {"k": 10}, "pointing_game": {"tolerance": 1}}
#: the same code with fewer forwards: 100 samples of each of 60 groups, in batches of 4, cost a minute here
FEWER_FORWARDS = {"monotonicity_correlation": {"samples": 5}}


@pytest.mark.parametrize("name", interpkit.list_metrics())
def test_every_registered_metric_meets_the_contract(name):
    check_metric(interpkit.get_metric(name), SMALL_GRID.get(name) or FEWER_FORWARDS.get(name))


def _torchcam_cam(model, images, layer):
    from torchcam.methods import GradCAM as TorchcamGradCAM

    with TorchcamGradCAM(model, target_layer=layer) as extractor:
        scores = model(images).softmax(dim=-1)  # torchcam explains the scores its logits_fn gives
        cams = extractor(scores.argmax(1).tolist(), scores)
    cam = extractor.fuse_cams(cams)
    return F.interpolate(cam.unsqueeze(1), images.shape[2:], mode="bilinear", align_corners=False)[:, 0].detach()


def test_deletion_and_insertion_equal_torchcam(small_cnn):
    from torchcam.methods import GradCAM as TorchcamGradCAM
    from torchcam.metrics import DeletionInsertionMetric

    small_cnn.eval()
    images = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    cam = _torchcam_cam(small_cnn, images, "features.4")
    with TorchcamGradCAM(small_cnn, target_layer="features.4") as extractor:
        theirs = DeletionInsertionMetric(extractor, partial(torch.softmax, dim=-1), steps=10, batch_size=16)
        theirs.update(images)
        expected = theirs.summary()
    deletion = Deletion(steps=10)(small_cnn, images, cam)
    insertion = Insertion(steps=10)(small_cnn, images, cam)
    assert deletion.mean.item() == pytest.approx(expected["deletion_auc"], abs=1e-5)
    assert insertion.mean.item() == pytest.approx(expected["insertion_auc"], abs=1e-5)
    assert deletion.curves.shape == (4, 11)


def test_average_drop_and_increase_equal_torchcam(small_cnn):
    from torchcam.methods import GradCAM as TorchcamGradCAM
    from torchcam.metrics import ClassificationMetric

    small_cnn.eval()
    images = torch.randn(6, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    cam = _torchcam_cam(small_cnn, images, "features.4")
    with TorchcamGradCAM(small_cnn, target_layer="features.4") as extractor:
        theirs = ClassificationMetric(extractor, partial(torch.softmax, dim=-1))
        theirs.update(images)
        expected = theirs.summary()
    drop = AverageDrop(normalize=False)(small_cnn, images, cam).mean.item()
    assert drop == pytest.approx(expected["avg_drop"], abs=1e-5)  # torchcam adds 1e-7 to the denominator
    increase = IncreaseInConfidence(normalize=False)(small_cnn, images, cam).mean.item()
    assert increase == pytest.approx(expected["conf_increase"], abs=1e-9)


def test_deletion_curve_ends_and_ranking(small_cnn, images):
    explanation = GradCAM(small_cnn)(images)
    result = Deletion(steps=4, max_batch=3)(small_cnn, images, explanation)
    probabilities = small_cnn.eval()(images).softmax(1).gather(1, explanation.targets)[:, 0]
    torch.testing.assert_close(result.curves[:, 0], probabilities.detach())  # nothing removed yet
    blank = small_cnn(torch.zeros_like(images)).softmax(1).gather(1, explanation.targets)[:, 0]
    torch.testing.assert_close(result.curves[:, -1], blank.detach())  # everything removed
    torch.testing.assert_close(result.fractions, torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0]))
    # the order of removal follows the map: reversing the map changes the curve, not its ends
    flipped = Deletion(steps=4)(small_cnn, images, -explanation.maps[:, 0])
    torch.testing.assert_close(flipped.curves[:, [0, -1]], result.curves[:, [0, -1]])


def test_baselines_and_bad_options(images):
    blurred = baseline_of(images, "blur")
    assert blurred.shape == images.shape and not torch.equal(blurred, images)
    assert torch.equal(baseline_of(images, 0.5), torch.full_like(images, 0.5))
    for bad in ("noise", torch.zeros(2, 2)):
        with pytest.raises(InputError):
            baseline_of(images, bad)
    for options in ({"steps": 0}, {"max_batch": 0}, {"score": "odds"}):
        with pytest.raises(InputError):
            Deletion(**options)
    with pytest.raises(InputError, match="6 pixels"):
        baseline_of(images[:, :, :4, :4], "blur")
    from interpkit.metrics import Infidelity

    with pytest.raises(InputError, match="seed"):
        Infidelity(seed="a")


@pytest.mark.parametrize("perturb", [lambda x, g: [0.0], lambda x, g: None, lambda x, g: x[:1], lambda x, g: x.flatten(1)])
def test_a_perturbation_that_gives_no_tensor_of_the_inputs_shape_is_refused(small_cnn, images, perturb):
    from interpkit.metrics import Infidelity, max_sensitivity

    small_cnn.eval()
    with pytest.raises(InputError, match=r"must return a tensor of the inputs' shape \(4, 3, 32, 32\)"):
        Infidelity(perturbation=perturb, samples=2)(small_cnn, images, torch.rand(4, 32, 32), 1)
    with pytest.raises(InputError, match=r"perturb must return a tensor of the inputs' shape"):
        max_sensitivity(GradCAM(small_cnn), images, 1, samples=2, perturb=perturb)


def test_infidelity_equals_captum_with_the_same_perturbation(small_cnn, images):
    from captum.metrics import infidelity

    from interpkit.metrics import Infidelity

    small_cnn.eval()

    def fixed(x, generator=None):  # deterministic, so both draw the same perturbations
        return 0.05 * torch.sin(3 * x)

    attributions = interpkit.GuidedBackprop(small_cnn)(images, target=2).maps[:, 0]
    ours = Infidelity(perturbation=fixed, samples=3)(small_cnn, images, attributions, targets=2)
    theirs = infidelity(small_cnn, lambda x: (fixed(x), x - fixed(x)), images, attributions, target=2,
                        n_perturb_samples=3)
    torch.testing.assert_close(ours.scores, theirs, rtol=1e-4, atol=1e-7)


def test_infidelity_is_zero_for_the_exact_attribution_of_a_linear_model():
    from interpkit.metrics import Infidelity

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, 5)).eval()
    x = torch.randn(2, 3, 4, 4)
    gradient = model[1].weight[1].detach().reshape(1, 3, 4, 4).expand(2, -1, -1, -1)
    result = Infidelity(samples=6, perturbation=lambda x, g: torch.randn(x.shape, generator=g))(model, x, gradient,
                                                                                                 targets=1)
    assert result.scores.abs().max() < 1e-8
    seeded = [Infidelity(samples=4, seed=s)(model, x, gradient * 2, targets=1).scores for s in (0, 0, 1)]
    assert torch.equal(seeded[0], seeded[1]) and not torch.equal(seeded[0], seeded[2])


@pytest.mark.parametrize("order", ["morf", "lerf"])
def test_region_perturbation_curves_equal_quantus(small_cnn, order):
    quantus = pytest.importorskip("quantus")
    from interpkit.metrics import RegionPerturbation

    small_cnn.eval()
    generator = torch.Generator().manual_seed(5)
    images = torch.randn(3, 3, 30, 28, generator=generator)  # 8 does not divide: padded regions
    maps = torch.rand(3, 30, 28, generator=generator)  # tie-free, so both orders are the same
    labels = torch.tensor([0, 3, 4])
    ours = RegionPerturbation(patch_size=8, regions=10, order=order)(small_cnn, images, maps, labels)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = quantus.RegionPerturbation(patch_size=8, regions_evaluation=10, order=order, normalise=False,
                                            disable_warnings=True)(
            model=small_cnn, x_batch=images.numpy(), y_batch=labels.numpy(), a_batch=maps[:, None].numpy(),
            softmax=True, device="cpu")
    curves = torch.tensor(np.array(theirs), dtype=torch.float32)
    torch.testing.assert_close(ours.curves, curves, rtol=1e-5, atol=1e-6)
    # Samek et al.'s AOPC averages over the L + 1 = 11 curve points from k = 0, whose fall is zero
    torch.testing.assert_close(ours.scores, curves.sum(dim=1) / 11, rtol=1e-5, atol=1e-6)


def test_pointing_game_hits_within_the_tolerance_and_skips_empty_masks(small_cnn):
    from interpkit.metrics import PointingGame

    images = torch.randn(3, 3, 32, 32)
    maps = torch.zeros(3, 32, 32)
    maps[:, 5, 5] = 1.0  # every map points at (5, 5)
    masks = torch.zeros(3, 32, 32, dtype=torch.bool)
    masks[0, 5, 20] = True  # 15 pixels away: a hit with the default tolerance
    masks[1, 5, 21] = True  # 16 pixels away: a miss
    result = PointingGame()(small_cnn, images, maps, masks=masks)  # sample 2: empty mask
    assert result.scores[:2].tolist() == [1.0, 0.0] and torch.isnan(result.scores[2])
    assert result.mean.item() == 0.5  # the empty mask is left out, not counted as a hit (Quantus counts it)
    assert PointingGame(tolerance=0)(small_cnn, images, maps, masks=masks).scores[0] == 0
    energy = PointingGame(energy=True)(small_cnn, images, maps + 1.0, masks=masks).scores
    torch.testing.assert_close(energy[:2], torch.full((2,), 1.0 / (32 * 32 + 1)))
    with pytest.raises(InputError, match="masks="):
        PointingGame()(small_cnn, images, maps)


def test_metric_targets_must_be_classes(small_cnn, images):
    explanation = GradCAM(small_cnn)(images, target=lambda out: out[:, 3])
    with pytest.raises(InputError, match="pass targets="):
        Deletion(steps=2)(small_cnn, images, explanation)
    assert Deletion(steps=2)(small_cnn, images, explanation, targets=3).scores.shape == (4,)
    for bad in (99, -1, [0, 7, 1, 1]):
        with pytest.raises(InputError, match="must lie in"):
            Deletion(steps=2)(small_cnn, images, explanation.maps[:, 0], targets=bad)
    with pytest.raises(InputError):
        Deletion(steps=2)(small_cnn, images, explanation.maps[:, 0], targets="all")


def test_energy_pointing_game_of_an_empty_map_is_zero(small_cnn, images):
    from interpkit.metrics import PointingGame

    masks = torch.zeros(4, 32, 32, dtype=torch.bool)
    masks[:, :4, :4] = True
    scores = PointingGame(energy=True)(small_cnn, images, torch.zeros(4, 32, 32), masks=masks).scores
    assert scores.tolist() == [0.0] * 4


def test_max_sensitivity_follows_its_definition(small_cnn, images):
    from interpkit.metrics import max_sensitivity

    small_cnn.eval()
    explainer = interpkit.GuidedBackprop(small_cnn)
    shifts = [0.01, -0.02, 0.015]
    draws = iter(shifts * 1)

    def shift(x, generator=None):  # one fixed shift per draw
        return x + next(draws) * torch.cos(5 * x)

    ours = max_sensitivity(explainer, images, 2, samples=3, perturb=shift)
    clean = explainer(images, 2).maps.flatten(1)
    expected = torch.stack([(explainer(images + a * torch.cos(5 * images), 2).maps.flatten(1) - clean).norm(dim=1)
                            for a in shifts]).amax(0) / clean.norm(dim=1)
    torch.testing.assert_close(ours.scores, expected, rtol=1e-5, atol=1e-7)
    seeded = [max_sensitivity(explainer, images, 2, samples=2, seed=s).scores for s in (0, 0, 1)]
    assert torch.equal(seeded[0], seeded[1]) and not torch.equal(seeded[0], seeded[2])
    with pytest.raises(InputError):
        max_sensitivity(small_cnn, images)


def test_max_sensitivity_equals_captum_with_the_same_perturbation(small_cnn, images):
    from captum.metrics import sensitivity_max

    from interpkit.metrics import max_sensitivity

    small_cnn.eval()
    explainer = interpkit.GuidedBackprop(small_cnn)
    shifts = torch.tensor([0.01, -0.02, 0.015, 0.005])
    ours_draws = iter(shifts)
    ours = max_sensitivity(explainer, images, 2, samples=4, max_batch=3,
                           perturb=lambda x, g: x + next(ours_draws) * torch.cos(5 * x))

    def captum_perturb(expanded):  # captum repeats each image samples times, image-major
        return expanded + shifts.repeat(len(images)).view(-1, 1, 1, 1) * torch.cos(5 * expanded)

    def explain(inputs, target):  # captum's convention: a tuple of inputs gives a tuple of maps
        if isinstance(inputs, tuple):
            return (explainer(inputs[0], target).maps[:, 0],)
        return explainer(inputs, target).maps[:, 0]

    theirs = sensitivity_max(explain, images, perturb_func=captum_perturb, n_perturb_samples=4, target=2)
    torch.testing.assert_close(ours.scores, theirs, rtol=1e-5, atol=1e-6)


def test_randomisation_check_sees_gradcam_change_and_leaves_the_model(small_cnn, images):
    from scipy.stats import spearmanr
    from skimage.metrics import structural_similarity

    from interpkit.metrics import randomisation_check
    from interpkit.testing import ModelFingerprint, assert_model_unchanged

    small_cnn.eval()
    before = ModelFingerprint.of(small_cnn)
    result = randomisation_check(GradCAM, small_cnn, images, seed=1)
    assert_model_unchanged(before, small_cnn)
    assert result.layers == ["fc", "features.4", "features.1", "features.0"]  # top first
    assert result.spearman_abs.shape == (4, 4) and result.maps.shape == (4, 4, 32, 32)
    original = GradCAM(small_cnn)(images).maps[:, 0]
    for step in range(4):  # the correlations follow their definitions (SciPy, scikit-image)
        for n in range(2):
            expected = spearmanr(original[n].flatten().numpy(), result.maps[step, n].flatten().numpy())[0]
            assert result.spearman[n, step].item() == pytest.approx(0.0 if np.isnan(expected) else expected,
                                                                     abs=1e-5)
    a, b = original[0].double().numpy(), result.maps[0, 0].double().numpy()
    scale = lambda m: (m - m.min()) / (m.max() - m.min()) if m.max() > m.min() else m * 0  # noqa: E731
    expected_ssim = structural_similarity(scale(a), scale(b), data_range=1.0, gaussian_weights=True, sigma=1.5,
                                          use_sample_covariance=False)
    assert result.ssim[0, 0].item() == pytest.approx(expected_ssim, abs=2e-2)
    same = randomisation_check(GradCAM, small_cnn, images, cascading=False, seed=1)
    assert same.spearman_abs.shape == (4, 4)


def test_linear_imputation_equals_pytorch_grad_cams_sparse_solve():
    from pytorch_grad_cam.metrics.road import NoisyLinearImputer

    from interpkit.metrics import linear_imputation

    generator = torch.Generator().manual_seed(7)
    image = torch.rand(3, 20, 18, generator=generator)
    removed = torch.rand(20, 18, generator=generator) < 0.6
    theirs = NoisyLinearImputer(noise=0.0)(image, (~removed).float())  # their mask: 1 = kept
    ours = linear_imputation(image[None], removed[None])[0]
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5)
    assert torch.equal(ours[:, ~removed], image[:, ~removed])


@pytest.mark.parametrize("order", ["morf", "lerf"])
def test_road_equals_pytorch_grad_cam_without_noise_on_tie_free_maps(small_cnn, order):
    from pytorch_grad_cam.metrics.road import ROADLeastRelevantFirstAverage, ROADMostRelevantFirstAverage
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    from interpkit.metrics import ROAD

    small_cnn.eval()
    generator = torch.Generator().manual_seed(8)
    images = torch.randn(2, 3, 11, 21, generator=generator)  # 231 positions: their counts are whole here
    cams = torch.rand(2, 11, 21, generator=generator)
    labels = [1, 3]
    # their percentile p removes the positions at or above np.percentile(cam, p) (MoRF; LeRF the
    # same of 1 - cam): 100 - p percent up to a pixel's rounding, and every position tied there
    percentiles = [10, 20, 40]
    peer = ROADMostRelevantFirstAverage if order == "morf" else ROADLeastRelevantFirstAverage
    averager = peer(percentiles)
    with torch.no_grad():
        import pytorch_grad_cam.metrics.road as road

        original = road.NoisyLinearImputer.__init__.__defaults__
        road.NoisyLinearImputer.__init__.__defaults__ = (0.0, original[1])
        try:
            theirs = averager(images, cams.numpy(), [ClassifierOutputTarget(c) for c in labels], small_cnn)
        finally:
            road.NoisyLinearImputer.__init__.__defaults__ = original
    removed = [1 - p / 100 for p in percentiles]
    ours = ROAD(order=order, fractions=removed, noise=0.0, score="logit")(small_cnn, images, cams, labels)
    torch.testing.assert_close(ours.scores, torch.tensor(theirs, dtype=torch.float32), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("make", [lambda: Deletion(steps=5), lambda: Insertion(steps=5), AverageDrop,
                                  lambda: __import__("interpkit.metrics", fromlist=["ROAD"]).ROAD(fractions=[0.3, 0.6]),
                                  lambda: __import__("interpkit.metrics", fromlist=["RegionPerturbation"])
                                  .RegionPerturbation(patch_size=8, regions=4)])
def test_every_sample_is_scored_whatever_the_batching(small_cnn, make):
    """Quantus' ROAD summarised only the first batch; here every batch split gives the same scores."""
    small_cnn.eval()
    generator = torch.Generator().manual_seed(11)
    images, maps = torch.randn(5, 3, 32, 32, generator=generator), torch.rand(5, 32, 32, generator=generator)
    labels = torch.tensor([0, 1, 2, 3, 4])
    whole = make()(small_cnn, images, maps, labels).scores
    split = torch.cat([make()(small_cnn, images[i:i + 2], maps[i:i + 2], labels[i:i + 2]).scores for i in (0, 2, 4)])
    torch.testing.assert_close(whole, split, rtol=1e-5, atol=1e-6)
    metric = make()
    metric.max_batch = 2
    torch.testing.assert_close(metric(small_cnn, images, maps, labels).scores, whole, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("make", [lambda: Deletion(steps=5), lambda: Insertion(steps=5), AverageDrop,
                                  lambda: __import__("interpkit.metrics", fromlist=["ROAD"]).ROAD(fractions=[0.3, 0.6]),
                                  lambda: __import__("interpkit.metrics", fromlist=["RegionPerturbation"])
                                  .RegionPerturbation(patch_size=8, regions=4)])
def test_a_signed_map_scores_the_same_as_an_explanation_and_as_its_tensors(small_cnn, images, make):
    """A CAM without its ReLU is signed: its (N, 1, H, W) maps were summed over their one channel
    in absolute value, ranking its most negative regions first, where its Explanation kept the sign."""
    small_cnn.eval()
    explanation = GradCAM(small_cnn, relu=False)(images, target=1)
    assert (explanation.maps < 0).any()
    scores = [make()(small_cnn, images, maps, 1).scores
              for maps in (explanation, explanation.maps, explanation.maps[:, 0])]
    torch.testing.assert_close(scores[1], scores[0])
    torch.testing.assert_close(scores[2], scores[0])


def test_random_metrics_do_not_depend_on_the_batch(small_cnn):
    from interpkit.metrics import Infidelity, max_sensitivity

    small_cnn.eval()
    images = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(12))
    attributions = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(13))
    whole = Infidelity(samples=3)(small_cnn, images, attributions, targets=1).scores
    torch.testing.assert_close(whole[2:], Infidelity(samples=3)(small_cnn, images[2:], attributions[2:], 1).scores)
    explainer = interpkit.GuidedBackprop(small_cnn)
    together = max_sensitivity(explainer, images, 1, samples=2).scores
    torch.testing.assert_close(together[:2], max_sensitivity(explainer, images[:2], 1, samples=2).scores)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(-3, 3), min_size=1, max_size=30), st.integers(1, 3))
def test_tied_ranks_equal_scipys(values, rows):
    from scipy.stats import rankdata

    from interpkit.metrics.sanity import _ranks

    data = torch.tensor([values[i:] + values[:i] for i in range(rows)], dtype=torch.float32)
    torch.testing.assert_close(_ranks(data), torch.tensor(rankdata(data.numpy(), axis=1), dtype=torch.float64))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name", ["road", "average_drop", "increase_in_confidence"])
def test_half_precision_models_get_the_float32_models_scores(small_cnn, images, dtype, name):
    """The metric on a half-precision copy of the model scores what the float32 model scores on
    the same (rounded) inputs, within the half precision's error; never NaN, never a raw error."""
    import copy

    half = copy.deepcopy(small_cnn).to(dtype)
    x = images[:2].to(dtype)
    maps = GradCAM(small_cnn)(x.float(), target=[0, 1])
    metric = interpkit.get_metric(name)()
    ours = metric(half, x, maps).scores
    reference = metric(small_cnn, x.float(), maps).scores
    assert ours.dtype == torch.float32 and torch.isfinite(ours).all()
    tolerance = 0.05 if dtype == torch.float16 else 0.2
    assert (ours - reference).abs().max() <= tolerance, (ours, reference)


def test_the_pointing_game_refuses_inputs_without_a_grid():
    model = torch.nn.Linear(6, 3)
    with pytest.raises(InputError, match="scores maps on the input's grid"):
        interpkit.get_metric("pointing_game")()(model, torch.randn(2, 6), torch.randn(2, 6),
                                                masks=torch.ones(2, 6, dtype=torch.bool))


@pytest.mark.parametrize("make, words", [
    (lambda: Deletion(baseline=None), "baseline must be"), (lambda: Deletion(baseline=float("nan")), "finite"),
    (lambda: Insertion(baseline=float("inf")), "finite"), (lambda: Deletion(baseline=True), "baseline must be"),
    (lambda: Deletion(baseline=[1]), "baseline must be"), (lambda: Deletion(baseline="black"), "unknown baseline"),
    (lambda: interpkit.get_metric("region_perturbation")(baseline=None), "baseline must be"),
    (lambda: Deletion(baseline=torch.tensor(float("nan"))), "finite"),
    (lambda: interpkit.get_metric("infidelity")(perturbation="no"), "perturbation must be a function"),
    (lambda: interpkit.get_metric("infidelity")(seed=-1), "seed"),
    (lambda: interpkit.get_metric("road")(fractions=1.5), "fractions"),
    (lambda: interpkit.get_metric("road")(fractions=[True]), "fractions"),
])
def test_metric_options_of_the_wrong_kind_are_refused(make, words):
    with pytest.raises(InputError, match=words):
        make()


def test_the_models_own_failure_is_reported_as_bad_input_and_targets_are_checked(small_cnn, images):
    with pytest.raises(InputError, match="the model's forward failed"):
        Deletion()(small_cnn, images[:, :2], torch.rand(len(images), 32, 32))  # two channels for a 3-channel model
    with pytest.raises(InputError, match="class indices"):
        interpkit.get_metric("pointing_game")()(small_cnn, images, torch.rand(len(images), 32, 32), targets=1.5,
                                                masks=torch.ones(len(images), 32, 32, dtype=torch.bool))


def test_a_probability_over_one_score_is_refused_and_inputs_are_left_alone():
    """A one-logit model's softmax is always 1: deletion and insertion gave 1.0 whatever the map.
    The metrics' forwards run on copies: a model writing its input changed the user's images."""
    from interpkit.metrics import AverageDrop, Deletion

    torch.manual_seed(0)
    one = torch.nn.Sequential(torch.nn.Conv2d(3, 2, 3, padding=1), torch.nn.Flatten(), torch.nn.Linear(128, 1)).eval()
    x = torch.rand(2, 3, 8, 8)
    maps = torch.rand(2, 1, 8, 8)
    with pytest.raises(InputError, match="softmax is always 1"):
        Deletion(steps=4)(one, x, maps, targets=0)
    assert Deletion(steps=4, score="logit")(one, x, maps, targets=0).scores.shape == (2,)

    class Writes(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.body = torch.nn.Sequential(torch.nn.Conv2d(3, 2, 3, padding=1), torch.nn.Flatten(),
                                            torch.nn.Linear(128, 4))

        def forward(self, images):
            return self.body(images.mul_(2))

    model, kept = Writes().eval(), x.clone()
    first = AverageDrop()(model, x, maps, targets=1).scores
    assert torch.equal(x, kept)
    torch.testing.assert_close(AverageDrop()(model, x, maps, targets=1).scores, first)  # the same images each time


def test_seeded_noise_is_the_same_for_a_float64_copy(small_cnn, images):
    """torch draws another stream in float64 than in float32 from one seeded generator: a float64
    copy of the model and inputs was perturbed otherwise (infidelity 4.8e-4 against 3.0e-4)."""
    import copy

    from interpkit.metrics import ROAD, Infidelity, gaussian, max_sensitivity

    small_cnn.eval()
    double = copy.deepcopy(small_cnn).double()
    attributions = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    for metric in (Infidelity(samples=3, perturbation=gaussian(0.5)), ROAD(fractions=[0.3, 0.6], noise=0.5)):
        single = metric(small_cnn, images, attributions, 1).scores
        twice = metric(double, images.double(), attributions.double(), 1).scores
        torch.testing.assert_close(twice.float(), single, rtol=2e-3, atol=1e-5)
    single = max_sensitivity(interpkit.Saliency(small_cnn), images, 1, samples=2).scores
    twice = max_sensitivity(interpkit.Saliency(double), images.double(), 1, samples=2).scores
    torch.testing.assert_close(twice.float(), single, rtol=2e-3, atol=1e-5)


class _ScoresRotated(Deletion):
    """Gives the batch's scores back in another order (a reversal of three would keep the middle)."""

    name = "scores_rotated"

    def compute(self, model, inputs, saliency, score):
        result = super().compute(model, inputs, saliency, score)
        return interpkit.metrics.MetricResult(self.name, result.scores.flip(0))


class _MapsIgnored(Deletion):
    name = "maps_ignored"

    def compute(self, model, inputs, saliency, score):
        return super().compute(model, inputs, torch.ones_like(saliency), score)


@pytest.mark.parametrize("broken, words", [(_ScoresRotated, "did not score in that order"),
                                           (_MapsIgnored, "the maps are not read")])
def test_the_metric_kit_catches_scores_of_other_samples_and_maps_not_read(broken, words):
    with pytest.raises(AssertionError, match=words):
        check_metric(broken, {"steps": 4})
