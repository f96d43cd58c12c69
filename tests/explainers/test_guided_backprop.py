"""Guided backprop and Deconvnet at the op level, Guided GradCAM, and Neuron targets."""

import copy
import threading

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from interpkit import (
    Deconvnet,
    GradCAM,
    GuidedBackprop,
    GuidedGradCAM,
    InputError,
    Neuron,
    NoReLUError,
    UncoveredNonlinearityError,
)
from interpkit.core import ReLURuleMode
from interpkit.testing import ModelFingerprint, assert_model_unchanged
from interpkit.viz import gradient_images

captum_attr = pytest.importorskip("captum.attr", reason="captum is part of the [test] extra")


def _relative_error(ours, theirs):
    return ((ours - theirs).abs().max() / theirs.abs().max()).item()


@pytest.fixture(scope="module")
def vgg():
    torch.manual_seed(0)
    model = torchvision.models.vgg11().eval()
    for module in model.modules():
        if isinstance(module, nn.ReLU):
            module.inplace = False  # captum's module hooks need out-of-place ReLUs
    return model


@pytest.fixture(scope="module")
def batch():
    return torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))


@pytest.mark.parametrize("ours, theirs", [(GuidedBackprop, "GuidedBackprop"), (Deconvnet, "Deconvolution")])
def test_equal_to_captum_on_vgg11(vgg, batch, ours, theirs):
    targets = [7, 300]
    mine = ours(vgg)(batch, target=targets).maps[:, 0]
    with pytest.warns(UserWarning):
        reference = getattr(captum_attr, theirs)(vgg).attribute(batch.clone(), target=targets)
    assert mine.shape == (2, 3, 64, 64)
    assert _relative_error(mine, reference) < 1e-5


class FunctionalVGG(nn.Module):
    """The same weights, with every ReLU called as a function (three spellings)."""

    def __init__(self, vgg: nn.Module) -> None:
        super().__init__()
        self.features = nn.ModuleList(m for m in vgg.features if not isinstance(m, nn.ReLU))
        self.avgpool, self.classifier = vgg.avgpool, vgg.classifier

    def forward(self, x):
        for index, module in enumerate(self.features):
            x = module(x)
            if isinstance(module, nn.Conv2d):
                x = F.relu(x) if index % 2 else torch.relu(x)
        x = self.avgpool(x).flatten(1)
        linear1, _, drop1, linear2, _, drop2, linear3 = self.classifier
        x = drop1(linear1(x).relu())
        x = drop2(F.relu(linear2(x), inplace=True))
        return linear3(x)


@pytest.mark.parametrize("explainer", [GuidedBackprop, Deconvnet])
def test_functional_relu_gives_identical_maps(vgg, batch, explainer):
    functional = FunctionalVGG(vgg).eval()
    targets = torch.tensor([[0, 10, 999], [5, 6, 7]])
    expected = explainer(vgg)(batch, target=targets).maps
    torch.testing.assert_close(explainer(functional)(batch, target=targets).maps, expected, rtol=0, atol=0)


class SeparateReLUBlock(nn.Module):
    """A torchvision BasicBlock with one fresh, out-of-place ReLU per use."""

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        self.conv1, self.bn1, self.conv2, self.bn2 = block.conv1, block.bn1, block.conv2, block.bn2
        self.downsample = block.downsample
        self.relu1, self.relu2 = nn.ReLU(), nn.ReLU()

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        return self.relu2(out + identity)


def test_resnet_inplace_reused_relu_equals_separate_relus(batch):
    torch.manual_seed(0)
    shipped = torchvision.models.resnet18().eval()
    rewritten = copy.deepcopy(shipped)
    rewritten.relu = nn.ReLU()
    for name in ("layer1", "layer2", "layer3", "layer4"):
        layer = getattr(rewritten, name)
        setattr(rewritten, name, nn.Sequential(*(SeparateReLUBlock(b) for b in layer)))
    targets = torch.tensor([[1, 2, 3], [4, 5, 6]])
    for explainer in (GuidedBackprop, Deconvnet):
        ours = explainer(shipped)(batch, target=targets).maps
        reference = explainer(rewritten)(batch, target=targets).maps
        assert ours.shape == (2, 3, 3, 64, 64)
        torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-7)
    x = batch.clone().requires_grad_(True)
    plain = torch.autograd.grad(shipped(x)[:, 1].sum(), x)[0]
    assert not torch.allclose(GuidedBackprop(shipped)(batch, target=1).maps[:, 0], plain)


class NoReLU(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(torch.tanh(self.conv(x)).mean(dim=(2, 3)))


def test_model_without_relu_raises_unless_not_strict(batch):
    torch.manual_seed(0)
    model = NoReLU().eval()
    before = ModelFingerprint.of(model)
    with pytest.raises(NoReLUError, match=r"no ReLU \(it ran 1 Tanh, .*strict=False"):  # what it ran instead
        GuidedBackprop(model)(batch, target=1)
    assert_model_unchanged(before, model)
    x = batch.clone().requires_grad_(True)
    plain = torch.autograd.grad(model(x)[:, 1].sum(), x)[0]
    torch.testing.assert_close(GuidedBackprop(model, strict=False)(batch, target=1).maps[:, 0], plain)


class IntegerClamp(nn.Module):
    """DeBERTa-v2's relative positions: an integer ``torch.clamp(t, 0, hi)`` that indexes (or,
    ``clamped=False``, the same buckets given as a constant)."""

    def __init__(self, clamped: bool) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.first, self.head, self.clamped = nn.Linear(8, 8), nn.Linear(8, 3), clamped

    def forward(self, x):
        h = torch.relu(input=self.first(x))  # the input by keyword (a tuple index error before)
        if self.clamped:  # an integer hardtanh is no uncovered nonlinearity either
            buckets = torch.clamp(torch.arange(5) - 1, 0, 4) + F.hardtanh(torch.zeros(5, dtype=torch.long), 0, 2)
        else:
            buckets = torch.tensor([0, 0, 1, 2, 3])
        return self.head(h.index_select(1, buckets).mean(1))


@pytest.mark.parametrize("explainer", [GuidedBackprop, Deconvnet])
def test_an_integer_clamp_is_no_relu(explainer):
    """The clamp had been taken for a ReLU and given the rule's float Function: the model's own
    indexing failed. The map is the one with the buckets given as a constant."""
    x = torch.randn(2, 5, 8)
    torch.testing.assert_close(explainer(IntegerClamp(True).eval())(x, target=1).maps,
                               explainer(IntegerClamp(False).eval())(x, target=1).maps)


def test_guided_gradcam_is_the_product(batch):
    torch.manual_seed(0)
    model = torchvision.models.resnet18().eval()
    targets = torch.tensor([[1, 5, 9], [2, 4, 900]])
    guided_cam = GuidedGradCAM(model)(batch, target=targets)
    cam = GradCAM(model)(batch, target=targets).maps
    guided = GuidedBackprop(model)(batch, target=targets).maps
    assert guided_cam.maps.shape == (2, 3, 3, 64, 64) and guided_cam.layer == "layer4"
    torch.testing.assert_close(guided_cam.maps, guided * cam.unsqueeze(2))
    top1 = GuidedGradCAM(model)(batch)
    expected = GuidedGradCAM(model)(batch, target=top1.targets[:, 0])
    torch.testing.assert_close(top1.maps, expected.maps)


def test_neuron_targets_match_captum_on_truncated_model(vgg, batch):
    neurons = [Neuron("features.18", 5, 2, 1), Neuron("features.18", 40, 0, 3)]
    maps = GuidedBackprop(vgg)(batch, target=neurons).maps
    assert maps.shape == (2, 2, 3, 64, 64)
    truncated = nn.Sequential(*list(vgg.features)[:19]).eval()
    for k, neuron in enumerate(neurons):
        with pytest.warns(UserWarning):
            reference = captum_attr.GuidedBackprop(truncated).attribute(
                batch.clone(), target=(neuron.channel, neuron.y, neuron.x))
        assert _relative_error(maps[:, k], reference) < 1e-5


def test_channel_maximum_neuron_is_its_argmax_unit(vgg, batch):
    activation = vgg.features[:19](batch)[:, 7]
    flat = activation.flatten(1).argmax(1)
    width = activation.shape[-1]
    by_max = GuidedBackprop(vgg)(batch, target=Neuron(vgg.features[18], 7)).maps
    for n in range(2):
        y, x = divmod(flat[n].item(), width)
        unit = GuidedBackprop(vgg)(batch[n : n + 1], target=Neuron("features.18", 7, y, x)).maps
        torch.testing.assert_close(by_max[n], unit[0])


def test_no_function_mode_left_after_raising_call(small_cnn, images):
    before = ModelFingerprint.of(small_cnn)

    def failing(output):
        raise RuntimeError("target failed")

    for explainer in (GuidedBackprop(small_cnn), Deconvnet(small_cnn), GuidedGradCAM(small_cnn)):
        with pytest.raises(RuntimeError, match="target failed"):
            explainer(images, target=failing)
        assert torch._C._len_torch_function_stack() == 0
        assert_model_unchanged(before, small_cnn)
    GuidedBackprop(small_cnn)(images, target=1)
    assert torch._C._len_torch_function_stack() == 0
    assert_model_unchanged(before, small_cnn)
    x = images.clone().requires_grad_(True)  # plain autograd is untouched afterwards
    out = small_cnn.eval()(x)
    assert torch.autograd.grad(out[:, 0].sum(), x)[0].lt(0).any()


def test_gradient_images(batch):
    maps = torch.randn(2, 3, 3, 8, 8)
    signed = gradient_images(maps)
    positive = gradient_images(maps, positive_only=True)
    assert signed.shape == (2, 3, 8, 8, 3) and signed.dtype == np.uint8
    assert signed.reshape(6, -1).max(1).tolist() == [255] * 6 and signed.reshape(6, -1).min(1).tolist() == [0] * 6
    negative = (maps.permute(0, 1, 3, 4, 2) <= 0).numpy()
    assert (positive[negative] == 0).all()



def test_the_rule_is_the_last_word_on_the_gradient_leaving_a_relu():
    """A gradient hook of the model's own on a ReLU's output (here a gradient reversal) runs
    before the rule: what leaves the ReLU is still positive only."""
    torch.manual_seed(0)

    class Reversal(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.head = nn.Conv2d(3, 4, 3, padding=1), nn.Linear(4 * 36, 3)

        def forward(self, x):
            y = F.relu(self.conv(x))
            y.register_hook(torch.neg)
            return self.head(y.flatten(1))

    model, seen = Reversal().eval(), []
    handle = model.conv.register_forward_hook(lambda m, i, out: out.register_hook(seen.append) and None)
    try:
        GuidedBackprop(model)(torch.randn(2, 3, 6, 6), target=0)
    finally:
        handle.remove()
    assert seen[0].min() >= 0 and seen[0].max() > 0


@pytest.mark.parametrize("inplace", [False, True])
def test_a_relu_under_vmap_gets_the_rule(inplace):
    """A model that runs its ReLUs under ``torch.vmap`` (an ensemble, per-sample code) gets the
    same map as written without it, not the plain gradient."""

    class Vmapped(nn.Module):
        def __init__(self, vmapped):
            super().__init__()
            self.weight, self.head, self.vmapped = nn.Parameter(torch.randn(12, 5)), nn.Linear(5, 3), vmapped

        def forward(self, x):
            def hidden(t):
                return F.relu(t @ self.weight, inplace=inplace)

            return self.head(torch.vmap(hidden)(x) if self.vmapped else hidden(x))

    torch.manual_seed(0)
    model, x = Vmapped(True).eval(), torch.randn(4, 12)
    written_out = copy.deepcopy(model)
    written_out.vmapped = False
    plain = torch.autograd.functional.jacobian(lambda t: written_out(t)[:, 0].sum(), x)
    guided = GuidedBackprop(model)(x, target=torch.tensor([[0, 2]] * 4)).maps
    torch.testing.assert_close(guided, GuidedBackprop(written_out)(x, target=torch.tensor([[0, 2]] * 4)).maps)
    assert (guided[:, 0] - plain).abs().max() > 1e-3


def test_a_relu_under_forward_mode_jvp_in_the_model_gets_the_rule_on_its_value():
    """``torch.func.jvp`` inside a forward: the tangent is the ReLU's own derivative (a step, so
    nothing flows back through it), the value path gets the guided rule, written out by hand."""

    class WithDirectionalDerivative(nn.Module):
        def __init__(self):
            super().__init__()
            self.l1, self.head = nn.Linear(12, 8), nn.Linear(16, 3)

        def forward(self, x):
            value, tangent = torch.func.jvp(lambda t: F.relu(self.l1(t)), (x,), (torch.ones_like(x),))
            return self.head(torch.cat([value, tangent], 1))

    torch.manual_seed(0)
    model, x = WithDirectionalDerivative().eval(), torch.randn(4, 12)
    found = GuidedBackprop(model)(x, target=1).maps[:, 0]
    passed = model.head.weight[1, :8].detach().clamp(min=0) * (model.l1(x).detach() > 0)
    torch.testing.assert_close(found, passed @ model.l1.weight.detach())


def test_an_in_place_relu_on_a_shared_tensor_inside_vmap_gets_the_rule():
    """An ensemble vmapped over its members with the input shared: the stem's in-place ReLU sees
    a plain tensor while vmap runs."""

    class Ensemble(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem, self.members = nn.Linear(12, 6), nn.Parameter(torch.randn(3, 6, 2))

        def forward(self, x):
            return torch.vmap(lambda w: F.relu(self.stem(x), inplace=True) @ w)(self.members).sum(0)

    torch.manual_seed(0)
    model, x = Ensemble().eval(), torch.randn(4, 12)
    found = GuidedBackprop(model)(x, target=1).maps[:, 0]
    gradient = model.members[:, :, 1].detach().sum(0)  # the score's gradient at the stem's ReLU
    passed = gradient.clamp(min=0) * (model.stem(x).detach() > 0)
    torch.testing.assert_close(found, passed @ model.stem.weight.detach())


@torch.jit.script
def _scripted_relu(h: torch.Tensor) -> torch.Tensor:
    return torch.relu(h * 1.0)  # two ops: warmed up, TorchScript fuses them into one differentiable graph


class _ScriptedReLU(torch.nn.Module):
    def __init__(self, scripted: bool):
        super().__init__()
        torch.manual_seed(0)
        self.c0, self.c1, self.fc = torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.Conv2d(4, 4, 3, padding=1), \
            torch.nn.Linear(4, 3)
        self.scripted = scripted

    def forward(self, x):
        h = self.c1(torch.relu(self.c0(x)))
        return self.fc((_scripted_relu(h) if self.scripted else torch.relu(h)).mean((2, 3)))


class _RectifiedWeight(torch.nn.Module):
    def forward(self, weight):
        return torch.relu(weight)


@pytest.mark.parametrize("explainer", [GuidedBackprop, Deconvnet])
def test_a_relu_the_rule_cannot_see_is_refused_not_left_plain(explainer):
    """A ReLU inside a TorchScript function runs outside the mode: it kept its plain gradient and
    the map was 0.81 off the eager model's, silently. The graph is searched for plain ReLU nodes
    on the first call per input shape (a target's own ReLU, read after the forward, is the user's)."""
    x = torch.randn(2, 3, 8, 8)
    scripted, eager = _ScriptedReLU(True).eval(), _ScriptedReLU(False).eval()
    with pytest.raises(UncoveredNonlinearityError, match="1 ReLU.* out of the rule's sight"):
        explainer(scripted)(x, target=1)
    explainer(scripted, strict=False)(x, target=1)  # accepted as partial, as asked
    warmed = _ScriptedReLU(True).eval()
    for _ in range(3):  # TorchScript's profiling executor then runs the function as one differentiable graph
        warmed(x.requires_grad_()).sum().backward()
    with pytest.raises(UncoveredNonlinearityError, match="out of the rule's sight"):
        explainer(warmed)(x.detach(), target=1)
    parametrized = _ScriptedReLU(False).eval()  # a ReLU in its weights, computed before the forward: not refused
    torch.nn.utils.parametrize.register_parametrization(parametrized.c1, "weight", _RectifiedWeight())
    with torch.nn.utils.parametrize.cached():
        assert parametrized.c1.weight.grad_fn is not None  # computed here, before the explanation's forward
        explainer(parametrized)(x.detach(), target=1)
    own = explainer(eager)(x, target=lambda out: out.relu()[:, 1]).maps
    torch.testing.assert_close(own, explainer(eager)(x, target=1).maps)  # positive logits here: the same map


# Later calls per input shape rule a plain forward's ReLU nodes with backward hooks, where the
# first call's graph (under the mode) shows that this is the same rule on the same ops.


@pytest.fixture
def mode_entries(monkeypatch):
    """The forwards run under ``ReLURuleMode``, one entry each."""
    entries = []
    enter = ReLURuleMode.__enter__

    def counted(self):
        entries.append(self)
        return enter(self)

    monkeypatch.setattr(ReLURuleMode, "__enter__", counted)
    return entries


class _ReLU6Net(nn.Module):
    """ReLU6 as a module and in place, a hardtanh from 0 with its own bound, a reused in-place ReLU."""

    def __init__(self):
        super().__init__()
        self.c0, self.c1, self.c2 = (nn.Conv2d(c, 6, 3, padding=1) for c in (3, 6, 6))
        self.act, self.relu, self.fc = nn.ReLU6(), nn.ReLU(inplace=True), nn.Linear(6, 4)

    def forward(self, x):
        h = self.relu(self.c0(x))
        h = F.relu6(self.c1(h) * 4, inplace=True)
        h = F.hardtanh(self.c2(h) * 3, 0.0, 2.5)
        return self.fc(self.relu(self.act(h * 4 - 1) + h).mean((2, 3)))


class _Functional(nn.Module):
    """ReLUs by function, method and in-place function, one on a linear layer's output."""

    def __init__(self):
        super().__init__()
        self.c0, self.c1, self.fc, self.head = nn.Conv2d(3, 6, 3), nn.Conv2d(6, 6, 3), nn.Linear(6, 6), nn.Linear(6, 4)

    def forward(self, x):
        h = torch.relu(self.c1(F.relu(self.c0(x))))
        return self.head(F.relu(self.fc(h.mean((2, 3))), inplace=True).relu())


_HOOKED = {"resnet18": lambda: torchvision.models.resnet18(num_classes=5), "relu6": _ReLU6Net, "functional": _Functional}


@pytest.mark.parametrize("target", [1, "all", Neuron("c1", 2)], ids=["class", "all", "neuron"])
@pytest.mark.parametrize("name", sorted(_HOOKED))
@pytest.mark.parametrize("explainer", [GuidedBackprop, Deconvnet])
def test_later_calls_rule_the_relu_nodes_exactly_as_the_mode_rules_the_ops(mode_entries, explainer, name, target):
    """Bit for bit the first call's maps, on new inputs of the same shape, without the mode."""
    if isinstance(target, Neuron) and name == "resnet18":
        target = Neuron("layer2", 2)
    torch.manual_seed(0)
    model = _HOOKED[name]().eval()
    first, later = (torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(s)) for s in (1, 2))
    explain = explainer(model)
    explain(first, target=target)
    assert len(mode_entries) == 1
    hooked = explain(later, target=target).maps
    assert len(mode_entries) == 1  # the later call ran no mode
    under_the_mode = explainer(copy.deepcopy(model))(later, target=target).maps  # a new model: a first call
    assert len(mode_entries) == 2
    assert torch.equal(hooked, under_the_mode)
    if target == 1:  # the rule changed the gradient
        x = later.clone().requires_grad_(True)
        assert not torch.allclose(hooked[:, 0], torch.autograd.grad(model(x)[:, 1].sum(), x)[0])


class _Branching(nn.Module):
    """A data-dependent forward: one more ReLU, or a GELU, for inputs of negative mean."""

    def __init__(self, other: str):
        super().__init__()
        self.c0, self.c1, self.fc, self.other = nn.Conv2d(3, 6, 3), nn.Conv2d(6, 6, 3), nn.Linear(6, 3), other

    def forward(self, x):
        h = self.c1(F.relu(self.c0(x)))
        if x.mean() < 0:
            h = F.gelu(h) if self.other == "gelu" else F.relu(h * 2 - 0.1)
        return self.fc(F.relu(h).mean((2, 3)))


def test_a_graph_unlike_the_first_calls_is_explained_under_the_mode(mode_entries):
    """The later forward has another structure: its extra ReLU gets the rule, its GELU is refused
    (strict), as on a first call, never the hooks' partial rule."""
    positive, negative = torch.rand(2, 3, 12, 12), -torch.rand(2, 3, 12, 12)
    torch.manual_seed(0)
    model = _Branching("relu").eval()
    explain = GuidedBackprop(model)
    explain(positive, target=1)
    branched = explain(negative, target=1).maps
    assert len(mode_entries) == 2  # the second call's plain forward did not match: run again under the mode
    torch.testing.assert_close(branched, GuidedBackprop(copy.deepcopy(model))(negative, target=1).maps, rtol=0, atol=0)
    gelu = _Branching("gelu").eval()
    GuidedBackprop(gelu)(positive, target=1)
    with pytest.raises(UncoveredNonlinearityError, match="1 GELU"):
        GuidedBackprop(gelu)(negative, target=1)


class _Clamped(nn.Module):
    def forward(self, x):
        return torch.stack([x.clamp(min=0).sum((1, 2, 3)), F.relu(x - 0.5).sum((1, 2, 3))], 1)


class _ATenReLU(nn.Module):
    def forward(self, x):
        return torch.stack([torch.ops.aten.relu(x).sum((1, 2, 3)), F.relu(x - 0.5).sum((1, 2, 3))], 1)


class _Checkpointed(nn.Module):
    def __init__(self):
        super().__init__()
        self.c0, self.fc = nn.Conv2d(3, 4, 3), nn.Linear(4, 3)

    def forward(self, x):
        h = torch.utils.checkpoint.checkpoint(lambda t: F.relu(self.c0(t)), x, use_reentrant=False)
        return self.fc(F.relu(h - 0.1).mean((2, 3)))


class _ReLUOnAView(nn.Module):
    """An in-place ReLU on a flattened view: its node hides inside a ``CopySlices``."""

    def __init__(self):
        super().__init__()
        self.c0, self.fc, self.act = nn.Conv2d(3, 4, 3), nn.Linear(4 * 36, 3), nn.ReLU(inplace=True)

    def forward(self, x):
        return self.fc(F.relu(self.act(torch.flatten(self.c0(x), 1)) - 0.1))


class _InnerGradient(nn.Module):
    """A backward inside the forward, through a ReLU: the mode rules it there too, so the hooks,
    which leave the forward plain, cannot stand in for it."""

    def __init__(self):
        super().__init__()
        self.c0, self.fc = nn.Conv2d(3, 4, 3), nn.Linear(4, 3)

    def forward(self, x):
        z = self.c0(x)
        with torch.enable_grad():
            leaf = z.detach().requires_grad_()
            (weights,) = torch.autograd.grad((torch.relu(leaf) * torch.linspace(-1, 1, 4).view(1, 4, 1, 1)).sum(), leaf)
        return self.fc(F.relu(z * weights).mean((2, 3)))


@pytest.mark.parametrize("model", [_Clamped, _ATenReLU, _Checkpointed, _ReLUOnAView, _InnerGradient],
                         ids=["clamp", "aten", "checkpoint", "view", "inner backward"])
def test_models_whose_rule_a_hook_cannot_place_stay_under_the_mode(mode_entries, model):
    """A clamp's own gradient passes at 0, a ``torch.ops`` ReLU is out of the mode's sight (kept
    plain with ``strict=False``), a checkpointed region is saved as without checkpointing: every
    call runs the mode, with the same maps."""
    torch.manual_seed(0)
    model, x = model().eval(), F.relu(torch.randn(2, 3, 8, 8))  # exact zeros: where a clamp and a ReLU differ
    explain = GuidedBackprop(model, strict=False)
    maps = [explain(x, target=1).maps for _ in range(3)]
    assert len(mode_entries) == 3
    assert torch.equal(maps[0], maps[1]) and torch.equal(maps[0], maps[2])


class _ThreadedStep(nn.Module):
    """A convolution run on another thread: autograd numbers that thread's nodes apart, and the
    forward's first ReLU lies behind them."""

    def __init__(self):
        super().__init__()
        self.c0, self.c1, self.fc = nn.Conv2d(3, 6, 3), nn.Conv2d(6, 6, 3), nn.Linear(6, 3)

    def forward(self, x):
        h, out = F.relu(self.c0(x)), {}
        worker = threading.Thread(target=lambda: out.setdefault("h", self.c1(h)))
        worker.start()
        worker.join()
        return self.fc(F.relu(out["h"]).mean((2, 3)))


class _CheckpointedWhenLarge(nn.Module):
    """Non-reentrant checkpointing switched on by the batch size, which the cache key leaves out."""

    def __init__(self):
        super().__init__()
        self.c0, self.c1, self.fc = nn.Conv2d(3, 6, 3), nn.Conv2d(6, 6, 3), nn.Linear(6, 3)

    def block(self, t):
        return F.relu(self.c1(F.relu(self.c0(t))))

    def forward(self, x):
        h = torch.utils.checkpoint.checkpoint(self.block, x, use_reentrant=False) if len(x) > 2 else self.block(x)
        return self.fc(F.relu(h).mean((2, 3)))


class _ReLU6InputWritten(nn.Module):
    """The input of a ReLU6 scaled in place after it, which a hardtanh's backward needs."""

    def __init__(self):
        super().__init__()
        self.c0, self.fc = nn.Conv2d(3, 6, 3), nn.Linear(6, 3)

    def forward(self, x):
        h = self.c0(x)
        y = F.relu6(h)
        h.mul_(0.5)
        return self.fc(F.relu(y + h).mean((2, 3)))


@pytest.mark.parametrize("model", [_ThreadedStep, _CheckpointedWhenLarge], ids=["thread", "checkpoint later"])
@pytest.mark.parametrize("explainer", [GuidedBackprop, Deconvnet])
def test_later_calls_on_models_that_defeated_the_first_census_equal_the_mode(explainer, model):
    """Found by a review: a ReLU behind another thread's node kept its plain gradient, and a hook
    read a checkpointed tensor the node had already unpacked. Each later call now equals a first
    call (the mode) on a new copy."""
    torch.manual_seed(0)
    model = model().eval()
    first, later = torch.randn(2, 3, 12, 12), torch.randn(4, 3, 12, 12)
    explain = explainer(model)
    explain(first, target=1)
    torch.testing.assert_close(explain(later, target=1).maps,
                               explainer(copy.deepcopy(model))(later, target=1).maps, rtol=0, atol=0)


def test_a_subclass_with_its_own_rule_runs_the_mode_on_every_call(mode_entries):
    """A ``ReLURuleExplainer`` that gives ``rule`` but no ``node_rule``: no hook stands in for it."""
    from interpkit.core import ReLURuleExplainer

    class Halved(ReLURuleExplainer):
        rule = staticmethod(lambda grad, output, upper: torch.ops.aten.threshold_backward(grad, output, 0) / 2)

    torch.manual_seed(0)
    model, x = _Functional().eval(), torch.randn(2, 3, 12, 12)
    explain = Halved(model)
    maps = [explain(x, target=1).maps for _ in range(3)]
    assert len(mode_entries) == 3
    leaf = x.clone().requires_grad_(True)
    plain = torch.autograd.grad(model(leaf)[:, 1].sum(), leaf)[0]
    torch.testing.assert_close(maps[2][:, 0], plain / 2 ** 4)  # four ReLUs on every path, each halving


class _WrittenAfter(nn.Module):
    """A ReLU6's and a clamp's output written in place: their own backwards saved their inputs,
    so plain autograd accepts it (the rule saved the outputs and refused it)."""

    def __init__(self, written: bool):
        super().__init__()
        self.c0, self.c1, self.fc, self.written = nn.Conv2d(3, 4, 3), nn.Conv2d(4, 4, 3), nn.Linear(4, 3), written

    def forward(self, x):
        h = F.relu6(self.c0(x))
        h = h.add_(1.0) if self.written else h + 1.0
        g = self.c1(h).clamp(min=0)
        return self.fc((g.mul_(2) if self.written else g * 2).mean((2, 3)))


class _BufferSigmoid(nn.Module):
    """A sigmoid on a buffer, which carries no gradient: no reason to refuse the map."""

    def __init__(self):
        super().__init__()
        self.c0, self.fc = nn.Conv2d(3, 4, 3), nn.Linear(4, 3)
        self.register_buffer("gate", torch.linspace(-2, 2, 4).view(1, 4, 1, 1))

    def forward(self, x):
        return self.fc((F.relu(self.c0(x)) * torch.sigmoid(self.gate)).mean((2, 3)))


@pytest.mark.parametrize("explainer", [GuidedBackprop, Deconvnet])
def test_outputs_written_in_place_and_nonlinearities_off_the_gradient_are_explained(explainer):
    """Found by a second review: both were refused on every call."""
    torch.manual_seed(0)
    written, x = _WrittenAfter(True).eval(), torch.randn(2, 3, 10, 10)
    kept = copy.deepcopy(written)
    kept.written = False
    torch.testing.assert_close(explainer(written)(x, target=1).maps, explainer(kept)(x, target=1).maps, rtol=0, atol=0)
    refused = explainer(_ReLU6InputWritten().eval())  # its input, which the backward needs, written: as autograd
    for _ in range(2):  # the first call and a later one alike
        with pytest.raises(InputError, match="writes in place"):
            refused(x, target=1)
    gated = _BufferSigmoid().eval()
    leaf = x.clone().requires_grad_(True)
    maps = explainer(gated)(x, target=1).maps
    assert maps.abs().sum() > 0 and not torch.allclose(maps[:, 0], torch.autograd.grad(gated(leaf)[:, 1].sum(), leaf)[0])


class _VmappedBounded(nn.Module):
    """In-place ReLU6 and clamp under ``vmap`` inside the model (computed out of place, then written)."""

    def __init__(self, vmapped: bool, clamp: bool):
        super().__init__()
        self.weight, self.head = nn.Parameter(torch.randn(12, 5)), nn.Linear(5, 3)
        self.vmapped, self.clamp = vmapped, clamp

    def forward(self, x):
        def hidden(t):
            h = (t @ self.weight) * 3
            return h.clamp_(0, 2) if self.clamp else F.relu6(h, inplace=True)

        return self.head(torch.vmap(hidden)(x) if self.vmapped else hidden(x))


class _SwishFunction(torch.autograd.Function):
    """A memory-efficient swish, as efficientnet_pytorch writes it: its sigmoid runs where grad
    mode is off."""

    @staticmethod
    def forward(ctx, i):
        ctx.save_for_backward(i)
        return i * torch.sigmoid(i)

    @staticmethod
    def backward(ctx, grad):
        (i,) = ctx.saved_tensors
        s = torch.sigmoid(i)
        return grad * s * (1 + i * (1 - s))


class _Hidden(nn.Module):
    def __init__(self, how: str):
        super().__init__()
        self.l0, self.l1, self.how = nn.Linear(8, 8), nn.Linear(8, 3), how

    def forward(self, x):
        h = F.relu(self.l0(x))
        h = _SwishFunction.apply(h) if self.how == "function" else torch.vmap(F.gelu)(h)
        return self.l1(h)


def test_a_third_review_s_cases():
    """Found by a third review: an in-place ReLU6 or clamp under vmap was refused (the rule saved
    the input the write then changed), and a nonlinearity in an autograd Function's forward or
    under vmap, where grad mode or ``requires_grad`` cannot be read, went uncounted."""
    torch.manual_seed(0)
    x = torch.randn(4, 12)
    for clamp in (False, True):
        model = _VmappedBounded(True, clamp).eval()
        written_out = copy.deepcopy(model)
        written_out.vmapped = False
        for explainer in (GuidedBackprop, Deconvnet):
            torch.testing.assert_close(explainer(model)(x, target=1).maps, explainer(written_out)(x, target=1).maps)
    for how, kind in (("function", "Sigmoid"), ("vmap", "GELU")):
        with pytest.raises(UncoveredNonlinearityError, match=f"1 {kind}"):
            GuidedBackprop(_Hidden(how).eval())(torch.randn(2, 8), target=1)


@pytest.mark.parametrize(
    ("op", "kind"),
    [
        (torch.special.expit, "Sigmoid"),
        (torch.Tensor.erf, "erf"),
        (lambda h: h.clone().erf_(), "erf"),
        (torch.special.erfc, "erfc"),
        (lambda h: h.clone().erfc_(), "erfc"),
        (torch.special.ndtr, "ndtr"),
        (lambda h: torch.erfinv(h.tanh() * 0.5), "erfinv"),
        (lambda h: F.threshold(h, 0.1, 0.0), "Threshold"),
        (lambda h: torch.threshold_(h.clone(), 0.1, 0.0), "Threshold"),
    ],
)
def test_other_spellings_of_a_nonlinearity_are_refused(op, kind):
    """A sigmoid spelt ``torch.special.expit``, an erf spelt as a method, a threshold: each
    passes its plain gradient under the rule, so strict mode names it."""
    model = _Spelt(op).eval()
    with pytest.raises(UncoveredNonlinearityError, match=f"1 {kind}"):
        GuidedBackprop(model)(torch.randn(2, 8), target=1)
    assert GuidedBackprop(model, strict=False)(torch.randn(2, 8), target=1).maps.shape == (2, 1, 8)


class _Spelt(nn.Module):
    def __init__(self, op):
        super().__init__()
        self.l0, self.l1, self.op = nn.Linear(8, 8), nn.Linear(8, 3), op

    def forward(self, x):
        return self.l1(self.op(F.relu(self.l0(x))))


def test_the_public_mode_works_without_grad():
    """``ReLURuleMode`` numbers its forward's autograd nodes whatever the caller's grad mode:
    entered under ``no_grad`` or ``inference_mode`` it still counts the ReLUs that ran."""
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2)).eval()
    for context in (torch.no_grad, torch.inference_mode):
        with context(), ReLURuleMode(GuidedBackprop.rule) as mode:
            model(torch.randn(3, 4))
        assert mode.count == 1 and mode.marks.start is not None and mode.marks.end is not None
