"""Attention written out as the ops it is made of, so that propagation rules see each one.

torch's fused ``F.scaled_dot_product_attention`` and ``F.multi_head_attention_forward`` (the
function behind ``nn.MultiheadAttention``) are single calls to the propagation mode. Here they
are rebuilt from the projections, a product of queries and keys, the scale, the mask, softmax and
a product with the values, following torch's documented reference implementations; ``op(func,
*args)`` runs each through the caller's mode, so each gets its rule. The caller keeps the fused
op's own value as the output and checks the two against each other (``mismatch``): a
decomposition that does not reproduce the op is refused, never used silently.
"""

from __future__ import annotations

import contextlib
import inspect
import math
from typing import Any, Callable

import torch
import torch.nn.functional as F

T = torch.Tensor
Op = Callable[..., Any]

_MHA = inspect.signature(F.multi_head_attention_forward)


def mismatch(exact: torch.Tensor, decomposed: torch.Tensor) -> torch.Tensor:
    """The largest difference between the two, relative to the largest value and to a tolerance
    by dtype (a 0-d tensor on their device, no synchronisation): above 1, they differ by more than
    rounding. NaN on either side where the other has none counts as infinitely far."""
    if exact.dtype.itemsize < 4:
        tolerance = 5e-2
    else:  # TF32 matrix products round to 10 bits on both sides
        tolerance = 1e-3 if torch.get_float32_matmul_precision() == "highest" else 1e-2
    exact, decomposed = exact.detach().float(), decomposed.detach().float()
    finite = exact.isnan() == decomposed.isnan()
    gap = torch.where(exact.isnan(), 0.0, (exact - decomposed).abs()).nan_to_num(torch.inf).amax()
    scale = exact.nan_to_num(0.0, 0.0, 0.0).abs().amax().clamp(min=1e-6)
    return torch.where(finite.all(), gap / (scale * tolerance), torch.inf)


def _additive(mask: torch.Tensor | None, dtype: torch.dtype, allowed: bool) -> torch.Tensor | None:
    """A mask as what is added to the attention scores: a boolean one gives -inf where attention
    is not allowed (``allowed``: True marks the allowed positions, as for SDPA; else the
    forbidden ones, as for ``nn.MultiheadAttention``)."""
    if mask is None or mask.is_floating_point():
        return mask
    forbidden = ~mask if allowed else mask
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(forbidden, -torch.inf)


def written_out(func: Any, op: Op, args: tuple, kwargs: dict) -> Any:
    """The fused attention ``func(*args, **kwargs)`` from its parts (None where they are not
    written out here)."""
    if func is F.scaled_dot_product_attention:
        return scaled_dot_product_attention(op, *args, **kwargs)
    return multi_head_attention(op, args, kwargs)


def _attend(op: Op, q, k, v, scale: float, bias: torch.Tensor | None, empty_rows_zero: bool = True
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """``softmax(q k^T scale + bias) v`` and the attention weights, in float32 at least (autocast
    off), as torch's fused kernels compute them: half-precision scores would overflow or round
    away what the fused op keeps. q and k are each scaled by the scale's root first, as torch's
    reference does. A query that may attend to nothing (its bias all -inf) gets weights 0, as
    torch's SDPA gives it, where softmax would give NaN (``empty_rows_zero`` False: the NaN kept,
    as ``nn.MultiheadAttention`` returning its weights)."""
    given = v.dtype
    wide = torch.promote_types(torch.promote_types(q.dtype, v.dtype), torch.float32)
    with _without_autocast(q.device.type):
        q, k, v = (op(T.to, t, wide) if t.dtype != wide else t for t in (q, k, v))
        keep, blocked = None, None
        if bias is not None:  # through ``op``: a bias computed from the input (SAM's relative positions) too
            bias = op(T.to, bias, wide) if bias.dtype != wide else bias
            # where attention is not allowed, read from the values: a constant. A bias in a graph (from the input)
            # has it filled into the scores after the bias is added (its relevance share there, -inf * 0, is NaN)
            blocked = torch.isneginf(bias.detach())
            if empty_rows_zero:  # a query that may attend to nothing
                empty = blocked.all(-1, keepdim=True)
                blocked, keep = blocked & ~empty, (~empty).to(wide)
                bias = op(T.masked_fill, bias, empty, 0.0)
            if bias.requires_grad:
                bias = op(T.masked_fill, bias, blocked, 0.0)
            else:
                blocked = None
        root = math.sqrt(abs(scale))
        scores = op(torch.matmul, op(T.mul, q, math.copysign(root, scale)), op(T.transpose, op(T.mul, k, root), -2, -1))
        if bias is not None:
            scores = op(T.add, scores, bias)
        if blocked is not None:
            scores = op(T.masked_fill, scores, blocked, -torch.inf)
        weights = op(torch.softmax, scores, -1)
        if keep is not None:
            weights = op(T.mul, weights, keep)
        out = op(torch.matmul, weights, v)
        if wide != given:
            out, weights = op(T.to, out, given), op(T.to, weights, given)
    return out, weights


def _without_autocast(device_type: str) -> Any:
    """Autocast turned off for the block (nothing to turn off where torch has no autocast for the
    device: before torch 2.5 asking for MPS raised, even with ``enabled=False``)."""
    try:
        return torch.autocast(device_type, enabled=False)
    except RuntimeError:
        return contextlib.nullcontext()


def scaled_dot_product_attention(op: Op, query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False,
                                 scale=None, enable_gqa=False) -> torch.Tensor | None:
    """``F.scaled_dot_product_attention`` from its parts (None with dropout: random weights)."""
    if dropout_p:
        return None
    length, source = query.size(-2), key.size(-2)
    bias = _additive(attn_mask, query.dtype, allowed=True)
    if is_causal:
        causal = torch.ones(length, source, dtype=torch.bool, device=query.device).tril()
        bias = _additive(causal, query.dtype, allowed=True)
    if enable_gqa:
        groups = query.size(-3) // key.size(-3)
        key, value = (op(torch.repeat_interleave, t, groups, -3) for t in (key, value))
    factor = 1 / math.sqrt(query.size(-1)) if scale is None else scale
    return _attend(op, query, key, value, factor, bias)[0]


def multi_head_attention(op: Op, args: tuple, kwargs: dict) -> tuple[torch.Tensor, torch.Tensor | None] | None:
    """``F.multi_head_attention_forward`` from its parts; None for what it does not write out
    (added key and value biases, zero attention, static keys, dropout in training)."""
    a = _MHA.bind(*args, **kwargs)
    a.apply_defaults()
    p = a.arguments
    if (p["bias_k"] is not None or p["bias_v"] is not None or p["add_zero_attn"] or p["static_k"] is not None
            or p["static_v"] is not None or (p["training"] and p["dropout_p"])):
        return None
    query, key, value = p["query"], p["key"], p["value"]
    batched = query.dim() == 3
    if not batched:
        query, key, value = (op(T.unsqueeze, t, 1) for t in (query, key, value))
    length, batch, dim = query.shape
    source, heads = key.shape[0], p["num_heads"]
    if p["use_separate_proj_weight"]:
        weights = (p["q_proj_weight"], p["k_proj_weight"], p["v_proj_weight"])
    else:
        weights = p["in_proj_weight"].chunk(3)
    biases = (None,) * 3 if p["in_proj_bias"] is None else p["in_proj_bias"].chunk(3)

    def split(t: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, size: int) -> torch.Tensor:
        projected = op(F.linear, t, w, b)  # (size, N, E) -> (N, heads, size, E / heads)
        return op(T.permute, op(T.reshape, projected, size, batch, heads, dim // heads), 1, 2, 0, 3)

    q, k, v = (split(t, w, b, size) for t, w, b, size in
               zip((query, key, value), weights, biases, (length, source, source)))
    bias = _mask(p["attn_mask"], p["key_padding_mask"], query.dtype, batch, heads, batched)
    # with its weights asked for, torch computes softmax itself (NaN for a query with nothing to attend to)
    out, attention = _attend(op, q, k, v, 1 / math.sqrt(dim // heads), bias, not p["need_weights"])
    out = op(T.reshape, op(T.permute, out, 2, 0, 1, 3), length * batch, dim)
    out = op(T.reshape, op(F.linear, out, p["out_proj_weight"], p["out_proj_bias"]), length, batch, dim)
    if not batched:
        out = op(T.squeeze, out, 1)
    if not p["need_weights"]:
        return out, None
    if p["average_attn_weights"]:
        attention = op(T.mean, attention, 1)
    return out, attention if batched else op(T.squeeze, attention, 0)


def _mask(attn_mask, key_padding_mask, dtype, batch: int, heads: int, batched: bool) -> torch.Tensor | None:
    """``nn.MultiheadAttention``'s masks (True: not attended) as one additive (N or 1, heads or 1,
    L, S) bias; ``is_causal`` is only a hint there that ``attn_mask`` is causal."""
    bias = _additive(attn_mask, dtype, allowed=False)
    if bias is not None and bias.dim() == 3:  # (N * heads, L, S)
        bias = bias.view(batch, heads, *bias.shape[1:])
    padding = _additive(key_padding_mask, dtype, allowed=False)
    if padding is not None:  # (N, S), or (S,) unbatched
        padding = padding.view(batch if batched else 1, 1, 1, -1)
        bias = padding if bias is None else bias + padding
    return bias
