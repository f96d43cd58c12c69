"""Where a peer's metric is wrong, a test shows it, and shows ours right on the same input.

Each test first runs the peer and asserts its wrong answer (so the test notices when the peer is
fixed and the comparison in docs/metrics.md needs updating), then ours."""

import warnings

import numpy as np
import pytest
import torch
from torch import nn

from interpkit import GradCAM
from interpkit.metrics import ROAD, PointingGame, randomisation_check

quantus = pytest.importorskip("quantus")


class GreyNet(nn.Module):
    """A one-channel classifier: Quantus' ROAD runs only on inputs like this."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(4)
        self.conv, self.fc = nn.Conv2d(1, 4, 3, padding=1), nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(self.conv(x).relu().mean(dim=(2, 3)))


def _quantus_road(model, images, maps, labels, batch_size=64):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return quantus.ROAD(percentages=[10, 50, 90], perturb_func_kwargs={"noise": 0.0}, disable_warnings=True,
                            display_progressbar=False)(
            model=model, x_batch=images.numpy(), y_batch=labels.numpy(), a_batch=maps.numpy(), device="cpu",
            batch_size=batch_size)


def test_quantus_road_raises_on_rgb_inputs_where_ours_scores(small_cnn, images):
    small_cnn.eval()
    maps, labels = torch.rand(4, 1, 32, 32), torch.tensor([0, 1, 2, 3])
    with pytest.raises(IndexError):
        _quantus_road(small_cnn, images, maps, labels)
    assert torch.isfinite(ROAD(noise=0.0)(small_cnn, images, maps[:, 0], labels).scores).all()


def test_quantus_road_summarises_only_the_first_batch():
    model = GreyNet().eval()
    generator = torch.Generator().manual_seed(6)
    images, maps = torch.randn(8, 1, 12, 12, generator=generator), torch.rand(8, 1, 12, 12, generator=generator)
    labels = model(images).argmax(1)
    labels[4:] = (labels[4:] + 1) % 3  # the second batch's labels are never predicted: accuracy 0 there
    everything = _quantus_road(model, images, maps, labels, batch_size=4)
    assert _quantus_road(model, images[4:], maps[4:], labels[4:]) == {10: 0.0, 50: 0.0, 90: 0.0}
    assert everything == {10: 1.0, 50: 1.0, 90: 1.0}  # the first batch's accuracy, where 0.5 is right
    ours = ROAD(order="morf", fractions=[0.1, 0.5, 0.9], noise=0.0, max_batch=4)(model, images, maps[:, 0], labels)
    halves = [ROAD(order="morf", fractions=[0.1, 0.5, 0.9], noise=0.0)(model, images[s], maps[s, 0], labels[s])
              for s in (slice(0, 4), slice(4, 8))]
    torch.testing.assert_close(ours.curves, torch.cat([h.curves for h in halves]))


def test_quantus_mprt_average_counts_the_unrandomised_model(small_cnn, images):
    """Quantus skips a key "orig" that it never writes (it writes "original"), so its average
    correlation includes the original model's 1.0; its per-layer correlations equal ours."""
    small_cnn.eval()
    labels = small_cnn(images).argmax(1)

    def explain(model, inputs, targets, **kwargs):
        return GradCAM(model)(torch.as_tensor(inputs), torch.as_tensor(targets)).maps[:, :1].detach().numpy()

    def mprt(**kwargs):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return quantus.MPRT(layer_order="top_down", seed=42, disable_warnings=True, display_progressbar=False,
                                **kwargs)(model=small_cnn, x_batch=images.numpy(), y_batch=labels.numpy(),
                                          a_batch=explain(small_cnn, images, labels), explain_func=explain,
                                          device="cpu")

    per_layer = mprt()
    ours = randomisation_check(GradCAM, small_cnn, images, seed=[43] * 4)  # Quantus seeds every layer 42 + 1
    assert list(per_layer)[1:] == ours.layers
    theirs = torch.tensor(np.array([per_layer[name] for name in ours.layers]), dtype=torch.float32).T
    constant = torch.isnan(theirs)  # a randomised map with no variation: NaN there, 0 here
    torch.testing.assert_close(ours.spearman_abs[~constant], theirs[~constant], rtol=1e-5, atol=1e-6)
    assert constant.any() and (ours.spearman_abs[constant] == 0).all()
    average = torch.tensor(mprt(return_average_correlation=True), dtype=torch.float32)
    fine = ~constant.any(1)
    torch.testing.assert_close(average[fine], (1 + theirs[fine].sum(1)) / 5)  # the original's 1 included
    torch.testing.assert_close(ours.mean_spearman_abs[fine], theirs[fine].mean(1))


def test_quantus_pointing_game_counts_an_empty_mask_as_a_hit_and_cannot_weight(small_cnn, images):
    maps = torch.rand(4, 1, 32, 32)
    masks = torch.zeros(4, 1, 32, 32)
    masks[:2, :, :16] = 1  # samples 2 and 3: nothing to point at

    def pointing(**kwargs):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return quantus.PointingGame(disable_warnings=True, display_progressbar=False, **kwargs)(
                model=small_cnn, x_batch=images.numpy(), y_batch=np.zeros(4, dtype=int), a_batch=maps.numpy(),
                s_batch=masks.numpy(), device="cpu")

    assert pointing()[2:] == [True, True]
    with pytest.raises(TypeError, match="boolean array indexing"):
        pointing(weighted=True)
    ours = PointingGame(tolerance=0)(small_cnn, images, maps[:, 0], masks=masks[:, 0].bool())
    assert torch.isnan(ours.scores[2:]).all() and torch.isfinite(ours.scores[:2]).all()
    assert torch.equal(ours.mean, ours.scores[:2].mean())


def test_quantus_area_under_curve_needs_numpys_removed_trapz():
    from quantus.helpers.utils import calculate_auc

    if hasattr(np, "trapz"):
        pytest.skip("numpy < 2 still has trapz: Quantus' helper works there")
    with pytest.raises(AttributeError, match="trapz"):
        calculate_auc(np.array([1.0, 0.5, 0.0]))


def test_pytorch_grad_cam_road_removes_every_pixel_of_a_mostly_zero_map(small_cnn, monkeypatch):
    from pytorch_grad_cam.metrics.perturbation_confidence import RemoveMostRelevantFirst

    import interpkit.metrics.road as road

    cam = torch.zeros(16, 16)
    cam.view(-1)[torch.randperm(256, generator=torch.Generator().manual_seed(2))[:26]] = torch.rand(26) + 0.1
    kept = {}

    def record(image, mask):  # their imputer receives 1 where a pixel stays
        kept["fraction"] = float(mask.mean())
        return image

    RemoveMostRelevantFirst(50, record)(torch.zeros(3, 16, 16), cam)  # percentile 50: remove half
    assert kept["fraction"] == 0.0  # they remove all of it
    removed = []
    imputation = road.linear_imputation
    monkeypatch.setattr(road, "linear_imputation", lambda images, mask: removed.append(mask) or imputation(images, mask))
    ROAD(order="morf", fractions=[0.5, 0.95], noise=0.0)(small_cnn, torch.rand(1, 3, 16, 16), cam[None], [0])
    assert [int(mask.sum()) for mask in removed] == [128, 243]  # half, then 95% (of 256, rounded)
    assert removed[0][0][cam > 0].all()  # the 26 relevant pixels go first


def test_pytorch_grad_cam_road_noise_cannot_be_seeded():
    from pytorch_grad_cam.metrics.road import NoisyLinearImputer

    image, mask = torch.rand(3, 8, 8), (torch.rand(8, 8) > 0.3).float()
    imputer = NoisyLinearImputer(noise=0.1)
    assert not torch.equal(imputer(image, mask), imputer(image, mask))  # one global RNG, no seed argument
    model = GreyNet().eval()
    grey, saliency = torch.rand(2, 1, 8, 8), torch.rand(2, 8, 8)
    runs = [ROAD(noise=0.1, seed=3)(model, grey, saliency, [0, 1]).scores for _ in range(2)]
    assert torch.equal(*runs)
