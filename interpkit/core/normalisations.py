"""Normalisations: a tensor divided by a statistic of its own scale.

AttnLRP (Achtibat et al., 2024) holds a normalisation's statistic constant, so that relevance
passes through the division as through a linear map. torch's functional norms (layer, RMS,
group and instance norms, ``F.normalize``) are single calls: ``linearised`` gives each with its
statistic held at the input's value. Many models write their norm out instead (the RMS norms of
Llama, Mistral, Qwen, Gemma and T5: ``h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)``;
``(x - u) / torch.sqrt(s + eps)``; ``x / x.norm(dim=-1, keepdim=True)``). The propagation mode
follows those through the kinds below: a square, a mean of squares (a second moment) or a
variance, its root (a scale: the standard deviation or a norm) or its inverse root, and the
ratio of two scales (ConvNeXt V2's response normalisation: ``x * (g / g.mean())``). A tensor
multiplied by an inverse root or a ratio, or divided by a root or a ratio, is normalised where
the statistic is of it, at its groups' positions (``normalises``, ``meets``): the mode holds the
scale constant there. A variance or a scale (a statistic) is computed detached (no relevance
passes into it), so any other use of one, or of a value made from one, with the input's other
values is refused as a read of a detached value. A statistic over the batch axis would mix the
samples: it is not one, and stays an op no rule covers.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F

T = torch.Tensor
Function = Callable[[torch.Tensor], torch.Tensor]

# torch's normalisations as one call
NORMS = {F.layer_norm, F.rms_norm, F.group_norm, F.instance_norm, F.normalize}

SQUARE, MEAN, MOMENT, VARIANCE = "square", "mean", "second moment", "variance"
ROOT, INVERSE, RATIO = "root", "inverse root", "ratio of scales"
SCALES = (ROOT, INVERSE, RATIO)
STATISTICS = (VARIANCE, *SCALES)  # made without rules: only a norm may read them
_FLIPPED = {ROOT: INVERSE, INVERSE: ROOT, RATIO: RATIO}


def _named(owner: Any, names: str) -> set:
    return {getattr(owner, name) for name in names.split() if hasattr(owner, name)}


_POWERS = {torch.pow, T.pow, T.pow_, T.__pow__, T.__ipow__}
_SQUARES = {torch.square, T.square, T.square_}
_SELF_PRODUCTS = _named(torch, "mul multiply") | _named(T, "mul mul_ multiply __mul__ __imul__")
MEANS = {torch.mean, T.mean, torch.sum, T.sum, torch.nanmean, T.nanmean}
_VARIANCES = {torch.var, T.var}
_DEVIATIONS = {torch.std, T.std, torch.norm, T.norm, torch.linalg.vector_norm, torch.linalg.norm}
# a statistic and the mean it was centred by, in one call: the statistic's own op
PAIRED = {torch.var_mean: torch.var, torch.std_mean: torch.std}
_SQRT, _RSQRT = {torch.sqrt, T.sqrt, T.sqrt_}, {torch.rsqrt, T.rsqrt, T.rsqrt_}
_RECIPROCALS = {torch.reciprocal, T.reciprocal, T.reciprocal_}
_PRODUCTS = _named(torch, "mul multiply") | _named(T, "mul mul_ multiply multiply_ __mul__ __rmul__ __imul__")
_QUOTIENTS = (_named(torch, "div divide true_divide")
              | _named(T, "div div_ divide divide_ true_divide true_divide_ __truediv__ __itruediv__"))
_SUMS = {torch.add, T.add, T.add_, T.__add__, T.__radd__, T.__iadd__}
_DIFFERENCES = {torch.sub, torch.subtract, T.sub, T.sub_, T.__sub__, T.__isub__}
_ARITHMETIC = _PRODUCTS | _QUOTIENTS | _SUMS | _DIFFERENCES | {T.__rtruediv__}

# the ops that make a statistic from a tensor, or a scale from a second moment or variance
MAKERS = _POWERS | _SQRT | _RSQRT | _DEVIATIONS | _VARIANCES | set(PAIRED)


# moves that leave every value where it was, along axes added or merged only: a statistic moved so
# still belongs to the positions it was taken at (a roll, flip, permutation or index would not)
_SAME_PLACES = (_named(torch, "clone flatten unflatten unsqueeze squeeze reshape broadcast_to")
                | _named(T, "to type type_as float double half bfloat16 clone contiguous detach view view_as reshape "
                            "reshape_as flatten unflatten unsqueeze unsqueeze_ squeeze squeeze_ expand expand_as "
                            "broadcast_to"))
# the in-place ops that make a statistic: the tensor they write is the moment itself
IN_PLACE_MAKERS = _named(T, "sqrt_ rsqrt_ pow_ __ipow__")
# ``h - h.mean(-1, keepdim=True)``: a tensor centred
CENTRINGS = {torch.sub, T.sub, T.__sub__}
# the only ops that make a square or a moment from an untagged tensor (``moment_made``), and the only ones that
# copy, scale or centre a tensor (``keeps_places``, ``scales_only``): the mode skips every other op at one look-up
MOMENT_MAKERS = _POWERS | _SQUARES | _SELF_PRODUCTS | MEANS
BASE_MAKERS = _SAME_PLACES | {T.__getitem__} | _PRODUCTS | _QUOTIENTS | CENTRINGS


def regroups(shape: torch.Size, groups: tuple | None) -> bool:
    """Whether a statistic moved to ``shape`` has its groups elsewhere than at their axes
    (``s.view(N, 1, L)`` of an (N, L, 1) statistic): with as many axes, each group axis keeps its
    size (reduced axes may be expanded); with fewer or more (``keepdim=False``, on its way to an
    ``unsqueeze``), the group sizes stay in order."""
    if groups is None:
        return False
    if len(shape) == len(groups):
        return any(group > 1 and size != group for size, group in zip(shape, groups))
    return [size for size in shape if size != 1] != [group for group in groups if group != 1]


def keeps_places(func: Any, args: tuple) -> bool:
    """Whether ``func`` moves no value to another position (``s[..., None]`` too)."""
    if func is T.__getitem__ and len(args) > 1:
        index = args[1] if isinstance(args[1], tuple) else (args[1],)
        return all(i is None or i is Ellipsis or (isinstance(i, slice) and i == slice(None)) for i in index)
    return func in _SAME_PLACES


def _argument(args: tuple, kwargs: dict, position: int, name: str, default: Any = None) -> Any:
    return args[position] if len(args) > position else kwargs.get(name, default)


def dim_of(args: tuple, kwargs: dict, position: int = 1) -> Any:
    """A reduction's axes, given as ``dim`` or numpy's ``axis``."""
    return _argument(args, kwargs, position, "dim", kwargs.get("axis"))


def operands(args: tuple, kwargs: dict) -> tuple:
    """A binary op's two operands (the second may be given as ``other``)."""
    return (args[0], _argument(args, kwargs, 1, "other")) if args else ()


def moment_made(func: Any, args: tuple, kwargs: dict, kind_of: Callable[[Any], str | None]) -> str | None:
    """What ``func``'s result is, of the kinds a hand-written norm makes through the rules on its
    way to the statistic: a square of any tensor, or a mean (or sum) of squares."""
    x = args[0] if args else None
    kind = kind_of(x)
    if kind is None and func in _POWERS and _number(_argument(args, kwargs, 1, "exponent")) == 2:
        return SQUARE
    if kind is None and (func in _SQUARES or (func in _SELF_PRODUCTS and len(args) > 1 and args[1] is x)):
        return SQUARE
    if func in MEANS and _per_sample(dim_of(args, kwargs), x):  # a mean over the sample's axes: a centre, a moment
        return MOMENT if kind == SQUARE else MEAN if kind is None and kwargs.get("keepdim", False) else None
    return None


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _per_sample(dim: Any, x: Any) -> bool:
    """Whether ``dim`` names axes of ``x`` other than its first (a statistic over the batch axis,
    or over every axis, would mix the samples)."""
    dims = (dim,) if isinstance(dim, int) and not isinstance(dim, bool) else dim
    if not isinstance(dims, (tuple, list)) or not dims or not isinstance(x, torch.Tensor) or x.dim() == 0:
        return False
    return all(isinstance(d, int) and not isinstance(d, bool) and d % x.dim() != 0 for d in dims)


def over_the_batch(func: Any, args: tuple, kwargs: dict) -> bool:
    """Whether ``func`` (``F.normalize``, or a variance, deviation or norm written out) takes its
    statistic over the first axis, the batch. torch's layer and RMS norms are taken as given
    (a norm over a sample's every axis is common: ``F.layer_norm(h[b], h[b].shape)``)."""
    x = args[0] if args else None
    if func is F.normalize:
        return not _per_sample(_argument(args, kwargs, 2, "dim", 1), x)
    if func in _VARIANCES or func in _DEVIATIONS or func in PAIRED:
        position = 2 if func in (torch.norm, T.norm, torch.linalg.vector_norm, torch.linalg.norm) else 1
        dim = dim_of(args, kwargs, position)
        return dim is not None and not _per_sample(dim, x)
    return False


def statistic_made(func: Any, args: tuple, kwargs: dict, kind_of: Callable[[Any], str | None]) -> str | None:
    """Whether ``func`` makes a norm's statistic: a variance, standard deviation or norm of a
    tensor over named axes, or a root or inverse root of a second moment or variance (None: not
    one; over every axis a statistic would mix the samples, so it stays an ordinary op)."""
    x = args[0] if args else None
    if (func in _VARIANCES or func in _DEVIATIONS) and kind_of(x) is not None:
        return None  # a variance or norm of a square or moment: of another degree
    if func in _VARIANCES or func in _DEVIATIONS:
        position = 2 if func in (torch.norm, T.norm, torch.linalg.vector_norm, torch.linalg.norm) else 1
        per_sample = _per_sample(dim_of(args, kwargs, position), x)
        return (VARIANCE if func in _VARIANCES else ROOT) if per_sample else None
    if kind_of(x) not in (MOMENT, VARIANCE):
        return None
    if func in _SQRT:
        return ROOT
    if func in _RSQRT:
        return INVERSE
    return {0.5: ROOT, -0.5: INVERSE}.get(_number(_argument(args, kwargs, 1, "exponent")))  # type: ignore[arg-type]


def kept(func: Any, args: tuple, kwargs: dict, statistic: torch.Tensor, kind: str) -> str | None:
    """The kind of ``func(*args)``, an op on ``statistic`` and constants: scaled by a constant it
    keeps its kind, a variance or root shifted by one (``+ eps``) too, as does a root's mean over
    axes of the sample; a constant divided by a scale (or its power -1) inverts it; None for
    anything else (``inv + 1``, ``1 / var``: no longer a scale)."""
    if func in MEANS:
        return kind if kind == ROOT and _per_sample(dim_of(args, kwargs), statistic) else None
    if func in _RECIPROCALS or (func in _POWERS and _number(_argument(args, kwargs, 1, "exponent")) == -1):
        return _FLIPPED.get(kind)
    pair = operands(args, kwargs)
    if (len(pair) != 2 or pair[0] is pair[1] or func not in _ARITHMETIC or kwargs.get("rounding_mode") is not None
            or kwargs.get("alpha", 1) != 1):
        return None
    first = pair[0] is statistic
    if func is T.__rtruediv__ or (func in _QUOTIENTS and not first):  # ``1 / s``, ``w / s``
        return _FLIPPED.get(kind)
    if func in _PRODUCTS or func in _QUOTIENTS:
        factor = _number(pair[1] if first else pair[0])
        # a variance or root may be shifted next (``+ eps``): scaled, by a positive number only (``-v + 5`` is no
        # variance); an inverse root or ratio is never shifted, so any constant factor keeps it
        return kind if kind not in (VARIANCE, ROOT) or (factor is not None and factor > 0) else None
    shifted = func in _SUMS or first  # ``eps + v``, ``v + eps``, ``v - eps``; not ``eps - v``
    return kind if shifted and kind in (VARIANCE, ROOT) else None


def layout_of(func: Any, args: tuple, kwargs: dict, x: torch.Tensor) -> tuple:
    """``(x's shape, groups)`` for ``func``'s statistic of ``x`` (a mean, variance, deviation or
    norm): the groups are that shape with the reduced axes at size 1, which positions of ``x``
    each value of the statistic belongs to."""
    position = 2 if func in (torch.norm, T.norm, torch.linalg.vector_norm, torch.linalg.norm) else 1
    dims = dim_of(args, kwargs, position)
    shape = list(x.shape)
    for d in (dims,) if isinstance(dims, int) else dims:
        shape[d % x.dim()] = 1
    return tuple(x.shape), tuple(shape)


def meets(scale: torch.Tensor, groups: tuple[int, ...]) -> bool:
    """Whether ``scale``'s values sit at their groups' positions: its axes are the groups' axes,
    each kept axis at its size (a reduced axis may have any: ``scale.expand_as(x)``, or a scale
    times a weight per feature). A reshape that moved a group's value elsewhere changes them."""
    return scale.dim() == len(groups) and all(size == group for size, group in zip(scale.shape, groups) if group > 1)


def scales_only(func: Any, args: tuple, kwargs: dict, t: torch.Tensor) -> bool:
    """Whether ``func(*args)`` is ``t`` times or divided by constants (no shift: ``h + 10`` is no
    longer the tensor a statistic of ``h`` describes)."""
    pair = operands(args, kwargs)
    return len(pair) == 2 and kwargs.get("rounding_mode") is None and (
        func in _PRODUCTS or (func in _QUOTIENTS and pair[0] is t))


def combined(func: Any, args: tuple, kwargs: dict, kinds: list[str | None]) -> str | None:
    """The kind of an op on two scales: the ratio of two roots, or of two inverse roots, or the
    product of a root and an inverse root (``g / g.mean(-1, keepdim=True)``), else None."""
    if len(kinds) != 2 or kwargs.get("rounding_mode") is not None:
        return None
    if func in _QUOTIENTS and kinds[0] == kinds[1] and kinds[0] in (ROOT, INVERSE):
        return RATIO
    return RATIO if func in _PRODUCTS and set(kinds) == {ROOT, INVERSE} else None


def normalises(func: Any, args: tuple, kwargs: dict, scale: torch.Tensor, kind: str, t: torch.Tensor) -> bool:
    """Whether ``func(*args)`` is ``t`` normalised by ``scale``: ``t`` times an inverse root, or
    divided (without rounding) by a root, or times or divided by a ratio of scales, the scale
    broadcasting over ``t`` without enlarging it."""
    pair = operands(args, kwargs)
    if len(pair) != 2 or kwargs.get("rounding_mode") is not None:
        return False
    if not ((func in _PRODUCTS and kind in (INVERSE, RATIO)) or (func in _QUOTIENTS and kind in (ROOT, RATIO)
                                                                 and pair[0] is t)):
        return False
    try:
        return torch.broadcast_shapes(t.shape, scale.shape) == t.shape
    except RuntimeError:  # shapes that do not broadcast: the op itself will say so
        return False


def linearised(func: Any, args: tuple, kwargs: dict) -> Function:
    """torch's norm ``func`` of ``args[0]`` with its statistic of scale held at the input's value:
    ``(t - mean(t)) / std(x) * weight + bias`` over the norm's axes (layer, group, instance
    norms), ``t / rms(x) * weight`` (RMS norm), ``t / max(norm(x), eps)`` (``F.normalize``); an
    instance norm with running statistics is affine already."""
    x = args[0]
    wide = torch.promote_types(x.dtype, torch.float32)  # as torch's norms: half precision squares overflow
    if func is F.normalize:
        p, dim, eps = (_argument(args, kwargs, i, name, default)
                       for i, name, default in ((1, "p", 2.0), (2, "dim", 1), (3, "eps", 1e-12)))
        with torch.no_grad():
            held = torch.linalg.vector_norm(x.to(wide), p, dim, keepdim=True).clamp_min(eps).to(x.dtype)
        return lambda t: t / held
    weight, bias, eps, centred, grouped = _norm_arguments(func, args, kwargs)
    running = func is F.instance_norm and not _argument(args, kwargs, 5, "use_input_stats", True)
    with torch.no_grad():  # the mean of squares, not x.var: 11x slower here on the CPU
        t = grouped(x.to(wide))
        if running:
            centre = _argument(args, kwargs, 1, "running_mean").to(wide).view(1, -1, 1)
            scale = (_argument(args, kwargs, 2, "running_var").to(wide).view(1, -1, 1) + eps).rsqrt()
        else:
            scale = ((t - t.mean(-1, keepdim=True) if centred else t).square().mean(-1, keepdim=True) + eps).rsqrt()

    def linear(t: torch.Tensor) -> torch.Tensor:
        g = grouped(t.to(wide))
        g = g - (centre if running else g.mean(-1, keepdim=True)) if centred else g
        y = (g * scale).reshape(t.shape)
        y = y if weight is None else y * weight
        return y if bias is None else y + bias

    return linear


def _norm_arguments(func: Any, args: tuple, kwargs: dict) -> tuple:
    """A norm's ``(weight, bias, eps, centred, grouped)``: ``grouped(t)`` puts each statistic's
    values on the last axis; the weight and bias broadcast against ``t``."""
    x = args[0]
    if func in (F.layer_norm, F.rms_norm):
        shape = _argument(args, kwargs, 1, "normalized_shape")
        k = len(shape) if isinstance(shape, (tuple, list, torch.Size)) else 1
        weight = _argument(args, kwargs, 2, "weight")
        if func is F.layer_norm:
            bias, eps = _argument(args, kwargs, 3, "bias"), _argument(args, kwargs, 4, "eps", 1e-5)
        else:
            bias, eps = None, _argument(args, kwargs, 3, "eps")
            eps = torch.finfo(x.dtype).eps if eps is None else eps
        return weight, bias, eps, func is F.layer_norm, lambda t: t.reshape(*t.shape[:t.dim() - k], -1)
    channel = (-1, *[1] * (x.dim() - 2))  # per channel, on axis 1
    if func is F.group_norm:
        groups = _argument(args, kwargs, 1, "num_groups")
        weight, bias, eps = (_argument(args, kwargs, i, name, default)
                             for i, name, default in ((2, "weight", None), (3, "bias", None), (4, "eps", 1e-5)))
        grouped = lambda t: t.reshape(t.shape[0], groups, -1)  # noqa: E731
    else:  # instance norm, (N, C, *grid)
        weight, bias, eps = (_argument(args, kwargs, i, name, default)
                             for i, name, default in ((3, "weight", None), (4, "bias", None), (7, "eps", 1e-5)))
        grouped = lambda t: t.reshape(t.shape[0], t.shape[1], -1)  # noqa: E731
    weight = None if weight is None else weight.reshape(channel)
    bias = None if bias is None else bias.reshape(channel)
    return weight, bias, eps, True, grouped
