"""Exact theoretical receptive fields, traced through the ops a forward pass evaluates.

A ``TorchFunctionMode`` follows one probe forward and attaches to every tensor derived from the
input, per spatial axis, the half-open interval of input pixels each position depends on. The
rules are exact for convolutions and pooling (kernel, stride, padding including ``'same'`` and
``F.pad``, dilation, ceil mode, adaptive pooling), pointwise ops (activations, normalisation,
dropout, residual additions, gating with broadcast tensors), concatenation and spatial
reductions with ``keepdim``. An op that moves pixels in another way raises
``ReceptiveFieldError`` rather than guessing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from ..core import ModuleLike, evaluation, forward_hooks, model_device, resolve_layer
from ..core.hooks import hooks_set_aside
from ..errors import ReceptiveFieldError

_NONE = np.iinfo(np.int64).max // 4  # an empty reach: [_NONE, -_NONE) takes part in no hull


@dataclass(frozen=True)
class Axis:
    """Per position along one axis: the theoretical interval ``[lo, hi)`` of input pixels (it may
    pass the image border, counting padding as if it were pixels) and the exact reach
    ``[reach_lo, reach_hi)``, the hull of the input pixels that can affect it (empty when it reads
    padding only). ``step`` extrapolates theoretical intervals into padding by the grid's pitch."""

    lo: np.ndarray
    hi: np.ndarray
    reach_lo: np.ndarray
    reach_hi: np.ndarray
    step: int

    @classmethod
    def identity(cls, n: int) -> "Axis":
        positions = np.arange(n, dtype=np.int64)
        return cls(positions, positions + 1, positions, positions + 1, 1)

    def at(self, index: np.ndarray) -> "Axis":
        """Positions ``index``, which may lie in (constant) padding: their theoretical intervals
        extrapolate the border's, their reach is empty."""
        inside = np.clip(index, 0, len(self.lo) - 1)
        outside = index != inside
        shift = (index - inside) * self.step
        return Axis(self.lo[inside] + shift, self.hi[inside] + shift,
                    np.where(outside, _NONE, self.reach_lo[inside]), np.where(outside, -_NONE, self.reach_hi[inside]),
                    self.step)

    def take(self, index: np.ndarray) -> "Axis":
        """Positions ``index``, all inside the tensor (copying padding, cropping)."""
        return Axis(self.lo[index], self.hi[index], self.reach_lo[index], self.reach_hi[index], self.step)

    def window(self, first: np.ndarray, last: np.ndarray, stride: int, dilation: int = 1) -> "Axis":
        """Positions reading input positions ``first, first + dilation, ..., last`` (may lie in
        padding). The theoretical interval is the hull of the whole span; the reach only of the
        positions read (a dilated kernel skips the holes, padding reads nothing). Every position is
        taken, not only the ends: after reflect padding the intervals are not monotone."""
        span = int((last - first).max()) if len(first) else 0
        spanned = [self.at(np.minimum(first + t, last)) for t in range(span + 1)]
        read = spanned[::dilation]
        return Axis(np.min([a.lo for a in spanned], axis=0), np.max([a.hi for a in spanned], axis=0),
                    np.min([a.reach_lo for a in read], axis=0), np.max([a.reach_hi for a in read], axis=0),
                    self.step * stride)

    def broadcast(self, n: int) -> "Axis":
        if len(self.lo) == n:
            return self
        whole = self.collapse()
        return Axis(np.repeat(whole.lo, n), np.repeat(whole.hi, n), np.repeat(whole.reach_lo, n),
                    np.repeat(whole.reach_hi, n), self.step)

    def union(self, other: "Axis") -> "Axis":
        return Axis(np.minimum(self.lo, other.lo), np.maximum(self.hi, other.hi), np.minimum(self.reach_lo, other.reach_lo),
                    np.maximum(self.reach_hi, other.reach_hi), max(self.step, other.step))

    def collapse(self) -> "Axis":
        return Axis(self.lo.min(keepdims=True), self.hi.max(keepdims=True), self.reach_lo.min(keepdims=True),
                    self.reach_hi.max(keepdims=True), self.step)


Field = tuple[Axis, Axis]  # (rows, columns)


class ReceptiveField:
    """The receptive fields of one layer's grid, in input pixel coordinates."""

    def __init__(self, layer: str, rows: Axis, columns: Axis, input_size: tuple[int, int]) -> None:
        self.layer = layer
        self.rows, self.columns = rows, columns
        self.input_size = input_size
        self.grid_size = (len(rows.lo), len(columns.lo))
        shapes = [_regular(axis) for axis in (rows, columns)]
        self.regular = all(shape is not None for shape in shapes)
        #: per axis (rows, columns), or None when the grid is irregular
        self.size = tuple(s[0] for s in shapes) if self.regular else None  # type: ignore[index]
        #: None as well when the field does not move along an axis (global pooling, a gate)
        self.stride = tuple(s[1] for s in shapes) if self.regular and all(s[1] for s in shapes) else None  # type: ignore

        self.offset = tuple(s[2] for s in shapes) if self.regular else None  # type: ignore[index]

    def _check(self, y: int, x: int) -> None:
        h, w = self.grid_size
        if not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in (y, x)):
            raise ReceptiveFieldError(f"a unit is given by int positions (y, x), not ({y!r}, {x!r})")
        if not (0 <= y < h and 0 <= x < w):
            raise ReceptiveFieldError(f"unit ({y}, {x}) is outside layer '{self.layer}' grid of {h} x {w}")

    def box(self, y: int, x: int) -> tuple[int, int, int, int]:
        """``(top, left, bottom, right)``, half-open: the theoretical field, unclipped (it may
        pass the image border)."""
        self._check(y, x)
        return (int(self.rows.lo[y]), int(self.columns.lo[x]), int(self.rows.hi[y]), int(self.columns.hi[x]))

    def clipped_box(self, y: int, x: int) -> tuple[int, int, int, int]:
        """The exact support in the image: the smallest box holding every pixel that can affect
        the unit. Not merely the box cut to the image: padding read by any layer on the way
        reaches no pixel. ``(0, 0, 0, 0)`` for a unit that reads padding only."""
        self._check(y, x)
        return tuple(int(v) for v in self._reach(np.array([y]), np.array([x]))[0])  # type: ignore[return-value]

    def boxes(self, positions: torch.Tensor, clipped: bool = True) -> torch.Tensor:
        """Boxes (..., 4) for integer positions (..., 2) given as (y, x), on the positions' device:
        exact supports (``clipped_box``) or theoretical fields (``box``)."""
        if not isinstance(positions, torch.Tensor) or positions.shape[-1:] != (2,) or positions.is_floating_point():
            raise ReceptiveFieldError("positions must be an integer tensor (..., 2) of (y, x)")
        flat = positions.reshape(-1, 2).cpu().numpy()
        ys, xs = flat[:, 0], flat[:, 1]
        h, w = self.grid_size
        if len(flat) and not ((0 <= ys).all() and (ys < h).all() and (0 <= xs).all() and (xs < w).all()):
            raise ReceptiveFieldError(f"positions must lie in layer '{self.layer}' grid of {h} x {w}")
        if clipped:
            out = self._reach(ys, xs)
        else:
            out = np.stack([self.rows.lo[ys], self.columns.lo[xs], self.rows.hi[ys], self.columns.hi[xs]], axis=1)
        return torch.from_numpy(out).reshape(*positions.shape[:-1], 4).to(positions.device)

    def _reach(self, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
        out = np.stack([self.rows.reach_lo[ys], self.columns.reach_lo[xs],
                        self.rows.reach_hi[ys], self.columns.reach_hi[xs]], axis=1)
        empty = (out[:, 2] <= out[:, 0]) | (out[:, 3] <= out[:, 1])
        return np.where(empty[:, None], 0, out)

    @property
    def covers_input(self) -> bool:
        """True when every unit can be influenced by every input pixel (after global pooling)."""
        height, width = self.input_size
        return bool((self.rows.lo <= 0).all() and (self.rows.hi >= height).all()
                    and (self.columns.lo <= 0).all() and (self.columns.hi >= width).all())

    def __repr__(self) -> str:
        shape = f"size={self.size}, stride={self.stride}, offset={self.offset}" if self.regular else "irregular"
        whole = ", covers the whole input" if self.covers_input else ""
        return f"ReceptiveField(layer='{self.layer}', grid={self.grid_size}, {shape}{whole})"


def _regular(axis: Axis) -> tuple[int, int, int] | None:
    """(size, stride, offset) of a grid of equal, equally spaced windows; the stride is 0 when
    the windows do not move (one position, or a gate broadcast over the grid)."""
    sizes = axis.hi - axis.lo
    steps = np.diff(axis.lo)
    if not (sizes == sizes[0]).all() or (len(steps) and not (steps == steps[0]).all()):
        return None
    return int(sizes[0]), int(steps[0]) if len(steps) else 0, int(axis.lo[0])


def receptive_field(model: nn.Module, layer: ModuleLike | None, input_size: tuple[int, int] = (224, 224),
                    in_channels: int | None = None) -> ReceptiveField:
    """Trace the receptive fields of ``layer``'s output for an input of ``input_size`` (H, W).

    Runs one forward of a zero image (batch 1, ``no_grad``, eval mode, model restored after);
    without ``in_channels``, the first convolution the forward reaches is found first by forwards
    stopped there, which the model's own hooks do not see.
    """
    if layer is None:
        raise ReceptiveFieldError("receptive_field needs a layer: a dotted name or a module")
    name, module = resolve_layer(model, layer)
    height, width = _size(input_size)
    if in_channels is not None and (isinstance(in_channels, bool) or not isinstance(in_channels, int) or in_channels < 1):
        raise ReceptiveFieldError(f"in_channels must be a positive int or None (found from the model), not {in_channels!r}")
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    channels = in_channels if in_channels is not None else _first_in_channels(model, (height, width), dtype)
    image = torch.zeros(1, channels, height, width, device=model_device(model), dtype=dtype)
    tracer = _Tracer()
    tracer.track(image, (Axis.identity(height), Axis.identity(width)))
    seen: list[Field | None] = []

    def hook(_module: nn.Module, _inputs: tuple, out: Any) -> None:
        seen.append(tracer.field(out))
        tracer.active = False  # what runs after the layer does not change its field

    with evaluation(model), forward_hooks([module], hook), torch.no_grad(), tracer:
        try:
            model(image)
        except ReceptiveFieldError:
            raise
        except (TypeError, RuntimeError, ValueError, IndexError) as error:
            if not seen:  # a head that does not fit this input size, after the layer ran, changes nothing
                raise _not_run(error, image) from error
    if len(seen) != 1:
        raise ReceptiveFieldError(
            f"layer '{name}' is called {len(seen)} times in the forward; choose a layer called once"
        )
    field = seen[0]
    if field is None:
        raise ReceptiveFieldError(f"layer '{name}' output is not a tensor computed from the input")
    return ReceptiveField(name, field[0], field[1], (height, width))


def _not_run(error: Exception, image: torch.Tensor) -> ReceptiveFieldError:
    return ReceptiveFieldError(
        f"receptive fields are traced through a forward of one zero image {tuple(image.shape)}, which this model "
        f"did not run ({type(error).__name__}: {' '.join(str(error).split())[:200]}); they need a model that "
        "takes one image tensor")


def _size(input_size: Any) -> tuple[int, int]:
    if isinstance(input_size, int):
        input_size = (input_size, input_size)
    if (not isinstance(input_size, (tuple, list)) or len(input_size) != 2
            or not all(isinstance(v, int) and v > 0 for v in input_size)):
        raise ReceptiveFieldError(f"input_size must be (H, W) positive ints, got {input_size!r}")
    return int(input_size[0]), int(input_size[1])


class _FirstConv(Exception):
    """Raised by a pre-hook at the first convolution a forward reaches, to stop it there."""


def _first_in_channels(model: nn.Module, size: tuple[int, int], dtype: torch.dtype) -> int:
    """The input channels of the first convolution the forward runs (not the first registered):
    each candidate count is tried until the convolution reached first expects it."""
    convolutions = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    reached: list[nn.Conv2d] = []

    def stop(module: nn.Module, _inputs: tuple) -> None:
        reached.append(module)  # type: ignore[arg-type]
        raise _FirstConv

    for channels in dict.fromkeys(conv.in_channels for conv in convolutions):
        reached.clear()
        try:
            with evaluation(model), hooks_set_aside(model.modules()), forward_hooks(convolutions, stop, pre=True), \
                    torch.no_grad():
                model(torch.zeros(1, channels, *size, device=model_device(model), dtype=dtype))
        except _FirstConv:
            if reached[0].in_channels == channels:
                return channels
        except RuntimeError:
            continue
    return convolutions[0].in_channels if convolutions else 3


def _pair(value: Any) -> tuple[int, int]:
    if isinstance(value, (tuple, list)):
        return (int(value[0]), int(value[-1])) if len(value) in (1, 2) else (int(value[0]), int(value[1]))
    return int(value), int(value)


_CONV = {F.conv2d, torch.conv2d}
_MAX_POOL = {F.max_pool2d, torch.max_pool2d, F.max_pool2d_with_indices}
_AVG_POOL = {F.avg_pool2d, torch._C._nn.avg_pool2d, F.lp_pool2d}
_ADAPTIVE = {F.adaptive_avg_pool2d, F.adaptive_max_pool2d, torch._C._nn.adaptive_avg_pool2d,
             F.adaptive_max_pool2d_with_indices, torch._C._nn.adaptive_max_pool2d}
_CAT = {torch.cat, torch.concat, torch.concatenate}
_MOVES_PIXELS = {torch.flip, torch.roll, torch.rot90, torch.transpose, torch.permute, torch.Tensor.flip,
                 torch.Tensor.roll, torch.Tensor.transpose, torch.Tensor.permute, torch.Tensor.view,
                 torch.Tensor.reshape, torch.reshape, torch.Tensor.__getitem__, F.interpolate,
                 F.conv_transpose2d, torch.conv_transpose2d, F.grid_sample, F.pixel_shuffle,
                 F.unfold, F.fold, torch.Tensor.unfold, torch.sort, torch.Tensor.sort, torch.argsort, torch.Tensor.argsort,
                 torch.Tensor.rot90,
                 torch.movedim, torch.Tensor.movedim, torch.Tensor.swapaxes, torch.swapaxes, torch.swapdims,
                 torch.Tensor.swapdims, torch.einsum, torch.index_select, torch.Tensor.index_select, torch.gather,
                 torch.Tensor.gather, torch.take_along_dim, torch.Tensor.take_along_dim, torch.Tensor.scatter,
                 torch.scatter, torch.index_add, torch.Tensor.index_add, torch.Tensor.narrow, torch.narrow,
                 torch.Tensor.flatten, torch.flatten, torch.Tensor.unflatten, torch.Tensor.as_strided, torch.as_strided,
                 torch.matmul, torch.Tensor.matmul, torch.Tensor.__matmul__, torch.tensordot,
                 *(getattr(torch.fft, name) for name in ("fft", "ifft", "rfft", "irfft", "fft2", "ifft2", "rfft2", "irfft2",
                                                         "fftn", "ifftn", "rfftn", "irfftn", "fftshift", "ifftshift"))}
# ops along one dim: every position reads the whole axis (softmax, L2 normalisation) or the
# positions before it (cumulative ops); along channels they are pointwise in space
_ALONG_AXIS = {torch.softmax, torch.Tensor.softmax, F.softmax, torch.log_softmax, torch.Tensor.log_softmax, F.log_softmax,
               F.softmin, F.normalize, torch.special.softmax, torch.special.log_softmax}
_CUMULATIVE = {torch.cumsum, torch.Tensor.cumsum, torch.cumprod, torch.Tensor.cumprod, torch.cummax, torch.Tensor.cummax,
               torch.cummin, torch.Tensor.cummin, torch.logcumsumexp, torch.Tensor.logcumsumexp}
# selections of the k largest or smallest along ``dim`` (default the last): each reads the whole axis
_SELECTIONS = {torch.topk: (2, -1), torch.Tensor.topk: (2, -1), torch.kthvalue: (2, -1), torch.Tensor.kthvalue: (2, -1)}
# normalisations whose statistics span the plane: every position reads all of it
_PLANE_NORMS = {F.group_norm, torch.group_norm, F.instance_norm, torch.instance_norm}
_LAYER_NORMS = {F.layer_norm, torch.layer_norm, F.rms_norm}
_BATCH_NORMS = {F.batch_norm, torch.batch_norm}
# properties that move pixels: the function seen is the descriptor's __get__
_MOVING_PROPERTIES = {torch.Tensor.mT, torch.Tensor.mH, torch.Tensor.T, torch.Tensor.H}
# padding modes whose padded values copy border pixels: a padded position reads pixel 0 (or the mirror)
_COPYING_PADS = {"replicate", "reflect"}


class _Tracer(TorchFunctionMode):
    """Attaches a Field to every tensor computed from the traced input.

    Tensors that are not (N, C, H, W) maps (pooled vectors, logits) get the bounding field of
    everything they depend on, as a 1 x 1 grid, so a gate broadcast back over a map (squeeze-
    excitation) widens the map's field to what the gate saw.
    """

    def __init__(self) -> None:
        super().__init__()
        self.fields: dict[int, tuple[torch.Tensor, Field]] = {}  # tensors kept alive: ids stay unique
        self.active = True

    def track(self, tensor: torch.Tensor, field: Field) -> None:
        self.fields[id(tensor)] = (tensor, field)

    def field(self, value: Any) -> Field | None:
        entry = self.fields.get(id(value)) if isinstance(value, torch.Tensor) else None
        return entry[1] if entry is not None else None

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        result = func(*args, **kwargs)
        if not self.active:
            return result
        if func is torch.Tensor.__setitem__:
            self._assigned(*args[:3])
            return result
        inputs = [a for a in _flat(args, kwargs) if self.field(a) is not None]
        outputs = [r for r in (result if isinstance(result, (tuple, list)) else (result,))
                   if isinstance(r, torch.Tensor)]
        if inputs and outputs:
            primary = outputs[0]
            if primary.dim() == 4 and any(_grid(t) != (1, 1) for t in (primary, *inputs)):  # a grid in or out
                field = self._rule(func, args, kwargs, inputs, primary)
            else:
                field = _pointwise([self.field(t) for t in inputs], [_grid(t) for t in inputs], (1, 1), func)
            for tensor in outputs:
                self.track(tensor, field)
            written = (args[0] if args else None, kwargs.get("out"))
            if outputs[0]._base is not None and any(outputs[0] is w for w in written):  # written through a view
                self._widen(outputs[0]._base, field, _grid(outputs[0]))
        return result

    def _assigned(self, target: torch.Tensor, index: Any, value: Any) -> None:
        """``target[index] = value``: the target's field takes in the value's (a write into some
        channels); a write into some positions of a map would move them, and is refused."""
        field = self.field(value)
        if field is None or not isinstance(target, torch.Tensor):
            return  # a constant written: the field it had still bounds what it reads
        if _is_map(target) and not _only_channel_index(index):
            raise ReceptiveFieldError("receptive fields cannot be traced through an assignment into some positions "
                                      "of a map (x[..., :4] = y); compute them up to a layer before it")
        self._widen(target, field, _grid(value))
        if target._base is not None:
            self._widen(target._base, field, _grid(value))

    def _widen(self, tensor: torch.Tensor, field: Field, grid: tuple[int, int]) -> None:
        """``tensor`` written with values of ``field`` (on ``grid``): its field is the union."""
        fields: list[Field | None] = [field]
        grids = [grid]
        if self.field(tensor) is not None:
            fields.append(self.field(tensor))
            grids.append(_grid(tensor))
        self.track(tensor, _pointwise(fields, grids, _grid(tensor), torch.Tensor.__setitem__))

    def _rule(self, func, args, kwargs, inputs, out: torch.Tensor) -> Field:
        source = self.field(inputs[0])
        assert source is not None
        size = tuple(out.shape[-2:])
        if func in _CONV:
            weight = args[1] if len(args) > 1 else kwargs["weight"]
            stride, padding, dilation = (_arg(args, kwargs, i, k, d) for i, k, d in
                                         ((3, "stride", 1), (4, "padding", 0), (5, "dilation", 1)))
            return _windowed(source, weight.shape[-2:], stride, padding, dilation, size)
        if func in _MAX_POOL or func in _AVG_POOL:
            shift = 1 if func is F.lp_pool2d else 0  # lp_pool2d(input, norm_type, kernel_size, ...)
            kernel = _arg(args, kwargs, 1 + shift, "kernel_size", None)
            stride = _arg(args, kwargs, 2 + shift, "stride", None) or kernel
            padding = 0 if func is F.lp_pool2d else _arg(args, kwargs, 3, "padding", 0)
            dilation = _arg(args, kwargs, 4, "dilation", 1) if func in _MAX_POOL else 1
            return _windowed(source, _pair(kernel), stride, padding, dilation, size)
        if func in _ADAPTIVE:
            return (_adaptive(source[0], size[0]), _adaptive(source[1], size[1]))
        if func is F.pad:
            pad = list(_arg(args, kwargs, 1, "pad", ()))
            pad += [0] * (4 - len(pad))
            mode = _arg(args, kwargs, 2, "mode", "constant")
            if mode not in ("constant", *_COPYING_PADS):
                raise ReceptiveFieldError(f"receptive fields cannot be traced through {mode} padding (it wraps "
                                          "pixels from the far side); compute them up to a layer before it")
            return (_shifted(source[0], pad[2], size[0], mode), _shifted(source[1], pad[0], size[1], mode))
        if func in _CAT and _arg(args, kwargs, 1, "dim", 0) % 4 in (2, 3):
            raise ReceptiveFieldError("receptive fields cannot be traced through a spatial concatenation")
        moving_property = getattr(func, "__self__", None) in _MOVING_PROPERTIES
        if moving_property or (func in _MOVES_PIXELS
                               and not (func is torch.Tensor.__getitem__ and _only_channel_index(args[1]))):
            name = getattr(func.__self__, "__name__", "") if moving_property else getattr(func, "__name__", func)
            raise ReceptiveFieldError(
                f"receptive fields cannot be traced through '{name}' (it moves pixels); compute them up to "
                "a layer before it"
            )
        field = _pointwise([self.field(t) for t in inputs], [_grid(t) for t in inputs], size, func)
        mixed = _mixed_axes(func, args, kwargs)
        if mixed is None:
            return field
        how, axes = mixed
        spread = _prefix if how == "prefix" else (lambda axis: axis.collapse().broadcast(len(axis.lo)))
        return (spread(field[0]) if 0 in axes else field[0], spread(field[1]) if 1 in axes else field[1])


def _mixed_axes(func: Any, args: Sequence[Any], kwargs: dict) -> tuple[str, set[int]] | None:
    """Which spatial axes (0 rows, 1 columns) an op that keeps the grid mixes, and how: each
    position reads the ``"whole"`` axis, or the ``"prefix"`` before it (cumulative ops)."""
    if func in _ALONG_AXIS or func in _CUMULATIVE:
        dim = _arg(args, kwargs, 1, "dim", None)
        if dim is None:
            return ("whole", {0, 1})  # softmax's legacy implicit dim, or F.normalize's default: read it all
        axes = {int(dim) % 4 - 2} & {0, 1}
        return ("prefix" if func in _CUMULATIVE else "whole", axes) if axes else None
    if func in _SELECTIONS:
        position, default = _SELECTIONS[func]
        axes = {int(_arg(args, kwargs, position, "dim", default)) % 4 - 2} & {0, 1}
        return ("whole", axes) if axes else None
    if func is F.linear:  # a weight over the last axis: every column reads the whole row
        return ("whole", {1})
    if func in _PLANE_NORMS:
        return ("whole", {0, 1})
    if func in _LAYER_NORMS:
        shape = _arg(args, kwargs, 1, "normalized_shape", ())
        return ("whole", {1} if len(tuple(shape)) == 1 else {0, 1})
    if func in _BATCH_NORMS:
        running = _arg(args, kwargs, 1 if func is F.batch_norm else 3, "running_mean", None)
        training = _arg(args, kwargs, 5, "training", False)
        return ("whole", {0, 1}) if training or running is None else None  # batch statistics span the plane
    return None


def _prefix(axis: Axis) -> Axis:
    """Each position reading itself and every position before it."""
    return Axis(np.minimum.accumulate(axis.lo), np.maximum.accumulate(axis.hi), np.minimum.accumulate(axis.reach_lo),
                np.maximum.accumulate(axis.reach_hi), axis.step)


def _is_map(value: Any) -> bool:
    return isinstance(value, torch.Tensor) and value.dim() == 4


def _grid(tensor: torch.Tensor) -> tuple[int, int]:
    return tuple(tensor.shape[-2:]) if tensor.dim() == 4 else (1, 1)  # type: ignore[return-value]


def _only_channel_index(index: Any) -> bool:
    parts = index if isinstance(index, tuple) else (index,)
    if parts and parts[-1] is Ellipsis:  # x[:, :2, ...]: the axes after those indexed are whole
        parts = parts[:-1]
    if any(p is Ellipsis for p in parts):  # x[..., :4]: an Ellipsis before an index reaches the spatial axes
        return False
    return all(isinstance(p, slice) and p == slice(None) for p in parts[2:4])


def _arg(args: Sequence[Any], kwargs: dict, position: int, name: str, default: Any) -> Any:
    if name in kwargs:
        return kwargs[name]
    return args[position] if len(args) > position else default


def _windowed(source: Field, kernel: Sequence[int], stride: Any, padding: Any, dilation: Any,
              size: tuple[int, ...]) -> Field:
    kernel = _pair(kernel)
    stride, dilation = _pair(stride), _pair(dilation)
    if isinstance(padding, str):
        if padding == "valid":
            padding = (0, 0)
        elif padding == "same":  # PyTorch pads (total // 2) before, the rest after
            padding = tuple(d * (k - 1) // 2 for k, d in zip(kernel, dilation))
        else:
            raise ReceptiveFieldError(f"unknown padding {padding!r}")
    padding = _pair(padding)
    axes = []
    for axis, k, s, p, d, n in zip(source, kernel, stride, padding, dilation, size):
        first = np.arange(n, dtype=np.int64) * s - p
        axes.append(axis.window(first, first + d * (k - 1), s, d))
    return axes[0], axes[1]


def _adaptive(axis: Axis, n_out: int) -> Axis:
    n_in = len(axis.lo)
    o = np.arange(n_out, dtype=np.int64)
    first = (o * n_in) // n_out
    last = -((-(o + 1) * n_in) // n_out) - 1  # ceil((o + 1) * n_in / n_out) - 1
    return axis.window(first, last, max(1, math.ceil(n_in / n_out)))


def _shifted(axis: Axis, before: int, n_out: int, mode: str = "constant") -> Axis:
    """Padding (or cropping) by ``before`` positions. A constant-padded position reads no pixel;
    a replicate-padded one reads the border position, a reflect-padded one its mirror image."""
    index = np.arange(n_out, dtype=np.int64) - before
    if mode == "constant":
        return axis.at(index)
    last = len(axis.lo) - 1
    if mode == "reflect":
        index = np.where(index < 0, -index, np.where(index > last, 2 * last - index, index))
    return axis.take(np.clip(index, 0, last))


def _pointwise(fields: list[Field | None], shapes: list[tuple[int, int]], size: tuple[int, ...], func: Any) -> Field:
    result: Field | None = None
    for field, shape in zip(fields, shapes):
        assert field is not None
        axes = []
        for axis, n_in, n in zip(field, shape, size):
            if n_in == n:
                axes.append(axis)
            elif n == 1:
                axes.append(axis.collapse())  # a spatial reduction with keepdim
            elif n_in == 1:
                axes.append(axis.broadcast(n))  # a broadcast gate (squeeze-excitation)
            else:
                raise ReceptiveFieldError(
                    f"receptive fields cannot be traced through '{getattr(func, '__name__', func)}': "
                    f"it changes the spatial size from {tuple(shape[-2:])} to {size}"
                )
        piece: Field = (axes[0], axes[1])
        result = piece if result is None else (result[0].union(piece[0]), result[1].union(piece[1]))
    assert result is not None
    return result


def _flat(args: Sequence[Any], kwargs: dict) -> list[Any]:
    out: list[Any] = []
    for value in list(args) + list(kwargs.values()):
        if isinstance(value, (list, tuple)):
            out.extend(value)
        else:
            out.append(value)
    return out
