"""No silent wrong results: state and buffers, batch-mixing models, threads, rule coverage,
vectorisation fallbacks and typed errors (each test fails on the code before the fix)."""

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from threads import in_threads
from torch import nn

import interpkit
from interpkit import (
    Deconvnet,
    GradCAM,
    GuidedBackprop,
    GuidedGradCAM,
    InputError,
    MaxActivatingPatches,
    Neuron,
    TargetError,
    UncoveredNonlinearityError,
    feature_maps,
)
from interpkit.errors import VectorizationWarning
from interpkit.testing import ModelFingerprint, assert_model_unchanged

EXPLAINERS = [GradCAM, GuidedBackprop, Deconvnet, GuidedGradCAM, MaxActivatingPatches]


class Counting(nn.Module):
    """Counts the samples its forward sees in a buffer, and rebinds another buffer."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.head = nn.Linear(4, 3)
        self.register_buffer("seen", torch.zeros((), dtype=torch.long))
        self.register_buffer("calls", torch.zeros(()), persistent=False)

    def forward(self, x):
        self.seen += len(x)
        self.calls = self.calls + 1  # rebinds the attribute
        return self.head(F.relu(self.conv(x)).mean(dim=(2, 3)))


def test_buffers_are_restored_even_when_the_forward_writes_them():
    model = Counting()
    before = ModelFingerprint.of(model)
    for cls in EXPLAINERS:
        cls(model)(torch.randn(2, 3, 8, 8), target="all")
        assert int(model.seen) == 0 and float(model.calls) == 0, cls.__name__
        assert_model_unchanged(before, model)


def test_quantisation_observers_are_restored():
    from torch.ao.quantization import FakeQuantize

    model = nn.Sequential(nn.Conv2d(3, 4, 3), FakeQuantize(), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(4, 3))
    model(torch.randn(2, 3, 8, 8))  # observers have seen data
    before = ModelFingerprint.of(model)
    GradCAM(model, layer="2")(torch.randn(2, 3, 8, 8) * 10)
    assert_model_unchanged(before, model)


class BatchStatistics(nn.Module):
    """BatchNorm without running statistics: its eval forward normalises with the batch's own."""

    def __init__(self, mixing: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.norm = nn.BatchNorm2d(6, track_running_stats=not mixing)
        self.relu = nn.ReLU()
        self.head = nn.Linear(6, 4)

    def forward(self, x):
        return self.head(self.relu(self.norm(self.conv(x))).mean(dim=(2, 3)))


@pytest.mark.parametrize("cls", EXPLAINERS, ids=lambda c: c.__name__)
def test_a_batch_mixing_model_gives_each_sample_its_own_map(cls):
    torch.manual_seed(0)
    model, images = BatchStatistics(), torch.randn(3, 3, 8, 8)
    together = cls(model)(images, target=[0, 1, 2])
    for i in range(3):
        alone = cls(model)(images[i:i + 1], target=[i])
        torch.testing.assert_close(together.maps[i:i + 1], alone.maps, rtol=1e-5, atol=1e-6)
        assert together.targets[i].tolist() == [i]


@settings(max_examples=15, deadline=None)
@given(mixing=st.booleans(), seed=st.integers(0, 1000), batch=st.integers(2, 4))
def test_maps_never_depend_on_the_rest_of_the_batch(mixing, seed, batch):
    torch.manual_seed(seed)
    model, images = BatchStatistics(mixing), torch.randn(batch, 3, 6, 6)
    together = GradCAM(model)(images, target="all").maps
    for i in range(batch):
        torch.testing.assert_close(together[i], GradCAM(model)(images[i:i + 1], target="all").maps[0],
                                   rtol=1e-5, atol=1e-6)


def test_one_model_shared_by_threads_gives_sequential_results():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1),
                          nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5)).train()
    inputs = [torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(i)) for i in range(8)]
    expected = [GuidedBackprop(model)(x, target="all").maps for x in inputs]
    before = ModelFingerprint.of(model)
    results = {}

    def work(index):
        for j in range(index, len(inputs), 4):
            results[j] = GuidedBackprop(model)(inputs[j], target="all").maps

    assert not in_threads(work, 4)
    assert all(torch.equal(results[j], expected[j]) for j in range(len(inputs)))
    assert_model_unchanged(before, model)


class Activation(nn.Module):
    def __init__(self, activation) -> None:
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(3, 6, 3, padding=1), nn.Conv2d(6, 6, 3, padding=1)
        self.activation = activation
        self.head = nn.Linear(6, 3)

    def forward(self, x):
        return self.head(self.activation(self.conv2(self.activation(self.conv1(x)))).mean(dim=(2, 3)))


def _guided_reference(model, x, target):
    """Guided backprop written out: backward through every activation by hand, via a hook on its input."""
    x = x.clone().requires_grad_(True)
    handles = []

    def hook(module, inputs, output):
        passed = (output > 0) & (output < getattr(module, "max_val", float("inf")))
        output.register_hook(lambda grad: torch.where(passed, grad, 0).clamp_min(0))

    handles.append(model.activation.register_forward_hook(hook))
    try:
        out = model(x)[:, target].sum()
        (gradient,) = torch.autograd.grad(out, x)
    finally:
        for handle in handles:
            handle.remove()
    return gradient


class _ClampAtZero(nn.Module):
    def forward(self, x):
        return x.clamp(min=0)


@pytest.mark.parametrize("activation", [nn.ReLU6(), nn.ReLU6(inplace=True), nn.Hardtanh(0.0, 3.0), _ClampAtZero()],
                         ids=["relu6", "relu6_inplace", "hardtanh_0_3", "clamp_min_0"])
def test_the_whole_relu_family_is_guided_exactly(activation):
    torch.manual_seed(1)
    model = Activation(activation).eval()
    x = torch.randn(2, 3, 8, 8) * 4
    guided = GuidedBackprop(model)(x, target=2).maps[:, 0]
    torch.testing.assert_close(guided, _guided_reference(model, x, 2))
    leaf = x.clone().requires_grad_(True)
    (plain,) = torch.autograd.grad(model(leaf)[:, 2].sum(), leaf)
    assert not torch.allclose(guided, plain, atol=1e-6)  # the rule changed something


@pytest.mark.parametrize("activation, kind", [(nn.GELU(), "GELU"), (nn.SiLU(), "SiLU"), (nn.Hardswish(), "Hardswish"),
                                              (nn.Sigmoid(), "Sigmoid"), (nn.Tanh(), "Tanh")])
def test_strict_refuses_nonlinearities_the_rule_does_not_cover(activation, kind):
    class OneReLUElsewhere(Activation):  # swin_v2_t-like: one ReLU in a small MLP, another activation elsewhere
        def forward(self, x):
            return self.head(F.relu(self.activation(self.conv2(self.activation(self.conv1(x))))).mean(dim=(2, 3)))

    model = OneReLUElsewhere(activation)
    before = ModelFingerprint.of(model)
    for make in (GuidedBackprop, Deconvnet, lambda m, **kw: GuidedGradCAM(m, layer="conv2", **kw)):
        with pytest.raises(UncoveredNonlinearityError, match=f"2 {kind}"):
            make(model)(torch.randn(1, 3, 8, 8))
        assert make(model, strict=False)(torch.randn(1, 3, 8, 8)).maps.shape == (1, 1, 3, 8, 8)
    assert_model_unchanged(before, model)


def test_feature_maps_skip_convolutions_the_eval_forward_never_runs():
    class WithAuxiliaryHead(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.aux = nn.Conv2d(4, 4, 1)
            self.head = nn.Linear(4, 2)

        def forward(self, x):
            x = self.conv(x)
            if self.training:
                self.aux(x)
            return self.head(x.mean(dim=(2, 3)))

    model = WithAuxiliaryHead().train()
    assert feature_maps(model, torch.randn(1, 3, 8, 8)).layers == ("conv",)
    with pytest.raises(interpkit.LayerError, match="not called"):
        feature_maps(model, torch.randn(1, 3, 8, 8), layers=["aux"])


def test_a_backward_hook_that_cannot_be_vectorised_falls_back_with_one_warning():
    torch.manual_seed(0)
    model = Activation(nn.ReLU())
    seen = []
    model.conv2.register_full_backward_hook(lambda module, grad_in, grad_out: seen.append(grad_out[0].sum().item()))
    x = torch.randn(2, 3, 8, 8)
    with pytest.warns(VectorizationWarning, match="one backward per target"):
        together = GradCAM(model, layer="conv1")(x, target="all").maps
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", VectorizationWarning)
        for k in range(3):
            torch.testing.assert_close(together[:, k], GradCAM(model, layer="conv1")(x, target=k).maps[:, 0])
    assert seen


def test_bad_inputs_get_typed_errors_naming_the_cause(small_cnn, images):
    explainer = GradCAM(small_cnn)
    with torch.inference_mode():
        with pytest.raises(InputError, match="inference_mode"):
            explainer(images)
        made_inside = images.clone()
    with pytest.raises(InputError, match="inference_mode"):
        explainer(made_inside)
    for dtype in (torch.float64, torch.bfloat16, torch.float16):
        with pytest.raises(InputError, match=f"{dtype}.*float32"):
            explainer(images.to(dtype))
    with pytest.raises(InputError, match="forward failed.*channels"):
        explainer(images[:, :2])
    with pytest.raises(InputError, match="size 0"):
        explainer(images[:, :, :0])


def test_numpy_integers_are_indices_and_flags_must_be_bools(small_cnn, images):
    by_numpy = GradCAM(small_cnn)(images, target=np.int64(2)).maps
    torch.testing.assert_close(by_numpy, GradCAM(small_cnn)(images, target=2).maps)
    per_sample = GradCAM(small_cnn)(images, target=np.array([0, 1, 2, 3])).targets
    assert per_sample[:, 0].tolist() == [0, 1, 2, 3]
    assert GradCAM(small_cnn)(images, target=[np.int64(1)] * 4).targets[:, 0].tolist() == [1] * 4
    assert Neuron("features.4", np.int64(3)).channel == 3
    with pytest.raises(TargetError):
        GradCAM(small_cnn)(images, target=np.bool_(True))
    for option in ({"upsample": "no"}, {"relu": 1}):
        with pytest.raises(InputError, match="True or False"):
            GradCAM(small_cnn, **option)
    with pytest.raises(InputError, match="True or False"):
        GuidedBackprop(small_cnn, strict="yes")


def test_user_hooks_run_once_per_forward_the_explainer_needs(small_cnn, images):
    calls = []
    small_cnn.fc.register_forward_hook(lambda *args: calls.append(1))
    GradCAM(small_cnn, layer="features.4")(images, target="all")
    assert len(calls) == 1  # one forward for every target
    explainer = GradCAM(small_cnn)
    explainer(images)
    assert len(calls) == 2  # layer=None: the probe that chooses the layer runs with the user's hooks set aside
    explainer(images)
    assert len(calls) == 3


class WritesItsParameters(nn.Module):
    """Weight clipping and a statistic registered in forward, as some training code does."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.head = nn.Conv2d(3, 4, 3, padding=1), nn.Linear(4, 3)
        self.register_buffer("stats", None)

    def forward(self, x):
        with torch.no_grad():
            self.conv.weight.clamp_(-0.1, 0.1)
            self.head.weight.data.mul_(0.5)
        self.stats = x.detach().mean(dim=(0, 2, 3))
        return self.head(F.relu(self.conv(x)).mean(dim=(2, 3)))


def test_parameters_and_new_buffers_written_by_the_forward_are_restored():
    from interpkit.metrics import Deletion

    for call in (lambda m, x: GradCAM(m)(x), lambda m, x: GuidedBackprop(m)(x),
                 lambda m, x: Deletion(steps=2)(m, x, torch.rand(2, 8, 8)), lambda m, x: feature_maps(m, x)):
        torch.manual_seed(0)
        model = WritesItsParameters()
        before = ModelFingerprint.of(model)
        call(model, torch.randn(2, 3, 8, 8))
        assert_model_unchanged(before, model)
        assert model.stats is None


def test_metrics_score_each_sample_alone_on_batch_mixing_models():
    from interpkit.metrics import AverageDrop

    torch.manual_seed(0)
    model, images = BatchStatistics(), torch.randn(3, 3, 8, 8)
    explanation = GradCAM(model)(images)
    together = AverageDrop()(model, images, explanation).scores
    alone = torch.cat([AverageDrop()(model, images[i:i + 1], explanation.maps[i:i + 1],
                                     explanation.targets[i:i + 1, 0]).scores for i in range(3)])
    torch.testing.assert_close(together, alone)


def test_a_model_that_cannot_run_one_sample_alone_says_why():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(4, 8), nn.BatchNorm1d(8, track_running_stats=False), nn.ReLU(), nn.Linear(8, 3))
    with pytest.raises(InputError, match="one sample at a time.*track_running_stats=True"):
        GradCAM(model)(torch.randn(4, 3, 8, 8))
    from interpkit.explainers import FeatureAblation

    per_image = torch.arange(4).repeat_interleave(16).view(1, 8, 8).expand(4, 8, 8)  # a mask per image said it too
    with pytest.raises(InputError, match="one sample at a time.*track_running_stats=True"):
        FeatureAblation(model, features=per_image)(torch.randn(4, 3, 8, 8))


class _TwoTowers(nn.Module):
    """An image tower and a depth tower joined at the head (as RGB-D or change-detection nets)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.a = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1), nn.ReLU())
        self.b = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1), nn.ReLU())
        self.head = nn.Linear(8, 5)

    def forward(self, rgb, depth):
        return self.head(torch.cat([self.a(rgb).mean((2, 3)), self.b(depth).mean((2, 3))], 1))


def test_the_chosen_layer_is_computed_from_the_attributed_input():
    """GradCAM chose the depth tower's last layer for the image (the later of two equal grids),
    so the image's map did not change with the image; and one choice was cached for both."""
    model = _TwoTowers().eval()
    rgb, depth = torch.randn(2, 3, 8, 8), torch.randn(2, 3, 8, 8)
    for key, layer in ((0, "a.3"), (1, "b.3"), (0, "a.3")):
        assert GradCAM(model)((rgb, depth), target=1, attribute_to=key).layer == layer
    assert GradCAM(model)({"rgb": rgb, "depth": depth}, target=1, attribute_to="rgb").layer == "a.3"


def test_a_branch_that_reads_its_input_detached_is_still_chosen():
    """The layer is found by what changes with the input, not by the autograd graph: a forward
    that normalises its image without gradients is no reason to refuse."""
    class Normalising(nn.Module):
        def __init__(self):
            super().__init__()
            self.c, self.head = nn.Conv2d(3, 4, 3, padding=1), nn.Linear(4, 3)

        def forward(self, image, scale):
            with torch.no_grad():
                image = (image - image.mean()) / image.std()
            return self.head(self.c(image).mean((2, 3))) * scale

    assert GradCAM(Normalising().eval())((torch.randn(2, 3, 8, 8), torch.ones(2, 1)), target=0).layer == "c"


def test_explanation_targets_are_not_the_users_tensor(small_cnn, images):
    labels = torch.tensor([1, 3, 0, 2])
    explanation = GradCAM(small_cnn)(images, target=labels)
    labels.copy_(torch.tensor([4, 0, 2, 1]))
    assert explanation.targets[:, 0].tolist() == [1, 3, 0, 2]
    every = GradCAM(small_cnn)(images, target="all")
    every.targets.add_(1)  # its own tensor, not an expanded row


def test_multi_layer_explanations_move_every_tensor(small_cnn, images, monkeypatch):
    explanation = GradCAM(small_cnn, layer=["features.0", "features.4"])(images, target=1)
    monkeypatch.setattr(torch.Tensor, "cpu", lambda self: self.clone())  # a move makes new tensors, as from a GPU
    moved = explanation.cpu()
    assert moved.layer_maps is not explanation.layer_maps and torch.equal(moved.layer_maps, explanation.layer_maps)
    assert np.array_equal(explanation.numpy()["layer_maps"], explanation.layer_maps.numpy())
