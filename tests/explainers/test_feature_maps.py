import pytest
import torch
from matplotlib.figure import Figure

import interpkit
from interpkit import FeatureMaps, LayerError, LayerNotFoundError, TargetError
from interpkit.testing import ModelFingerprint, assert_model_unchanged


def test_captures_every_conv_in_one_forward(small_cnn, images):
    before = ModelFingerprint.of(small_cnn)
    calls = []
    handle = small_cnn.register_forward_pre_hook(lambda *a: calls.append(1))
    maps = FeatureMaps(small_cnn)(images)
    handle.remove()
    assert len(calls) == 1
    assert list(maps) == ["features.0", "features.4"]
    assert maps["features.0"].shape == (4, 8, 32, 32) and maps["features.4"].shape == (4, 16, 16, 16)
    assert_model_unchanged(before, small_cnn)


def test_values_are_the_layer_output_before_inplace_relu(small_cnn, images):
    maps = FeatureMaps(small_cnn)(images)
    small_cnn.eval()
    expected = small_cnn.features[4](small_cnn.features[:4](images))
    torch.testing.assert_close(maps["features.4"], expected)
    assert (maps["features.4"] < 0).any()  # not clipped by the in-place ReLU that follows


def test_named_layers_and_plot(small_cnn, images):
    maps = FeatureMaps(small_cnn, layers=["features.2", small_cnn.features[3]])(images)
    assert list(maps) == ["features.2", "features.3"]
    figure = maps.plot("features.3", sample=1)
    assert isinstance(figure, Figure) and len([a for a in figure.axes if a.images]) == 8
    with pytest.raises(LayerError, match="features.0"):
        maps.plot("features.0")


def test_errors(small_cnn, images):
    with pytest.raises(LayerNotFoundError):
        FeatureMaps(small_cnn, layers=["nope"])
    with pytest.raises(TargetError):
        FeatureMaps(small_cnn)(images, target=1)
    with pytest.raises(LayerError, match="Conv2d"):
        FeatureMaps(torch.nn.Linear(2, 2))
    small_cnn.spare = torch.nn.Conv2d(1, 1, 1)  # registered but never called in forward
    with pytest.raises(LayerError, match="not called"):
        FeatureMaps(small_cnn, layers=["spare"])(images)


def test_through_the_registry(small_cnn, images):
    maps = interpkit.explain(small_cnn, images, method="feature_maps", layers=["features.0"])
    assert list(maps) == ["features.0"]
