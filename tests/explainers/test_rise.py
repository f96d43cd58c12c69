"""RISE equals its formula computed by hand with the same masks; its masks are what the paper
defines; the maps do not depend on the batch."""

import math

import pytest
import torch
from torch import nn

from interpkit import RISE, InputError
from interpkit.explainers import rise_masks
from interpkit.testing import Conv1dNet, ConvStack


def test_equals_the_formula_by_hand_with_the_same_masks():
    torch.manual_seed(0)
    model, x = ConvStack().eval(), torch.randn(3, 3, 20, 16)
    maps = RISE(model, masks=50, cells=4, p=0.4, seed=3, max_batch=7)(x, target=[0, 1, 2]).maps
    masks = rise_masks(50, (20, 16), 4, 0.4, torch.Generator().manual_seed(3))
    with torch.no_grad():
        probabilities = torch.stack([model(x * m).softmax(1)[torch.arange(3), torch.tensor([0, 1, 2])] for m in masks])
    expected = torch.einsum("mn,mhw->nhw", probabilities, masks) / (50 * 0.4)
    torch.testing.assert_close(maps[:, 0], expected, rtol=1e-5, atol=1e-6)
    logits = RISE(model, masks=50, cells=4, p=0.4, seed=3, score="logit")(x, target="all").maps
    with torch.no_grad():
        scores = torch.stack([model(x * m) for m in masks])  # (masks, N, classes)
    torch.testing.assert_close(logits, torch.einsum("mnk,mhw->nkhw", scores, masks) / 20, rtol=1e-5, atol=1e-5)


def test_masks_are_smooth_random_crops_of_upsampled_cells():
    masks = rise_masks(400, (20, 16), 4, 0.3, torch.Generator().manual_seed(0))
    assert masks.shape == (400, 20, 16) and masks.min() >= 0 and masks.max() <= 1 + 1e-6
    assert abs(float(masks.mean()) - 0.3) < 0.03  # E[M] = p
    assert not torch.equal(masks[0], masks[1])
    one_d = rise_masks(10, (40,), 5, 0.5, torch.Generator().manual_seed(0))
    cell = math.ceil(40 / 5)
    assert one_d.shape == (10, 40) and (one_d.diff(dim=1).abs() <= 1 / cell + 1e-6).all()  # linear ramps


def test_a_mask_independent_model_gets_a_flat_map_and_maps_do_not_depend_on_the_batch():
    class Constant(nn.Module):
        def __init__(self):
            super().__init__()
            self.bias = nn.Parameter(torch.tensor([1.0, 2.0]))

        def forward(self, x):
            return self.bias.expand(len(x), -1) + 0 * x.flatten(1).sum(1, keepdim=True)

    maps = RISE(Constant(), masks=200, cells=3, score="logit")(torch.randn(2, 1, 12, 12), target=1).maps
    masks = rise_masks(200, (12, 12), 3, 0.5, torch.Generator().manual_seed(0))
    torch.testing.assert_close(maps[0, 0], 2.0 * masks.sum(0) / (200 * 0.5))
    model, x = Conv1dNet().eval(), torch.randn(4, 2, 40)
    whole = RISE(model, masks=64)(x, target=1).maps
    torch.testing.assert_close(RISE(model, masks=64)(x[2:3], target=1).maps[0], whole[2], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("options", [{"masks": 0}, {"cells": 1.5}, {"p": 0.0}, {"p": 1.5}, {"p": float("nan")},
                                     {"seed": -1}, {"score": "softmax"}, {"max_batch": "8"}])
def test_bad_options(options):
    with pytest.raises(InputError):
        RISE(ConvStack(), **options)


def test_each_mask_is_its_upsampled_cells_cropped_at_its_shift():
    """The paper's construction step by step, one mask at a time, from the same random draws."""
    grid, cells, p = (20, 13), 4, 0.5
    masks = rise_masks(6, grid, cells, p, torch.Generator().manual_seed(3))
    generator = torch.Generator().manual_seed(3)
    cell = [math.ceil(n / cells) for n in grid]
    values = (torch.rand(6, 1, cells, cells, generator=generator) < p).float()
    big = torch.nn.functional.interpolate(values, size=[(cells + 1) * c for c in cell], mode="bilinear",
                                          align_corners=False)
    shifts = [torch.randint(0, c, (6,), generator=generator) for c in cell]
    for i in range(6):
        top, left = int(shifts[0][i]), int(shifts[1][i])
        assert torch.equal(masks[i], big[i, 0, top:top + grid[0], left:left + grid[1]])
