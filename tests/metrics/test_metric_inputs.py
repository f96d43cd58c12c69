"""Metrics on models that mix samples, and on inputs of every reasonable kind: binary maps,
numpy option values, float64 models, soft masks."""

import numpy as np
import pytest
import torch
from torch import nn

from interpkit import Saliency
from interpkit.errors import InputError
from interpkit.metrics import (
    ROAD,
    Completeness,
    Deletion,
    PointingGame,
    SensitivityN,
    Sufficiency,
    relative_output_stability,
    relative_representation_stability,
)


def _mixing_model() -> nn.Module:
    """Its eval forward normalises over the batch: every image must be scored alone."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4, track_running_stats=False), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)).eval()


def _forward_sizes(model: nn.Module, run) -> set[int]:
    sizes: set[int] = set()
    handle = model.register_forward_pre_hook(lambda _m, args: sizes.add(len(args[0])))
    try:
        run()
    finally:
        handle.remove()
    return sizes


def test_sufficiency_and_stability_score_a_mixing_model_one_image_at_a_time():
    model = _mixing_model()
    x = torch.randn(6, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    x[3:] = x[3:] * 5 + 2  # batch statistics far from each image's own
    maps = torch.rand(6, 8, 8, generator=torch.Generator().manual_seed(2))
    assert _forward_sizes(model, lambda: Sufficiency(max_batch=6)(model, x, maps)) == {1}
    assert _forward_sizes(model, lambda: relative_output_stability(Saliency(model), x, samples=3)) == {1}
    together = relative_output_stability(Saliency(model), x, samples=3).scores
    alone = torch.cat([relative_output_stability(Saliency(model), x[i:i + 1], samples=3).scores for i in range(6)])
    torch.testing.assert_close(together, alone)
    together = relative_representation_stability(Saliency(model), x, samples=3, layers=["2"]).scores
    alone = torch.cat([relative_representation_stability(Saliency(model), x[i:i + 1], samples=3, layers=["2"]).scores
                       for i in range(6)])
    torch.testing.assert_close(together, alone)


def test_binary_maps_with_channels_score_as_their_float_values(small_cnn):
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    binary = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1)) > 0.5
    labels = torch.tensor([0, 1])
    torch.testing.assert_close(Deletion(steps=4)(small_cnn, images, binary, labels).scores,
                               Deletion(steps=4)(small_cnn, images, binary.float(), labels).scores)


def test_numpy_option_values_read_as_numbers():
    assert ROAD(fractions=np.array([0.2, 0.5])).fractions == (0.2, 0.5)
    assert SensitivityN(sizes=np.int64(3)).sizes == 3
    with pytest.raises(InputError, match="non-empty sequence"):
        ROAD(fractions="0.5")
    with pytest.raises(InputError, match="strictly between"):
        ROAD(fractions=np.array([0.5, 1.0]))


def test_completeness_keeps_a_float64_models_digits():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 2, 3, padding=1), nn.Flatten(), nn.Linear(2 * 8 * 8, 3)).double().eval()
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    scores = Completeness()(model, x, torch.rand(2, 3, 8, 8, dtype=torch.float64), torch.tensor([0, 1])).scores
    assert scores.dtype == torch.float64


def test_soft_masks_are_refused_binary_float_masks_accepted(small_cnn):
    images = torch.randn(2, 3, 32, 32)
    maps = torch.rand(2, 32, 32)
    soft = torch.rand(2, 32, 32) * 0.1
    with pytest.raises(InputError, match="binary masks"):
        PointingGame()(small_cnn, images, maps, masks=soft)
    hard = (soft > 0.05).float()
    torch.testing.assert_close(PointingGame()(small_cnn, images, maps, masks=hard).scores,
                               PointingGame()(small_cnn, images, maps, masks=hard.bool()).scores)


def test_tensor_and_array_option_values_and_integer_masks_are_read():
    assert ROAD(fractions=torch.tensor([0.25, 0.5])).fractions == (0.25, 0.5)
    assert SensitivityN(sizes=np.array([2, 3])).sizes == [2, 3]
    with pytest.raises(InputError, match="non-empty sequence"):
        ROAD(fractions=np.array(0.5))
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 2, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, 3)).eval()
    images, maps = torch.randn(2, 3, 16, 16), torch.rand(2, 16, 16)
    masks = torch.zeros(2, 16, 16, dtype=torch.uint8)
    masks[:, 4:9, 6:12] = 255  # a PIL mask read as an array
    torch.testing.assert_close(PointingGame(tolerance=0)(model, images, maps, masks=masks).scores,
                               PointingGame(tolerance=0)(model, images, maps, masks=masks.bool()).scores)
