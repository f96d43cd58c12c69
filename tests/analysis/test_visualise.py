"""Feature visualisation: lucent's deterministic parts exactly, the optimiser's direction, seeding,
batching, layouts, hook hygiene and bad input."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from matplotlib.figure import Figure
from torch import nn

from interpkit import ChannelsLast, InputError, LayerError, LayerNotFoundError, TokenGrid
from interpkit.analysis import (
    DECORRELATION,
    NO_TRANSFORMS,
    Transforms,
    channel,
    class_logit,
    direction,
    diversity,
    neuron,
    pixel_image,
    spectral_image,
    visualise,
)
from interpkit.analysis.objectives import OUTPUT, Objective
from interpkit.analysis.views import affine, seen
from interpkit.testing import ModelFingerprint, assert_model_unchanged
from interpkit.testing.models import Conv1dNet, Conv3dNet, TinyTokens

# lucent 0.1.8 (optvis/param/color.py): the square root of ImageNet's colour covariance
LUCENT_COLOR_CORRELATION_SVD_SQRT = np.asarray([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]],
                                               dtype=np.float32)


def lucent_image(spectrum: np.ndarray, h: int, w: int, decay_power: float, decorrelate: bool) -> np.ndarray:
    """lucent's fft_image then to_valid_rgb, written from its formulas in NumPy (lucent itself
    pins kornia <= 0.4.1, which does not import on current torch): lucid's rfft2d_freqs (one extra
    column for an odd width, which the inverse FFT drops), 1 / max(f, 1 / max(w, h)) ** decay, the
    inverse real FFT with norm="ortho", the /4 constant, the colour matrix over its largest column
    norm applied as (N, H, W, C) @ M.T, and a sigmoid."""
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.fftfreq(w)[: w // 2 + 2] if w % 2 == 1 else np.fft.fftfreq(w)[: w // 2 + 1]
    freqs = np.sqrt(fx * fx + fy * fy)
    scale = 1.0 / np.maximum(freqs, 1.0 / max(w, h)) ** decay_power
    scaled = scale[None, None, ..., None] * spectrum
    image = np.fft.irfftn(scaled[..., 0] + 1j * scaled[..., 1], s=(h, w), axes=(2, 3), norm="ortho") / 4.0
    if decorrelate:
        normalised = LUCENT_COLOR_CORRELATION_SVD_SQRT / np.max(np.linalg.norm(LUCENT_COLOR_CORRELATION_SVD_SQRT, axis=0))
        image = (image.transpose(0, 2, 3, 1) @ normalised.T.astype(np.float64)).transpose(0, 3, 1, 2)
    return 1.0 / (1.0 + np.exp(-image))


@settings(max_examples=40, deadline=None)
@given(h=st.integers(1, 19), w=st.integers(1, 19), n=st.integers(1, 2), decay=st.sampled_from([0.5, 1.0, 1.5, 2.0]),
       decorrelate=st.booleans(), seed=st.integers(0, 2**16))
def test_spectral_image_equals_lucents_formulas(h, w, n, decay, decorrelate, seed):
    lucent_columns = w // 2 + 2 if w % 2 == 1 else w // 2 + 1
    spectrum = np.random.default_rng(seed).normal(size=(n, 3, h, lucent_columns, 2))
    expected = lucent_image(spectrum, h, w, decay, decorrelate)
    ours = spectral_image(torch.from_numpy(spectrum[..., : w // 2 + 1, :]), (h, w), decay, decorrelate)
    assert ours.shape == (n, 3, h, w) and ours.dtype == torch.float64
    np.testing.assert_allclose(ours.numpy(), expected, rtol=0, atol=1e-12)


def test_decorrelation_matrix_is_lucents():
    normalised = LUCENT_COLOR_CORRELATION_SVD_SQRT / np.max(np.linalg.norm(LUCENT_COLOR_CORRELATION_SVD_SQRT, axis=0))
    np.testing.assert_allclose(DECORRELATION.numpy(), normalised, rtol=0, atol=1e-7)
    pixels = torch.randn(2, 3, 4, 5, dtype=torch.float64)
    expected = torch.sigmoid(torch.einsum("ck,nkhw->nchw", DECORRELATION.double(), pixels))
    torch.testing.assert_close(pixel_image(pixels), expected)
    torch.testing.assert_close(pixel_image(pixels, decorrelate=False), torch.sigmoid(pixels))


def test_spectral_image_generalises_to_other_ranks():
    spectrum = torch.randn(2, 1, 9, 2, dtype=torch.float64)  # a 1-D signal of 16 samples
    image = spectral_image(spectrum, (16,), decorrelate=False)
    scale = 1.0 / torch.fft.rfftfreq(16, dtype=torch.float64).clamp_min(1 / 16)
    expected = torch.sigmoid(torch.fft.irfft(torch.view_as_complex(spectrum * scale[:, None]), n=16, norm="ortho") / 4)
    torch.testing.assert_close(image, expected)


class LinearFilter(nn.Module):
    """One channel that is one linear filter over the whole 16 x 16 image: output (N, 1, 1, 1)."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.filter = nn.Conv2d(3, 1, 16, bias=False)
        self.filter.weight.data.copy_(weight)

    def forward(self, x):
        return self.filter(x).flatten(1)


def test_each_pixel_moves_the_way_the_filter_says():
    weight = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    model = LinearFilter(weight)
    result = visualise(model, channel("filter", 0), size=16, steps=25, parametrisation="pixel", decorrelate=False,
                       transforms=None)
    moved = (result.images[0] - 0.5).sign()
    strong = weight[0].abs() > weight[0].abs().median()
    agree = (moved[strong] == weight[0].sign()[strong]).float().mean()
    assert agree >= 0.99
    grey = 0.5 * weight.sum()  # the score of the grey image; the best image gains sum |w| / 2 on it
    assert result.scores[0] - grey > 0.25 * weight.abs().sum()  # past halfway in 25 steps


def test_spectral_visualisation_raises_the_score():
    model = LinearFilter(torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(4)))
    start = visualise(model, channel("filter", 0), size=16, steps=1, transforms=None)
    later = visualise(model, channel("filter", 0), size=16, steps=30, transforms=None)
    assert later.scores[0] > start.scores[0] + 1.0


def test_seeded_runs_are_bit_identical_and_the_model_is_unchanged(small_cnn):
    before = ModelFingerprint.of(small_cnn)
    first = visualise(small_cnn, channel("features.4", [1, 5]), size=24, steps=4, seed=7)
    again = visualise(small_cnn, channel("features.4", [1, 5]), size=24, steps=4, seed=7)
    other = visualise(small_cnn, channel("features.4", [1, 5]), size=24, steps=4, seed=8)
    assert torch.equal(first.images, again.images) and torch.equal(first.scores, again.scores)
    assert not torch.equal(first.images, other.images)
    assert first.images.shape == (2, 3, 24, 24) and 0 <= first.images.min() and first.images.max() <= 1
    assert first.labels == ("features.4:1", "features.4:5")
    assert_model_unchanged(before, small_cnn)


def test_an_image_does_not_depend_on_the_others_or_the_chunking(small_cnn):
    whole = visualise(small_cnn, channel("features.4", range(5)), size=20, steps=6)
    chunked = visualise(small_cnn, channel("features.4", range(5)), size=20, steps=6, max_batch=2)
    fewer = visualise(small_cnn, channel("features.4", range(3)), size=20, steps=6)
    torch.testing.assert_close(chunked.images, whole.images, atol=1e-4, rtol=0)  # batched convolutions' rounding
    torch.testing.assert_close(fewer.images, whole.images[:3], atol=1e-4, rtol=0)


def test_one_forward_per_step_stopping_after_the_layer_read(small_cnn):
    calls = {"fc": 0, "model": 0}
    small_cnn.fc.register_forward_hook(lambda *a: calls.__setitem__("fc", calls["fc"] + 1))
    small_cnn.register_forward_pre_hook(lambda *a: calls.__setitem__("model", calls["model"] + 1))
    visualise(small_cnn, channel("features.4", range(3)), size=16, steps=5)
    assert calls == {"fc": 1, "model": 6}  # 5 steps and the final score; only the first forward runs whole
    calls.update(fc=0, model=0)
    visualise(small_cnn, class_logit([0, 2]), size=16, steps=5)
    assert calls == {"fc": 6, "model": 6}


def test_the_model_is_restored_when_the_objective_raises(small_cnn):
    before = ModelFingerprint.of(small_cnn)
    seen_calls = []

    def score(activations, rows):
        seen_calls.append(1)
        if len(seen_calls) == 3:
            raise RuntimeError("objective failed")
        return activations["features.4"].flatten(1).mean(dim=1)

    with pytest.raises(RuntimeError, match="objective failed"):
        visualise(small_cnn, Objective(("features.4",), None, score, ("x",)), size=16, steps=5)
    assert_model_unchanged(before, small_cnn)


def test_objective_scores_from_activations():
    grid = torch.randn(3, 4, 5, 6)
    logits = torch.randn(3, 7)
    acts = {"a": grid, OUTPUT: logits}
    rows = torch.arange(3)
    torch.testing.assert_close(channel("a", [0, 2, 3]).score(acts, rows),
                               torch.stack([grid[0, 0].mean(), grid[1, 2].mean(), grid[2, 3].mean()]))
    torch.testing.assert_close(channel("a", 1).score(acts, rows), grid[:, 1].mean(dim=(1, 2)))
    torch.testing.assert_close(neuron("a", 2).score(acts, rows), grid[:, 2, 2, 3])
    torch.testing.assert_close(neuron("a", [1, 2, 3], position=(4, 0)).score(acts, rows),
                               torch.stack([grid[0, 1, 4, 0], grid[1, 2, 4, 0], grid[2, 3, 4, 0]]))
    vector = torch.randn(4)
    cosine = (grid * vector[:, None, None]).sum(1) / (grid.norm(dim=1) * vector.norm())
    torch.testing.assert_close(direction("a", vector).score(acts, rows), cosine.mean(dim=(1, 2)))
    torch.testing.assert_close(class_logit([6, 0, 1]).score(acts, rows), logits[rows, torch.tensor([6, 0, 1])])
    combined = channel("a", [0, 2, 3]) + 2 * neuron("a", 1) - class_logit(4) / 4
    expected = (channel("a", [0, 2, 3]).score(acts, rows) + 2 * grid[:, 1, 2, 3] - logits[:, 4] / 4)
    torch.testing.assert_close(combined.score(acts, rows), expected)
    assert combined.images == 3 and set(combined.reads) == {"a", OUTPUT}
    assert sum([channel("a", 0), channel("a", 1)]).score(acts, rows).shape == (3,)
    # a chunk of the images scores only its own units
    torch.testing.assert_close(channel("a", [0, 2, 3]).score({"a": grid[1:]}, torch.arange(1, 3)),
                               torch.stack([grid[1, 2].mean(), grid[2, 3].mean()]))


def test_diversity_sums_to_lucents_value():
    grid = torch.randn(4, 3, 5, 5, dtype=torch.float64)
    flat = grid.flatten(2)
    grams = flat @ flat.transpose(1, 2)
    grams = grams / grams.flatten(1).norm(dim=1)[:, None, None]
    lucent = -sum(sum((grams[i] * grams[j]).sum() for j in range(4) if j != i) for i in range(4)) / 4
    ours = diversity("a").score({"a": grid}, torch.arange(4))
    torch.testing.assert_close(ours.sum(), lucent)
    assert diversity("a").couples and (channel("a", 0) + diversity("a")).couples


def test_diversity_makes_images_differ(small_cnn):
    plain = visualise(small_cnn, channel("features.4", 3), images=3, size=16, steps=15, transforms=None)
    diverse = visualise(small_cnn, channel("features.4", 3) + 50 * diversity("features.4"), images=3, size=16,
                        steps=15, transforms=None)
    spread = [float(torch.pdist(v.images.flatten(1)).mean()) for v in (plain, diverse)]
    assert spread[1] > spread[0]


def test_layouts_read_as_channels_first():
    class Last(nn.Module):
        def forward(self, x):
            return x.permute(0, 2, 3, 1)

    torch.manual_seed(0)
    conv = nn.Conv2d(3, 5, 3, padding=1)
    model = nn.Sequential(conv, Last(), nn.Flatten(), nn.LazyLinear(2))
    model(torch.zeros(1, 3, 16, 16))
    first = visualise(model, channel("0", [1, 4]), size=12, steps=4, transforms=Transforms(pad=2))
    last = visualise(model, channel(("1", ChannelsLast()), [1, 4]), size=12, steps=4, transforms=Transforms(pad=2))
    torch.testing.assert_close(first.images, last.images)
    with pytest.raises(LayerError):
        visualise(model, channel("1", 0), size=12, steps=2, transforms=Transforms(pad=2))


def test_tokens_one_and_three_dimensional_models():
    torch.manual_seed(0)
    tokens = visualise(TinyTokens(), channel(("blocks.0.mlp", TokenGrid(prefix=1)), [0, 3]), size=16, steps=8, transforms=None)
    assert tokens.images.shape == (2, 3, 16, 16)
    signal = Conv1dNet()
    start = visualise(signal, channel("features.3", 2), size=(24,), channels=2, steps=1, transforms=None)
    later = visualise(signal, channel("features.3", 2), size=(24,), channels=2, steps=40, transforms=None)
    assert later.images.shape == (1, 2, 24) and later.scores[0] > start.scores[0]
    volume = visualise(Conv3dNet(), neuron("features.3", 1), size=(6, 8, 8), channels=1, steps=3, transforms=None,
                       parametrisation="pixel")
    assert volume.images.shape == (1, 1, 6, 8, 8)


def test_a_float64_model_gets_float64_images():
    model = LinearFilter(torch.randn(1, 3, 16, 16)).double()
    assert visualise(model, channel("filter", 0), size=16, steps=2, transforms=None).images.dtype == torch.float64


def test_transform_geometry():
    image = torch.rand(1, 3, 6, 6)
    zero, one = torch.zeros(1, 1, dtype=torch.float64), torch.ones(1, 1, dtype=torch.float64)
    no_shift = torch.zeros(1, 1, 2, dtype=torch.float64)

    def view(pad, before=no_shift, scale=one, angle=zero, size=(6 + 2 * 2, 6 + 2 * 2)):
        return seen(image, affine(pad, (6, 6), before, scale, angle, no_shift)[0], size)

    padded = view(2)
    torch.testing.assert_close(padded[..., 2:8, 2:8], image)  # the image at the centre of its grey frame
    torch.testing.assert_close(padded[..., :2, :], torch.full_like(padded[..., :2, :], 0.5))
    torch.testing.assert_close(padded[..., :, 8:], torch.full_like(padded[..., :, 8:], 0.5))
    shifted = view(4, before=torch.tensor([[[3.0, 1.0]]], dtype=torch.float64), size=(14, 14))  # lucent's jitter
    torch.testing.assert_close(shifted[..., 5:11, 7:13], image)  # x by 3, y by 1
    turned = view(0, angle=torch.full((1, 1), 90.0, dtype=torch.float64), size=(6, 6))
    torch.testing.assert_close(turned, torch.rot90(image, k=1, dims=(2, 3)), atol=1e-5, rtol=0)
    grown = seen(image, affine(0, (6, 6), no_shift, one, zero, no_shift)[0], (12, 12))
    expected = torch.nn.functional.interpolate(image, size=(12, 12), mode="bilinear")
    torch.testing.assert_close(grown[..., 1:-1, 1:-1], expected[..., 1:-1, 1:-1])  # the edge blends into grey


def test_save_and_figure(small_cnn, tmp_path):
    result = visualise(small_cnn, channel("features.4", range(3)), size=16, steps=2)
    paths = result.save(tmp_path / "out")
    assert [p.name for p in paths] == ["unit_000.png", "unit_001.png", "unit_002.png", "contact_sheet.png"]
    assert all(p.stat().st_size > 0 for p in paths)
    assert isinstance(result.figure(), Figure)
    (tmp_path / "file").write_text("")
    with pytest.raises(InputError, match="is a file"):
        result.save(tmp_path / "file")


@pytest.mark.parametrize("call, error", [
    (lambda m: visualise("model", channel("features.4", 0)), InputError),
    (lambda m: visualise(m, "features.4"), InputError),
    (lambda m: visualise(m, channel("features.4", 99), steps=2), InputError),
    (lambda m: visualise(m, channel("features.9", 0), steps=2), LayerNotFoundError),
    (lambda m: visualise(m, neuron("features.4", 0, position=(99, 0)), steps=2), InputError),
    (lambda m: visualise(m, channel("features.4", 0), size=0), InputError),
    (lambda m: visualise(m, channel("features.4", 0), size=(2, 2, 2, 2)), InputError),
    (lambda m: visualise(m, channel("features.4", 0), parametrisation="cppn"), InputError),
    (lambda m: visualise(m, channel("features.4", 0), channels=1, decorrelate=True), InputError),
    (lambda m: visualise(m, channel("features.4", 0), lr=0), InputError),
    (lambda m: visualise(m, channel("features.4", 0), lr=math.nan), InputError),
    (lambda m: visualise(m, channel("features.4", 0), steps=0), InputError),
    (lambda m: visualise(m, channel("features.4", 0), seed=-1), InputError),
    (lambda m: visualise(m, channel("features.4", [0, 1]), images=3), InputError),
    (lambda m: visualise(m, channel("features.4", 0) + diversity("features.4"), images=4, max_batch=2), InputError),
    (lambda m: visualise(m, diversity("features.4"), steps=2), InputError),
    (lambda m: visualise(m, channel("features.4", 0), transforms="standard"), InputError),
    (lambda m: visualise(m, channel("features.4", 0), preprocess="normalise"), InputError),
    (lambda m: visualise(m, channel("features.4", 0), size=(16,)), InputError),
    (lambda m: visualise(m, channel("features.4", 0), input_size=(8,)), InputError),
    (lambda m: visualise(m, class_logit(9), steps=2), InputError),
    (lambda m: visualise(m, direction("features.4", torch.ones(3)), steps=2), InputError),
    (lambda m: channel("features.4", []), InputError),
    (lambda m: channel("features.4", -1), InputError),
    (lambda m: channel(3.5, 0), InputError),
    (lambda m: channel("features.4", [0, 1]) + channel("features.4", [0, 1, 2]), InputError),
    (lambda m: direction("features.4", torch.zeros(16)), InputError),
    (lambda m: direction("features.4", torch.ones(2, 2, 2)), InputError),
    (lambda m: Transforms(jitter=(0, 4)), InputError),
    (lambda m: Transforms(scales=(0.0,)), InputError),
    (lambda m: Transforms(angles=(math.inf,)), InputError),
    (lambda m: spectral_image(torch.zeros(1, 3, 8, 8, 2), 8), InputError),
    (lambda m: pixel_image(torch.zeros(1, 2, 8, 8)), InputError),
])
def test_bad_input_is_refused_and_the_model_left_alone(small_cnn, call, error):
    before = ModelFingerprint.of(small_cnn)
    with pytest.raises(error):
        call(small_cnn)
    assert_model_unchanged(before, small_cnn)


class Cut(nn.Module):
    """A model whose forward detaches its input: no gradient reaches the image."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 3)

    def forward(self, x):
        return self.conv(x.detach())


class Explodes(nn.Module):
    """A model whose score's gradient is NaN at any input."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 3)

    def forward(self, x):
        return self.conv(x * float("nan"))


def test_a_cut_gradient_or_a_diverging_run_is_refused_not_returned():
    for model, words in ((Cut(), "does not depend on the image"), (Explodes(), "diverged")):
        before = ModelFingerprint.of(model)
        with pytest.raises(InputError, match=words):
            visualise(model, channel("conv", 0), size=8, steps=2, transforms=None)
        assert_model_unchanged(before, model)


def test_no_transforms_are_seen_as_made():
    assert NO_TRANSFORMS.pad == 0 and NO_TRANSFORMS.scales == (1.0,)
    image = torch.rand(2, 3, 5, 5)
    assert seen(image, None, (5, 5)) is image


class FixedHead(nn.Module):
    """A CNN whose linear head takes 24 x 24 inputs only (as VGG's classifier takes 224 px)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.head = nn.Linear(4 * 24 * 24, 2)

    def forward(self, x):
        return self.head(torch.relu(self.conv(x)).flatten(1))


def test_a_head_for_another_size_does_not_stop_an_inner_objective():
    model = FixedHead()
    result = visualise(model, channel("conv", [0, 1]), size=16, steps=3)  # the model sees 40 px
    assert result.images.shape == (2, 3, 16, 16)
    with pytest.raises(InputError, match="forward failed"):
        visualise(model, class_logit(0), size=16, steps=3)  # the head is read: its failure is the caller's
    with pytest.raises(InputError, match="forward failed"):
        visualise(model, channel("conv", 0), size=16, steps=2, channels=1, decorrelate=False)  # 1 channel for 3


def test_a_model_that_mixes_samples_gets_each_image_alone():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4, track_running_stats=False), nn.ReLU(),
                          nn.Conv2d(4, 4, 3, padding=1))
    together = visualise(model, channel("3", range(3)), size=12, steps=4)
    alone = visualise(model, channel("3", [1]), size=12, steps=4, seed=0)
    torch.testing.assert_close(together.images[1:2], visualise(model, channel("3", [0, 1]), size=12, steps=4).images[1:2])
    assert together.images.shape == (3, 3, 12, 12) and alone.images.shape == (1, 3, 12, 12)


def test_the_callers_grad_mode_does_not_matter(small_cnn):
    expected = visualise(small_cnn, channel("features.4", 2), size=16, steps=3)
    with torch.no_grad():
        torch.testing.assert_close(visualise(small_cnn, channel("features.4", 2), size=16, steps=3).images,
                                   expected.images)
    with torch.inference_mode():
        torch.testing.assert_close(visualise(small_cnn, channel("features.4", 2), size=16, steps=3).images,
                                   expected.images)


def test_float64_scores_stay_float64():
    model = LinearFilter(torch.randn(1, 3, 16, 16)).double()
    assert visualise(model, channel("filter", 0), size=16, steps=2, transforms=None).scores.dtype == torch.float64


@pytest.mark.parametrize("call", [
    lambda: Transforms(jitter=8),
    lambda: Transforms(scales=1.1),
    lambda: Transforms(angles=5),
    lambda: Transforms(scales=np.array([1.0, 1.1])),
    lambda: neuron("features.4", 1, position=3),
    lambda: pixel_image([1.0]),
    lambda: pixel_image(torch.ones(1, 3, 2, 2, dtype=torch.long)),
    lambda: spectral_image(torch.zeros(1, 3, 8, 5, 2), 8, decay_power=math.nan),
    lambda: channel("features.4", 1) * math.nan,
    lambda: channel("features.4", 1) * math.inf,
    lambda: channel("features.4", 1) * True,
    lambda: channel("features.4", 1) / 0,
    lambda: channel("features.4", 1) + 1,
    lambda: channel("features.4", 1) - 1,
])
def test_bad_arguments_raise_input_errors(call):
    with pytest.raises(InputError):
        call()


def test_a_preprocess_that_returns_no_tensor_is_refused(small_cnn):
    with pytest.raises(InputError, match="preprocess must return"):
        visualise(small_cnn, channel("features.4", 1), size=16, steps=2, preprocess=lambda x: x.detach().numpy())
    weighted = 2 * channel("features.4", 1) * torch.tensor(0.5)
    assert weighted.labels == ("0.5·(2·(features.4:1))",)
