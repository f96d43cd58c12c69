"""Attention rollout (Abnar and Zuidema, 2020) and gradient-weighted attention (Chefer et al.,
2021) for vision transformers, as an interpkit plugin.

Each attention block's input is captured during one forward and its attention recomputed as
``softmax(Q K^T / sqrt(d))`` from the block's own query and key projections, so fused attention
kernels (which never expose the weights) are explained exactly. Per block the heads are fused
(mean, max or min), the identity is added for the residual path, ``A' = 0.5 A + 0.5 I``, rows are
renormalised, and the blocks are multiplied from the first to the last; the map is the row of
the token the model's output reads (the class token; the mean of the patch tokens' rows for a
model that averages them) over the patch tokens, on the patch grid or resized to the input.
A ``key_padding_mask`` of ``nn.MultiheadAttention`` is applied exactly; other attention masks
are refused.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import nn

import interpkit
from interpkit import TokenGrid
from interpkit.core import (
    Call,
    Explainer,
    Explanation,
    MapKind,
    TargetLike,
    TargetSelection,
    check_flag,
    check_number,
    mismatch,
    model_cache,
    per_target_gradients,
    token_layout,
)
from interpkit.explainers import upsample

__version__ = "0.1.0"


def _projections(module: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Queries and keys (N, heads, T, d) of an attention module for its input ``x`` (N, T, D), for
    torchvision's nn.MultiheadAttention, timm's Attention and HuggingFace's ViT self-attention;
    None for any other module."""
    n, t, _ = x.shape
    if isinstance(module, nn.MultiheadAttention) and module.batch_first and module._qkv_same_embed_dim:
        heads = module.num_heads
        w_q, w_k, _ = module.in_proj_weight.chunk(3)
        b_q, b_k, _ = module.in_proj_bias.chunk(3) if module.in_proj_bias is not None else (None, None, None)
        q, k = nn.functional.linear(x, w_q, b_q), nn.functional.linear(x, w_k, b_k)
    elif _timm(module):
        heads = module.num_heads
        width = module.qkv.out_features // 3  # queries and keys only: the values are not needed here
        bias = _qkv_bias(module)
        bias = bias[:2 * width] if bias is not None else None
        q, k = nn.functional.linear(x, module.qkv.weight[:2 * width], bias).reshape(n, t, 2, heads, -1).permute(
            2, 0, 3, 1, 4)
        return module.q_norm(q), module.k_norm(k)
    elif _huggingface(module) is not None:
        query, key, heads = _huggingface(module)  # type: ignore[misc]
        q, k = query(x), key(x)
    else:
        return None
    return (q.reshape(n, t, heads, -1).transpose(1, 2), k.reshape(n, t, heads, -1).transpose(1, 2))


def _qkv_bias(module: nn.Module) -> torch.Tensor | None:
    """timm's fused query, key and value bias: the projection's own, or EVA's separate ``q_bias``,
    ``k_bias`` (zeros) and ``v_bias`` beside a projection without one."""
    if module.qkv.bias is not None:
        return module.qkv.bias
    if getattr(module, "q_bias", None) is not None:
        return torch.cat((module.q_bias, module.k_bias, module.v_bias))
    return None


def _huggingface(module: nn.Module) -> tuple[nn.Module, nn.Module, int] | None:
    """HuggingFace ViT attention: ``query``/``key`` (transformers 4) or ``q_proj``/``k_proj`` (5)."""
    query = getattr(module, "query", None) or getattr(module, "q_proj", None)
    key = getattr(module, "key", None) or getattr(module, "k_proj", None)
    heads = getattr(module, "num_attention_heads", None)
    if isinstance(query, nn.Linear) and isinstance(key, nn.Linear) and isinstance(heads, int):
        return query, key, heads
    return None


def attention_modules(model: nn.Module) -> list[nn.Module]:
    """The model's attention modules in definition order (one per transformer block)."""
    return [module for module in model.modules() if _recognised(module)]


def _recognised(module: nn.Module) -> bool:
    if isinstance(module, nn.MultiheadAttention):
        return module.batch_first and module._qkv_same_embed_dim
    return _timm(module) or _huggingface(module) is not None


def _timm(module: nn.Module) -> bool:
    """timm's vision transformer attention: fused ``qkv``, ``num_heads`` and the ``q_norm`` and
    ``k_norm`` its queries and keys leave through (windowed, class and talking-heads attention
    have other parts, and are not recognised)."""
    return isinstance(getattr(module, "qkv", None), nn.Linear) and hasattr(module, "num_heads") and all(
        isinstance(getattr(module, name, None), nn.Module) for name in ("q_norm", "k_norm"))


class AttentionRollout(Explainer):
    """Attention rollout: how much each patch token flows into the class token through all
    blocks' attention (and the residual identity). Target-independent: each target gets the same
    map. ``head_fusion`` is ``"mean"`` (the paper), ``"max"`` or ``"min"``; ``discard_ratio``
    zeroes that fraction of the lowest attention weights of each fused map (the columns of the
    class token and of any token the output reads kept; a model without a class token keeps
    none) before the identity is added; ``layout`` reads the tokens (class token first, then a
    row-major grid; ``TokenGrid(prefix=...)`` for distillation or register tokens). Blocks are
    multiplied in the order they run, once per call (a block shared by several layers counts
    once per layer). ``readout`` is the token the output reads: ``"class_token"`` (token 0),
    ``"class_and_distillation"`` (tokens 0 and 1 averaged, as distilled DeiT averages its two
    heads), ``"mean"`` (the patch tokens averaged, as timm's ``global_pool="avg"``),
    ``"all_tokens"`` (every token averaged, as timm's ``pool_include_prefix=True``), or
    ``"auto"``: what timm's ``global_pool`` and distillation token, HuggingFace BEiT's
    ``use_mean_pooling`` and DeiT-with-teacher say, else the class token where the tokens have a
    prefix; a model without a class token whose pooling is unknown is refused rather than read
    at a patch, as is HuggingFace DINOv2's classifier (class token and patch mean side by side).
    """

    name = "attention_rollout"
    supports = frozenset({"tokens"})
    target_free = True

    def __init__(self, model: nn.Module, head_fusion: str = "mean", discard_ratio: float = 0.0,
                 upsample: bool = True, layout: TokenGrid | None = None, readout: str = "auto") -> None:
        super().__init__(model)
        if head_fusion not in ("mean", "max", "min"):
            raise interpkit.InputError(f"head_fusion must be 'mean', 'max' or 'min', got {head_fusion!r}")
        if readout not in _READOUTS:
            raise interpkit.InputError(f"readout must be one of {', '.join(map(repr, _READOUTS))}, got {readout!r}")
        if layout is not None and not isinstance(layout, TokenGrid):
            raise interpkit.InputError(f"layout must be a TokenGrid (or None: the model's own), not {layout!r}")
        self.readout = readout
        self.discard_ratio = check_number("discard_ratio", discard_ratio, below=1)
        self.head_fusion, self.upsample = head_fusion, check_flag("upsample", upsample)
        self.layout = layout or token_layout(model)
        self.blocks = attention_modules(model)
        if not self.blocks:
            others = sorted({type(m).__name__ for m in model.modules()
                             if "attention" in type(m).__name__.lower() or "attn" in type(m).__name__.lower()})
            raise interpkit.LayerError(
                "no attention module found that these methods recompute (torchvision's nn.MultiheadAttention, timm's "
                "and HuggingFace's vision transformer attention)" + (f"; the model's {', '.join(others)} computes its "
                "weights otherwise (windows, a position bias, talking heads), which they do not follow" if others else ""))

    def explain(self, call: Call) -> Explanation:
        inputs, target = call.x, call.target
        calls: list[dict[str, torch.Tensor]] = []  # one per call of a block, in the order they run
        handles, errors = [], []
        for block in self.blocks:
            handles += _capture_queries_and_keys(block, calls)
        checked_key = ("rollout recomputes the blocks", tuple(inputs.shape[1:]), inputs.dtype, inputs.device)
        checked = model_cache(self.model).get(checked_key, False)
        if not checked:  # once per input shape: the recomputed blocks give the model's outputs
            handles += [block.register_forward_hook(_compare_recomputed(errors), with_kwargs=True) for block in self.blocks]
        try:
            with torch.no_grad() if _plain(target) else contextlib.nullcontext():  # rollout needs no gradient
                selection, _ = self.forward_with_targets(call)
        finally:
            for handle in handles:
                handle.remove()
        captured = [(found["q"], found["k"], found.get("mask")) for found in calls]
        _check_one_token_sequence([q.shape for q, _, _ in captured], len(inputs))
        if not checked:
            _refuse_inexact(errors)
            model_cache(self.model)[checked_key] = True
        prefix, grid = self.layout.resolve(captured[0][0].shape[2], tuple(inputs.shape[2:]), "attention")
        readout = self.readout_of(prefix)
        with torch.no_grad():
            rollout = self.rollout(captured, max(int(self._has_class_token(prefix)), _read_tokens(readout)))
        flow = self.read(rollout, prefix)[:, prefix:prefix + int(torch.tensor(grid).prod())].reshape(len(inputs), 1, *grid)
        maps = flow.expand(-1, selection.indices.shape[1], *grid)
        if self.upsample:
            maps = upsample(maps.contiguous(), tuple(inputs.shape[2:]))
            return self.result(maps, selection, MapKind.INPUT_GRID)
        return self.result(maps.contiguous(), selection, MapKind.LAYER_GRID)

    def readout_of(self, prefix: int) -> str:
        """How the model's output reads its tokens, given ``prefix`` tokens before the grid."""
        readout = self.readout if self.readout != "auto" else _pooling(self.model, prefix)
        if _read_tokens(readout) > prefix:
            raise interpkit.LayerError(
                f"the tokens have no class token{' and distillation token' if prefix else ''} (only {prefix} token(s) "
                f"before the patch grid), so the map cannot be read at {readout!r}, here a patch; pass "
                "readout='mean' if the model averages its patch tokens")
        return readout

    def read(self, flows: torch.Tensor, prefix: int) -> torch.Tensor:
        """The row (..., T) of ``flows`` (..., T, T) for the token(s) the model's output reads."""
        readout = self.readout_of(prefix)
        if readout == "mean":
            return flows[..., prefix:, :].mean(dim=-2)
        if readout == "all_tokens":
            return flows.mean(dim=-2)
        return flows[..., :_read_tokens(readout), :].mean(dim=-2)

    def _has_class_token(self, prefix: int) -> bool:
        """Whether token 0 is a class token (timm says so; else any prefix is taken for one)."""
        if hasattr(self.model, "has_class_token"):
            return bool(self.model.has_class_token) and prefix > 0
        return getattr(self.model, "cls_token", True) is not None and prefix > 0

    def attention(self, block: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Head-fused attention (N, T, T) of one block, recomputed from its input."""
        q, k = _projections(block, x.float())  # type: ignore[misc]
        return self.fused(q, k)

    def fused(self, q: torch.Tensor, k: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``softmax(Q K^T / sqrt(d) + mask)`` (N, heads, T, T) with the heads fused: (N, T, T)."""
        return _fuse(_attention(q.float(), k.float(), mask), self.head_fusion)

    def rollout(self, queries_and_keys: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]],
                kept: int = 1) -> torch.Tensor:
        """The blocks' mixed attention multiplied in the order they ran; ``discard_ratio`` never
        discards weights into the first ``kept`` tokens (those the output reads)."""
        result = None
        for q, k, mask in queries_and_keys:
            fused = self.fused(q, k, mask)
            if self.discard_ratio:
                fused = _discard(fused, self.discard_ratio, kept)
            eye = torch.eye(fused.shape[-1], dtype=fused.dtype, device=fused.device)
            mixed = 0.5 * fused + 0.5 * eye
            mixed = mixed / mixed.sum(dim=-1, keepdim=True)
            result = mixed if result is None else mixed @ result
        assert result is not None
        return result


def _capture_queries_and_keys(block: nn.Module, calls: list[dict[str, torch.Tensor]]) -> list[Any]:
    """Hooks that add one record per call of the block to ``calls``, in the order the calls run
    (a block shared by several layers adds one per layer): its queries and keys (N, heads, T, d)
    and key padding mask. The queries and keys are read from the modules that produce them where
    the block has such modules (timm's q_norm/k_norm, HuggingFace's query/key projections), else
    recomputed from the block's input."""
    current: list[dict[str, torch.Tensor]] = []

    def start(module: nn.Module, args: tuple, kwargs: dict) -> None:
        record: dict[str, torch.Tensor] = {}
        mask = _masks(module, args, kwargs)
        if mask is not None:
            record["mask"] = mask.detach()
        if not (_timm(module) or _huggingface(module)):
            x = args[0] if args else kwargs.get("hidden_states", kwargs.get("query"))
            record["q"], record["k"] = (t.detach() for t in _projections(module, x.detach()))  # type: ignore[misc]
        calls.append(record)
        current[:] = [record]

    def keep(name: str, heads: int | None):
        def hook(_module: nn.Module, _args: tuple, output: torch.Tensor) -> None:
            value = output.detach()
            if heads is not None:  # (N, T, D) -> (N, heads, T, d)
                value = value.reshape(*value.shape[:2], heads, -1).transpose(1, 2)
            if current:
                current[0].setdefault(name, value)
        return hook

    handles = [block.register_forward_pre_hook(start, with_kwargs=True)]
    if _timm(block):
        return handles + [block.q_norm.register_forward_hook(keep("q", None)),
                          block.k_norm.register_forward_hook(keep("k", None))]
    huggingface = _huggingface(block)
    if huggingface is not None:
        query, key, heads = huggingface
        handles += [query.register_forward_hook(keep("q", heads)), key.register_forward_hook(keep("k", heads))]
    return handles


def _plain(target: TargetLike) -> bool:
    """Targets resolved from the logits alone (None, an int, 'all', class indices): no graph needed."""
    return target is None or isinstance(target, (int, str, torch.Tensor, list))


def _fuse(weights: torch.Tensor, how: str) -> torch.Tensor:
    return {"mean": weights.mean(1), "max": weights.amax(1), "min": weights.amin(1)}[how]


def _attention(q: torch.Tensor, k: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """``softmax(Q K^T / sqrt(d))`` (N, heads, T, T) with a key padding mask (N, T) applied as
    nn.MultiheadAttention does: True (or -inf) keys get no weight."""
    scores = q @ k.transpose(-2, -1) / q.shape[-1] ** 0.5
    if mask is not None:
        padding = mask[:, None, None, :]
        scores = scores.masked_fill(padding, float("-inf")) if mask.dtype == torch.bool else scores + padding.to(scores)
    return scores.softmax(dim=-1)


def _pooling(model: nn.Module, prefix: int) -> str:
    """How the model reads its tokens: timm's ``global_pool`` (and distillation token) where it
    has one, HuggingFace's pooling, else the class token (token 0) when the tokens have a prefix."""
    pool = getattr(model, "global_pool", None)
    if isinstance(pool, str) and hasattr(model, "num_prefix_tokens"):  # timm's vision transformers
        if pool == "token":
            return "class_and_distillation" if getattr(model, "dist_token", None) is not None else "class_token"
        if pool == "avg":
            return "all_tokens" if getattr(model, "pool_include_prefix", False) else "mean"
        raise interpkit.LayerError(f"the model pools its tokens with global_pool={pool!r}, through which attention "
                                   "flow is not defined; attention maps are read at the class token or the patch mean")
    config = getattr(model, "config", None)
    kind = getattr(config, "model_type", None)
    if kind in ("beit", "data2vec-vision") and getattr(config, "use_mean_pooling", False):
        return "mean"  # BeitPooler averages the patch tokens
    if isinstance(kind, str) and kind.startswith("dinov2") and hasattr(model, "classifier"):
        raise interpkit.LayerError("DINOv2's classifier reads the class token and the patch tokens' mean side by side, "
                                   "so no one token row is what the output reads; pass readout='class_token' or "
                                   "readout='mean' to choose one")
    if type(model).__name__.endswith("WithTeacher"):  # HuggingFace DeiT: the two heads averaged
        return "class_and_distillation"
    if prefix == 0:
        raise interpkit.LayerError(
            "the tokens have no class token, and how the model pools them is unknown, so the map cannot be read at "
            "the token its output reads; pass readout='mean' if the model averages its patch tokens")
    return "class_token"


def _masks(module: nn.Module, args: tuple, kwargs: dict) -> torch.Tensor | None:
    """The block's key padding mask (nn.MultiheadAttention), or None; any other attention mask is
    refused, because the recomputed attention would not be the model's."""
    if isinstance(module, nn.MultiheadAttention):
        names = ("key", "value", "key_padding_mask", "need_weights", "attn_mask")
        given = {**dict(zip(names, args[1:])), **kwargs}
        query = args[0] if args else kwargs.get("query")
        if given.get("key") is not query or given.get("value") is not query:
            raise interpkit.LayerError("attention maps explain self-attention: this nn.MultiheadAttention was called "
                                       "with keys or values other than its queries (cross-attention)")
        if module.bias_k is not None or module.add_zero_attn:
            raise interpkit.LayerError("attention maps are recomputed over the tokens alone; add_bias_kv and "
                                       "add_zero_attn add keys that are not tokens")
        if given.get("attn_mask") is not None or given.get("is_causal"):
            raise interpkit.LayerError("attention maps are recomputed without attn_mask or is_causal; a key padding mask "
                                       "is applied exactly, other masks are refused")
        return given.get("key_padding_mask")
    inputs = ("hidden_states", "x", "query")  # the tokens themselves
    given = [name for name, value in kwargs.items() if name not in inputs and (
        any(isinstance(t, torch.Tensor) for t in (value if isinstance(value, (tuple, list)) else (value,)))
        or (name == "is_causal" and value))]
    if given or any(isinstance(a, torch.Tensor) for a in args[1:]):
        raise interpkit.LayerError(f"attention maps are recomputed from the block's queries and keys alone; this block "
                                   f"was given {', '.join(given) or 'more arguments than its input'} (a mask, rotary "
                                   "position embeddings), which its attention may use")
    return None


def _discard(fused: torch.Tensor, ratio: float, kept: int) -> torch.Tensor:
    """Zero the lowest ``ratio`` of each map's weights, never those into the first ``kept``
    tokens (columns): the class token (and distillation token) the output reads."""
    flat = fused.flatten(1).clone()
    lowest = flat.topk(int(flat.shape[1] * ratio), dim=1, largest=False).indices
    into_kept = (lowest % fused.shape[-1]) < kept
    flat.scatter_(1, lowest, torch.where(into_kept, flat.gather(1, lowest), 0.0))
    return flat.view_as(fused)


_READOUTS = ("auto", "class_token", "class_and_distillation", "mean", "all_tokens")


def _read_tokens(readout: str) -> int:
    """How many leading tokens a readout reads by position (none for the means)."""
    return {"class_token": 1, "class_and_distillation": 2}.get(readout, 0)


class GenericAttention(AttentionRollout):
    """Gradient-weighted attention (Chefer et al., 2021, "Generic attention-model
    explainability"): per block ``A_bar = mean_heads(ReLU(dS/dA * A))``, and from ``R = I`` each
    block adds ``A_bar R``; the map is the class token's row of R over the patch tokens, per
    target. The blocks' fused attention exposes no A to differentiate, so during the one forward
    each attention block's output is recomputed eagerly from its own projections and an A that
    stays in the graph (the output is the same to rounding; tested); one batched backward gives
    every target's gradients."""

    name = "generic_attention"
    target_free = False  # relevance from the target's gradient, unlike the rollout it extends

    def __init__(self, model: nn.Module, upsample: bool = True, layout: TokenGrid | None = None,
                 readout: str = "auto") -> None:
        super().__init__(model, upsample=upsample, layout=layout, readout=readout)

    def explain(self, call: Call) -> Explanation:
        inputs = call.x
        selection, ran, _ = self.forward_with_attention(call, self.blocks)
        weights = [attention for _, attention in ran]
        gradients = per_target_gradients(selection.scores, weights, selection.graph_elements)
        n, k = selection.scores.shape
        tokens = weights[0].shape[-1]
        relevance = torch.eye(tokens, device=inputs.device, dtype=weights[0].dtype).expand(n, k, tokens, tokens)
        for attention, gradient in zip(weights, gradients):  # (N, H, T, T), (N, K, H, T, T)
            fused = (gradient * attention.detach().unsqueeze(1)).clamp_min(0).mean(dim=2)  # (N, K, T, T)
            relevance = relevance + fused @ relevance
        prefix, grid = self.layout.resolve(tokens, tuple(inputs.shape[2:]), "attention")
        maps = self.read(relevance, prefix)[:, :, prefix:prefix + int(torch.tensor(grid).prod())].reshape(n, k, *grid)
        if self.upsample:
            return self.result(upsample(maps.contiguous(), tuple(inputs.shape[2:])), selection, MapKind.INPUT_GRID)
        return self.result(maps.contiguous(), selection, MapKind.LAYER_GRID)


    def forward_with_attention(self, call: Call, blocks: list[nn.Module], layers: tuple[nn.Module, ...] = ()
                               ) -> tuple[TargetSelection, list[tuple[nn.Module, torch.Tensor]], list[torch.Tensor]]:
        """One forward in which each of ``blocks`` computes its output from explicit attention
        weights kept in the graph: the resolved targets, each block call's (block, weights
        (N, heads, T, T)) in the order they ran, and the outputs of ``layers`` (their first
        tensor)."""
        weights: list[tuple[nn.Module, torch.Tensor]] = []
        errors: list[torch.Tensor] = []
        outputs: dict[nn.Module, torch.Tensor] = {}

        def eager(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> Any:
            x = args[0] if args else kwargs.get("hidden_states", kwargs.get("query"))
            recomputed, attention = _eager_attention(module, x, args, kwargs, output)
            weights.append((module, attention))
            errors.append(_relative_error(recomputed, output))
            return recomputed

        def keep(module: nn.Module, _args: tuple, output: Any) -> None:
            outputs.setdefault(module, output[0] if isinstance(output, tuple) else output)

        handles = [b.register_forward_hook(eager, with_kwargs=True) for b in blocks]
        handles += [layer.register_forward_hook(keep) for layer in layers]
        try:
            selection, _ = self.forward_with_targets(call)
        finally:
            for handle in handles:
                handle.remove()
        _check_one_token_sequence([attention.shape for _, attention in weights], len(call.x))
        _refuse_inexact(errors)
        missing = [layer for layer in layers if layer not in outputs]
        if missing:
            raise interpkit.LayerError(f"the transformer layer {type(missing[0]).__name__} around an attention block was "
                                       "not called in the forward (its parts are called one by one), so its output "
                                       "cannot be read; pass score_projection and a model whose blocks are modules")
        return selection, weights, [outputs[layer] for layer in layers]


class LeGrad(GenericAttention):
    """LeGrad (Bousselham et al., 2024): for each chosen transformer layer ``l``, its output
    tokens are read out as the model reads its last layer's (``score_projection``: the final
    norm, the pooling and the head), giving scores ``s^l``; the gradient of the target's
    ``s^l`` with respect to the layer's attention weights ``A^l`` (N, heads, T, T), its positive
    part averaged over heads and queries, is that layer's map over the key tokens, and the map
    is the mean over the layers (patch tokens on the grid). ``layers`` chooses them: None for
    all, an int ``k`` for the last ``k``, or a list of indices. The default ``score_projection``
    knows torchvision's, timm's and HuggingFace's vision transformers and is checked to give
    the model's own logits from its last layer; for any other model pass one (tokens (N, T, D)
    to logits (N, classes)). torchcam 0.5 averages all tokens, class token included, before its
    projection, where torchvision's model reads the class token; a test shows the difference.
    Targets are classes: each layer's scores are read at the target's class. One backward per
    layer (each layer has its own score)."""

    name = "legrad"

    def __init__(self, model: nn.Module, layers: int | list[int] | None = None, score_projection: Any = None,
                 upsample: bool = True, layout: TokenGrid | None = None) -> None:
        super().__init__(model, upsample=upsample, layout=layout)
        count = len(self.blocks)
        if layers is None:
            chosen = list(range(count))
        elif isinstance(layers, int) and not isinstance(layers, bool) and 1 <= layers <= count:
            chosen = list(range(count - layers, count))
        elif isinstance(layers, list) and layers and all(isinstance(i, int) and not isinstance(i, bool)
                                                         and -count <= i < count for i in layers):
            chosen = sorted({i % count for i in layers})
        else:
            raise interpkit.InputError(f"layers must be None, an int from 1 to {count} (the last ones) or a list of "
                                       f"indices of the model's {count} attention blocks, not {layers!r}")
        self.chosen = [self.blocks[i] for i in chosen]
        self.outputs = tuple(_layer_of(self.model, block, self.blocks) for block in self.chosen)
        self.checked = score_projection is None  # ours must reproduce the logits; a user's is theirs
        self.last = _layer_of(self.model, self.blocks[-1], self.blocks)
        if score_projection is not None and not callable(score_projection):
            raise interpkit.InputError(f"score_projection must be a callable from tokens to logits, not {score_projection!r}")
        self.score_projection = score_projection or _score_projection(self.model)

    def explain(self, call: Call) -> Explanation:
        inputs = call.x
        selection, ran, outputs = self.forward_with_attention(call, self.chosen, self.outputs + (self.last,))
        if len(ran) != len(self.chosen):
            raise interpkit.LayerError(f"LeGrad reads each chosen attention block's layer once, but the {len(self.chosen)} "
                                       f"chosen blocks ran {len(ran)} times (a block shared by several layers)")
        attention_of = dict(ran)
        weights = [attention_of[block] for block in self.chosen]  # in the order of the layers' outputs
        if not selection.classes:
            raise interpkit.TargetError("LeGrad reads each layer's score of the target class: give class indices, "
                                        "not a callable or neurons")
        classes = int(selection.indices.max()) + 1  # one host read for every layer's readout
        with torch.enable_grad():
            if self.checked:
                _check_projection(_read_out(self.score_projection, outputs[-1], selection, classes), selection)
            maps = None
            for attention, tokens in zip(weights, outputs):  # (N, H, T, T), (N, T, D)
                scores = _read_out(self.score_projection, tokens, selection, classes)  # (N, K)
                (gradient,) = per_target_gradients(scores, [attention], keep_graph=True)
                layer_map = gradient.clamp_min(0).mean(dim=(2, 3))  # (N, K, T): heads and queries averaged
                maps = layer_map if maps is None else maps + layer_map
        assert maps is not None
        n, k, tokens = maps.shape
        prefix, grid = self.layout.resolve(tokens, tuple(inputs.shape[2:]), "attention")
        maps = (maps / len(weights))[:, :, prefix:prefix + int(torch.tensor(grid).prod())].reshape(n, k, *grid)
        if self.upsample:
            return self.result(upsample(maps.contiguous(), tuple(inputs.shape[2:])), selection, MapKind.INPUT_GRID)
        return self.result(maps.contiguous(), selection, MapKind.LAYER_GRID)


def _compare_recomputed(errors: list[torch.Tensor]) -> Any:
    """A forward hook adding to ``errors`` how far the block's output recomputed from explicit
    attention weights is from its own."""
    def hook(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        x = args[0] if args else kwargs.get("hidden_states", kwargs.get("query"))
        with torch.no_grad():
            errors.append(_relative_error(_eager_attention(module, x, args, kwargs, output)[0], output))
    return hook


def _refuse_inexact(errors: list[torch.Tensor]) -> None:
    """Refuse blocks whose recomputed outputs are not the model's (``errors`` in units of their
    dtype's rounding tolerance)."""
    worst = float(torch.stack(errors).max())  # one sync for every block
    if worst > 1:
        raise interpkit.LayerError(
            f"an attention block's output recomputed with explicit weights differs from the model's by {worst:.2g} "
            "times its dtype's rounding tolerance: the block does something beyond softmax(QK^T/sqrt(d))V (rotary "
            "embeddings, a position bias) that these methods do not recompute, so its attention would not be the model's")


def _check_one_token_sequence(shapes: list[torch.Size], samples: int) -> None:
    """Refuse attention that is not over one token sequence per sample through every block:
    ``shapes`` are the blocks' (N, heads, T, ...) queries or weights."""
    if not shapes:
        raise interpkit.LayerError("none of the model's attention blocks ran in its forward, so there is no attention "
                                   "to follow")
    seen = sorted({(shape[0], shape[2]) for shape in shapes})
    if any(rows != samples for rows, _ in seen) or len(seen) > 1:
        found = ", ".join(f"{rows} sequences of {tokens} tokens" for rows, tokens in seen)
        raise interpkit.LayerError(
            f"these methods follow one token sequence per sample through every attention block, but this model's "
            f"blocks attend over {found} for {samples} samples: a hybrid that attends within patches or changes the "
            "number of tokens between blocks (e.g. MobileViT) is not a plain vision transformer, so attention "
            "rollout, generic attention and LeGrad are not defined for it; GradCAM on a layer is")


def _layer_of(model: nn.Module, block: nn.Module, blocks: list[nn.Module]) -> nn.Module:
    """The transformer layer around an attention module: its outermost ancestor that is an item
    of a Sequential or ModuleList and holds no other attention module (torchvision's
    EncoderBlock, timm's Block, HuggingFace's ViTLayer); without such an ancestor, the outermost
    holding no other attention module where there are several, else the attention module itself
    (the readout check then refuses what is not the model's layer)."""
    names = {module: name for name, module in model.named_modules()}
    parts = names[block].split(".")
    others = [names[b] for b in blocks if b is not block]
    alone = [".".join(parts[:end]) for end in range(1, len(parts))
             if not any(other.startswith(".".join(parts[:end]) + ".") for other in others)]
    for prefix in alone:
        parent = model.get_submodule(prefix.rpartition(".")[0]) if "." in prefix else model
        if isinstance(parent, (nn.Sequential, nn.ModuleList)):
            return model.get_submodule(prefix)
    return model.get_submodule(alone[0]) if alone and others else block


def _score_projection(model: nn.Module) -> Any:
    """The model's own readout from its last layer's tokens to its logits."""
    if hasattr(model, "encoder") and isinstance(getattr(model.encoder, "ln", None), nn.Module) and hasattr(model, "heads"):
        return lambda tokens: model.heads(model.encoder.ln(tokens)[:, 0])  # torchvision
    if callable(getattr(model, "forward_head", None)) and isinstance(getattr(model, "norm", None), nn.Module):
        return lambda tokens: model.forward_head(model.norm(tokens))  # timm
    vit = getattr(model, "vit", None)
    if isinstance(getattr(vit, "layernorm", None), nn.Module) and isinstance(getattr(model, "classifier", None), nn.Module):
        return lambda tokens: model.classifier(vit.layernorm(tokens)[:, 0])  # HuggingFace ViTForImageClassification
    norm, head = getattr(model, "norm", None), getattr(model, "head", None)
    if isinstance(norm, nn.Module) and isinstance(head, nn.Linear):
        return lambda tokens: head(norm(tokens)[:, 0])  # a class token read through norm and head (checked)
    raise interpkit.LayerError(f"LeGrad does not know how {type(model).__name__} reads its tokens into logits; pass "
                               "score_projection, a callable from a layer's tokens (N, T, D) to logits (N, classes)")


def _read_out(projection: Any, tokens: torch.Tensor, selection: TargetSelection, classes: int) -> torch.Tensor:
    """The targets' scores (N, K) read out of a layer's tokens; a readout that does not give
    logits (N, at least ``classes``) in the graph is refused."""
    if not isinstance(tokens, torch.Tensor) or tokens.dim() != 3:
        raise interpkit.LayerError("LeGrad reads a layer's tokens (N, T, D); this layer returns something else")
    logits = projection(tokens)
    n = selection.indices.shape[0]
    if (not isinstance(logits, torch.Tensor) or logits.dim() != 2 or len(logits) != n or logits.shape[1] < classes
            or not logits.requires_grad):
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise interpkit.InputError(f"score_projection must map tokens (N, T, D) to logits (N, classes) that depend on "
                                   f"them, with the target's class among them; it gave {shape} for N = {n}")
    return logits.gather(1, selection.indices)


def _check_projection(mine: torch.Tensor, selection: TargetSelection) -> None:
    """Refuse a readout that does not give the model's own scores from its last layer."""
    error = float(mismatch(selection.scores, mine))
    if error > 1:
        raise interpkit.LayerError(f"LeGrad's readout of the last layer's tokens differs from the model's output by "
                                   f"{error:.2g} times its dtype's rounding tolerance: the model reads its tokens another "
                                   "way; pass score_projection")


def _eager_attention(module: nn.Module, x: torch.Tensor, args: tuple, kwargs: dict,
                     output: Any) -> tuple[Any, torch.Tensor]:
    """The module's output recomputed with explicit attention weights A (N, heads, T, T) kept
    in the graph, in the form the module returns; refuses what it cannot recompute exactly."""
    projections = _projections(module, x)
    if projections is None:
        raise interpkit.LayerError(f"cannot recompute attention of {type(module).__name__}")
    q, k = projections
    attention = _attention(q, k, _masks(module, args, kwargs))
    n, t, _ = x.shape
    if isinstance(module, nn.MultiheadAttention):
        key, value = (args[1], args[2]) if len(args) >= 3 else (kwargs.get("key"), kwargs.get("value"))
        if key is not x or value is not x:
            raise interpkit.LayerError("generic attention explains self-attention (query, key and value the same)")
        _, _, w_v = module.in_proj_weight.chunk(3)
        b_v = module.in_proj_bias.chunk(3)[2] if module.in_proj_bias is not None else None
        v = nn.functional.linear(x, w_v, b_v).reshape(n, t, module.num_heads, -1).transpose(1, 2)
        merged = (attention @ v).transpose(1, 2).reshape(n, t, -1)
        return (module.out_proj(merged), output[1]), attention
    if hasattr(module, "qkv"):  # timm
        if (getattr(module, "gate", None) is not None or args[1:] or kwargs.get("attn_mask") is not None
                or kwargs.get("is_causal")):
            raise interpkit.LayerError("generic attention explains timm attention without gates or masks")
        qkv = nn.functional.linear(x, module.qkv.weight, _qkv_bias(module))
        v = qkv.reshape(n, t, 3, module.num_heads, -1).permute(2, 0, 3, 1, 4)[2]
        merged = (attention @ v).transpose(1, 2).reshape(n, t, -1)
        return module.proj_drop(module.proj(module.norm(merged) if hasattr(module, "norm") else merged)), attention
    value = getattr(module, "value", None) or getattr(module, "v_proj", None)
    out = getattr(module, "o_proj", None)
    if out is None or value is None:
        raise interpkit.LayerError(f"generic attention cannot recompute {type(module).__name__}'s output")
    v = value(x).reshape(n, t, q.shape[1], -1).transpose(1, 2)
    merged = out((attention @ v).transpose(1, 2).reshape(n, t, -1))
    return ((merged, attention) if isinstance(output, tuple) else merged), attention


def _relative_error(recomputed: Any, output: Any) -> torch.Tensor:
    """max |recomputed - output| / max |output| of the first tensors of two block outputs, in
    units of their dtype's rounding tolerance (above 1: beyond rounding)."""
    first = [value[0] if isinstance(value, tuple) else value for value in (recomputed, output)]
    return mismatch(first[1], first[0])


@interpkit.hookimpl
def interpkit_register_explainers(register):
    register(AttentionRollout)
    register(GenericAttention)
    register(LeGrad)
