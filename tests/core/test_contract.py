"""The core contract: state restored, hooks removed, targets, batch invariance, errors."""

import os

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from models import DictOutput, SmallCNN

import interpkit
from interpkit import GradCAM, InputError, LayerError, LayerNotFoundError, Neuron, TargetError
from interpkit.errors import LocalisationWarning
from interpkit.testing import FunctionalReLU, ModelFingerprint, assert_model_unchanged


def test_model_restored_after_success(small_cnn, images):
    before = ModelFingerprint.of(small_cnn)
    GradCAM(small_cnn)(images, target="all")
    assert_model_unchanged(before, small_cnn)
    assert small_cnn.training and small_cnn.features[1].training


def test_model_restored_after_raising_target(small_cnn, images):
    small_cnn.fc.weight.grad = torch.ones_like(small_cnn.fc.weight)
    small_cnn.features[0].weight.requires_grad_(False)
    before = ModelFingerprint.of(small_cnn)

    def target(output):
        output.sum().backward()  # a hostile callable that writes .grad, then fails
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        GradCAM(small_cnn)(images, target=target)
    assert_model_unchanged(before, small_cnn)


def test_context_manager_restores_on_exit(small_cnn, images):
    before = ModelFingerprint.of(small_cnn)
    with GradCAM(small_cnn) as explainer:
        first = explainer(images, target=1)
        assert_model_unchanged(before, small_cnn)  # each call restores it: the user's code runs between
        second = explainer(images, target=1)
    torch.testing.assert_close(first.maps, second.maps)
    assert_model_unchanged(before, small_cnn)


def test_explanation_uses_eval_semantics(small_cnn, images):
    eval_model = SmallCNN()
    eval_model.load_state_dict(small_cnn.state_dict())
    eval_model.eval()
    logits = eval_model(images)
    explanation = GradCAM(small_cnn)(images, target=2)
    torch.testing.assert_close(explanation.scores[:, 0], logits[:, 2])


def test_inputs_untouched(small_cnn, images):
    copy = images.clone()
    GradCAM(small_cnn)(images)
    assert torch.equal(images, copy)
    assert images.grad is None


def test_no_hook_left_and_bounded_memory_over_500_calls(small_cnn, images):
    explainer = GradCAM(small_cnn)
    for _ in range(20):  # warm allocator caches before measuring
        explainer(images[:2], target="all")
    before = ModelFingerprint.of(small_cnn)
    start = _resident_bytes()
    for _ in range(500):
        explainer(images[:2], target="all")
    growth = _resident_bytes() - start
    assert_model_unchanged(before, small_cnn)
    assert growth < 32 * 2**20, f"resident memory grew by {growth / 2**20:.1f} MiB over 500 calls"


def _resident_bytes() -> int:
    with open(f"/proc/{os.getpid()}/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@settings(max_examples=15, deadline=None)
@given(index=st.integers(0, 3), classes=st.lists(st.integers(0, 4), min_size=1, max_size=4))
def test_batch_composition_invariance(index, classes):
    torch.manual_seed(0)
    model = SmallCNN().eval()
    batch = torch.randn(4, 3, 24, 20, generator=torch.Generator().manual_seed(index))
    target = torch.tensor(classes).expand(4, -1)
    whole = GradCAM(model)(batch, target=target)
    alone = GradCAM(model)(batch[index : index + 1], target=target[:1])
    torch.testing.assert_close(alone.maps[0], whole.maps[index], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(alone.scores[0], whole.scores[index], rtol=1e-4, atol=1e-5)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**16), height=st.integers(8, 40), width=st.integers(8, 40))
def test_relu_maps_are_non_negative_and_input_sized(seed, height, width):
    torch.manual_seed(seed)
    model = FunctionalReLU(classes=5).eval()
    batch = torch.randn(2, 3, height, width)
    explanation = GradCAM(model)(batch, target="all")
    assert explanation.maps.shape == (2, 5, height, width)
    assert explanation.maps.dtype == torch.float32
    assert bool((explanation.maps >= 0).all())


TARGET_FORMS = [
    (None, 1), (3, 1), ([0, 1, 2, 3], 1), ("all", 5), (torch.tensor([4, 3, 2, 1]), 1),
    (torch.tensor([[0, 1], [1, 2], [2, 3], [3, 4]]), 2), (lambda out: out[:, 2] - out[:, 1], 1),
    (lambda out: out[:, :3], 3), (Neuron("features.4", 5), 1),
    ([Neuron("features.4", 0, 2, 3), Neuron("features.0", 1)], 2), (Neuron("fc", 3), 1),
]


@pytest.mark.parametrize("target, k", TARGET_FORMS)
@pytest.mark.parametrize("upsample", [True, False])
def test_shape_contract_for_every_target_form(small_cnn, images, target, k, upsample):
    explanation = GradCAM(small_cnn, upsample=upsample)(images, target=target)
    spatial = (32, 32) if upsample else (16, 16)
    assert explanation.maps.shape == (4, k, *spatial)
    assert explanation.targets.shape == explanation.scores.shape == (4, k)
    assert explanation.targets.dtype == torch.long
    assert explanation.layer == "features.5" and explanation.method == "gradcam"


def test_top1_target_is_the_argmax(small_cnn, images):
    explanation = GradCAM(small_cnn)(images)
    logits = SmallCNN()
    logits.load_state_dict(small_cnn.state_dict())
    expected = logits.eval()(images).argmax(1)
    assert torch.equal(explanation.targets[:, 0], expected)


def test_many_targets_equal_one_at_a_time(small_cnn, images):
    together = GradCAM(small_cnn)(images, target="all")
    for k in range(5):
        alone = GradCAM(small_cnn)(images, target=k)
        torch.testing.assert_close(together.maps[:, k], alone.maps[:, 0], rtol=1e-5, atol=1e-6)


def test_chunked_batched_gradients_match(small_cnn, images, monkeypatch):
    full = GradCAM(small_cnn)(images, target="all")
    monkeypatch.setattr("interpkit.core.gradients.MAX_BATCHED_ELEMENTS", 1)
    chunked = GradCAM(small_cnn)(images, target="all")
    torch.testing.assert_close(full.maps, chunked.maps)


def test_callable_target_on_dict_output(images):
    torch.manual_seed(0)
    inner = SmallCNN().eval()
    wrapped = DictOutput(inner)
    by_callable = GradCAM(wrapped, layer="inner.features.5")(images, target=lambda out: out["logits"][:, 3])
    by_index = GradCAM(inner, layer="features.5")(images, target=3)
    torch.testing.assert_close(by_callable.maps, by_index.maps)
    # a mapping with 'logits' needs no callable for class targets (HuggingFace ModelOutput is one)
    torch.testing.assert_close(GradCAM(wrapped, layer="inner.features.5")(images, target=3).maps, by_index.maps)

    class Boxes(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return {"boxes": self.inner(x)}

    with pytest.raises(TargetError, match="callable"):
        GradCAM(Boxes())(images, target=1)


def test_frozen_model_still_explained(small_cnn, images):
    for p in small_cnn.parameters():
        p.requires_grad_(False)
    before = ModelFingerprint.of(small_cnn)
    explanation = GradCAM(small_cnn)(images, target=1)
    assert explanation.maps.abs().sum() > 0
    assert_model_unchanged(before, small_cnn)


def test_grad_disabled_caller(small_cnn, images):
    with torch.no_grad():
        explanation = GradCAM(small_cnn)(images, target=1)
    assert explanation.maps.abs().sum() > 0


def test_layer_by_module_and_auto_choice(small_cnn, images):
    by_module = GradCAM(small_cnn, layer=small_cnn.features[5])(images)
    explainer = GradCAM(small_cnn)
    auto = explainer(images)
    assert auto.layer == "features.5" == by_module.layer
    torch.testing.assert_close(auto.maps, by_module.maps)


BAD_INPUTS = [
    ("not a tensor", InputError, "torch.Tensor"),
    (torch.randn(32), InputError, "batch"),
    (torch.randn(3, 32, 32), InputError, "forward failed"),  # a 1-D batch to an image model
    (torch.randn(1, 1, 3, 2, 32, 32), InputError, "1 to 3 spatial"),
    (torch.zeros(0, 3, 32, 32), InputError, "size 0"),
    (torch.zeros(2, 3, 32, 32, dtype=torch.uint8), InputError, "floating"),
    (torch.full((2, 3, 32, 32), float("nan")), InputError, "NaN"),
    (torch.full((2, 3, 32, 32), float("inf")), InputError, "NaN or Inf"),
]


@pytest.mark.parametrize("inputs, error, words", BAD_INPUTS)
def test_bad_inputs_raise_input_error(small_cnn, inputs, error, words):
    before = ModelFingerprint.of(small_cnn)
    with pytest.raises(error, match=words):
        GradCAM(small_cnn)(inputs)
    assert_model_unchanged(before, small_cnn)


BAD_TARGETS = [
    ([1, 2], "2 targets for a batch of 4"),
    (5, "out of range"),
    (-1, "out of range"),
    (torch.tensor([[0, 9]] * 4), "out of range"),
    ([0, 9, 0, 0], "class index 9 is out of range"),
    (torch.tensor([1.0, 2.0, 3.0, 4.0]), "integer"),
    (torch.tensor([1, 2]), "shape"),
    ("every", "only string target"),
    (True, "bool"),
    (2.5, "unsupported target"),
    (lambda out: out.argmax(1), "floating"),
    (lambda out: out[:2, 0], "N = 4"),
    (lambda out: out.detach()[:, 0], "do not depend"),
    (Neuron("features.4", 99), "channel 99"),
    (Neuron("features.4", 0, 50, 1), "outside"),
    (Neuron("fc", 2, 0, 0), "outside"),
]


@pytest.mark.parametrize("target, words", BAD_TARGETS)
def test_bad_targets_raise_target_error(small_cnn, images, target, words):
    before = ModelFingerprint.of(small_cnn)
    with pytest.raises(TargetError, match=words):
        GradCAM(small_cnn)(images, target=target)
    assert_model_unchanged(before, small_cnn)


def test_misspelt_layer_lists_closest_names(small_cnn):
    with pytest.raises(LayerNotFoundError, match="features.4"):
        GradCAM(small_cnn, layer="feature.4")
    with pytest.raises(LayerNotFoundError, match="not a submodule"):
        GradCAM(small_cnn, layer=torch.nn.Conv2d(1, 1, 1))


def test_non_spatial_layer_rejected(small_cnn, images):
    before = ModelFingerprint.of(small_cnn)
    with pytest.raises(LayerError, match="not a channels-first grid"):
        GradCAM(small_cnn, layer="fc")(images)
    assert_model_unchanged(before, small_cnn)


def test_a_single_position_grid_gives_constant_maps_with_a_warning(small_cnn, images):
    with pytest.warns(LocalisationWarning, match="cannot localise"):
        maps = GradCAM(small_cnn, layer="pool")(images, target="all").maps
    assert (maps == maps[..., :1, :1]).all()


def test_model_without_spatial_layer(images):
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 2))
    with pytest.raises(LayerError, match="pass layer="):
        GradCAM(model)(images)


def test_not_a_model():
    with pytest.raises(InputError, match="nn.Module"):
        GradCAM(lambda x: x)


def test_inputs_on_wrong_device_or_dtype_rejected(small_cnn):
    with pytest.raises(InputError, match="floating"):
        interpkit.explain(small_cnn, torch.ones(1, 3, 8, 8, dtype=torch.int64))


def test_errors_share_one_base():
    for error in (InputError, LayerError, LayerNotFoundError, TargetError, interpkit.PluginError):
        assert issubclass(error, interpkit.InterpkitError)


def test_k_targets_cost_one_forward(small_cnn, images):
    calls = []
    handle = small_cnn.register_forward_pre_hook(lambda module, args: calls.append(args[0].shape[0]))
    try:
        GradCAM(small_cnn, layer="features.5")(images, target="all")
        interpkit.GuidedBackprop(small_cnn)(images, target=torch.tensor([[0, 1, 2]] * 4))
    finally:
        handle.remove()
    assert calls == [4, 4]  # one forward of the batch each, whatever K


def test_a_with_block_cannot_be_entered_twice(small_cnn, images):
    explainer = GradCAM(small_cnn)
    with explainer:
        with pytest.raises(interpkit.InterpkitError, match="already open"):
            explainer.__enter__()
        explainer(images)
    assert small_cnn.training  # the outer block still restored the model


def test_target_forms_users_have_at_hand(small_cnn, images):
    """A label read out of a tensor, a list of them, a range, a tensor channel and a negative
    input position mean what they say (they were refused)."""
    labels = torch.tensor([1, 3, 0, 2])
    expected = GradCAM(small_cnn)(images, target=[1, 3, 0, 2]).maps
    torch.testing.assert_close(GradCAM(small_cnn)(images, target=list(labels)).maps, expected)
    torch.testing.assert_close(GradCAM(small_cnn)(images, target=labels[1]).maps,
                               GradCAM(small_cnn)(images, target=3).maps)
    torch.testing.assert_close(GradCAM(small_cnn)(images, target=range(4)).maps,
                               GradCAM(small_cnn)(images, target=[0, 1, 2, 3]).maps)
    assert Neuron("features.4", torch.tensor(3)).channel == 3
    torch.testing.assert_close(GradCAM(small_cnn)((images,), target=1, attribute_to=-1).maps,
                               GradCAM(small_cnn)(images, target=1, attribute_to=-1).maps)


class _Asserts(torch.nn.Module):
    """A model that checks its input's size with an assert, as torchvision's and timm's ViTs do."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 2, 3)

    def forward(self, x):
        torch._assert(x.shape[-1] == 8, "Wrong image width!")
        return self.conv(x).mean((2, 3))


def test_a_forward_that_asserts_or_takes_other_arguments_is_a_forward_error(small_cnn, images):
    with pytest.raises(interpkit.ForwardError, match="Wrong image width"):
        interpkit.Saliency(_Asserts())(torch.randn(1, 3, 8, 9), target=0)
    with pytest.raises(interpkit.ForwardError, match="positional argument"):
        interpkit.Saliency(small_cnn)((images, images), target=0)
    with pytest.raises(InputError, match="meta device"):
        interpkit.Saliency(SmallCNN().to("meta"))(torch.randn(1, 3, 8, 8, device="meta"), target=0)
