"""LRP on transformers (AttnLRP, Achtibat et al. 2024): each of its rules against its formula;
whole vision transformers against gradient times input through the authors' rules written out
by hand (how their LXT library computes AttnLRP); torch's fused attention against the same
attention written out; and what stays refused."""

import copy
import math

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

import interpkit
from interpkit import LRP, DeepLift
from interpkit.testing.models import TinyTokens

timm = pytest.importorskip("timm", reason="timm is in interpkit's [test] extra")


class _Identity(torch.autograd.Function):
    """AttnLRP's identity rule as gradient times input: the gradient times ``f(x) / x``."""

    @staticmethod
    def forward(ctx, x, function):
        y = function(x)
        ctx.save_for_backward(y / x)
        return y

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.saved_tensors[0], None


class _Divided(torch.autograd.Function):
    """AttnLRP's uniform rule as gradient times input: the gradient divided by ``k``."""

    @staticmethod
    def forward(ctx, x, k):
        ctx.k = k
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad / ctx.k, None


def _layer_norm(t, module):
    mean, var = t.mean(-1, keepdim=True), t.var(-1, unbiased=False, keepdim=True)
    return (t - mean) / (var + module.eps).sqrt().detach() * module.weight + module.bias


def _attend(q, k, v, masks=None, added=None):
    """Softmax attention by hand, q and k divided by 4 (two products on their path), v by 2.
    ``masks`` (0 or -inf) are added as they are, a float bias ``added`` with the identity rule:
    interpkit's LRP passes relevance through any constant added, where gradient times input would
    give the constant a share."""
    q, k, v = _Divided.apply(q, 4), _Divided.apply(k, 4), _Divided.apply(v, 2)
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if added is not None:
        scores = _Identity.apply(scores, lambda t: t + added)
    return (scores if masks is None else scores + masks).softmax(-1) @ v


def _timm_attention(t, attn_mask=None, is_causal=False, module=None):
    n, length, dim = t.shape
    qkv = module.qkv(t).reshape(n, length, 3, module.num_heads, dim // module.num_heads).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)
    out = _attend(module.q_norm(q), module.k_norm(k), v).transpose(1, 2).reshape(n, length, dim)
    return module.proj(module.norm(out))


def _mha(query, key, value, key_padding_mask=None, need_weights=True, attn_mask=None, module=None, **_):
    """``nn.MultiheadAttention`` by hand (masks: True is not attended, a float is added)."""
    if not module.batch_first:
        query, key, value = (t.transpose(0, 1) for t in (query, key, value))
    n, length, dim = query.shape
    heads = module.num_heads
    q, k, v = (F.linear(t, w, b).view(n, -1, heads, dim // heads).transpose(1, 2) for t, w, b in
               zip((query, key, value), module.in_proj_weight.chunk(3), module.in_proj_bias.chunk(3)))
    masks = torch.zeros(n, heads, length, key.shape[1], dtype=query.dtype)
    added = None
    for mask, shape in ((attn_mask, (-1 if attn_mask is not None and attn_mask.dim() == 3 else 1, 1, length, -1)),
                        (key_padding_mask, (n, 1, 1, -1))):
        if mask is not None and mask.dtype == torch.bool:
            masks = masks + torch.zeros_like(mask, dtype=query.dtype).masked_fill(mask, -torch.inf).reshape(shape)
        elif mask is not None:
            added = mask.reshape(shape)
    out = module.out_proj(_attend(q, k, v, masks, added).transpose(1, 2).reshape(n, length, dim))
    return (out if module.batch_first else out.transpose(0, 1)), None


def _by_hand(model, x, target):
    """AttnLRP as gradient times input, the model's modules patched with the authors' rules:
    layer norms with their standard deviation detached, GELU with the identity rule, the
    attention's products with the uniform rule; linear layers keep their gradient (epsilon 0)."""
    model = copy.deepcopy(model)
    for module in model.modules():
        if isinstance(module, nn.LayerNorm):
            module.forward = lambda t, module=module: _layer_norm(t, module)
        elif isinstance(module, nn.GELU):
            module.forward = lambda t: _Identity.apply(t, F.gelu)
        elif isinstance(module, nn.MultiheadAttention):
            module.forward = lambda *a, module=module, **kw: _mha(*a, module=module, **kw)
        elif type(module).__name__ == "Attention":  # timm's
            module.forward = lambda t, module=module, **kw: _timm_attention(t, module=module, **kw)
    x = x.clone().requires_grad_(True)
    (gradient,) = torch.autograd.grad(model(x)[:, target].sum(), x)
    return x * gradient


def _timm_vit(fused):
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=16, patch_size=8, num_classes=4,
                              depth=2).double().eval()
    for block in model.blocks:
        block.attn.fused_attn = fused
    return model


def _torchvision_vit():
    torch.manual_seed(0)
    model = torchvision.models.VisionTransformer(image_size=16, patch_size=8, num_layers=2, num_heads=2, hidden_dim=16,
                                                 mlp_dim=32, num_classes=4).double().eval()
    nn.init.normal_(model.heads.head.weight)  # torchvision starts it at 0: every score 0
    return model


def _zero_position_embeddings(model):
    """Adding a constant passes relevance on unchanged (zennit's convention, interpkit's for every
    constant), where gradient times input gives the constant its share: with the position
    embeddings at 0 the two agree, so the comparison tests everything else."""
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "pos_embed" in name:
                parameter.zero_()
    return model


MODELS = {"timm fused": lambda: _timm_vit(True), "timm written out": lambda: _timm_vit(False),
          "torchvision": _torchvision_vit, "TinyTokens": lambda: TinyTokens().double().eval()}


@pytest.mark.parametrize("name", MODELS)
def test_lrp_on_vision_transformers_equals_attn_lrp_by_hand(name):
    model = _zero_position_embeddings(MODELS[name]())
    x = torch.randn(3, 3, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    found = LRP(model, "epsilon", epsilon=1e-12, stabilizer=1e-12)(x, target=torch.tensor([[0, 2]] * 3)).maps
    for column, target in enumerate((0, 2)):
        expected = _by_hand(model, x, target)
        assert (found[:, column] - expected).abs().max() < 1e-6 * expected.abs().max()


def _only(module):
    return nn.Sequential(module).double().eval()


def test_softmax_rule_is_proposition_3_1():
    x = torch.randn(4, 5, dtype=torch.float64)
    maps = LRP(_only(nn.Softmax(-1)), "epsilon", epsilon=1e-12, stabilizer=1e-12)(x, target="all").maps
    s = x.softmax(-1)
    for j in range(5):
        relevance = torch.zeros_like(s)
        relevance[:, j] = s[:, j]  # the score starts as the relevance
        expected = x * (relevance - s * relevance.sum(-1, keepdim=True))
        torch.testing.assert_close(maps[:, j].double(), expected)


def test_uniform_rule_gives_each_factor_of_a_product_half():
    class Products(nn.Module):
        def forward(self, x):  # (N, 2, 3, 3): an elementwise and a matrix product
            a, b = x[:, 0], x[:, 1]
            return torch.cat([(a * b).flatten(1), (a @ b).flatten(1)], 1)

    x = torch.randn(2, 2, 3, 3, dtype=torch.float64)
    explainer = LRP(Products().eval(), "epsilon", epsilon=1e-12, stabilizer=1e-12)
    maps = explainer(x, target="all").maps.double()  # (N, 18, 2, 3, 3)
    a, b = x[:, 0], x[:, 1]
    for i in range(3):
        for j in range(3):
            elementwise = maps[:, 3 * i + j]
            assert torch.allclose(elementwise[:, 0, i, j], a[:, i, j] * b[:, i, j] / 2)
            assert torch.allclose(elementwise[:, 1, i, j], a[:, i, j] * b[:, i, j] / 2)
            assert elementwise.flatten(1).count_nonzero(1).max() == 2
            matrix = maps[:, 9 + 3 * i + j]  # y_ij = sum_k a_ik b_kj: each term's half to each factor
            torch.testing.assert_close(matrix[:, 0, i], a[:, i] * b[:, :, j] / 2)
            torch.testing.assert_close(matrix[:, 1, :, j], a[:, i] * b[:, :, j] / 2)


def test_layer_norm_rule_holds_the_standard_deviation_and_rms_norm_conserves():
    torch.manual_seed(0)
    x = torch.randn(3, 6, dtype=torch.float64)
    norm = nn.LayerNorm(6).double()
    with torch.no_grad():
        norm.weight.uniform_(0.5, 2)
        norm.bias.uniform_(-1, 1)
    maps = LRP(_only(norm), "epsilon", epsilon=1e-12, stabilizer=1e-12)(x, target="all").maps
    sd = (x.var(-1, unbiased=False, keepdim=True) + norm.eps).sqrt()
    for j in range(6):  # R_i = x_i * w_j (delta_ij - 1/n) / sd: the bias keeps its share of y_j
        expected = x * norm.weight[j] * (torch.eye(6, dtype=x.dtype)[j] - 1 / 6) / sd
        torch.testing.assert_close(maps[:, j].double(), expected)
    rms = nn.RMSNorm(6).double()
    with torch.no_grad():
        scores = rms(x)
    maps = LRP(_only(rms), "epsilon", epsilon=1e-12, stabilizer=1e-12)(x, target="all").maps
    torch.testing.assert_close(maps.diagonal(dim1=1, dim2=2).double(), scores, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(maps.sum(-1).double(), scores, rtol=1e-6, atol=1e-7)  # conserved: no bias


class _Masked(nn.Module):
    """A token model whose attention is ``nn.MultiheadAttention`` with ``options`` (masks, layout)."""

    def __init__(self, batch_first=True, **options):
        super().__init__()
        torch.manual_seed(0)
        self.embed, self.head = nn.Linear(3, 8), nn.Linear(8, 4)
        self.attention = nn.MultiheadAttention(8, 2, batch_first=batch_first)
        self.options = options

    def forward(self, x):  # (N, tokens, 3)
        h = self.embed(x)
        if not self.attention.batch_first:
            h = h.transpose(0, 1)
        out = self.attention(h, h, h, **self.options)[0]
        return self.head((out if self.attention.batch_first else out.transpose(0, 1)).mean(1))


def _masks():
    padding = torch.tensor([[False, False, False, True, True], [False, False, False, False, True]])
    causal = torch.ones(5, 5, dtype=torch.bool).triu(1)
    bias = torch.randn(5, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    return {"padding": dict(key_padding_mask=padding), "causal": dict(attn_mask=causal, is_causal=True),
            "float": dict(attn_mask=bias), "both": dict(attn_mask=causal, key_padding_mask=padding),
            "weights": dict(need_weights=True, average_attn_weights=False), "sequence first": dict(batch_first=False)}


@pytest.mark.parametrize("case", _masks())
def test_multi_head_attention_with_masks_equals_attn_lrp_by_hand(case):
    model = _Masked(**_masks()[case]).double().eval()
    x = torch.randn(2, 5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    found = LRP(model, "epsilon", epsilon=1e-12, stabilizer=1e-12)(x, target=1).maps[:, 0]
    expected = _by_hand(model, x, 1)
    assert (found - expected).abs().max() < 1e-6 * expected.abs().max()


class _Scaled(nn.Module):
    """Queries, keys and values by projection, then ``F.scaled_dot_product_attention`` with
    ``options``, or the same attention written out (``fused=False``)."""

    def __init__(self, fused, heads=2, kv_heads=2, **options):
        super().__init__()
        torch.manual_seed(0)
        self.fused, self.heads, self.kv_heads, self.options = fused, heads, kv_heads, options
        self.q, self.k, self.v = nn.Linear(3, 4 * heads), nn.Linear(3, 4 * kv_heads), nn.Linear(3, 4 * kv_heads)
        self.head = nn.Linear(4 * heads, 4)

    def forward(self, x):  # (N, tokens, 3)
        n, length, _ = x.shape
        q = self.q(x).view(n, length, self.heads, 4).transpose(1, 2)
        k, v = (f(x).view(n, length, self.kv_heads, 4).transpose(1, 2) for f in (self.k, self.v))
        if self.fused:
            out = F.scaled_dot_product_attention(q, k, v, **self.options)
        else:
            k, v = (t.repeat_interleave(self.heads // self.kv_heads, 1) for t in (k, v))
            scores = q @ k.transpose(-2, -1) * self.options.get("scale", 0.5)
            mask = self.options.get("attn_mask")
            if self.options.get("is_causal"):
                mask = torch.ones(length, length, dtype=torch.bool).tril()
            if mask is not None:
                scores = scores.masked_fill(~mask, -torch.inf) if mask.dtype == torch.bool else scores + mask
            out = scores.softmax(-1) @ v
        return self.head(out.transpose(1, 2).flatten(2).mean(1))


FUSED_OPTIONS = {
    "plain": {}, "causal": {"is_causal": True}, "scale": {"scale": 0.3}, "negative scale": {"scale": -0.5},
    "bool mask": {"attn_mask": torch.ones(5, 5, dtype=torch.bool).tril(1)},
    "float mask": {"attn_mask": torch.randn(5, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(4))},
    "grouped query": {"kv_heads": 1, "enable_gqa": True}}


@pytest.mark.parametrize("case", FUSED_OPTIONS)
def test_fused_attention_gets_the_rules_of_its_parts(case):
    x = torch.randn(2, 5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    options = dict(FUSED_OPTIONS[case])
    kv = {"kv_heads": options.pop("kv_heads")} if "kv_heads" in options else {}
    fused, written = (_Scaled(f, **kv, **options).double().eval() for f in (True, False))
    if kv:
        written.options = {}
    # the stabiliser off: the parts scale q and k before their product, the written model after it
    found, expected = (LRP(m, "epsilon", epsilon=1e-12, stabilizer=1e-12)(x, target="all") for m in (fused, written))
    torch.testing.assert_close(found.scores, expected.scores)
    torch.testing.assert_close(found.maps, expected.maps)
    with torch.no_grad():  # the fused op's own value, not its written-out one
        assert torch.equal(found.scores, fused(x))


class _BiasFromInput(_Scaled):
    """An additive float mask computed from the input (as SAM's relative positions are)."""

    def forward(self, x):
        self.options = {"attn_mask": x[:, None, :, :1] * x[:, None, None, :, 1]}  # (N, 1, L, L)
        return super().forward(x)


def test_a_float_mask_from_the_input_is_added_to_the_scores_through_the_rules():
    """Refused as uncovered before (SAM's image encoder, timm's samvit); its relevance now
    passes through the sum with the scores, as the same attention written out gives it."""
    x = torch.randn(2, 5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    fused, written = (_BiasFromInput(f, scale=0.5).double().eval() for f in (True, False))
    found, expected = (LRP(m, "epsilon", epsilon=1e-12, stabilizer=1e-12)(x, target="all") for m in (fused, written))
    torch.testing.assert_close(found.maps, expected.maps)
    assert found.maps.abs().sum() > 0


class _BlockedBiasFromInput(_Scaled):
    """A float mask from the input with one position blocked (-inf): fused, or written out with
    the blocked position filled in after the bias is added."""

    def forward(self, x):
        bias = x[:, None, :, :1] * x[:, None, None, :, 1]
        blocked = torch.zeros(5, 5, dtype=torch.bool)
        blocked[0, 1] = True
        if self.fused:
            self.options = {"attn_mask": bias.masked_fill(blocked, -torch.inf)}
            return super().forward(x)
        n = len(x)
        q, k, v = (f(x).view(n, 5, 2, 4).transpose(1, 2) for f in (self.q, self.k, self.v))
        scores = (q @ k.transpose(-2, -1) * 0.5 + bias).masked_fill(blocked, -torch.inf)
        return self.head((scores.softmax(-1) @ v).transpose(1, 2).flatten(2).mean(1))


def test_a_blocked_position_in_a_mask_from_the_input_gives_no_nan():
    """-inf in an input-dependent mask made the sum's relevance share -inf * 0 = NaN; a blocked
    position is filled into the scores instead, as a constant."""
    x = torch.randn(2, 5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    fused, written = (_BlockedBiasFromInput(f, scale=0.5).double().eval() for f in (True, False))
    found, expected = (LRP(m, "epsilon", epsilon=1e-12, stabilizer=1e-12)(x, target="all") for m in (fused, written))
    assert found.maps.isfinite().all()
    torch.testing.assert_close(found.maps, expected.maps)


def test_hugging_face_vit_eager_and_sdpa_attention_give_the_same_map():
    transformers = pytest.importorskip("transformers")
    config = transformers.ViTConfig(image_size=16, patch_size=8, hidden_size=16, num_hidden_layers=2,
                                    num_attention_heads=2, intermediate_size=32, num_labels=4)
    maps = []
    for implementation in ("eager", "sdpa"):
        torch.manual_seed(0)
        config._attn_implementation = implementation
        model = transformers.ViTForImageClassification(config).eval()
        x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
        maps.append(LRP(model, "epsilon")(x, target=2).maps)
    torch.testing.assert_close(maps[0], maps[1], rtol=1e-4, atol=1e-6 * maps[0].abs().max().item())
    assert maps[0].abs().sum() > 0


def test_a_decomposition_that_does_not_reproduce_the_fused_op_is_refused(monkeypatch):
    from interpkit.core import attention

    right = attention._attend
    monkeypatch.setattr(attention, "_attend", lambda op, q, k, v, scale, *rest: right(op, q, k, v, 2 * scale, *rest))
    for model in (_Scaled(True).double().eval(), _Masked().double().eval()):
        for strict in (True, False):  # rules for another function: refused either way
            with pytest.raises(interpkit.UncoveredNonlinearityError, match="did not reproduce.*attn_implementation"):
                LRP(model, strict=strict)(torch.randn(2, 5, 3, dtype=torch.float64), target=1)


def test_a_query_with_nothing_to_attend_to_gets_zero_weights_as_in_torchs_sdpa():
    """torch's SDPA gives such a query 0 (softmax alone would give NaN), and so does
    nn.MultiheadAttention without its weights (it calls SDPA); GPT-2 with a left-padded batch
    has such queries."""
    x = torch.randn(2, 5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    nothing = torch.ones(5, 5, dtype=torch.bool).tril()
    nothing[2] = False
    padding = torch.tensor([[False] * 5, [True] * 5])  # the second sample attends to nothing at all
    for model in (_Scaled(True, attn_mask=nothing).double().eval(),
                  _Masked(key_padding_mask=padding, need_weights=False).double().eval(),
                  _Masked(attn_mask=~nothing, need_weights=False).double().eval()):
        found = LRP(model, "epsilon")(x, target=1)
        # with gradients on (under no_grad nn.MultiheadAttention takes its fast path, which gives NaN there)
        assert torch.equal(found.scores[:, 0], model(x)[:, 1].detach())
        assert found.maps.isfinite().all() and found.maps.abs().sum() > 0


def test_half_precision_norms_take_their_statistic_in_float32():
    """(x / rms(x)) with x up to 333: x squared overflows float16 (NaN maps before the fix)."""
    x = torch.randn(2, 64, generator=torch.Generator().manual_seed(1)) * 100
    for norm in (nn.LayerNorm(64), nn.RMSNorm(64)):
        torch.manual_seed(0)
        model = nn.Sequential(norm, nn.Linear(64, 4)).eval()
        expected = LRP(copy.deepcopy(model).double(), "epsilon")(x.double(), target=1).maps
        found = LRP(model.half(), "epsilon")(x.half(), target=1).maps
        assert found.isfinite().all() and (found.double() - expected).abs().max() < 1e-2 * expected.abs().max()


def test_bfloat16_attention_with_large_scores_is_explained():
    """Its written-out parts round the scores to bfloat16, which the fused op keeps in float32:
    checked as computed in float32, they are used as they are (refused before the fix)."""
    model = _Scaled(True, heads=4, kv_heads=4).eval()
    with torch.no_grad():
        model.q.weight.mul_(40)
        model.k.weight.mul_(40)
    x = torch.randn(2, 64, 3, generator=torch.Generator().manual_seed(1))
    assert LRP(model.bfloat16(), "epsilon")(x.bfloat16(), target=1).maps.isfinite().all()


def test_the_output_of_multi_head_attention_can_be_written_in_place():
    class WrittenInto(_Masked):
        def forward(self, x):
            h = self.embed(x)
            out = self.attention(h, h, h, need_weights=False)[0]
            out += h  # a view of the fused op's result could not be written (an error before the fix)
            return self.head(out.mean(1))

    model = WrittenInto().double().eval()
    x = torch.randn(2, 5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    found = LRP(model, "epsilon", epsilon=1e-12, stabilizer=1e-12)(x, target=1).maps[:, 0]
    expected = _by_hand(model, x, 1)
    assert (found - expected).abs().max() < 1e-6 * expected.abs().max()


def test_what_attn_lrp_does_not_cover_stays_refused():
    x = torch.randn(2, 5, 3, dtype=torch.float64)
    with_bias_kv = _Masked().double().eval()
    with_bias_kv.attention = nn.MultiheadAttention(8, 2, batch_first=True, add_bias_kv=True).double().eval()
    with pytest.raises(interpkit.UncoveredNonlinearityError, match="multi_head_attention_forward"):
        LRP(with_bias_kv)(x, target=1)
    with pytest.raises(interpkit.UncoveredNonlinearityError, match="scaled_dot_product_attention"):
        LRP(_Scaled(True, dropout_p=0.5).double().eval())(x, target=1)  # dropout even in eval: random weights

    class MaskFromInput(_Scaled):
        def forward(self, x):
            self.options = {"attn_mask": x[:, None, :, :1] > x[:, None, None, :, 0]}  # (N, 1, L, L), from the input
            return super().forward(x)

    with pytest.raises(interpkit.UncoveredNonlinearityError, match="scaled_dot_product_attention"):
        LRP(MaskFromInput(True).double().eval())(x, target=1)
    for model in (_timm_vit(True), TinyTokens().double().eval()):  # DeepLift's rescale rule has no such rules
        with pytest.raises(interpkit.UncoveredNonlinearityError, match="layer_norm"):
            DeepLift(model)(torch.randn(2, 3, 16, 16, dtype=torch.float64), target=1)


def test_writing_into_a_softmax_input_afterwards_is_refused_naming_the_rule():
    """Softmax's rule reads its input (torch's own backward reads only the output), so a write into
    that input after the softmax is refused, saying it is the rule that needs it."""

    class Rewritten(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.linear, self.head = nn.Linear(3, 6), nn.Linear(6, 4)

        def forward(self, x):
            h = self.linear(x)
            s = h.softmax(-1)
            h.mul_(0.5)
            return self.head(s * 2 + h)

    with pytest.raises(interpkit.InputError, match="rule for it saved, such as softmax's input"):
        LRP(Rewritten().eval(), "epsilon")(torch.randn(2, 3), target=1)


def test_half_precision_attention_is_written_out_in_float32_as_torch_computes_it():
    """Half-precision scores overflow (q k^T above 65504) or round a finfo.min mask to -inf, where
    torch's fused kernels compute in float32: the written-out parts do too (NaN maps before)."""
    x = torch.randn(2, 5, 3, generator=torch.Generator().manual_seed(2))
    large = _Scaled(True).eval()
    with torch.no_grad():
        for linear in (large.q, large.k):
            linear.weight.mul_(60)
            linear.bias.mul_(60)
    padded = torch.zeros(5, 5)
    padded[2] = torch.finfo(torch.float16).min  # HuggingFace's masks: the dtype's minimum, not -inf
    masked = _Scaled(True, attn_mask=padded.half()).eval()
    with torch.no_grad():
        masked.q.bias.fill_(-20)
        masked.k.bias.fill_(20)  # every score near -800
    for model in (large, masked):
        found = LRP(model.half(), "epsilon")(x.half(), target=1)
        assert found.maps.isfinite().all() and found.scores.isfinite().all()
    mha = _Masked(need_weights=False).eval()
    with torch.no_grad():
        mha.attention.in_proj_weight.mul_(60)
    assert LRP(mha.half(), "epsilon")(x.half(), target=1).maps.isfinite().all()


def test_attention_under_autocast_is_explained():
    """SDPA under autocast computes its scores in float32 from bfloat16 inputs; so do the parts."""
    model = _Scaled(True, heads=4, kv_heads=4).eval()
    with torch.no_grad():
        model.q.weight.mul_(40)
        model.k.weight.mul_(40)
    x = torch.randn(2, 64, 3, generator=torch.Generator().manual_seed(1))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        found = LRP(model, "epsilon")(x, target=1)
    assert found.maps.isfinite().all()


def test_a_product_written_in_place_equals_the_same_product_out_of_place():
    class Gated(nn.Module):
        def __init__(self, in_place):
            super().__init__()
            torch.manual_seed(0)
            self.a, self.b, self.head, self.in_place = nn.Linear(4, 6), nn.Linear(4, 6), nn.Linear(6, 3), in_place

        def forward(self, x):
            h, g = self.a(x), torch.sigmoid(self.b(x))
            if self.in_place:
                h *= g
            else:
                h = h * g
            return self.head(h)

    x = torch.randn(3, 4, dtype=torch.float64)
    found, expected = (LRP(Gated(p).double().eval(), "epsilon")(x, target="all").maps for p in (True, False))
    assert torch.equal(found, expected) and found.abs().sum() > 0


def test_a_device_without_autocast_needs_none_turned_off(monkeypatch):
    """torch before 2.5 raised for torch.autocast("mps", enabled=False): the parts then run as they are."""

    def unsupported(device_type, *args, **kwargs):
        raise RuntimeError(f"User specified an unsupported autocast device_type '{device_type}'")

    model = _Scaled(True).double().eval()
    x = torch.randn(2, 5, 3, dtype=torch.float64)
    expected = LRP(model, "epsilon")(x, target=1).maps
    monkeypatch.setattr(torch, "autocast", unsupported)
    torch.testing.assert_close(LRP(model, "epsilon")(x, target=1).maps, expected)


def test_the_check_allows_rounding_by_precision_and_no_more():
    """Relative to the largest value: 1e-3 in float32, 1e-2 where TF32 matrix products are
    allowed, 5e-2 in half precision; a NaN on one side only is infinitely far."""
    from interpkit.core.attention import mismatch

    exact = torch.tensor([1.0, -2.0, 0.5])
    for dtype, tolerance in ((torch.float32, 1e-3), (torch.float16, 5e-2)):
        for gap, within in ((0.9, True), (1.1, False)):
            found = mismatch(exact.to(dtype), (exact + torch.tensor([0, 2 * gap * tolerance, 0])).to(dtype))
            assert (found.item() <= 1) == within, (dtype, gap)
    before = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("high")
        assert mismatch(exact, exact + torch.tensor([0.0, 0.018, 0.0])).item() <= 1
    finally:
        torch.set_float32_matmul_precision(before)
    assert mismatch(exact, exact + torch.tensor([0.0, 0.018, 0.0])).item() > 1
    assert mismatch(exact, torch.tensor([1.0, float("nan"), 0.5])).item() == float("inf")


def test_ops_given_keyword_arguments_only_are_followed():
    """``torch.cat(tensors=[...], dim=-1)`` has no positional argument: AttnLRP's norm bookkeeping
    read the first one and the call failed; it is the positional concatenation."""

    class Joined(nn.Module):
        def __init__(self, keywords: bool) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.first, self.last, self.keywords = nn.Linear(8, 8), nn.Linear(16, 3), keywords

        def forward(self, x):
            h = torch.relu(self.first(x))
            parts = [h, h * 2]
            return self.last(torch.cat(tensors=parts, dim=-1) if self.keywords else torch.cat(parts, -1))

    x = torch.randn(2, 8)
    assert torch.equal(LRP(Joined(True).eval(), "epsilon")(x, target=1).maps,
                       LRP(Joined(False).eval(), "epsilon")(x, target=1).maps)


class _AddedProduct(nn.Module):
    """Scores ``beta * bias + alpha * (q-factor @ k-factor)`` by one fused op (``op``, with the
    factors by keyword where ``keywords``) or written out, read by a linear head; one sample."""

    def __init__(self, op: str, fused: bool, keywords: bool, beta: float, alpha: float) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.q, self.k = nn.Linear(4, 6), nn.Linear(4, 6)
        self.op, self.fused, self.keywords, self.beta, self.alpha = op, fused, keywords, beta, alpha
        shapes = {"addmm": (5, 5), "baddbmm": (1, 5, 5), "addbmm": (5, 5), "addmv": (5,), "addr": (5, 5)}
        self.bias = nn.Parameter(torch.randn(shapes[op]))
        self.head = nn.Linear(math.prod(shapes[op]) * (2 if op == "baddbmm" else 1), 3)

    def factors(self, x):
        q, k = self.q(x)[0], self.k(x)[0]  # (5, 6) each
        if self.op in ("baddbmm", "addbmm"):  # two heads of three features
            return q.view(5, 2, 3).transpose(0, 1), k.view(5, 2, 3).permute(1, 2, 0)
        return {"addmm": (q, k.T), "addmv": (q, k[0]), "addr": (q[:, 0], k[:, 1])}[self.op]

    def forward(self, x):
        a, b = self.factors(x)
        bias = torch.full_like(self.bias, math.nan) if self.beta == 0 else self.bias  # beta 0 ignores it, NaN too
        if not self.fused:
            product = a.unsqueeze(-1) * b if self.op == "addr" else a @ b
            product = product.sum(0) if self.op == "addbmm" else product
            scores = self.alpha * product + (self.beta * bias if self.beta else 0)
        else:
            names = {"addmm": ("mat1", "mat2"), "baddbmm": ("batch1", "batch2"), "addbmm": ("batch1", "batch2"),
                     "addmv": ("mat", "vec"), "addr": ("vec1", "vec2")}[self.op]
            factors = dict(zip(names, (a, b))) if self.keywords else {}
            positional = () if self.keywords else (a, b)
            scores = getattr(bias, self.op)(*positional, **factors, beta=self.beta, alpha=self.alpha)
        return self.head(scores.softmax(-1).reshape(1, -1))


@pytest.mark.parametrize("op", ["addmm", "baddbmm", "addbmm", "addmv", "addr"])
@pytest.mark.parametrize("keywords, beta, alpha", [(False, 1.0, 1.0), (True, 0.5, 0.3), (True, 0.0, 2.0)])
def test_a_product_added_by_one_op_gets_the_rules_of_the_product_and_the_sum(op, keywords, beta, alpha):
    """BLOOM adds its ALiBi bias to the attention scores by ``alibi.baddbmm(batch1=q, batch2=k,
    beta=..., alpha=...)``: a product of two input-dependent factors, refused before as an
    uncovered op. It is the uniform rule's product and the sum's rule, at the fused op's value."""
    x = torch.randn(1, 5, 4, dtype=torch.float64)
    fused, written = (_AddedProduct(op, f, keywords, beta, alpha).double().eval() for f in (True, False))
    torch.testing.assert_close(fused(x), written(x))
    found, expected = (LRP(m, "epsilon")(x, target="all").maps for m in (fused, written))
    assert found.isfinite().all() and found.abs().sum() > 0
    torch.testing.assert_close(found, expected)
    with pytest.raises(interpkit.errors.UncoveredNonlinearityError, match=op):  # DeepLift has no rule for products
        DeepLift(fused)(x, target=1)
