"""GradCAM agrees with captum's LayerGradCam at the layer's resolution (a differential test)."""

import pytest
import torch
import torchvision

import interpkit
from interpkit import GradCAM
from interpkit.core import upsample
from interpkit.explainers.gradcam import principal_projection

captum_attr = pytest.importorskip("captum.attr", reason="captum is part of the [test] extra")

NETWORKS = [
    (torchvision.models.resnet18, "layer4"),
    (torchvision.models.vgg11, "features.20"),
    (torchvision.models.densenet121, "features"),  # its output is then modified by an in-place ReLU
]


@pytest.mark.parametrize("builder, layer", NETWORKS, ids=lambda v: getattr(v, "__name__", v))
def test_gradcam_matches_captum(builder, layer):
    torch.manual_seed(0)
    model = builder().eval()
    images = torch.randn(2, 3, 128, 160)
    targets = torch.tensor([[3, 7, 11], [500, 2, 999]])
    ours = GradCAM(model, layer=layer, upsample=False)(images, target=targets).maps
    reference = captum_attr.LayerGradCam(model, dict(model.named_modules())[layer])
    for k in range(targets.shape[1]):
        theirs = reference.attribute(images, target=targets[:, k].tolist(), relu_attributions=True)[:, 0]
        scale = theirs.abs().max()
        assert scale > 0
        assert ((ours[:, k] - theirs).abs().max() / scale) < 1e-4


def test_upsampled_maps_are_bilinear_resizes_of_layer_maps():
    torch.manual_seed(0)
    model = torchvision.models.resnet18().eval()
    images = torch.randn(2, 3, 96, 64)  # non-square
    raw = GradCAM(model, upsample=False)(images, target=[1, 2]).maps
    up = GradCAM(model)(images, target=[1, 2]).maps
    expected = torch.nn.functional.interpolate(raw, size=(96, 64), mode="bilinear", align_corners=False)
    assert up.shape == (2, 1, 96, 64)
    torch.testing.assert_close(up, expected)


def test_relu_false_keeps_negative_evidence():
    torch.manual_seed(0)
    model = torchvision.models.resnet18().eval()
    images = torch.randn(1, 3, 64, 64)
    signed = GradCAM(model, relu=False, upsample=False)(images, target="all").maps
    clipped = GradCAM(model, upsample=False)(images, target="all").maps
    assert (signed < 0).any()
    torch.testing.assert_close(signed.clamp_min(0), clipped)


def test_default_layer_of_resnet_is_the_last_block_not_its_reused_relu():
    model = torchvision.models.resnet18().eval()
    assert GradCAM(model)(torch.randn(1, 3, 64, 64)).layer == "layer4"


def test_reused_module_is_refused_as_a_layer():
    model = torchvision.models.resnet18().eval()
    with pytest.raises(interpkit.LayerError, match="called 2 times"):
        GradCAM(model, layer="layer4.1.relu")(torch.randn(1, 3, 64, 64))


def test_gradcam_matches_torchcam():
    torchcam_methods = pytest.importorskip("torchcam.methods", reason="torchcam is part of the [test] extra")
    torch.manual_seed(0)
    model = torchvision.models.resnet18().eval()
    images = torch.randn(2, 3, 96, 80)
    ours = GradCAM(model, layer="layer4", upsample=False)(images, target="all").maps
    extractor = torchcam_methods.GradCAM(model, target_layer="layer4")
    try:
        for k in (0, 17, 999):
            (theirs,) = extractor(k, model(images), normalized=False, retain_graph=False)
            assert ((ours[:, k] - theirs).abs().max() / theirs.abs().max()) < 1e-4
    finally:
        extractor.remove_hooks()


class WholeMapCAM(GradCAM):
    """A variant written the old guide's way: the whole map in cam()."""

    def cam(self, activation, gradients):
        return (gradients.abs() * activation.unsqueeze(1)).sum(dim=2)


class WeightsCAM(GradCAM):
    """The same variant written the guide's way: a weight per channel and position."""

    def channel_weights(self, activation, gradients):
        return gradients.abs()


@pytest.mark.slow
def test_eigen_smooth_reaches_a_channel_weights_variant_and_a_cam_override_is_refused():
    torch.manual_seed(0)
    model, images = torchvision.models.resnet18(num_classes=10).eval(), torch.randn(2, 3, 64, 64)  # "all": 10 classes
    plain = WeightsCAM(model, layer="layer3")(images, target="all").maps
    torch.testing.assert_close(plain, WholeMapCAM(model, layer="layer3")(images, target="all").maps)
    smoothed = WeightsCAM(model, layer="layer3", eigen_smooth=True)(images, target=[1, 2])
    assert not torch.allclose(smoothed.maps, plain[:, :1].expand_as(smoothed.maps))
    found = WeightsCAM(model, layer="layer3").all_layer_gradients(
        interpkit.core.Call(interpkit.core.model_inputs(images, model), [1, 2]))[0]
    terms = found.gradients.abs() * found.activation.unsqueeze(1)
    expected = upsample(principal_projection(terms).clamp_min(0), (64, 64))
    torch.testing.assert_close(smoothed.maps, expected)
    with pytest.raises(interpkit.InputError, match="overrides cam.*channel_weights"):
        WholeMapCAM(model, layer="layer3", eigen_smooth=True)


class Anisotropic(torch.nn.Module):
    """A video stem with temporal stride 2 and spatial stride 4, then a second stride-(1, 2, 2) stage."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = torch.nn.Conv3d(3, 8, 3, stride=(2, 4, 4), padding=1)
        self.stage = torch.nn.Sequential(torch.nn.Conv3d(8, 8, 3, stride=(1, 2, 2), padding=1), torch.nn.ReLU())
        self.head = torch.nn.Linear(8, 5)

    def forward(self, x):
        return self.head(self.stage(torch.relu(self.stem(x))).mean(dim=(2, 3, 4)))


@pytest.mark.parametrize("builder, layer, size", [
    (torchvision.models.video.r3d_18, "layer2", (16, 112, 112)),  # grid (8, 28, 28): strides 2, 4, 4
    (torchvision.models.video.r3d_18, "layer3", (16, 112, 112)),  # grid (4, 14, 14)
    (Anisotropic, "stem", (8, 32, 48)),
    (Anisotropic, "stage", (8, 32, 48)),
], ids=lambda value: getattr(value, "__name__", str(value)))  # stable across processes
def test_video_grids_with_per_axis_strides_match_captum(builder, layer, size):
    """Temporal and spatial strides differ in most video networks: a convolution's output is a map
    of the input whatever its per-axis strides, upsampled trilinearly."""
    torch.manual_seed(0)
    model = builder().eval()
    clips = torch.randn(2, 3, *size)
    ours = GradCAM(model, layer=layer)(clips, target=[1, 3]).maps
    module = dict(model.named_modules())[layer]
    raw = captum_attr.LayerGradCam(model, module).attribute(clips, target=[1, 3], relu_attributions=True)
    theirs = captum_attr.LayerAttribution.interpolate(raw, size, interpolate_mode="trilinear")
    assert ours.shape == theirs.shape == (2, 1, *size)
    scale = theirs.abs().max()
    assert scale > 0 and ((ours - theirs).abs().max() / scale) < 1e-4


def test_the_layer_choice_accepts_anisotropic_grids():
    model = Anisotropic().eval()
    assert GradCAM(model)(torch.randn(1, 3, 8, 32, 48)).layer.startswith("stage")
