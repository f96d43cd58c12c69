"""LRP through normalisations (AttnLRP's rule: the statistic of scale held constant): torch's
group and instance norms and ``F.normalize`` against gradient times input with the statistic
detached (how the authors' LXT computes it), norms written out by hand (Llama's, Gemma's and T5's
RMS norms, centred layer norms, a division by a norm) against torch's own, a whole HuggingFace
Llama with its written-out RMS norms against the same model with ``F.rms_norm``, and what stays
refused: a statistic used otherwise than to divide by it, or a root of something else."""

import copy

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from interpkit import LRP, DeepLift
from interpkit.errors import InputError, UncoveredNonlinearityError

EXACT = dict(epsilon=1e-12, stabilizer=1e-12)  # the epsilon rule at its limit: gradient times input
# maps are float32 whatever the model's dtype: equal within float32 rounding, relative to the largest relevance
CLOSE = 1e-6
EPS = 1e-5


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


def _targets(n: int) -> torch.Tensor:
    return torch.tensor([[1, 2]] * n)


class Tokens(nn.Module):
    """Linear, a norm given as ``norm(module, h)``, an activation, linear, a mean over the tokens."""

    def __init__(self, norm, width: int = 16, activation=F.gelu) -> None:
        super().__init__()
        self.first, self.last = nn.Linear(width, width), nn.Linear(width, 5)
        self.weight = nn.Parameter(torch.rand(width) + 0.5)
        self.norm, self.activation = norm, activation

    def forward(self, x):
        return self.last(self.activation(self.norm(self, self.first(x)))).mean(1)


def _rms(h, dtype=torch.float32):  # Llama, Mistral, Qwen2: the statistic in float32
    variance = h.to(dtype).pow(2).mean(-1, keepdim=True)
    return (h.to(dtype) * torch.rsqrt(variance + EPS)).to(h.dtype)


RMS_NORMS = {
    "llama": lambda m, h: m.weight * _rms(h, h.dtype),
    "gemma": lambda m, h: h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + EPS) * (1.0 + (m.weight - 1.0)),
    "t5": lambda m, h: m.weight * (h * torch.rsqrt(h.to(h.dtype).pow(2).mean(-1, keepdim=True) + EPS)),
    "sqrt, divided": lambda m, h: h / torch.sqrt((h * h).mean(-1, keepdim=True) + EPS) * m.weight,
    "power -1/2": lambda m, h: h * h.square().mean(dim=-1, keepdim=True).add(EPS).pow(-0.5) * m.weight,
    "reciprocal of the root": lambda m, h: h * (h.pow(2).mean(-1, keepdim=True) + EPS).sqrt().reciprocal() * m.weight,
    "in place": lambda m, h: h.clone().mul_(torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + EPS)) * m.weight,
    "eps added in place": lambda m, h: (lambda v: h * v.add_(EPS).rsqrt() * m.weight)(h.pow(2).mean(-1, keepdim=True)),
    "without keepdim": lambda m, h: h * (h.pow(2).mean(-1) + EPS).pow(-0.5).unsqueeze(-1) * m.weight,
    "detached (LXT)": lambda m, h: h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + EPS).detach() * m.weight,
    "under no_grad": lambda m, h: h * _no_grad_inverse_rms(h) * m.weight,
    "weight folded in": lambda m, h: h * (m.weight / torch.sqrt(h.pow(2).mean(-1, keepdim=True) + EPS)),
    "one over the root": lambda m, h: h * (1 / (h.pow(2).mean(-1, keepdim=True) + EPS).sqrt()) * m.weight,
    "squares moved": lambda m, h: h * torch.rsqrt(h.pow(2).double().view(*h.shape).mean(-1, keepdim=True) + EPS)
    * m.weight,
    "rsqrt_ under no_grad": lambda m, h: h * _no_grad_rsqrt_(h) * m.weight,
    "a copy, its base written after": lambda m, h: (lambda t: (h.add_(3.0), t * _inverse_rms(t) * m.weight)[1])(
        h.clone()),
    "moment converted like h": lambda m, h: h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True).type_as(h) + EPS)
    * m.weight,
    "clamped moment, axis=": lambda m, h: h * h.pow(2).mean(axis=-1, keepdim=True).clamp_min(EPS).rsqrt() * m.weight,
    "other=, divide": lambda m, h: torch.mul(h.divide((h.pow(2).mean(-1, keepdim=True) + EPS).sqrt()), other=m.weight),
    "power -1 of the root": lambda m, h: h * (h.pow(2).mean(-1, keepdim=True) + EPS).sqrt() ** -1 * m.weight,
    "of h halved": lambda m, h: h * torch.rsqrt((h / 2).pow(2).mean(-1, keepdim=True) + EPS / 4) * m.weight / 2,
    "of h indexed whole": lambda m, h: h * torch.rsqrt(h[..., :].pow(2).mean(-1, keepdim=True) + EPS) * m.weight,
}


def _no_grad_rsqrt_(h):
    with torch.no_grad():
        v = h.pow(2).mean(-1, keepdim=True) + EPS
        v.rsqrt_()  # the variable, written in place, is the statistic
    return v


def _no_grad_inverse_rms(h):
    with torch.no_grad():
        return torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + EPS)


def _centred(h):
    return h - h.mean(-1, keepdim=True)


LAYER_NORMS = {  # without a bias: a constant added passes relevance, where torch's layer norm keeps a share
    "squares": lambda m, h: _centred(h) / torch.sqrt(_centred(h).pow(2).mean(-1, keepdim=True) + EPS) * m.weight,
    "var": lambda m, h: _centred(h) * torch.rsqrt(h.var(-1, unbiased=False, keepdim=True) + EPS) * m.weight,
    "var_mean": lambda m, h: (lambda v, u: (h - u) / (v + EPS).sqrt() * m.weight)(
        *torch.var_mean(h, -1, unbiased=False, keepdim=True)),
    "std, eps 0": lambda m, h: _centred(h) / h.std(-1, unbiased=False, keepdim=True) * m.weight,
    "var_mean, axis=": lambda m, h: (lambda v, u: (h - u) / (v + EPS).sqrt() * m.weight)(
        *torch.var_mean(h, axis=-1, unbiased=False, keepdim=True)),
    "std_mean, eps 0": lambda m, h: (lambda d, u: (h - u) / d.clamp_min(1e-30) * m.weight)(
        *torch.std_mean(h, dim=-1, correction=0, keepdim=True)),
}


def _maps(norm, reference, x, **options) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = Tokens(norm).double().eval()
    theirs = copy.deepcopy(model)
    theirs.norm = reference
    explain = dict(EXACT, **options)
    return (LRP(model, "epsilon", **explain)(x, target=_targets(len(x))).maps,
            LRP(theirs, "epsilon", **explain)(x, target=_targets(len(x))).maps)


@pytest.mark.parametrize("name", RMS_NORMS)
def test_rms_norms_written_out_equal_torchs(name):
    x = torch.randn(3, 4, 16, dtype=torch.float64)
    eps = 0.0 if name.startswith("clamped") else EPS  # a clamp of the mean of squares, not eps added
    reference = lambda m, h: F.rms_norm(h, (16,), m.weight, eps)  # noqa: E731
    ours, torchs = _maps(RMS_NORMS[name], reference, x)
    assert _relative(ours, torchs) < CLOSE


@pytest.mark.parametrize("name", LAYER_NORMS)
def test_layer_norms_written_out_equal_torchs(name):
    x = torch.randn(3, 4, 16, dtype=torch.float64)
    eps = 0.0 if "eps 0" in name else EPS
    ours, torchs = _maps(LAYER_NORMS[name], lambda m, h: F.layer_norm(h, (16,), m.weight, None, eps), x)
    assert _relative(ours, torchs) < CLOSE


@settings(max_examples=15, deadline=None)
@given(st.integers(2, 24), st.integers(1, 5), st.floats(1e-6, 1.0), st.integers(0, 2**16))
def test_a_written_out_rms_norm_is_torchs_for_any_width_and_eps(width, tokens, eps, seed):
    """Property: Llama's RMS norm written out and ``F.rms_norm`` give the same relevance."""
    torch.manual_seed(seed)
    model = Tokens(lambda m, h: m.weight * h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps), width).double()
    theirs = copy.deepcopy(model)
    theirs.norm = lambda m, h: F.rms_norm(h, (width,), m.weight, eps)
    x = torch.randn(2, tokens, width, dtype=torch.float64)
    ours = LRP(model, "epsilon", **EXACT)(x, target=_targets(2)).maps
    assert _relative(ours, LRP(theirs, "epsilon", **EXACT)(x, target=_targets(2)).maps) < CLOSE


def test_a_division_by_a_norm_is_f_normalize():
    x = torch.randn(3, 4, 16, dtype=torch.float64)
    ours, torchs = _maps(lambda m, h: h / h.norm(dim=-1, keepdim=True).clamp_min(1e-12) * m.weight,
                         lambda m, h: F.normalize(h, dim=-1) * m.weight, x)
    assert _relative(ours, torchs) < CLOSE


class _Held(torch.autograd.Function):
    """Gradient times input with the statistic held: ``t * scale`` passing ``grad * scale``."""

    @staticmethod
    def forward(ctx, t, scale):
        ctx.save_for_backward(scale)
        return t * scale

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.saved_tensors[0], None


def _gradient_times_input(model: nn.Module, x: torch.Tensor, targets: list[int]) -> torch.Tensor:
    leaf = x.clone().requires_grad_(True)
    out = model(leaf)
    return torch.stack([torch.autograd.grad(out[:, k].sum(), leaf, retain_graph=True)[0] * x for k in targets], 1)


class Convolutional(nn.Module):
    """Two convolutions, each followed by ``norm`` and a ReLU, average pooling, a linear layer."""

    def __init__(self, norm) -> None:
        super().__init__()
        self.first, self.second = nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.weight = nn.Parameter(torch.rand(8) + 0.5)
        self.last = nn.Linear(8, 5, bias=False)
        self.norm = norm

    def forward(self, x):
        h = F.relu(self.norm(self, self.first(x)))
        return self.last(F.relu(self.norm(self, self.second(h))).mean((2, 3)))


def _held_group_norm(groups):
    def norm(m, h):
        grouped = h.reshape(len(h), groups, -1)
        centred = grouped - grouped.mean(-1, keepdim=True)
        scale = (centred.detach().pow(2).mean(-1, keepdim=True) + EPS).rsqrt()
        return _Held.apply(centred, scale).reshape(h.shape) * m.weight.view(-1, 1, 1)
    return norm


@pytest.mark.parametrize("norm, held", [
    (lambda m, h: F.group_norm(h, 4, m.weight, None, EPS), _held_group_norm(4)),
    (lambda m, h: F.group_norm(h, 1, m.weight, None, EPS), _held_group_norm(1)),
    (lambda m, h: F.instance_norm(h, weight=m.weight, eps=EPS), _held_group_norm(8)),
], ids=["group norm", "one group", "instance norm"])
def test_group_and_instance_norms_are_gradient_times_input_with_the_statistic_held(norm, held):
    torch.manual_seed(0)
    model = Convolutional(norm).double().eval()
    reference = copy.deepcopy(model)
    reference.norm = held
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    ours = LRP(model, "epsilon", **EXACT)(x, target=_targets(2)).maps
    assert _relative(ours, _gradient_times_input(reference, x, [1, 2])) < CLOSE


def test_an_instance_norm_with_running_statistics_is_an_eval_batch_norm():
    """The same affine map per channel: relevance as through a batch norm with those statistics
    (folded into the convolution before it), the bias keeping its share in both."""
    torch.manual_seed(0)
    instance = nn.InstanceNorm2d(8, affine=True, track_running_stats=True).double().eval()
    batch = nn.BatchNorm2d(8).double().eval()
    with torch.no_grad():
        for norm in (instance, batch):
            torch.manual_seed(1)
            norm.running_mean.uniform_(-1, 1), norm.running_var.uniform_(0.5, 2)
            norm.weight.uniform_(0.5, 1.5), norm.bias.uniform_(-1, 1)
    model = Convolutional(lambda m, h: m.extra(h)).double().eval()
    model.extra = instance
    reference = copy.deepcopy(model)
    reference.extra = batch
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    ours = LRP(model, "epsilon", **EXACT)(x, target=_targets(2)).maps
    assert _relative(ours, LRP(reference, "epsilon", **EXACT)(x, target=_targets(2)).maps) < CLOSE


def test_f_normalize_is_gradient_times_input_with_the_norm_held():
    """With ReLU (whose Pass rule is gradient times input; GELU's is not) and biases, which the
    epsilon rule at its limit shares as gradient times input does."""
    torch.manual_seed(0)
    model = Tokens(lambda m, h: F.normalize(h, dim=-1) * m.weight, activation=F.relu).double().eval()
    reference = copy.deepcopy(model)
    reference.norm = lambda m, h: _Held.apply(h, 1 / h.detach().norm(dim=-1, keepdim=True)) * m.weight
    x = torch.randn(2, 3, 16, dtype=torch.float64)
    ours = LRP(model, "epsilon", **EXACT)(x, target=_targets(2)).maps
    assert _relative(ours, _gradient_times_input(reference, x, [1, 2])) < CLOSE


def _response_norm(m, h, held=False, addcmul=False):
    """ConvNeXt V2's global response normalisation on (N, H, W, C), as HuggingFace writes it (and
    timm, with ``torch.addcmul``); ``held``: the ratio detached."""
    g = torch.linalg.vector_norm(h, ord=2, dim=(1, 2), keepdim=True)
    ratio = g / (g.mean(dim=-1, keepdim=True) + 1e-6)
    ratio = ratio.detach() if held else ratio
    if addcmul:
        return torch.addcmul(m.bias, m.weight, h * ratio) + h
    return _Held.apply(h, ratio) * m.weight + m.bias + h if held else h * ratio * m.weight + m.bias + h


class Response(nn.Module):
    """A convolution, channels last, the response norm, ReLU, a linear layer over the mean."""

    def __init__(self, **options) -> None:
        super().__init__()
        self.conv, self.head = nn.Conv2d(3, 8, 3), nn.Linear(8, 5)
        self.weight, self.bias = nn.Parameter(torch.rand(8)), nn.Parameter(torch.zeros(8))
        self.options = options

    def forward(self, x):
        h = _response_norm(self, self.conv(x).permute(0, 2, 3, 1), **self.options)
        return self.head(F.relu(h).mean((1, 2)))


@pytest.mark.parametrize("addcmul", [False, True], ids=["huggingface", "timm (addcmul)"])
def test_convnext_v2s_response_norm_holds_its_ratio_of_norms(addcmul):
    torch.manual_seed(0)
    model = Response(addcmul=addcmul).double().eval()
    reference = copy.deepcopy(model)
    reference.options = {"held": True}
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    ours = LRP(model, "epsilon", **EXACT)(x, target=_targets(2)).maps
    assert _relative(ours, _gradient_times_input(reference, x, [1, 2])) < CLOSE


def test_a_whole_llama_with_its_rms_norms_written_out_equals_torchs():
    transformers = pytest.importorskip("transformers", reason="transformers is in interpkit's [test] extra")
    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32)
    llama = transformers.LlamaForCausalLM(config).eval().double()
    fused = copy.deepcopy(llama)
    replaced = 0
    for module in list(fused.modules()):
        for name, child in list(module.named_children()):
            if type(child).__name__ == "LlamaRMSNorm":
                setattr(module, name, nn.RMSNorm(32, eps=child.variance_epsilon, dtype=torch.float64))
                getattr(module, name).weight = child.weight
                replaced += 1
    assert replaced == 5

    class Last(nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, embeddings):
            return self.model(inputs_embeds=embeddings).logits[:, -1]

    e = torch.randn(2, 6, 32, dtype=torch.float64)
    ours = LRP(Last(llama), "epsilon", **EXACT)(e, target=_targets(2)).maps
    # Llama computes its statistic in float32 whatever the model's dtype: the two differ by its rounding
    assert _relative(ours, LRP(Last(fused), "epsilon", **EXACT)(e, target=_targets(2)).maps) < CLOSE


def _inverse_rms(h):
    return torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + EPS)


REFUSED = {  # each is no normalisation: relevance would pass through a statistic's plain gradient
    "rsqrt of no statistic": (lambda m, h: h * torch.rsqrt(h.abs() + 1), "rsqrt"),
    "scale added": (lambda m, h: h * _inverse_rms(h) + _inverse_rms(h), "norm's statistic"),
    "times a root": (lambda m, h: h * torch.sqrt(h.pow(2).mean(-1, keepdim=True) + EPS), "norm's statistic"),
    "divided by an inverse root": (lambda m, h: h / _inverse_rms(h), "norm's statistic"),
    # (2, 3, 16) as (2, 2, 3, 8): the (2, 3, 1) statistic broadcasts, its samples on the second axis
    "of the tensor reshaped": (lambda m, h: (h.reshape(2, 2, 3, 8) * _inverse_rms(h)).reshape(h.shape),
                               "norm's statistic"),
    "divided by a variance": (lambda m, h: h / h.var(-1, keepdim=True), "norm's statistic"),
    "std added": (lambda m, h: h + h.std(-1, keepdim=True), "norm's statistic"),
    "a norm over every axis": (lambda m, h: h / h.norm(), "norm"),
    "over the batch axis": (lambda m, h: h * torch.rsqrt(h.pow(2).mean(0) + EPS), "rsqrt"),
    "F.normalize over the batch": (lambda m, h: F.normalize(h, dim=0), "normalize"),
    "a constant over a root": (lambda m, h: h / (torch.ones_like(h[..., :1]) / h.std(-1, keepdim=True)),
                               "norm's statistic"),
    "inverse root squared": (lambda m, h: h * (_inverse_rms(h) * _inverse_rms(h)), "detached"),
    "root of an inverted variance": (lambda m, h: h / torch.div(1, h.var(-1, keepdim=True)).sqrt(), "sqrt"),
    "inverse root plus one": (lambda m, h: h * (_inverse_rms(h) + 1), "detached"),
    "root of a remainder": (lambda m, h: h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True).fmod(3.0) + EPS), "rsqrt"),
    "in a matrix product": (lambda m, h: h.norm(dim=-1).unsqueeze(1) @ h, "detached"),
    "written into": (lambda m, h: (lambda s: (s.__setitem__((Ellipsis, 0), 1.0), h / s)[1])(
        h.std(-1, keepdim=True)), "div"),
    "another value copied in": (lambda m, h: h / h.std(-1, keepdim=True).copy_(h[..., :1].exp()), "copy_"),
    "another value where masked": (lambda m, h: h / h.std(-1, keepdim=True).where(h[..., :1] > 0, h[..., :1].exp()),
                                   "where"),
    "made under inference_mode": (lambda m, h: h * _inference_inverse_rms(h).clone(), "rsqrt"),
    "a statistic of another tensor": (lambda m, h: h.exp() * _inverse_rms(h), "norm's statistic"),
    "a ratio of another tensor's norms": (lambda m, h: h * (
        h.norm(dim=-1, keepdim=True) / h.flip(-1).exp().norm(dim=-1, keepdim=True)), "norm's statistic"),
    "the mean of a square of a square": (lambda m, h: h * torch.rsqrt(h.pow(2).pow(2).mean(-1, keepdim=True)), "rsqrt"),
    "a norm of a square": (lambda m, h: h / (h * h).norm(dim=-1, keepdim=True), "norm"),
    "a variance subtracted (alpha=-1)": (lambda m, h: h * torch.rsqrt(torch.add(
        torch.full_like(h[..., :1], 9.0), h.var(-1, keepdim=True), alpha=-1)), "rsqrt"),
    "addcmul's deprecated overload": (lambda m, h: torch.addcmul(torch.zeros_like(h), 1.0, h, h.flip(-1)), "addcmul"),
    # the positions a statistic was taken at: moved (rolled, flipped, indexed) it belongs to others
    "tokens rolled": (lambda m, h: h.roll(1, 1) * _inverse_rms(h), "norm's statistic"),
    "the statistic flipped over the batch": (lambda m, h: h * _inverse_rms(h).flip(0), "detached"),
    "shifted by an index": (lambda m, h: torch.cat([h[:, :1], h[:, 1:] * _inverse_rms(h)[:, :-1]], 1), "detached"),
    "halves unbound": (lambda m, h: torch.cat([part * scale[..., None] for part, scale in zip(
        h.unflatten(-1, (2, 8)).unbind(-2), torch.rsqrt(h.unflatten(-1, (2, 8)).pow(2).mean(-1) + EPS).unbind(-1))], -1),
        "detached"),
    # written in place after the statistic was taken, or before, into a value with a base
    "the tensor written after": (lambda m, h: (lambda t, s: t.add_(t.exp()) * s)(h.clone(), _inverse_rms(h.clone())),
                                 "norm's statistic"),
    "a copy written into": (lambda m, h: (lambda b: b.add_(h.exp()) * _inverse_rms(h))(h.clone()), "norm's statistic"),
    "the tensor itself written after": (lambda m, h: (lambda s: h.add_(h.exp()) * s)(_inverse_rms(h)),
                                        "norm's statistic"),
    "the base written after the copy": (lambda m, h: (lambda t: (h.add_(3.0), t * _inverse_rms(h))[1])(h.clone()),
                                        "norm's statistic"),
    # the values a statistic was taken over, and only those, at the positions they were taken at
    "regrouped by a reshape": (lambda m, h: (h.reshape(2, 16, 3) * _inverse_rms(h).view(2, 1, 3)).reshape(2, 3, 16),
                               "detached"),
    "shifted before": (lambda m, h: (h + 10.0) * _inverse_rms(h), "norm's statistic"),
    "moved to other tokens": (lambda m, h: torch.cat(
        [h[..., :3] * _inverse_rms(h).view(2, 1, 3).expand(2, 3, 3), h[..., 3:]], -1), "detached"),
    "rsqrt_ into a moment in the graph": (lambda m, h: (lambda v: (v.rsqrt_(), h * v)[1])(
        h.pow(2).mean(-1, keepdim=True) + EPS), "rsqrt_"),
    "a variance negated, then shifted": (lambda m, h: h * torch.rsqrt(h.var(-1, keepdim=True) * -1.0 + 5.0), "rsqrt"),
    "centred over tokens, the moment over features": (lambda m, h: h * torch.rsqrt(
        (h - h.mean(1, keepdim=True)).pow(2).mean(-1, keepdim=True) + EPS), "rsqrt"),
    "a statistic of a shifted copy": (lambda m, h: h * _inverse_rms(h + 100.0), "norm's statistic"),
    "centred over another axis": (lambda m, h: (h - h.mean(1, keepdim=True)) * _inverse_rms(h), "norm's statistic"),
}


def _inference_inverse_rms(h):
    with torch.inference_mode():
        return torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + EPS)


@pytest.mark.filterwarnings("ignore:This overload of addcmul is deprecated")
@pytest.mark.parametrize("name", REFUSED)
def test_other_uses_of_a_statistic_stay_refused_by_name(name):
    norm, named = REFUSED[name]
    model = Tokens(norm).eval()
    with pytest.raises(UncoveredNonlinearityError, match=named):
        LRP(model, "epsilon")(torch.randn(2, 3, 16), target=1)


@pytest.mark.parametrize("statistic", [lambda v: v.norm(dim=-1), lambda v: v.pow(2).sum(-1).sqrt(),
                                       lambda v: v.std(-1)], ids=["norm", "root of squares", "std"])
def test_a_statistic_as_the_score_is_refused(statistic):
    """Capsule lengths as the class scores: held constant, they carry no relevance; refused, not
    explained by their plain gradient."""
    model = nn.Sequential(nn.Linear(8, 12), nn.Unflatten(-1, (3, 4)))
    capsules = type("Capsules", (nn.Module,), {"forward": lambda self, x: statistic(model(x))})()
    with pytest.raises(InputError, match="norm's statistic"):
        LRP(capsules, "epsilon")(torch.randn(2, 8), target=1)


def test_a_statistic_without_keepdim_put_back_at_its_axis_is_the_same_norm():
    """Over the tokens (a middle axis), without ``keepdim``, then ``unsqueeze(1)``: the groups'
    axes stay in order, so it is the ``keepdim=True`` norm."""
    x = torch.randn(3, 4, 16, dtype=torch.float64)
    ours, kept = _maps(lambda m, h: h * torch.rsqrt(h.pow(2).mean(1) + EPS).unsqueeze(1) * m.weight,
                       lambda m, h: h * torch.rsqrt(h.pow(2).mean(1, keepdim=True) + EPS) * m.weight, x)
    assert _relative(ours, kept) < CLOSE


def test_torchs_norms_of_one_sample_at_a_time_are_not_taken_for_the_batch():
    """``F.layer_norm(h[b], h[b].shape)`` normalises one sample over all its axes."""
    x = torch.randn(2, 3, 16, dtype=torch.float64)
    per_sample = lambda m, h: torch.stack([F.layer_norm(s, s.shape, eps=EPS) for s in h]) * m.weight  # noqa: E731
    ours, whole = _maps(per_sample, lambda m, h: F.layer_norm(h, h.shape[1:], eps=EPS) * m.weight, x)
    assert _relative(ours, whole) < CLOSE


def test_a_power_by_a_tensor_keeps_its_rule_and_a_power_of_two_stays_refused():
    exponents = torch.rand(16) + 0.5
    assert torch.isfinite(LRP(Tokens(lambda m, h: h.abs().pow(exponents)).eval(), "epsilon")(
        torch.randn(2, 3, 16), target=1).maps).all()
    with pytest.raises(UncoveredNonlinearityError, match="pow"):
        LRP(Tokens(lambda m, h: torch.pow(2.0, h)).eval(), "epsilon")(torch.randn(2, 3, 16), target=1)


def test_deeplift_still_refuses_a_written_out_norm():
    model = Tokens(RMS_NORMS["llama"]).eval()
    with pytest.raises(UncoveredNonlinearityError, match="rsqrt"):
        DeepLift(model)(torch.randn(2, 3, 16), target=1)
