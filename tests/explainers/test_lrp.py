"""LRP: every rule against its formula written out as matrix products, relevance conservation
over random networks, and zennit 0.5 as the oracle (with two of its problems shown)."""

import copy
import weakref

import pytest
import torch
import torch.nn.functional as F
import torchvision
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import interpkit
from interpkit import LRP
from interpkit.explainers import AlphaBeta, Composite, Epsilon, Flat, Gamma, LayerRule, WSquare, ZBox, ZPlus
from interpkit.testing import check_explainer

zennit = pytest.importorskip("zennit", reason="zennit is in interpkit's [test] extra")
from zennit.attribution import Gradient  # noqa: E402
from zennit.canonizers import SequentialMergeBatchNorm  # noqa: E402
from zennit.composites import EpsilonAlpha2Beta1, EpsilonGammaBox, EpsilonPlus, EpsilonPlusFlat  # noqa: E402
from zennit.torchvision import ResNetCanonizer, VGGCanonizer  # noqa: E402


def test_conformance():
    check_explainer(LRP)


def _stab(z, eps=1e-6):
    return z + ((z == 0).to(z) + z.sign()) * eps  # zennit's form


def _matrix_formula(rule, x, W, b, r):
    """The input relevance of one linear layer z = x W^T + b under ``rule``, by hand."""
    xp, xn, Wp, Wn = x.clamp(min=0), x.clamp(max=0), W.clamp(min=0), W.clamp(max=0)
    bp, bn = b.clamp(min=0), b.clamp(max=0)
    if isinstance(rule, Epsilon):
        return x * ((r / _stab(x @ W.T + b, rule.epsilon)) @ W)
    if isinstance(rule, ZPlus):
        g = r / _stab(xp @ Wp.T + bp + xn @ Wn.T)
        return xp * (g @ Wp) + xn * (g @ Wn)
    if isinstance(rule, AlphaBeta):
        gp, gn = r / _stab(xp @ Wp.T + bp + xn @ Wn.T), r / _stab(xp @ Wn.T + bn + xn @ Wp.T)
        return rule.alpha * (xp * (gp @ Wp) + xn * (gp @ Wn)) - rule.beta * (xp * (gn @ Wn) + xn * (gn @ Wp))
    if isinstance(rule, Gamma):
        up, down = W + rule.gamma * Wp, W + rule.gamma * Wn
        z = x @ W.T + b
        gp = (z > 0) * r / _stab(xp @ up.T + b + rule.gamma * bp + xn @ down.T)
        gn = (z < 0) * r / _stab(xp @ down.T + b + rule.gamma * bn + xn @ up.T)
        return xp * (gp @ up) + xn * (gp @ down) + xp * (gn @ down) + xn * (gn @ up)
    if isinstance(rule, Flat):
        ones = torch.ones_like(W)
        return (r / _stab(torch.ones_like(x) @ ones.T)) @ ones
    if isinstance(rule, WSquare):
        return (r / _stab(torch.ones_like(x) @ (W ** 2).T + b ** 2)) @ W ** 2
    assert isinstance(rule, ZBox)
    low, high = torch.full_like(x, rule.low), torch.full_like(x, rule.high)
    g = r / _stab(x @ W.T + b - (low @ Wp.T + bp) - (high @ Wn.T + bn))
    return x * (g @ W) - low * (g @ Wp) - high * (g @ Wn)


@pytest.mark.parametrize("rule", [Epsilon(), Epsilon(epsilon=0.5), ZPlus(), AlphaBeta(), AlphaBeta(alpha=1.0, beta=0.0),
                                  Gamma(), Gamma(gamma=1.0), Flat(), WSquare(), ZBox(low=-2.0, high=2.0)])
def test_each_rule_is_its_formula_on_a_linear_layer(rule):
    torch.manual_seed(0)
    layer = nn.Linear(6, 4).double()
    x = torch.randn(3, 6, dtype=torch.float64)
    mine = LRP(layer, Composite(convolution=rule, linear=rule))(x, target=[0, 2, 3]).maps[:, 0].double()
    with torch.no_grad():
        z = layer(x)
    r = torch.zeros_like(z)
    r[[0, 1, 2], [0, 2, 3]] = z[[0, 1, 2], [0, 2, 3]]  # relevance at the output: the target's score
    expected = _matrix_formula(rule, x, layer.weight.detach(), layer.bias.detach(), r)
    torch.testing.assert_close(mine, expected.float().double(), rtol=1e-5, atol=1e-7)


class _Net(nn.Module):
    """Bias-free convolutions and linear layers with ReLUs, max and average pooling and a residual
    sum written in ``forward`` (no module for it): relevance must be conserved (by the composites'
    rules: the flat rule in a middle layer spreads relevance onto positions where both summands
    of a residual sum are 0, which the sum's rule gives none)."""

    def __init__(self, kinds):
        super().__init__()
        self.kinds = kinds
        self.convs = nn.ModuleList(nn.Conv2d(3 if i == 0 else 4, 4, 3, padding=1, bias=False) for i in range(len(kinds)))
        self.head = nn.Linear(4, 3, bias=False)

    def forward(self, x):
        for conv, kind in zip(self.convs, self.kinds):
            y = F.relu(conv(x))
            x = y + x if kind == "residual" and x.shape == y.shape else F.max_pool2d(y, 2) if kind == "maxpool" else y
        return self.head(F.adaptive_avg_pool2d(x, 1).flatten(1))


@settings(max_examples=20, deadline=None)
@given(kinds=st.lists(st.sampled_from(["plain", "residual", "maxpool"]), min_size=1, max_size=4),
       composite=st.sampled_from(["epsilon_plus", "epsilon_plus_flat", "gamma", "gamma_box"]),
       seed=st.integers(0, 2**16))
def test_relevance_is_conserved_on_bias_free_networks(kinds, composite, seed):
    torch.manual_seed(seed)
    model = _Net(kinds).eval().double()
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    chosen = {"gamma": Composite(Gamma(), Epsilon()),
              "gamma_box": Composite(Gamma(), Epsilon(), ZBox(low=-5.0, high=5.0), True)}.get(composite, composite)
    relevance = LRP(model, chosen)(x, target="all")
    with torch.no_grad():
        scores = model(x)
    totals = relevance.maps.flatten(2).sum(-1).double()
    assert (totals - scores).abs().max() < 1e-4 * max(1.0, scores.abs().max())


def _zennit(model, x, targets, composite):
    with Gradient(model=model, composite=composite) as attributor:
        _, relevance = attributor(x, lambda out: out * F.one_hot(torch.as_tensor(targets), out.shape[1]).to(out))
    return relevance


def _random_batch_norms(model):
    """Batch norms with statistics away from the identity; eps 0, see the test below."""
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.2, 0.2)
            module.eps = 0.0
    return model


@pytest.mark.slow
@pytest.mark.parametrize("build, canonizers, composites", [
    (torchvision.models.vgg16, [], ["epsilon_plus_flat", "epsilon_gamma_box"]),
    (torchvision.models.vgg16_bn, [VGGCanonizer()], ["epsilon_plus_flat", "epsilon_alpha2_beta1"]),
    (torchvision.models.resnet50, [ResNetCanonizer()], ["epsilon_plus_flat", "epsilon_gamma_box", "epsilon_plus"]),
])
def test_lrp_equals_zennit(build, canonizers, composites):
    """zennit's canonizers fold the batch norms and turn ResNet's residual ``+=`` into a summing
    module; interpkit does both at the op level, for any model, with nothing written to it."""
    torch.manual_seed(0)
    model = _random_batch_norms(build(num_classes=5).eval().double())
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    theirs_of = {"epsilon_plus_flat": EpsilonPlusFlat, "epsilon_gamma_box": lambda **k: EpsilonGammaBox(-3.0, 3.0, **k),
                 "epsilon_alpha2_beta1": EpsilonAlpha2Beta1, "epsilon_plus": EpsilonPlus}
    for name in composites:
        options = {"low": -3.0, "high": 3.0} if name == "epsilon_gamma_box" else {}
        mine = LRP(model, name, **options)(x, target="all").maps.double()
        for k in range(5):
            theirs = _zennit(model, x, [k, k], theirs_of[name](canonizers=canonizers))
            assert (mine[:, k] - theirs).abs().max() / theirs.abs().max() < 1e-5, (name, k)
        one = LRP(model, name, **options)(x, target=[1, 4]).maps[:, 0].double()
        torch.testing.assert_close(one, mine[[0, 1], [1, 4]], rtol=1e-6, atol=1e-12)


def test_zennits_batch_norm_merge_changes_the_model():
    """zennit's merge leaves each batch norm with variance 1 and its eps, so the canonized model
    divides by sqrt(1 + eps) at every batch norm: its relevance is that of another function.
    interpkit folds the batch norm exactly (nothing is written to the model)."""
    torch.manual_seed(0)
    layers = []
    for i in range(4):
        layers += [nn.Conv2d(3 if i == 0 else 8, 8, 3, padding=1), nn.BatchNorm2d(8, eps=1e-3), nn.ReLU()]
    model = _random_batch_norms(nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3)).eval().double())
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.eps = 1e-3
    x = torch.randn(1, 3, 16, 16, dtype=torch.float64)
    with torch.no_grad():
        before = model(x)
        with EpsilonPlusFlat(canonizers=[SequentialMergeBatchNorm()]).context(model) as canonized:
            during = canonized(x)
    assert (during - before).abs().max() / before.abs().max() > 1e-4
    mine = LRP(model, "epsilon_plus_flat")(x, target=0).maps[:, 0].double()
    theirs = _zennit(model, x, [0], EpsilonPlusFlat(canonizers=[SequentialMergeBatchNorm()]))
    assert (mine - theirs).abs().max() / theirs.abs().max() > 1e-4
    for module in model.modules():  # with eps 0 the merge is exact, and the two agree
        if isinstance(module, nn.BatchNorm2d):
            module.eps = 0.0
    mine = LRP(model, "epsilon_plus_flat")(x, target=0).maps[:, 0].double()
    theirs = _zennit(model, x, [0], EpsilonPlusFlat(canonizers=[SequentialMergeBatchNorm()]))
    assert (mine - theirs).abs().max() / theirs.abs().max() < 1e-5


def test_zennit_without_its_resnet_canonizer_doubles_relevance_at_residual_sums():
    """A residual sum written as ``out += identity`` gets the gradient in zennit unless its ResNet
    canonizer rewrites the block (zennit #236): both branches receive the whole relevance. A
    custom residual model has no canonizer; interpkit splits every sum of two input-dependent
    tensors by contribution."""
    torch.manual_seed(0)
    model = _Net(["plain", "residual", "residual", "residual"]).eval().double()
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    with torch.no_grad():
        scores = model(x)[:, 1]
    theirs = _zennit(model, x, [1, 1], EpsilonPlus()).flatten(1).sum(1)
    mine = LRP(model, "epsilon_plus")(x, target=1).maps.flatten(1).sum(1).double()
    assert (mine - scores).abs().max() < 1e-4 * scores.abs().max()
    assert ((theirs - scores).abs() / scores.abs()).max() > 0.5


def test_lrp_on_1d_and_3d_models_conserves_relevance_and_k_targets_equal_one_at_a_time():
    for conv, pool in ((nn.Conv1d, nn.MaxPool1d), (nn.Conv3d, nn.MaxPool3d)):
        torch.manual_seed(0)
        model = nn.Sequential(conv(2, 4, 3, padding=1, bias=False), nn.ReLU(), pool(2), conv(4, 4, 3, padding=1, bias=False),
                              nn.ReLU(), nn.Flatten(), nn.LazyLinear(3, bias=False)).double()
        x = torch.randn(2, 2, *((16,) if conv is nn.Conv1d else (4, 8, 8)), dtype=torch.float64)
        model(x)
        model.eval()
        together = LRP(model, "epsilon_plus")(x, target="all")
        with torch.no_grad():
            scores = model(x)
        assert (together.maps.flatten(2).sum(-1).double() - scores).abs().max() < 1e-4 * scores.abs().max()
        alone = LRP(model, "epsilon_plus")(x, target=2).maps[:, 0]
        torch.testing.assert_close(together.maps[:, 2], alone)


class _Compressed(nn.Module):
    """``log(1 + relu(x))``: a nonlinearity no rule covers."""

    def forward(self, x):
        return torch.log1p(x.relu())


def test_lrp_refuses_what_no_rule_covers_and_bad_options():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), _Compressed(), nn.Flatten(), nn.LazyLinear(3)).eval()
    x = torch.randn(2, 3, 8, 8)
    model(x)
    with pytest.raises(interpkit.UncoveredNonlinearityError, match="log1p"):
        LRP(model)(x, target=1)
    assert torch.isfinite(LRP(model, strict=False)(x, target=1).maps).all()
    vgg = torchvision.models.vgg11(num_classes=3).eval()
    for make in (lambda: LRP(vgg, "epsilon_gamma_box"), lambda: LRP(vgg, "no_such"), lambda: LRP(vgg, epsilon=-1.0),
                 lambda: LRP(vgg, strict="yes"), lambda: AlphaBeta(alpha=2.0, beta=2.0), lambda: Gamma(gamma=-1.0)):
        with pytest.raises(interpkit.InputError):
            make()


class _PostAdd(nn.Module):
    """A residual sum written in place, then a batch norm of the sum (not of the convolution)."""

    def __init__(self, in_place):
        super().__init__()
        torch.manual_seed(0)
        self.in_place = in_place
        self.c0, self.c1 = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1)
        self.norm, self.fc = nn.BatchNorm2d(4), nn.Linear(4 * 8 * 8, 2)

    def forward(self, x):
        identity = torch.relu(self.c0(x))
        out = self.c1(identity)
        if self.in_place:
            out += identity
        else:
            out = out + identity
        return self.fc(torch.relu(self.norm(out)).flatten(1))


def test_facts_about_a_tensor_die_with_an_in_place_write_to_it():
    """A batch norm after ``out += identity`` reads the sum, not the convolution's output (no
    fold), and a ReLU's output shifted in place is no longer known non-negative: written in
    place or not, the model gets the same relevance."""
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    pair = [_random_batch_norms(_PostAdd(in_place).eval().double()) for in_place in (True, False)]
    pair[1].load_state_dict(pair[0].state_dict())
    maps = [LRP(m, "epsilon_plus")(x, target=0).maps for m in pair]
    torch.testing.assert_close(maps[0], maps[1])

    class Shifted(nn.Module):
        def __init__(self, in_place):
            super().__init__()
            torch.manual_seed(0)
            self.in_place = in_place
            self.c0, self.c1 = nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.Conv2d(4, 4, 3, padding=1, bias=False)

        def forward(self, x):
            h = torch.relu(self.c0(x))
            if self.in_place:
                h -= 0.5
            else:
                h = h - 0.5
            return torch.relu(self.c1(h)).mean((2, 3))

    maps = [LRP(Shifted(in_place).eval().double(), "epsilon_plus")(x, target=0).maps for in_place in (True, False)]
    torch.testing.assert_close(maps[0], maps[1])


def test_a_batch_norm_folds_only_into_a_layer_it_alone_reads_and_along_the_layers_channels():
    class TwoReaders(nn.Module):
        def __init__(self, side):
            super().__init__()
            torch.manual_seed(0)
            self.side = side
            self.lin, self.norm, self.head = nn.Linear(6, 6, bias=False), nn.BatchNorm1d(6), nn.Linear(6, 2, bias=False)

        def forward(self, x):
            y = self.lin(x)
            out = self.head(torch.relu(y))
            return out + 0.0 * self.norm(y).sum(1, keepdim=True) if self.side else out

    x = torch.randn(3, 6, dtype=torch.float64)
    models = [TwoReaders(side).eval().double() for side in (True, False)]
    models[0].norm.running_var.uniform_(0.5, 2.0)
    models[0].norm.running_mean.uniform_(-1.0, 1.0)  # a shift: folding would change the epsilon rule's denominators
    models[1].load_state_dict(models[0].state_dict())
    with_side, without = (LRP(m, "epsilon_plus")(x, target=0).maps.double() for m in models)
    assert (with_side - without).abs().max() < 1e-4 * without.abs().max()  # the dead branch changes nothing

    class TokensThenNorm(nn.Module):  # a linear layer on (N, L, D), a batch norm over L: no fold
        def __init__(self):
            super().__init__()
            self.lin, self.norm, self.fc = nn.Linear(5, 5), nn.BatchNorm1d(3), nn.Linear(15, 2)

        def forward(self, x):
            return self.fc(torch.relu(self.norm(self.lin(x))).flatten(1))

    tokens = TokensThenNorm().eval()
    tokens.norm.running_var.uniform_(0.5, 2.0)
    assert torch.isfinite(LRP(tokens, Composite(ZPlus(), ZPlus()))(torch.randn(2, 3, 5), target=0).maps).all()


def test_a_grouped_transposed_convolution_folds_its_batch_norm_by_group():
    torch.manual_seed(0)
    model = nn.Sequential(nn.ConvTranspose2d(4, 6, 3, groups=2), nn.BatchNorm2d(6), nn.ReLU(), nn.Flatten(),
                          nn.Linear(600, 2)).eval().double()
    _random_batch_norms(model)
    merged = nn.Sequential(nn.ConvTranspose2d(4, 6, 3, groups=2), nn.Identity(), nn.ReLU(), nn.Flatten(),
                           nn.Linear(600, 2)).eval().double()
    merged.load_state_dict(model.state_dict(), strict=False)
    norm = model[1]
    scale = norm.weight / (norm.running_var + norm.eps).sqrt()
    merged[0].weight.data = (model[0].weight.view(2, 2, 3, 3, 3) * scale.view(2, 1, 3, 1, 1)).reshape(4, 3, 3, 3)
    merged[0].bias.data = (model[0].bias - norm.running_mean) * scale + norm.bias
    x = torch.randn(2, 4, 8, 8, dtype=torch.float64)
    torch.testing.assert_close(LRP(model, "epsilon_plus")(x, target=0).maps, LRP(merged, "epsilon_plus")(x, target=0).maps)


@pytest.mark.parametrize("op", [lambda h, b: h / 0.5, lambda h, b: h * 0.5, lambda h, b: torch.stack([h, b]).sum(0),
                                lambda h, b: torch.add(h, b, alpha=1), lambda h, b: h - 0.5 * b, lambda h, b: h.cumsum(2)])
def test_linear_ops_that_combine_values_conserve_relevance(op):
    """zennit gives a functional linear op its gradient, so ``x / 0.5`` doubles relevance and a
    difference cancels it; interpkit gives every op that combines values the Norm rule."""

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.c0, self.c1 = nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.Conv2d(4, 4, 3, padding=1, bias=False)
            self.fc = nn.Linear(4, 2, bias=False)

        def forward(self, x):
            h = torch.relu(self.c0(x))
            return self.fc(op(h, torch.relu(self.c1(h))).mean((2, 3)))

    model = Net().eval().double()
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    total = LRP(model, "epsilon_plus")(x, target=0).maps.double().flatten(1).sum(1)
    with torch.no_grad():
        scores = model(x)[:, 0]
    assert (total / scores - 1).abs().max() < 1e-3


def test_lrp_under_no_grad_and_bad_bounds_and_composites():
    vgg = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(144, 2)).eval()
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        assert torch.isfinite(LRP(vgg)(x, target=0).maps).all()
    for low, high in ((torch.zeros(5), torch.ones(5)), ("a", 1.0), (float("nan"), 1.0), (2.0, 1.0), ([0.0], [1.0])):
        with pytest.raises(interpkit.InputError):
            LRP(vgg, "epsilon_gamma_box", low=low, high=high)(x, target=0)
    per_channel = LRP(vgg, "epsilon_gamma_box", low=torch.full((1, 3, 1, 1), -3.0), high=torch.full((1, 3, 1, 1), 3.0))
    assert torch.isfinite(per_channel(x, target=0).maps).all()
    for make in (lambda: LRP(vgg, composite=[]), lambda: Composite(linear=None), lambda: Epsilon(epsilon=-1.0),
                 lambda: ZPlus(stabilizer=float("nan"))):
        with pytest.raises(interpkit.InputError):
            make()
    assert AlphaBeta(alpha=2.2, beta=1.2).alpha == 2.2  # alpha - beta = 1 up to rounding


def test_second_review_regressions():
    """The default target, a Neuron at a position, a detached side value, shape queries between a
    convolution and its batch norm, a normalisation inside the model, a weight cast with ``.to``
    and an ``out=`` (a second adversarial review found each broken or refused by the first fixes)."""
    from interpkit import DeepLift, Neuron

    torch.manual_seed(0)

    class Net(nn.Module):
        def __init__(self, inside):
            super().__init__()
            self.inside = inside
            self.conv, self.norm = nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4)
            self.fc = nn.Linear(4, 3)
            self.register_buffer("mean", torch.tensor([0.4, 0.5, 0.6]).view(1, 3, 1, 1))
            self.seen = []

        def forward(self, x):
            if self.inside:
                x = (x - self.mean) / 0.25  # a normalisation written in forward
            y = self.conv(x)
            n, c, h, w = y.shape  # a shape query between the layer and its batch norm
            self.seen.append(y.detach().mean())  # a detached side value that reaches no output
            h = torch.relu(self.norm(y))
            return F.linear(h.mean((2, 3)), self.fc.weight.to(h), self.fc.bias)

    inside = _random_batch_norms(Net(True).eval().double())
    outside = Net(False).eval().double()
    outside.load_state_dict(inside.state_dict())
    x = torch.rand(2, 3, 8, 8, dtype=torch.float64)
    normalised = (x - inside.mean) / 0.25
    a, b = LRP(inside)(x).maps, LRP(outside)(normalised).maps  # default target: the top class
    torch.testing.assert_close(a, b)  # the normalisation passes relevance through unchanged
    assert LRP(inside)(x).targets.tolist() == LRP(inside)(x, target=None).targets.tolist()
    explained = DeepLift(outside)(normalised, target=Neuron("conv", 1, 2, 2)).maps
    assert torch.isfinite(explained).all()
    with pytest.raises(interpkit.UncoveredNonlinearityError, match="out="):
        DeepLift(_Out().eval())(torch.randn(2, 6), target=0)

    class WritesAfter(nn.Module):
        def __init__(self):
            super().__init__()
            self.c0, self.c1 = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 2, 3, padding=1)

        def forward(self, x):
            h = self.c0(x)
            y = self.c1(h)
            h.relu_()  # writes into the input the layer read
            return (y.mean((2, 3)) + h.mean((2, 3))[:, :2])

    with pytest.raises(interpkit.InputError, match="in place"):
        LRP(WritesAfter().eval(), "epsilon_plus")(torch.randn(2, 3, 8, 8), target=0)


class _Out(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(6, 3)

    def forward(self, x):
        buffer = torch.zeros(len(x), 3)
        torch.clamp(self.linear(x), 0, out=buffer)
        return buffer


@pytest.mark.parametrize("composite", [
    "epsilon_plus_flat", "epsilon_alpha2_beta1",
    Composite(convolution=Gamma(gamma=0.5), linear=AlphaBeta(alpha=1.5, beta=0.5), first=WSquare()),
    Composite(convolution=ZPlus(), linear=Epsilon(epsilon=0.1), first=ZBox(low=-3.0, high=3.0)),
    Composite(convolution=Flat(), linear=Gamma(), first=Flat())])
def test_every_rule_gives_each_target_of_a_batched_call_what_it_gives_alone(composite, monkeypatch):
    """A layer's modified terms are made at the first target's backward and kept for the others:
    keeping anything that depends on the relevance would show here. A one-element budget makes
    each target its own backward, so what the first one kept is reused."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Conv2d(6, 6, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(6 * 16, 8), nn.ReLU(),
                          nn.Linear(8, 5)).double()
    with torch.no_grad():
        model[1].running_mean.normal_()
        model[1].weight.normal_()
    model.eval()
    x = torch.randn(3, 3, 8, 8, dtype=torch.float64)
    together = LRP(model, composite)(x, target="all").maps
    monkeypatch.setattr(interpkit.core.gradients, "MAX_BATCHED_ELEMENTS", 1)
    one_by_one = LRP(model, composite)(x, target="all").maps
    for k in range(5):
        alone = LRP(model, composite)(x, target=k).maps[:, 0]
        torch.testing.assert_close(together[:, k], alone)
        torch.testing.assert_close(one_by_one[:, k], alone)


def test_kept_terms_are_per_rule_setting_per_call_and_only_for_several_targets():
    """A user's rule may combine built-in rules of other settings, or apply one to a replaced
    layer (other weights): each gets its own terms. One target keeps none (memory)."""
    import dataclasses

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 3)).double().eval()
    flipped = nn.Sequential(nn.Linear(6, 3)).double().eval()
    with torch.no_grad():
        flipped[0].weight.copy_(-model[0].weight)
        flipped[0].bias.copy_(model[0].bias)
    x = torch.randn(4, 6, dtype=torch.float64)
    seen = []

    @dataclasses.dataclass(frozen=True)
    class Mixed(LayerRule):
        def relevance(self, layer, relevance):
            seen.append(layer.memo)
            other = dataclasses.replace(layer, weight=-layer.weight)
            return (Gamma(gamma=0.1).relevance(layer, relevance) + Gamma(gamma=2.0).relevance(layer, relevance)
                    + ZPlus().relevance(layer, relevance) + ZPlus().relevance(other, relevance)) / 4

    def alone(net, rule, target):
        """The rule alone, for relevance starting at ``model``'s scores (the rules are linear in it)."""
        maps = LRP(net, Composite(linear=rule, first=rule))(x, target=target).maps
        with torch.no_grad():
            ratio = (model(x) / net(x))[:, [1] if target == 1 else slice(None)]
        return maps * ratio.unsqueeze(-1).float()

    for target in (1, "all"):
        seen.clear()
        mixed = LRP(model, Composite(linear=Mixed(), first=Mixed()))(x, target=target).maps
        expected = (alone(model, Gamma(gamma=0.1), target) + alone(model, Gamma(gamma=2.0), target)
                    + alone(model, ZPlus(), target) + alone(flipped, ZPlus(), target)) / 4
        torch.testing.assert_close(mixed, expected)
        assert all(memo is None for memo in seen) if target == 1 else all(isinstance(m, dict) for m in seen)


def _conv_bn_net():
    """Two convolutions each followed by a batch norm with running statistics of its own."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 6, 3), nn.BatchNorm2d(6, eps=0.0), nn.ReLU(), nn.Conv2d(6, 6, 3),
                          nn.BatchNorm2d(6, eps=0.0), nn.ReLU(), nn.Flatten(), nn.Linear(6 * 8 * 8, 3))
    for norm in (model[1], model[4]):
        with torch.no_grad():
            norm.running_mean.uniform_(-0.5, 0.5)
            norm.running_var.uniform_(0.5, 2.0)
            norm.weight.uniform_(0.5, 1.5)
            norm.bias.uniform_(-0.2, 0.2)
    return model.eval().double()


def _no_grad_statistic(out, kept):
    with torch.no_grad():
        kept.append(out.abs().mean())


@pytest.mark.parametrize("keep", [lambda out, kept: kept.append(out.detach()), _no_grad_statistic],
                         ids=["detach", "no_grad"])
def test_a_hook_reading_a_layers_output_leaves_its_batch_norm_folded(keep):
    """A forward hook that keeps a detached copy of a convolution's output or a statistic of it
    under no_grad (monitoring) reads nothing the relevance flows through: the batch norm after it
    still folds, as zennit merges it. The statistic under no_grad stopped the fold (maps 6.9% off
    zennit's, silently); a read counts only where it makes a graph. Here for 2 targets at once."""
    model, x = _conv_bn_net(), torch.randn(2, 3, 12, 12, dtype=torch.float64)
    kept = []
    handle = model[3].register_forward_hook(lambda m, i, out: keep(out, kept))
    try:
        mine = LRP(model, "epsilon_plus")(x, target=torch.tensor([[1, 2], [1, 2]])).maps.double()
    finally:
        handle.remove()
    assert kept
    for k, target in enumerate((1, 2)):
        with Gradient(model=copy.deepcopy(model), composite=EpsilonPlus(canonizers=[SequentialMergeBatchNorm()])) as attr:
            _, theirs = attr(x, lambda out: out * F.one_hot(torch.tensor([target, target]), 3).to(out))
        assert (mine[:, k] - theirs).abs().max() / theirs.abs().max() < 1e-5


def test_neuron_targets_on_different_layers_are_each_as_when_alone():
    """A neuron's read of its layer's output keeps the batch norm after that layer unfolded for
    it; a neuron on another layer in the same call gets the fold it gets alone."""
    model, x = _conv_bn_net(), torch.randn(2, 3, 12, 12, dtype=torch.float64)
    neurons = [interpkit.Neuron("3", 1, 2, 3), interpkit.Neuron("4", 2, 0, 0)]
    together = LRP(model, "epsilon_plus")(x, target=neurons)
    for k, neuron in enumerate(neurons):
        alone = LRP(model, "epsilon_plus")(x, target=neuron)
        torch.testing.assert_close(together.maps[:, k], alone.maps[:, 0])
        torch.testing.assert_close(together.scores[:, k], alone.scores[:, 0])



@pytest.mark.parametrize("target", [0, torch.tensor([[0, 1]] * 2)])
def test_a_custom_rule_returning_the_wrong_shape_is_named(target):
    """Before, autograd's raw RuntimeError ("returned an invalid gradient")."""

    class Summed(LayerRule):
        def relevance(self, layer, relevance):
            return relevance.sum()

    model = nn.Sequential(nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 3)).eval()
    with pytest.raises(interpkit.InputError, match="rule Summed returned relevance of shape"):
        LRP(model, Composite(convolution=Summed(), linear=Summed()))(torch.randn(2, 6), target=target)


def test_lrp_0_passes_no_relevance_through_a_unit_whose_contributions_sum_to_zero():
    """With epsilon 0 a unit behind dead ReLUs (z exactly 0) divided 0 by 0: the whole map was NaN,
    as zennit's is. It passes on nothing, and the bias-free network still conserves the score."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3, bias=False), nn.ReLU(), nn.Linear(3, 3, bias=False), nn.ReLU(),
                          nn.Linear(3, 2, bias=False)).double().eval()
    with torch.no_grad():
        model[0].weight[0] = -1.0  # hidden unit 0 dies on positive inputs
        model[0].weight[1:] = model[0].weight[1:].abs()
        model[2].weight.copy_(torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.5], [0.0, 0.5, 1.0]]))  # unit 0 reads only it
        model[4].weight.fill_(1.0)
    x = torch.rand(2, 4, dtype=torch.float64) + 0.1
    for explainer in (LRP(model, Composite(Epsilon(epsilon=0.0), Epsilon(epsilon=0.0))),
                      LRP(model, "epsilon_plus", epsilon=0.0)):
        explanation = explainer(x, target=0)
        assert torch.isfinite(explanation.maps).all()
        torch.testing.assert_close(explanation.maps.double().sum(1).flatten(1).sum(1), explanation.scores[:, 0].double())


def test_a_frozen_batch_norm_with_a_hook_of_the_users_keeps_the_hooks_output():
    """LRP recomputes a frozen batch norm as F.batch_norm, which replaced what a user's forward
    hook on it returned: the explained function was not the model's."""
    from torchvision.ops.misc import FrozenBatchNorm2d

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), FrozenBatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(144, 3)).eval()
    handle = model[1].register_forward_hook(lambda m, i, out: out * 0.5)
    try:
        x = torch.randn(2, 3, 8, 8)
        with torch.no_grad():
            expected = model(x)[:, 1]
        torch.testing.assert_close(LRP(model)(x, target=1).scores[:, 0], expected)
        assert len(model[1]._forward_hooks) == 1 and not model[1]._forward_pre_hooks
    finally:
        handle.remove()


def test_a_frozen_batch_norm_folds_as_a_batch_norm_does():
    """torchvision's FrozenBatchNorm2d (detection backbones, fine-tuning) is an eval batch norm
    written as x * scale + shift: relevance passed through it unfolded, maps 23-48% off the same
    resnet with nn.BatchNorm2d, silently. It is explained as the batch norm it is."""
    from torchvision.ops.misc import FrozenBatchNorm2d

    torch.manual_seed(0)
    plain = torchvision.models.resnet18(num_classes=5).double().eval()
    for module in plain.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
    frozen = torchvision.models.resnet18(num_classes=5, norm_layer=FrozenBatchNorm2d).double().eval()
    frozen.load_state_dict(plain.state_dict(), strict=False)  # no num_batches_tracked in a frozen one
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    for composite in ("epsilon_plus", "epsilon_alpha2_beta1"):
        ours, theirs = (LRP(m, composite)(x, target="all").maps for m in (frozen, plain))
        assert (ours - theirs).abs().max() < 1e-6 * theirs.abs().max()


class _InPlaceResidual(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.c, self.norm, self.c2, self.fc = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), \
            nn.Conv2d(8, 8, 3, padding=1), nn.Linear(8, 3)

    def forward(self, x):
        h = self.norm(self.c(x)).relu()
        out = self.c2(h)
        out += h  # torchvision's residual sum, in place
        pooled = torch.zeros(out.shape)
        pooled += out.mean((2, 3), keepdim=True)  # a sum written into a constant, broadcast
        _WRITTEN.append(weakref.ref(pooled))
        return self.fc(pooled.mean((2, 3)))


_WRITTEN: list = []  # the constants _InPlaceResidual writes into, weakly


def test_a_call_frees_its_graph():
    """LRP kept each call's graph alive through an in-place residual sum (``out += h``: the sum's
    rule kept the written tensor, whose node led back to the rule), 66 MiB per call on a small
    CNN, 79 MiB on resnet18: a cycle through autograd's nodes that no garbage collection frees.
    A sum written into a constant (``acc += h``) kept the constant the same way."""
    import gc

    model = _InPlaceResidual().eval()
    seen = []
    handle = model.c2.register_forward_hook(lambda m, i, out: seen.append(weakref.ref(out)))
    try:
        for explainer in (LRP(model), interpkit.DeepLift(model), interpkit.GuidedBackprop(model)):
            explainer(torch.randn(2, 3, 8, 8), target=1)
            gc.collect()
            assert seen and seen[-1]() is None, type(explainer).__name__
            assert _WRITTEN and _WRITTEN[-1]() is None, type(explainer).__name__
    finally:
        handle.remove()


def test_the_stabiliser_adds_epsilon_with_the_sign_of_z_and_zero_counts_as_positive():
    from interpkit.explainers.lrp import stabilize

    for dtype in (torch.float16, torch.float32, torch.float64):
        tiny = 2.0 ** -20  # a half-precision subnormal
        z = torch.tensor([0.0, -0.0, 1.5, -1.5, tiny, -tiny], dtype=dtype)
        wide = torch.promote_types(dtype, torch.float32)  # half precision would round a small epsilon to 0
        expected = torch.tensor([0.25, 0.25, 1.75, -1.75, 0.25 + tiny, -0.25 - tiny], dtype=torch.float64).to(wide)
        assert torch.equal(stabilize(z, 0.25), expected) and stabilize(z, 0.25).dtype == wide
        assert torch.equal(stabilize(torch.zeros(2, dtype=dtype), 1e-12), torch.full((2,), 1e-12, dtype=wide))
    assert torch.equal(stabilize(torch.tensor([0.0, -0.0, 2.0]), 0.0), torch.tensor([torch.inf, torch.inf, 2.0]))


class _RegionOfInterest(nn.Module):
    """Looks at the right half only: a constant mask zeroes the left half before the first layer."""

    def __init__(self):
        super().__init__()
        self.conv, self.pool, self.fc = nn.Conv2d(3, 8, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Linear(8, 5)
        mask = torch.ones(1, 1, 16, 16)
        mask[..., :8] = 0
        self.register_buffer("mask", mask)

    def forward(self, x):
        return self.fc(self.pool(torch.relu(self.conv(x * self.mask))).flatten(1))


@pytest.mark.parametrize("composite", ["epsilon_plus_flat", "epsilon_gamma_box"])
def test_no_relevance_where_a_constant_factor_is_zero(composite):
    """The product with a constant passed relevance unchanged, also where the constant is 0: the
    first layer's flat or box rule gave 28 % of it to pixels the model never reads."""
    torch.manual_seed(0)
    model, x = _RegionOfInterest().eval(), torch.randn(2, 3, 16, 16)
    options = {"low": -3.0, "high": 3.0} if composite == "epsilon_gamma_box" else {}
    relevance = LRP(model, composite, **options)(x, target=1).maps[:, 0]
    assert relevance[..., :8].abs().max() == 0 and relevance[..., 8:].abs().max() > 0
    peer = {"epsilon_plus_flat": EpsilonPlusFlat(), "epsilon_gamma_box": EpsilonGammaBox(low=-3.0, high=3.0)}
    expected = _zennit(model, x, [1, 1], peer[composite])
    torch.testing.assert_close(relevance, expected, rtol=0, atol=1e-5 * expected.abs().max().item())
    # a nonzero constant factor still passes relevance unchanged (zennit scales it by the factor)
    model.mask.fill_(2.0)
    doubled = LRP(model, composite, **options)(x / 2, target=1).maps[:, 0]
    assert doubled[..., :8].abs().max() > 0


def _convolutions_then_linear() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(4, 5, 3, padding=1),
                         nn.ReLU(inplace=True), nn.Flatten(), nn.Linear(5 * 6 * 6, 3)).eval()


def test_only_a_rule_that_reads_the_output_has_it_copied():
    """A layer's output is copied (an in-place ReLU after it would rewrite it) only for a rule
    that reads it: the epsilon rule's denominators; z+ needs its own terms only."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Clones(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.shapes = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func is torch.ops.aten.clone.default:
                self.shapes.append(tuple(args[0].shape[1:2]))
            return func(*args, **(kwargs or {}))

    torch.manual_seed(0)
    model, x = _convolutions_then_linear(), torch.randn(2, 3, 6, 6)
    for composite, copied in (("epsilon_plus", 0), ("epsilon", 2)):
        with Clones() as clones:
            LRP(model, composite)(x, target=1)
        assert clones.shapes.count((4,)) + clones.shapes.count((5,)) == copied, composite


def test_a_rule_that_reads_an_uncopied_output_gets_it_made_again():
    """``reads_output = False`` is a promise a subclass may break: it then reads z made again,
    not the output an in-place shift wrote, and its maps are the copying rule's."""
    import dataclasses

    @dataclasses.dataclass(frozen=True)
    class Uncopied(Epsilon):
        reads_output = False

    class Shifted(nn.Module):
        def forward(self, h):
            return h.add_(0.5)

    torch.manual_seed(0)
    model = _convolutions_then_linear().double()
    model.insert(1, Shifted())
    x = torch.randn(4, 3, 6, 6, dtype=torch.float64)
    expected = LRP(model, Composite(convolution=Epsilon(), first=Epsilon()))(x, target="all").maps
    found = LRP(model, Composite(convolution=Uncopied(), first=Uncopied()))(x, target="all").maps
    torch.testing.assert_close(found, expected, rtol=0, atol=0)
