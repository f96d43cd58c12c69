"""IROF: equal to Quantus 0.6 on the same superpixels where Quantus runs, batch-independent, and
three Quantus problems shown: it fails on RGB inputs, takes its "mean" baseline from the whole
batch after every removal, and pads a batch's shorter curves with zeros it integrates."""

import warnings

import numpy as np
import pytest
import torch
from skimage.segmentation import slic
from torch import nn

from interpkit import InputError
from interpkit.metrics import IROF
from interpkit.testing.metrics import check_metric

quantus = pytest.importorskip("quantus")


def _gray_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                         nn.Linear(16, 5)).eval()


def _slic(images: torch.Tensor) -> torch.Tensor:
    """Quantus' segmentation: scikit-image's SLIC of each image, channels last, in float64."""
    return torch.from_numpy(np.stack([slic(np.moveaxis(x, 0, -1).astype("double"), start_label=0)
                                      for x in images.numpy()]))


def _case(n=3, seed=0):
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(n, 1, 24, 24, generator=generator)
    maps = torch.randn(n, 1, 24, 24, generator=generator)
    return _gray_model(), images, maps, torch.tensor([1, 3, 0, 2][:n])


@pytest.fixture(autouse=True)
def _trapz(monkeypatch):
    """Quantus' IROF calls ``np.trapz``, which NumPy 2 removed (shown for pixel flipping in
    test_peer_bugs): given its successor, Quantus runs."""
    if not hasattr(np, "trapz"):
        monkeypatch.setattr(np, "trapz", np.trapezoid, raising=False)


def _quantus(model, images, maps, labels, **options):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        metric = quantus.IROF(disable_warnings=True, return_aggregate=False, **options)
        scores = metric(model=model, x_batch=images.numpy(), y_batch=labels.numpy(), a_batch=maps.numpy(), device="cpu")
    return torch.tensor(np.array(scores, dtype=np.float64))


def test_irof_equals_quantus_image_by_image():
    """One image per Quantus call (a batch of them pads, see below); a constant baseline (its
    "mean" drifts, see below)."""
    model, images, maps, labels = _case()
    mine = IROF(segments=_slic, baseline=0.0)(model, images, maps, labels)
    theirs = torch.cat([_quantus(model, images[i:i + 1], maps[i:i + 1], labels[i:i + 1], perturb_baseline=0.0)
                        for i in range(len(images))])
    assert torch.isfinite(theirs).all() and (theirs.abs() > 0).all()
    torch.testing.assert_close(mine.scores.double(), theirs, rtol=1e-5, atol=1e-5)
    assert mine.curves.shape[0] == 3 and torch.isnan(mine.curves).any() == (len(set(_counts(images))) > 1)


def _counts(images):
    return [int(s.unique().numel()) for s in _slic(images)]


def test_quantus_irof_fails_on_rgb_inputs_and_ours_runs():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 5)).eval()
    images, maps = torch.rand(2, 3, 24, 24), torch.randn(2, 3, 24, 24)
    with pytest.raises(AssertionError, match="same as the mask"):
        _quantus(model, images, maps, torch.tensor([1, 2]))
    assert torch.isfinite(IROF(segments=_slic)(model, images, maps, torch.tensor([1, 2])).scores).all()


def test_quantus_irof_depends_on_the_batch_and_ours_does_not():
    """Quantus' "mean" is the mean of the whole batch as it stands after each removal, and a
    batch's shorter curves are padded with zeros that its trapezoid integrates: an image's score
    changes with its companions. interpkit's mean is each input's own, fixed."""
    model, images, maps, labels = _case(3, seed=1)
    alone = torch.cat([_quantus(model, images[i:i + 1], maps[i:i + 1], labels[i:i + 1]) for i in range(3)])
    together = _quantus(model, images, maps, labels)
    assert (alone - together).abs().max() > 1e-3
    mine = IROF(segments=_slic)(model, images, maps, labels).scores
    mine_alone = torch.cat([IROF(segments=_slic)(model, images[i:i + 1], maps[i:i + 1], labels[i:i + 1]).scores
                            for i in range(3)])
    torch.testing.assert_close(mine, mine_alone)


def test_irof_is_large_when_the_map_finds_the_evidence():
    """A model that reads one corner: a map on that corner removes it first (a large area over
    the curve), a map elsewhere removes it last."""

    class Corner(nn.Module):
        def forward(self, x):
            return torch.stack([x[:, 0, :6, :6].mean((1, 2)) * 20, torch.zeros(len(x))], 1)

    images = torch.rand(2, 1, 24, 24) + 0.5
    cells = torch.arange(16).view(4, 4).repeat_interleave(6, 0).repeat_interleave(6, 1).expand(2, 24, 24)
    good, bad = torch.zeros(2, 1, 24, 24), torch.zeros(2, 1, 24, 24)
    good[..., :6, :6] = 1
    bad[..., :6, :6] = -1
    metric = IROF(segments=lambda x: cells, baseline=0.0, score="logit")
    assert (metric(Corner(), images, good, 0).scores > metric(Corner(), images, bad, 0).scores + 5).all()


def test_the_contract_and_bad_input():
    check_metric(IROF, {"segments": 8})
    model, images, maps, labels = _case()
    for segments in (lambda x: torch.zeros(3, 5, 5, dtype=torch.long), lambda x: torch.rand(3, 24, 24), 0, "slic",
                     lambda x: None, lambda x: [[0, 1], [2]]):
        with pytest.raises(InputError):
            IROF(segments=segments)(model, images, maps, labels)
