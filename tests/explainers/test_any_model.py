"""Any model: 1-D and 3-D inputs, token and channels-last layers, several inputs and layers,
model outputs with logits, the layer choice, small grids, compiled and checkpointed models."""

import warnings

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import interpkit
from interpkit import (
    ChannelsLast,
    GradCAM,
    GuidedBackprop,
    InputError,
    LayerError,
    MultiLayerExplanation,
    Neuron,
    TokenGrid,
)
from interpkit.core import ModelInputs, choose_layer, class_scores
from interpkit.explainers.gradcam import fuse
from interpkit.testing import Conv1dNet, Conv3dNet, ModelFingerprint, TwoInputs, assert_model_unchanged
from interpkit.testing.strategies import image_batches, small_models


def _random_head(model):
    """Trained heads are never all zeros (torchvision's ViT and Swin start so)."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Linear) and not module.weight.any():
                module.weight.normal_(0, 0.5)
    return model.eval()


@pytest.mark.parametrize("make, shape, layer, mode", [
    (Conv1dNet, (3, 2, 40), "features.3", "linear"),
    (Conv3dNet, (2, 1, 6, 10, 8), "features.3", "trilinear"),
])
def test_1d_and_3d_gradcam_equal_captum_then_the_same_interpolation(make, shape, layer, mode):
    from captum.attr import LayerGradCam

    torch.manual_seed(0)
    model = make().eval()
    x = torch.randn(*shape)
    ours = GradCAM(model, layer=layer)(x, target=2)
    theirs = LayerGradCam(model, model.get_submodule(layer)).attribute(x, target=2, relu_attributions=True)
    theirs = F.interpolate(theirs, size=shape[2:], mode=mode, align_corners=False)
    torch.testing.assert_close(ours.maps[:, 0], theirs[:, 0], rtol=1e-5, atol=1e-7)
    assert ours.maps.shape == (shape[0], 1, *shape[2:])


def _tiny_vit():
    from torchvision.models import VisionTransformer

    torch.manual_seed(0)
    return _random_head(VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=16,
                                          mlp_dim=32, num_classes=5))


def test_vit_token_gradcam_equals_a_hand_written_reshape():
    model, x = _tiny_vit(), torch.randn(3, 3, 32, 32)
    layer = "encoder.layers.encoder_layer_1.ln_1"
    explanation = GradCAM(model)(x, target=[0, 3, 4])
    assert explanation.layer == layer
    kept = {}
    handle = model.get_submodule(layer).register_forward_hook(lambda m, i, o: kept.setdefault("tokens", o))
    scores = model(x).gather(1, torch.tensor([[0], [3], [4]]))[:, 0]
    handle.remove()
    tokens = kept["tokens"]  # (N, 1 + 16, 16): class token, then the 4 x 4 patches row by row
    (gradients,) = torch.autograd.grad(scores.sum(), tokens)
    grid = tokens[:, 1:].reshape(3, 4, 4, 16).permute(0, 3, 1, 2)
    grid_gradients = gradients[:, 1:].reshape(3, 4, 4, 16).permute(0, 3, 1, 2)
    cam = (grid_gradients.mean(dim=(2, 3), keepdim=True) * grid).sum(1, keepdim=True).clamp_min(0)
    expected = F.interpolate(cam, size=(32, 32), mode="bilinear", align_corners=False)
    torch.testing.assert_close(explanation.maps, expected, rtol=1e-5, atol=1e-6)
    assert explanation.maps.abs().sum() > 0


def test_token_layers_need_their_layout_and_say_what_to_pass():
    model, x = _tiny_vit(), torch.randn(2, 3, 32, 32)
    layer = "encoder.layers.encoder_layer_1.ln_1"
    with pytest.raises(LayerError, match="TokenGrid"):
        GradCAM(model, layer=layer)(x)
    auto = GradCAM(model, layer=(layer, TokenGrid()))(x).maps
    explicit = GradCAM(model, layer=(layer, TokenGrid(prefix=1, grid_size=(4, 4))))(x).maps
    torch.testing.assert_close(auto, explicit)
    with pytest.raises(LayerError, match="17 tokens.*prefix=2"):
        GradCAM(model, layer=(layer, TokenGrid(prefix=2)))(x)
    # a Neuron on a token layer indexes a channel at a grid position through the same layout
    neuron = Neuron(layer, 5, 1, 2, layout=TokenGrid())
    kept = {}
    handle = model.get_submodule(layer).register_forward_hook(lambda m, i, o: kept.setdefault("t", o))
    model(x)
    handle.remove()
    scores = GuidedBackprop(model, strict=False)(x, target=neuron).scores[:, 0]
    torch.testing.assert_close(scores, kept["t"][:, 1 + 1 * 4 + 2, 5].detach())


def test_channels_last_swin_equals_its_channels_first_view():
    from torchvision.models import SwinTransformer

    torch.manual_seed(0)
    model = _random_head(SwinTransformer(patch_size=[4, 4], embed_dim=16, depths=[1, 1], num_heads=[2, 2],
                                         window_size=[2, 2], num_classes=5))
    x = torch.randn(2, 3, 32, 32)
    auto = GradCAM(model)(x, target="all")
    assert auto.layer == "permute"  # the norm's NHWC output, already turned channels first
    last = GradCAM(model, layer=("norm", ChannelsLast()))(x, target="all")
    torch.testing.assert_close(auto.maps, last.maps)
    with pytest.raises(LayerError, match="ChannelsLast"):
        GradCAM(model, layer="norm")(x)  # (N, 4, 4, 32) is never read as channels first


def test_timm_models_with_class_and_distillation_tokens():
    timm = pytest.importorskip("timm")
    for name, prefix in (("vit_tiny_patch16_224", 1), ("deit_tiny_distilled_patch16_224", 2)):
        torch.manual_seed(0)
        model = _random_head(timm.create_model(name, pretrained=False, img_size=32, patch_size=8, depth=2,
                                               num_classes=5))
        explanation = GradCAM(model)(torch.randn(2, 3, 32, 32), target="all")
        assert explanation.layer == "blocks.1.norm1"
        assert explanation.maps.shape == (2, 5, 32, 32) and explanation.maps.abs().sum() > 0
        layout = GradCAM(model).resolve(torch.randn(2, 3, 32, 32))[0].layout
        assert layout.resolve(prefix + 16, (32, 32)) == (prefix, (4, 4))


def test_huggingface_vit_needs_no_wrapper():
    transformers = pytest.importorskip("transformers")
    config = transformers.ViTConfig(image_size=32, patch_size=8, num_hidden_layers=2, hidden_size=16,
                                    num_attention_heads=2, intermediate_size=32, num_labels=5)
    torch.manual_seed(0)
    model = _random_head(transformers.ViTForImageClassification(config))
    x = torch.randn(2, 3, 32, 32)
    before = ModelFingerprint.of(model)
    by_tensor = GradCAM(model)(x, target="all")
    by_keywords = GradCAM(model)({"pixel_values": x}, target="all")
    assert by_tensor.layer.endswith("1.layernorm_before")  # the last block's input to its attention
    torch.testing.assert_close(by_tensor.maps, by_keywords.maps)
    assert by_tensor.maps.shape == (2, 5, 32, 32)
    torch.testing.assert_close(by_tensor.scores, model(pixel_values=x).logits.detach())
    assert_model_unchanged(before, model)


class _FixedScale(nn.Module):
    """Calls the model with a fixed second input, tiled like the first (noisy copies of the batch)."""

    def __init__(self, model, scale):
        super().__init__()
        self.model, self.scale = model, scale

    def forward(self, x):
        return self.model(x, self.scale.repeat(len(x) // len(self.scale), 1))


def _last_features(model):
    return next(module for name, module in model.named_modules() if name.endswith("features.3"))


@pytest.mark.parametrize("cls", [lambda m: GradCAM(m, layer=_last_features(m)), GuidedBackprop,
                                 lambda m: interpkit.get_explainer("smoothgrad")(m, samples=4)],
                         ids=["gradcam", "guided_backprop", "smoothgrad"])
def test_two_inputs_equal_a_wrapper_that_fixes_the_second(cls):
    torch.manual_seed(0)
    model = TwoInputs().eval()
    x, scale = torch.randn(3, 3, 12, 10), torch.rand(3, 1) + 0.5
    ours = cls(model)((x, scale), target="all").maps
    wrapped = _FixedScale(model, scale)
    theirs = cls(wrapped)(x, target="all").maps
    torch.testing.assert_close(ours, theirs)
    by_position = cls(model)((scale, x)[::-1], target="all", attribute_to=0).maps
    torch.testing.assert_close(ours, by_position)


def test_attribute_to_names_the_input_maps_align_with():
    class ScaleFirst(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = TwoInputs()

        def forward(self, scale, x):
            return self.inner(x, scale)

    torch.manual_seed(0)
    model = ScaleFirst().eval()
    x, scale = torch.randn(2, 3, 12, 10), torch.rand(2, 1) + 0.5
    maps = GuidedBackprop(model)((scale, x), target=1, attribute_to=1).maps
    assert maps.shape == (2, 1, 3, 12, 10)
    with pytest.raises(InputError, match="attribute_to"):
        GuidedBackprop(model)((scale, x), attribute_to=2)
    with pytest.raises(InputError, match="attribute_to"):
        GuidedBackprop(model)({"scale": scale, "x": x}, attribute_to="y")


def test_several_layers_from_one_pass_equal_the_single_layer_calls(small_cnn, images):
    layers = ["features.0", "features.2", "features.5"]
    passes = []
    small_cnn.register_forward_pre_hook(lambda *args: passes.append(1))
    together = GradCAM(small_cnn, layer=layers)(images, target="all")
    assert len(passes) == 1 and isinstance(together, MultiLayerExplanation)
    assert together.layers == tuple(layers) and together.layer_maps.shape == (4, 5, 3, 32, 32)
    for i, layer in enumerate(layers):
        torch.testing.assert_close(together.layer_maps[:, :, i], GradCAM(small_cnn, layer=layer)(images, "all").maps)
    torch.testing.assert_close(together.maps, fuse(together.layer_maps))
    assert together.maps.min() >= 0 and together.maps.max() <= 1
    with pytest.raises(LayerError, match="upsample=True"):
        GradCAM(small_cnn, layer=layers, upsample=False)


def test_a_layer_whose_batch_is_not_the_inputs_is_refused():
    class RegionPool(nn.Module):  # like ROI pooling: 3 regions per image
        def forward(self, x):
            return torch.cat([x[:, :, :4, :4], x[:, :, 4:, 4:], x[:, :, :4, 4:]])

    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), RegionPool(), nn.Flatten(), nn.LazyLinear(2))
    model(torch.randn(1, 3, 8, 8))

    def target(out):
        return out[:1, 0]

    with pytest.raises(LayerError, match="3 rows for a batch of 1"):
        GradCAM(model, layer="1")(torch.randn(1, 3, 8, 8), target=target)
    assert GradCAM(model)(torch.randn(1, 3, 8, 8), target=target).layer == "0"


def test_compiled_models_are_explained_through_their_module(small_cnn, images):
    compiled = torch.compile(small_cnn)
    expected = GradCAM(small_cnn, layer="features.2")(images).maps
    for layer in ("features.2", "_orig_mod.features.2"):
        torch.testing.assert_close(GradCAM(compiled, layer=layer)(images).maps, expected)


def test_checkpointed_models():
    from torch.utils.checkpoint import checkpoint

    class Checkpointed(nn.Module):
        def __init__(self, reentrant):
            super().__init__()
            self.reentrant = reentrant
            self.block = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1),
                                       nn.ReLU())
            self.head = nn.Linear(4, 3)

        def forward(self, x):
            inner = checkpoint(self.block, x, use_reentrant=self.reentrant) if self.reentrant is not None else \
                self.block(x)
            return self.head(inner.mean(dim=(2, 3)))

    class OutsideFirst(nn.Module):  # a layer before a reentrant region: the backward to it goes through
        def __init__(self):
            super().__init__()
            self.conv, self.block, self.head = nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Linear(4, 3)

        def forward(self, x):
            return self.head(checkpoint(self.block, self.conv(x), use_reentrant=True).mean(dim=(2, 3)))

    torch.manual_seed(0)
    plain, x = Checkpointed(None), torch.randn(2, 3, 8, 8)
    exact = Checkpointed(False)
    exact.load_state_dict(plain.state_dict())
    for cls in (lambda m: GradCAM(m, layer="block.1"), GuidedBackprop):
        torch.testing.assert_close(cls(exact)(x, "all").maps, cls(plain)(x, "all").maps)
    reentrant = Checkpointed(True)
    reentrant.load_state_dict(plain.state_dict())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(LayerError, match="use_reentrant=False"):
            GradCAM(reentrant, layer="block.1")(x)
        with pytest.raises((InputError, LayerError), match="use_reentrant=False"):  # the layer choice's probe too
            GradCAM(reentrant)(x)
        for layer in ("conv", None):  # a layer before the region; the layer choice's probe
            with pytest.raises(InputError, match="use_reentrant=False"):
                GradCAM(OutsideFirst(), layer=layer)(x)
        with pytest.raises(InputError, match="use_reentrant=False"):
            GuidedBackprop(reentrant)(x)


def test_feature_vectors_for_gradient_methods():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3)).eval()
    x = torch.randn(4, 6)
    maps = GuidedBackprop(model)(x, target="all").maps
    assert maps.shape == (4, 3, 6)
    with pytest.raises(LayerError, match="no grid"):
        GradCAM(model)(x)


@settings(max_examples=25, deadline=None)
@given(model=small_models(), images=image_batches(), data=st.data())
def test_any_accepted_layer_gives_maps_on_the_input_grid(model, images, data):
    names = [name for name, _ in model.named_modules() if name]
    layer = data.draw(st.sampled_from(names))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            explanation = GradCAM(model, layer=layer)(images, target="all")
    except LayerError:
        return  # refused: a typed error, never a map of the wrong grid
    assert explanation.maps.shape[0] == len(images) and explanation.maps.shape[2:] == images.shape[2:]
    assert torch.isfinite(explanation.maps).all()


def test_the_layer_choice_on_a_detector_avoids_region_pooling():
    from torchvision.models.detection import fasterrcnn_mobilenet_v3_large_fpn

    torch.manual_seed(0)
    model = fasterrcnn_mobilenet_v3_large_fpn(weights=None, weights_backbone=None, min_size=96, max_size=96).eval()
    inputs = ModelInputs(args=([torch.rand(3, 96, 96)],))
    with pytest.raises(InputError):  # a list of images is no batch tensor: detectors take a callable target
        GradCAM(model)([torch.rand(3, 96, 96)])
    chosen = choose_layer(model, ModelInputs(args=(torch.rand(1, 3, 96, 96),)), lambda o: class_scores(o).max(1).values)
    assert chosen.name.startswith("backbone.") and "roi" not in chosen.name
    del inputs


class _AudioTransformer(nn.Module):
    """A 1-D token model: 16 tokens of width 8 from a 64-sample signal."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Conv1d(1, 8, 4, stride=4)
        self.block = nn.TransformerEncoderLayer(8, 2, 16, batch_first=True, dropout=0.0)
        self.norm = nn.LayerNorm(8)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        return self.head(self.norm(self.block(self.embed(x).transpose(1, 2))).mean(1))


def test_shapes_with_two_readings_need_the_module_or_a_layout():
    torch.manual_seed(0)
    audio, signal = _AudioTransformer().eval(), torch.randn(2, 1, 64)
    chosen = GradCAM(audio, upsample=False)(signal)
    assert chosen.maps.shape == (2, 1, 16)  # the norm's tokens, not 8 "time steps" of 16 channels
    with pytest.raises(LayerError, match="ChannelsFirst"):
        GradCAM(audio, layer="block.linear2")(signal)  # (16, 8): tokens or channels, and nothing says which

    class ChannelsLastBlock(nn.Module):
        def __init__(self, channels):
            super().__init__()
            self.embed, self.norm, self.head = nn.Conv2d(3, channels, 4, stride=4), nn.LayerNorm(channels), \
                nn.Linear(channels, 3)

        def forward(self, x):
            return self.head(self.norm(self.embed(x).permute(0, 2, 3, 1)).mean((1, 2)))

    model, x = ChannelsLastBlock(6).eval(), torch.randn(2, 3, 32, 32)
    assert GradCAM(model, upsample=False)(x).maps.shape == (2, 1, 8, 8)  # the layer norm says channels last
    with pytest.raises(LayerError, match="channels-last"):
        GradCAM(nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(6 * 8 * 8, 2)),
                layer=("0", ChannelsLast()))(torch.randn(1, 3, 8, 8))


class _CaptumStyleConvNet(nn.Module):
    """As captum's small test convnets: modules registered, called in the forward (not a
    Sequential), the ReLU's 2-channel 2 x 2 output also readable as channels last."""

    def __init__(self):
        super().__init__()
        self.conv1, self.relu1 = nn.Conv2d(1, 2, 3), nn.ReLU()
        self.pool1, self.fc1 = nn.MaxPool2d(2), nn.Linear(2, 3)

    def forward(self, x):
        return self.fc1(self.pool1(self.relu1(self.conv1(x))).flatten(1))


@pytest.mark.parametrize("cls", [GradCAM, interpkit.get_explainer("scorecam")])
def test_a_shape_preserving_module_keeps_its_producers_layout(cls):
    """The ReLU after a convolution is channels first because its input came from the convolution:
    not refused as ambiguous, equal to the convolution's map clipped by the ReLU's reading."""
    torch.manual_seed(0)
    model, x = _CaptumStyleConvNet().eval(), torch.randn(3, 1, 4, 4)
    maps = cls(model, layer="relu1", upsample=False)(x, target=[0, 1, 2]).maps
    assert maps.shape == (3, 1, 2, 2)
    if cls is GradCAM:
        captum_attr = pytest.importorskip("captum.attr")
        theirs = captum_attr.LayerGradCam(model, model.relu1).attribute(x, target=[0, 1, 2], relu_attributions=True)
        torch.testing.assert_close(maps, theirs)


ACTIVATIONS = [nn.ReLU(), nn.PReLU(), nn.Softplus(), nn.CELU(), nn.SELU(), nn.Softsign(), nn.Mish(), nn.Hardsigmoid(),
               nn.Tanhshrink(), nn.Softshrink(), nn.Hardshrink(), nn.LogSigmoid(), nn.RReLU(), nn.Threshold(0.1, 0.0),
               nn.Softmax(dim=1), nn.LogSoftmax(dim=1)]


@pytest.mark.parametrize("activation", ACTIVATIONS, ids=lambda m: type(m).__name__)
@pytest.mark.parametrize("in_sequential", [True, False])
def test_every_activation_after_a_convolution_keeps_channels_first(activation, in_sequential):
    """8 channels over an 8 x 8 grid: channels first and channels last both line up; the module
    that made it (in a Sequential) or the output's autograd history (a hand-written forward) says which."""
    torch.manual_seed(0)

    class Hand(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.act, self.head = nn.Conv2d(3, 8, 4, stride=4), activation, nn.Linear(8, 3)

        def forward(self, x):
            return self.head(self.act(self.conv(x)).mean((2, 3)))

    model = (nn.Sequential(nn.Conv2d(3, 8, 4, stride=4), activation, nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                           nn.Linear(8, 3)) if in_sequential else Hand()).eval()
    layer = "1" if in_sequential else "act"
    x = torch.randn(2, 3, 32, 32)
    maps = GradCAM(model, layer=layer, upsample=False)(x, target=[0, 2]).maps
    captum_attr = pytest.importorskip("captum.attr")
    module = model.get_submodule(layer)
    theirs = captum_attr.LayerGradCam(model, module).attribute(x, target=[0, 2], relu_attributions=True)
    torch.testing.assert_close(maps, theirs, rtol=1e-4, atol=1e-6)


def test_token_grids_with_registers_on_wide_inputs():
    timm = pytest.importorskip("timm")
    vit = _random_head(timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=(64, 96), reg_tokens=4,
                                         depth=2, num_classes=5))
    x = torch.randn(1, 3, 64, 96)
    auto = GradCAM(vit, upsample=False)(x)
    exact = GradCAM(vit, layer=(auto.layer, TokenGrid(prefix=5, grid_size=(4, 6))), upsample=False)(x)
    torch.testing.assert_close(auto.maps, exact.maps)
    with pytest.raises(LayerError, match="grid_size"):
        TokenGrid(grid_size=(-4, 4))
    with pytest.raises(LayerError, match="dimension"):
        GradCAM(vit, layer=(auto.layer, TokenGrid(prefix=5, grid_size=(24,))))(x)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name", interpkit.list_explainers())
def test_every_explainer_takes_a_half_precision_model(name, dtype):
    """A float16 or bfloat16 model is explained (maps in float32, close to the float32 model's
    for the CAM family) or refused with an InterpkitError, never a raw dtype error."""
    from interpkit.testing import ConvStack

    torch.manual_seed(0)
    model, x = ConvStack().eval(), torch.randn(2, 3, 20, 16)
    cls = interpkit.get_explainer(name)
    try:
        reference = cls(model)(x, target=1).maps
    except interpkit.InterpkitError:
        return  # not defined for this model (attention maps)
    half = cls(model.to(dtype))(x.to(dtype), target=1).maps
    assert half.dtype == torch.float32 and torch.isfinite(half).all()
    if "cam" in name and not name.startswith("guided"):  # input gradients flip with ReLU patterns in half precision
        assert (half - reference).abs().max() <= 0.05 * reference.abs().max()
