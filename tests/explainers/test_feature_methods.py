"""Feature ablation, Shapley value sampling, KernelSHAP and LIME: equal to captum's given the same
masks, orders and coalitions, and exact where the answer is known by construction."""

import itertools
import re
import warnings

import pytest
import torch
import torchvision
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from interpkit import LIME, FeatureAblation, InputError, KernelSHAP, ShapleyValueSampling, TargetError
from interpkit.explainers import (
    fit_linear,
    grid_cells,
    kernel_shap_coalitions,
    lime_coalitions,
    rise_masks,
    shapley_permutations,
    superpixels,
)
from interpkit.testing import Conv1dNet, Conv3dNet

captum_attr = pytest.importorskip("captum.attr", reason="captum is part of the [test] extra")

METHODS = (FeatureAblation, ShapleyValueSampling, KernelSHAP, LIME)


def resnet_and_images(seed=0, size=24):
    torch.manual_seed(seed)
    return torchvision.models.resnet18(num_classes=5).eval(), torch.randn(2, 3, size, size)


def block_mask(height, width, rows, cols):
    """Feature ids (H, W) of a rows x cols grid of blocks."""
    return (torch.arange(height)[:, None] * rows // height) * cols + torch.arange(width)[None] * cols // width


def drawn(draw, *shape, seed=0):
    return draw(*shape, torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("per_image", [False, True])
def test_feature_ablation_equals_captum(per_image):
    model, x = resnet_and_images()
    mask = block_mask(24, 24, 3, 4)
    if per_image:  # a different mask per image, in captum's (N, 1, H, W) layout
        mask = torch.stack([mask, mask.flip(1)]).unsqueeze(1)
    ours = FeatureAblation(model, features=mask, baseline=-0.3, max_batch=8)(x, target=[1, 3]).maps
    theirs = captum_attr.FeatureAblation(model).attribute(x, target=[1, 3], baselines=-0.3,
                                                          feature_mask=mask if per_image else mask[None, None],
                                                          perturbations_per_eval=4)
    assert ours.shape == (2, 1, 24, 24) and ours.abs().max() > 0
    torch.testing.assert_close(ours[:, 0], theirs[:, 0], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("make, shape", [(Conv1dNet, (2, 2, 40)), (Conv3dNet, (2, 1, 6, 10, 8))])
def test_feature_ablation_equals_captum_in_one_and_three_dimensions(make, shape):
    torch.manual_seed(0)
    model, x = make().eval(), torch.randn(*shape)
    labels, _ = grid_cells(shape[2:], 12)
    ours = FeatureAblation(model, features="grid", segments=12)(x, target=1).maps
    theirs = captum_attr.FeatureAblation(model).attribute(x, target=1, feature_mask=labels[None, None])
    torch.testing.assert_close(ours[:, 0], theirs[:, 0], rtol=1e-6, atol=1e-6)


def test_shapley_value_sampling_equals_captum_with_the_same_orders():
    model, x = resnet_and_images()
    mask = block_mask(24, 24, 2, 3)
    orders = drawn(shapley_permutations, 5, 6, seed=4)
    ours = ShapleyValueSampling(model, features=mask, samples=5, seed=4, baseline=0.1)(x, target=[2, 0]).maps
    captum = captum_attr.ShapleyValueSampling(model)
    captum.permutation_generator = lambda features, samples: iter(orders.tolist())
    theirs = captum.attribute(x, target=[2, 0], baselines=0.1, feature_mask=mask[None, None], n_samples=5,
                              perturbations_per_eval=8)
    torch.testing.assert_close(ours[:, 0], theirs[:, 0], rtol=1e-5, atol=1e-5)


def given_coalitions(rows):
    """A captum perturbation function yielding the given coalitions, restarted for each image."""
    def perturb(original, **kwargs):
        for row in rows:
            yield row[None].long()

    return perturb


def captum_surrogate(cls, model, x, target, mask, rows, **kwargs):
    """captum's per-image attributions (N, H, W) with the given coalitions."""
    explainer = cls(model, perturb_func=given_coalitions(rows), **kwargs) if cls is captum_attr.Lime else cls(model)
    if cls is captum_attr.KernelShap:
        explainer.perturb_func = given_coalitions(rows)
    return torch.cat([explainer.attribute(x[i:i + 1], target=t, baselines=0.0, feature_mask=mask[None, None],
                                          n_samples=len(rows))[:, 0] for i, t in enumerate(target)])


def test_kernel_shap_equals_captum_with_the_same_coalitions():
    model, x = resnet_and_images()
    mask = block_mask(24, 24, 3, 3)
    rows = drawn(kernel_shap_coalitions, 40, 9, seed=2)
    assert rows[0].all() and not rows[1].any() and len({tuple(r.tolist()) for r in rows}) > 20
    ours = KernelSHAP(model, features=mask, samples=40, seed=2)(x, target=[1, 4]).maps
    theirs = captum_surrogate(captum_attr.KernelShap, model, x, [1, 4], mask, rows)
    torch.testing.assert_close(ours[:, 0], theirs, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("regulariser, alpha, distance, width", [("lasso", 0.01, "cosine", 1.0),
                                                                   ("lasso", 0.002, "euclidean", 20.0),
                                                                   ("ridge", 0.5, "cosine", 0.3),
                                                                   (None, 0.0, "euclidean", 50.0)])
def test_lime_equals_captum_with_the_same_coalitions(regulariser, alpha, distance, width):
    from captum._utils.models.linear_model import SkLearnLasso, SkLearnLinearRegression, SkLearnRidge

    model, x = resnet_and_images()
    mask = block_mask(24, 24, 2, 4)
    rows = drawn(lime_coalitions, 30, 8, seed=5)
    ours = LIME(model, features=mask, samples=30, seed=5, regulariser=regulariser, alpha=alpha, distance=distance,
                kernel_width=width)(x, target=[3, 0]).maps
    surrogate = {"lasso": SkLearnLasso(alpha=alpha, tol=1e-7, max_iter=200_000), "ridge": SkLearnRidge(alpha=alpha),
                 None: SkLearnLinearRegression()}[regulariser]
    similarity = captum_attr._core.lime.get_exp_kernel_similarity_function(distance, width)
    theirs = captum_surrogate(captum_attr.Lime, model, x, [3, 0], mask, rows, interpretable_model=surrogate,
                              similarity_func=similarity)
    assert theirs.abs().max() > 0
    torch.testing.assert_close(ours[:, 0], theirs, rtol=1e-5, atol=1e-5)


def linear_model(channels, length, outputs, generator):
    model = nn.Sequential(nn.Flatten(), nn.Linear(channels * length, outputs)).double()
    with torch.no_grad():
        model[1].weight.copy_(torch.randn(outputs, channels * length, generator=generator, dtype=torch.float64))
    return model


@settings(max_examples=20, deadline=None)
@given(method=st.sampled_from(METHODS), channels=st.integers(1, 3), length=st.integers(2, 12),
       features=st.integers(1, 6), baseline=st.floats(-2, 2), seed=st.integers(0, 2**16))
def test_a_linear_model_gets_its_weights_times_the_change(method, channels, length, features, baseline, seed):
    """For f(x) = w . x + b every method gives feature f the sum over its positions and channels of
    w (x - x0), whatever the coalitions drawn (LIME unregularised with equal weights)."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(2, channels, length, generator=generator, dtype=torch.float64)
    model = linear_model(channels, length, 3, generator)
    mask = torch.randint(0, features, (length,), generator=generator)
    options = {"kernel_width": None, "regulariser": None} if method is LIME else {}
    maps = method(model, features=mask, baseline=baseline, **options)(x, target=2).maps[:, 0].double()
    contributions = (model[1].weight[2].detach().view(channels, length) * (x - baseline)).sum(1)  # (N, L)
    per_feature = torch.zeros(2, features, dtype=torch.float64).index_add_(1, mask, contributions)
    torch.testing.assert_close(maps, per_feature[:, mask], rtol=1e-4, atol=1e-4)


def test_tabular_inputs_make_each_column_a_feature():
    generator = torch.Generator().manual_seed(0)
    model = nn.Sequential(nn.Linear(7, 4), nn.Tanh(), nn.Linear(4, 3)).eval()
    x = torch.randn(3, 7, generator=generator)
    ours = FeatureAblation(model)(x, target=1).maps
    theirs = captum_attr.FeatureAblation(model).attribute(x, target=1)
    assert ours.shape == (3, 1, 7)
    torch.testing.assert_close(ours[:, 0], theirs, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("method", METHODS)
def test_no_image_depends_on_its_batch(method):
    model, x = resnet_and_images(size=16)
    explainer = method(model, features="grid", segments=4, max_batch=5, **({"samples": 12} if method is not FeatureAblation else {}))
    together = explainer(x, target=[1, 2]).maps
    alone = torch.cat([explainer(x[i:i + 1], target=[[1, 2][i]]).maps for i in range(2)])
    torch.testing.assert_close(together, alone, rtol=1e-4, atol=1e-5)


def test_coalitions_follow_their_distributions():
    size = 10
    rows = drawn(kernel_shap_coalitions, 20_002, size, seed=1)[2:]
    counts = torch.bincount(rows.sum(1), minlength=size + 1).double()
    k = torch.arange(1, size, dtype=torch.float64)
    expected = (size - 1) / (k * (size - k))
    assert counts[0] == counts[size] == 0
    torch.testing.assert_close(counts[1:size] / counts.sum(), expected / expected.sum(), atol=0.01, rtol=0)
    # given its size, every subset is equally likely: each feature is kept equally often
    kept = rows.double().mean(0)
    torch.testing.assert_close(kept, kept.mean().expand(size), atol=0.015, rtol=0)
    assert abs(drawn(lime_coalitions, 20_000, size).double().mean() - 0.5) < 0.01
    orders = drawn(shapley_permutations, 500, 6)
    assert (orders.sort(1).values == torch.arange(6)).all()
    assert torch.bincount(orders[:, 0], minlength=6).min() > 50


def test_fit_linear_against_closed_forms():
    generator = torch.Generator().manual_seed(0)
    z = torch.rand(60, 5, generator=generator) < 0.5
    y = torch.randn(60, 2, 3, generator=generator, dtype=torch.float64)
    w = torch.rand(60, 2, generator=generator, dtype=torch.float64) + 0.1
    for regulariser, alpha in ((None, 0.0), ("ridge", 0.7)):
        beta = fit_linear(z, y, w, regulariser, alpha).double()
        for n, k in itertools.product(range(2), range(3)):
            design = torch.cat([torch.ones(60, 1, dtype=torch.float64), z.double()], 1)
            penalty = torch.diag(torch.tensor([0.0] + [alpha] * 5, dtype=torch.float64))
            solution = torch.linalg.solve(design.T @ (w[:, n, None] * design) + penalty,
                                          design.T @ (w[:, n] * y[:, n, k]))
            torch.testing.assert_close(beta[n, k], solution[1:], rtol=1e-5, atol=1e-6)
    # a huge lasso penalty zeroes every coefficient; none keeps them all non-zero
    assert fit_linear(z, y, w, "lasso", 100.0).abs().max() == 0
    assert fit_linear(z, y, w, "lasso", 0.0).abs().min() > 0


@settings(max_examples=15, deadline=None)
@given(rows=st.integers(1, 4), cols=st.integers(1, 4), size=st.integers(4, 9), channels=st.integers(1, 3),
       compactness=st.floats(0.25, 5), seed=st.integers(0, 2**16))
def test_superpixels_find_the_blocks_of_a_checkerboard(rows, cols, size, channels, compactness, seed):
    """A checkerboard of as many blocks as seeds, two levels at least 1 apart in every channel with
    noise of 0.05, is cut into exactly its blocks; an image's segmentation does not depend on the
    rest of its batch.
    (Below a compactness of about 0.1 the noise outweighs two blocks' distance, and blocks of one
    level trade pixels: SLIC's colour term dominates and connectivity is not enforced.)"""
    generator = torch.Generator().manual_seed(seed)
    blocks = block_mask(rows * size, cols * size, rows, cols)
    base = torch.randn(channels, 1, 1, generator=generator) * 5
    sign = torch.randint(0, 2, (channels, 1, 1), generator=generator) * 2 - 1
    levels = torch.stack([base, base + sign * (1 + 4 * torch.rand(channels, 1, 1, generator=generator))])  # >= 1 apart
    checker = (blocks // cols + blocks % cols) % 2
    image = torch.where(checker == 0, levels[0], levels[1]) + 0.05 * torch.randn(channels, *blocks.shape, generator=generator)
    batch = torch.stack([image, torch.randn(channels, *blocks.shape, generator=generator)])
    labels = superpixels(batch, segments=rows * cols, compactness=compactness)
    assert labels.shape == (2, *blocks.shape)
    pairs = torch.stack([labels[0].flatten(), blocks.flatten()]).unique(dim=1)
    assert pairs.shape[1] == rows * cols and pairs[0].unique().numel() == rows * cols  # one label per block
    assert torch.equal(superpixels(batch[:1], segments=rows * cols, compactness=compactness), labels[:1])


def test_grid_cells_cover_the_grid_evenly():
    labels, count = grid_cells((12, 9), 9)
    assert count == 9 and torch.equal(torch.bincount(labels.flatten()), torch.full((9,), 12))
    labels, count = grid_cells((5, 4, 6), 8)
    assert count == 8 and labels.max() == 7 and labels.shape == (5, 4, 6)


def test_bad_options_inputs_and_targets():
    model = Conv1dNet().eval()
    for method in METHODS:
        for options in ({"features": "slic"}, {"features": 3}, {"segments": 0}, {"baseline": float("inf")},
                        {"max_batch": -1}):
            with pytest.raises(InputError):
                method(model, **options)
        x = torch.randn(2, 2, 40)
        for mask, match in ((torch.zeros(40), "integer"), (torch.full((40,), -1), "0 or more"),
                            (torch.zeros(2, 3, 40, dtype=torch.long), "channel axis"),
                            (torch.zeros(39, dtype=torch.long), "broadcast")):
            with pytest.raises(InputError, match=match):
                method(model, features=mask)(x, target=0)
        from interpkit import Neuron

        with pytest.raises(TargetError, match="neurons"):
            method(model)(x, target=Neuron("features.0", 0))
    for options in ({"samples": 0}, {"seed": -1}):
        for method in (ShapleyValueSampling, KernelSHAP, LIME):
            with pytest.raises(InputError):
                method(model, **options)
    for options in ({"kernel_width": 0}, {"kernel_width": -1.0}, {"distance": "l1"}, {"regulariser": "elastic"},
                    {"alpha": -0.1}):
        with pytest.raises(InputError):
            LIME(model, **options)


def test_a_model_that_mixes_samples_sees_one_copy_per_forward():
    """A batch norm without running statistics normalises each forward's samples together: the
    copies must not share forwards, so max_batch cannot change the result."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4, track_running_stats=False), nn.ReLU(),
                          nn.Flatten(), nn.Linear(4 * 8 * 8, 3)).eval()
    x = torch.randn(2, 3, 8, 8)
    per_image = torch.stack([block_mask(8, 8, 2, 2), block_mask(8, 8, 2, 4)])
    for method in (FeatureAblation, KernelSHAP):
        one, many = (method(model, features=per_image, max_batch=b, **({} if method is FeatureAblation else
                                                                       {"samples": 12}))(x, target=0).maps
                     for b in (1, 64))
        torch.testing.assert_close(one, many, rtol=1e-5, atol=1e-6)


def test_float64_models_keep_their_precision():
    model = nn.Linear(4, 1).double().eval()
    with torch.no_grad():
        model.bias.fill_(1e6)
        model.weight.copy_(torch.tensor([[1e-3, 2e-3, -1e-3, 5e-4]], dtype=torch.float64))
    x = torch.ones(1, 4, dtype=torch.float64)
    expected = torch.tensor([1e-3, 2e-3, -1e-3, 5e-4], dtype=torch.float64)
    for method in (FeatureAblation, ShapleyValueSampling):
        torch.testing.assert_close(method(model)(x, target=0).maps[0, 0].double(), expected, rtol=1e-5, atol=1e-9)


def test_feature_ids_are_renumbered_per_image():
    """Gaps and huge ids cost nothing, and an image with few features gets the same values in a
    batch with an image of many as alone."""
    model, x = resnet_and_images(size=8)
    few, many = block_mask(8, 8, 2, 2), block_mask(8, 8, 4, 4)
    for method in (ShapleyValueSampling, KernelSHAP, LIME):
        options = {"samples": 3} if method is ShapleyValueSampling else {"samples": 40}
        together = method(model, features=torch.stack([few, many]), **options)(x, target=1).maps
        alone = method(model, features=few, **options)(x[:1], target=1).maps
        torch.testing.assert_close(together[:1], alone, rtol=1e-4, atol=1e-6)
        gappy = method(model, features=few * 5 + 2**40, **options)(x[:1], target=1).maps
        torch.testing.assert_close(gappy, alone, rtol=1e-4, atol=1e-6)


def test_degenerate_settings_are_refused_or_warned_about():
    from interpkit import SamplingWarning

    model, x = resnet_and_images(size=8)
    with pytest.raises(InputError, match="underflows"):
        LIME(model, features="grid", segments=16, distance="euclidean", kernel_width=0.01, samples=20)(x, target=0)
    near, far = torch.full((1, 3, 8, 8), 0.01), torch.full((1, 3, 8, 8), 100.0)  # from the 0 baseline's copies
    narrow = LIME(model, features="grid", segments=16, distance="euclidean", kernel_width=0.01, samples=20)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SamplingWarning)
        narrow(near, target=0)  # explained alone; in a batch with the far image, that one is named, at its distance
    alone = str(pytest.raises(InputError, narrow, far, target=0).value)
    with pytest.raises(InputError, match=re.escape(alone.replace("image 0", "image 1"))):
        narrow(torch.cat([near, far]), target=0)
    wide = LIME(model, features="grid", segments=4, kernel_width=1e200, samples=20)(x, target=0).maps
    assert torch.isfinite(wide).all()
    with pytest.warns(SamplingWarning, match="underdetermined"):
        KernelSHAP(model, features="grid", segments=16, samples=10)(x, target=0)
    with pytest.raises(TargetError, match="one row per sample"):
        FeatureAblation(model, features="grid", segments=4, max_batch=4)(x, target=lambda out: out[:2, 0])
    class LogScores(nn.Module):
        def forward(self, inputs):
            return inputs.abs().log().flatten(1)[:, :3]

    with pytest.raises(TargetError, match="not all finite"):  # log 0 at the baseline
        FeatureAblation(LogScores(), features="grid", segments=4)(x, target=0)


def test_numpy_and_odd_options():
    import numpy as np

    model, x = resnet_and_images(size=8)
    mask = block_mask(8, 8, 2, 2)
    torch.testing.assert_close(FeatureAblation(model, features=mask.numpy())(x, target=0).maps,
                               FeatureAblation(model, features=mask)(x, target=0).maps)
    from interpkit import Occlusion

    assert Occlusion(model, window=np.int64(4), stride=np.int64(2))(x, target=0).maps.shape == (2, 1, 8, 8)
    with pytest.raises(InputError, match="stride"):
        Occlusion(model, window=2, stride=3)(x, target=0)
    for method in (ShapleyValueSampling, KernelSHAP, LIME):
        with pytest.raises(InputError, match="seed"):
            method(model, seed=2**64)
    with pytest.raises(InputError):
        superpixels(x, 0)
    with pytest.raises(InputError):
        grid_cells((8, 8), 0)
    with pytest.raises(InputError, match="regulariser"):
        fit_linear(torch.ones(3, 2, dtype=torch.bool), torch.zeros(3, 1, 1), torch.ones(3, 1), "lassoo")
    with pytest.raises(InputError, match="fit_linear takes"):
        fit_linear(torch.ones(3, 2, dtype=torch.bool), torch.zeros(4, 1, 1), torch.ones(3, 1))


def test_lime_warns_when_its_weighted_copies_underdetermine_the_fit():
    """With the Euclidean distance and a narrow kernel only copies keeping every feature carry
    weight: identical rows, a fit of zeros, which came back without a word."""
    from interpkit import SamplingWarning

    torch.manual_seed(0)
    model, x = nn.Sequential(nn.Flatten(), nn.Linear(3 * 6 * 6, 3)).eval(), torch.randn(2, 3, 6, 6) * 10
    with pytest.warns(SamplingWarning, match="determine 1 of the 5 coefficients"):
        LIME(model, features="grid", segments=4, distance="euclidean", regulariser=None)(x, target=0)


@pytest.mark.parametrize("given_as", ["per_sample", "callable"])
def test_baselines_per_sample_and_from_a_callable_equal_captums_per_sample_baselines(given_as):
    """captum takes one baseline per sample (N, C, H, W); so do the perturbation methods, and a
    callable of the inputs (a blurred copy) gives one per sample too."""
    model, x = resnet_and_images()
    blurred = torch.nn.functional.avg_pool2d(x, 5, stride=1, padding=2)
    baseline = blurred if given_as == "per_sample" else (lambda images: torch.nn.functional.avg_pool2d(images, 5, 1, 2))
    mask = block_mask(24, 24, 3, 4)
    ours = FeatureAblation(model, features=mask, baseline=baseline)(x, target=[1, 3]).maps
    theirs = captum_attr.FeatureAblation(model).attribute(x, target=[1, 3], baselines=blurred, feature_mask=mask[None, None])
    torch.testing.assert_close(ours[:, 0], theirs[:, 0], rtol=1e-6, atol=1e-6)
    shared = FeatureAblation(model, features=mask, baseline=blurred[:1])(x, target=[1, 3]).maps
    assert (shared[1] - ours[1]).abs().max() > 1e-3  # the second image's own baseline was used
    for method in METHODS[1:]:  # the others: each image as if explained alone against its own baseline
        together = method(model, features=mask, baseline=baseline)(x, target=[1, 3]).maps
        alone = [method(model, features=mask, baseline=blurred[i])(x[i:i + 1], target=t).maps for i, t in enumerate((1, 3))]
        torch.testing.assert_close(together, torch.cat(alone), rtol=1e-5, atol=1e-6)


def test_a_model_that_mixes_samples_gets_each_samples_own_baseline():
    """Explained one sample at a time (a batch norm without running statistics), sample i is
    paired with row i of a baseline per sample; it was refused (or took row 0)."""
    from interpkit.explainers import DeepLift, Occlusion

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, track_running_stats=False), nn.ReLU(),
                          nn.Flatten(), nn.Linear(4 * 6 * 6, 3)).eval()
    x, baseline = torch.randn(3, 3, 8, 8), torch.randn(3, 3, 8, 8)
    for make in (lambda b: Occlusion(model, window=4, baseline=b), lambda b: FeatureAblation(model, baseline=b),
                 lambda b: DeepLift(model, baseline=b, strict=False)):  # batch_norm of the sample: its plain gradient
        together = make(baseline)(x, target=[0, 1, 2]).maps
        alone = torch.cat([make(baseline[i])(x[i:i + 1], target=i).maps for i in range(3)])
        torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-6)


def test_bad_baselines_are_named():
    model, x = resnet_and_images()
    for baseline, message in ((torch.zeros(3, 3, 24, 24), "3 baselines for 2 inputs"),
                              (torch.zeros(3, 7, 7), "does not broadcast"),
                              (lambda images: images.long(), "floating tensor"),
                              (lambda images: images / 0, "NaN or Inf"),
                              (torch.zeros(1, 2, 3, 24, 24), "neither one sample")):
        for method in (FeatureAblation, ShapleyValueSampling):
            with pytest.raises(InputError, match=message):
                method(model, features=block_mask(24, 24, 2, 2), baseline=baseline, samples=2)(x, target=1) \
                    if method is ShapleyValueSampling else method(model, baseline=baseline)(x, target=1)
    means = torch.tensor([0.1, -0.2, 0.3]).view(3, 1, 1)  # per-channel values broadcast to one sample, as before
    by_channel = FeatureAblation(model, features=block_mask(24, 24, 2, 2), baseline=means)(x, target=1).maps
    full = FeatureAblation(model, features=block_mask(24, 24, 2, 2), baseline=means.expand(3, 24, 24))(x, target=1).maps
    torch.testing.assert_close(by_channel, full)


def _generator():
    return torch.Generator().manual_seed(0)


@pytest.mark.parametrize("call", [
    lambda: rise_masks(0, (8, 8), 3, 0.5, _generator()), lambda: rise_masks(4, (8, 8), 0, 0.5, _generator()),
    lambda: rise_masks(4, (8, 8), 3, 2.0, _generator()), lambda: rise_masks(4, (0, 8), 3, 0.5, _generator()),
    lambda: rise_masks(4, (8, 8), 3, 0.5, None), lambda: grid_cells((), 4), lambda: grid_cells((0, 4), 4),
    lambda: kernel_shap_coalitions(-3, 5, _generator()), lambda: kernel_shap_coalitions(10, 0, _generator()),
    lambda: lime_coalitions(-1, 5, _generator()), lambda: shapley_permutations(3, -1, _generator()),
    lambda: fit_linear(torch.randn(5, 3), torch.randn(5, 2, 1), torch.zeros(5, 2)),
    lambda: fit_linear(torch.randn(5, 3), torch.randn(5, 2, 1), -torch.ones(5, 2)),
    lambda: fit_linear(torch.randn(5, 3), torch.full((5, 2, 1), float("nan")), torch.ones(5, 2)),
    lambda: fit_linear([[1.0]], torch.randn(5, 2, 1), torch.ones(5, 2)),
])
def test_the_public_helpers_refuse_bad_arguments(call):
    """They raised ZeroDivisionError, RuntimeError or LinAlgError, or returned NaN coefficients."""
    with pytest.raises(InputError):
        call()
