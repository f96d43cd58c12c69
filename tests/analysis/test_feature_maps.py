import pytest
import torch
from matplotlib.figure import Figure
from torch import nn

from interpkit import FeatureMapSet, InputError, LayerError, LayerNotFoundError, feature_maps
from interpkit.testing import ModelFingerprint, assert_model_unchanged


def test_captures_every_conv_in_one_forward(small_cnn, images):
    small_cnn.train()
    before = ModelFingerprint.of(small_cnn)
    calls = []
    handle = small_cnn.register_forward_pre_hook(lambda *a: calls.append(1))
    maps = feature_maps(small_cnn, images)
    handle.remove()
    assert len(calls) == 1
    assert isinstance(maps, FeatureMapSet) and maps.layers == ("features.0", "features.4")
    assert maps["features.0"].shape == (4, 8, 32, 32) and maps["features.4"].shape == (4, 16, 16, 16)
    assert_model_unchanged(before, small_cnn)


def test_values_are_the_layer_output_before_inplace_relu(small_cnn, images):
    maps = feature_maps(small_cnn, images)
    small_cnn.eval()
    expected = small_cnn.features[4](small_cnn.features[:4](images))
    torch.testing.assert_close(maps["features.4"], expected)
    assert (maps["features.4"] < 0).any()  # not clipped by the in-place ReLU that follows


def test_named_layers_in_forward_order_and_figure(small_cnn, images):
    maps = feature_maps(small_cnn, images, layers=[small_cnn.features[3], "features.2"])
    assert maps.layers == ("features.2", "features.3")
    assert [name for name, _ in maps.items()] == list(maps.layers)
    figure = maps.figure("features.3", sample=1)
    assert isinstance(figure, Figure) and len([a for a in figure.axes if a.images]) == 8
    with pytest.raises(LayerError, match="features.0"):
        maps.figure("features.0")


def test_errors(small_cnn, images):
    with pytest.raises(LayerNotFoundError):
        feature_maps(small_cnn, images, layers=["nope"])
    with pytest.raises(LayerError, match="Conv2d"):
        feature_maps(torch.nn.Linear(2, 2), images)
    with pytest.raises(InputError):
        feature_maps(small_cnn, images[0])
    small_cnn.spare = torch.nn.Conv2d(1, 1, 1)  # registered but never called in forward
    with pytest.raises(LayerError, match="not called"):
        feature_maps(small_cnn, images, layers=["spare"])


def test_after_activation_shows_each_convolution_through_its_activation(small_cnn, images):
    maps = feature_maps(small_cnn, images, after_activation=True)
    assert maps.layers == ("features.2", "features.5")  # Conv-BN-ReLU is followed through the BatchNorm
    small_cnn.eval()
    torch.testing.assert_close(maps["features.2"], small_cnn.features[:3](images))
    torch.testing.assert_close(maps["features.5"], small_cnn.features[:6](images))
    assert (maps["features.5"] >= 0).all()


def test_after_activation_refuses_a_functional_activation(images):
    class Functional(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.relu = torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU()

        def forward(self, x):
            return self.relu(torch.nn.functional.relu(self.conv(x)) * 2)  # the module ReLU sees another tensor

    with pytest.raises(LayerError, match="no activation module takes the output of 'conv'"):
        feature_maps(Functional(), images, after_activation=True)


def test_layers_given_as_one_name_a_tuple_output_and_a_layer_named_twice():
    """``layers="12"`` captured layers '1' and '2'; a tuple output was kept uncloned (an in-place
    ReLU after it changed the stored maps); a layer named twice was drawn twice."""
    class Pair(nn.Module):
        def forward(self, x):
            return x * 2, x * 3

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.pair, self.act = nn.Conv2d(3, 4, 3), Pair(), nn.ReLU(inplace=True)

        def forward(self, x):
            a, b = self.pair(self.conv(x))
            self.act(a)
            return a + b

    model = nn.Sequential(*[nn.Conv2d(3, 3, 1) for _ in range(13)]).eval()
    x = torch.randn(1, 3, 8, 8)
    assert feature_maps(model, x, layers="12").layers == ("12",)
    assert feature_maps(model, x, layers=["1", "1", model[1], "2"]).layers == ("1", "2")
    with pytest.raises(LayerError, match="gives a tuple"):
        feature_maps(Net().eval(), x, layers=["pair"])
