"""Sufficiency: equal to Quantus 0.6 on the same maps, right on batches built to be sufficient or
not, and Quantus' NaN distances shown where a feature is constant over the batch."""

import warnings

import numpy as np
import pytest
import torch
from torch import nn

from interpkit import InputError
from interpkit.metrics import Sufficiency
from interpkit.testing import ConvStack
from interpkit.testing.metrics import check_metric

quantus = pytest.importorskip("quantus")


def _quantus(model, images, maps, **options):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        metric = quantus.Sufficiency(disable_warnings=True, **options)
        labels = np.zeros(len(images), dtype=np.int64)
        scores = metric(model=model, x_batch=images.numpy(), y_batch=labels, a_batch=maps.numpy(), device="cpu")
    return torch.tensor(np.array(scores, dtype=np.float64))


@pytest.mark.parametrize("threshold", [0.3, 0.6, 0.9])
def test_sufficiency_equals_quantus(threshold):
    generator = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model = ConvStack().eval()
    images = torch.randn(8, 3, 8, 6, generator=generator)
    maps = torch.randn(8, 3, 8, 6, generator=generator)
    theirs = _quantus(model, images, maps, threshold=threshold)
    mine = Sufficiency(threshold=threshold)(model, images, maps).scores
    assert theirs.abs().sum() > 0 or threshold < 0.8  # random maps in 144 dimensions are far apart
    torch.testing.assert_close(mine.double(), theirs, rtol=1e-5, atol=1e-6)


class _ByFirstPixel(nn.Module):
    """Predicts class 1 where the first pixel is positive."""

    def forward(self, x):
        first = x[:, 0, 0, 0]
        return torch.stack([-first, first], 1)


def test_explanations_that_separate_the_classes_are_sufficient_and_ones_that_do_not_are_not():
    images = torch.randn(6, 1, 4, 4)
    images[:3, 0, 0, 0], images[3:, 0, 0, 0] = 1.0, -1.0
    by_class = torch.zeros(6, 1, 4, 4)
    by_class[:3, 0, 0, 0], by_class[3:, 0, 3, 3] = 1.0, 1.0  # the two classes explained apart
    assert torch.equal(Sufficiency(threshold=0.5)(_ByFirstPixel(), images, by_class).scores, torch.ones(6))
    mixed = by_class[[0, 3, 1, 4, 2, 5]]  # the same maps on the wrong samples: close maps, other classes
    assert (Sufficiency(threshold=0.5)(_ByFirstPixel(), images, mixed).scores < 1).all()


def test_quantus_gives_every_sample_0_when_a_feature_is_constant_and_ours_leaves_it_out():
    generator = torch.Generator().manual_seed(1)
    torch.manual_seed(0)
    model = ConvStack().eval()
    images = torch.randn(6, 3, 8, 6, generator=generator)
    maps = torch.rand(6, 3, 8, 6, generator=generator)
    maps[:, :, 0, 0] = 0  # one position no explanation uses
    theirs = _quantus(model, images, maps, threshold=0.9)
    mine = Sufficiency(threshold=0.9)(model, images, maps).scores
    assert torch.equal(theirs, torch.zeros(6))
    assert mine.sum() > 0
    maps[:, :, 0, 0] = torch.rand(6, 3, generator=generator)  # given a variance, the two agree again
    torch.testing.assert_close(Sufficiency(threshold=0.9)(model, images, maps).scores.double(),
                               _quantus(model, images, maps, threshold=0.9), rtol=1e-5, atol=1e-6)


def test_the_contract_and_bad_options():
    check_metric(Sufficiency)
    for threshold in (-0.1, float("nan"), "0.5"):
        with pytest.raises(InputError):
            Sufficiency(threshold=threshold)
