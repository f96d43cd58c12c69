"""Op-level propagation: a rule says how an attribution passes through each nonlinear op of the
forward, and every other op the attributed input reaches must be linear, or it is named.

A ``TorchFunctionMode`` sees every torch function the forward calls, whatever calls it: modules,
reused modules, ``F.relu``, ``Tensor.relu_``, in-place variants alike. It follows which tensors
depend on the attributed input, and for each op that reads one:

- an elementwise nonlinearity (the ReLU family, sigmoid, tanh, GELU, SiLU, ...) goes to
  ``rule.elementwise``;
- max pooling (plain and adaptive, 1-D to 3-D) goes to ``rule.max_pool``;
- a linear op (convolutions, linear layers, eval batch norm, average pooling, sums, products
  with one input-dependent factor, reshaping, indexing, concatenation, ...) runs unchanged: its
  own gradient is what every propagation rule passes through it;
- any other op with a floating output is uncovered: counted by name in ``uncovered``, so that
  an explainer refuses the model (a product of two input-dependent tensors, softmax, layer
  norm, attention) instead of returning a silently wrong map.
"""

from __future__ import annotations

import weakref
from collections import Counter
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from .relu_rules import UNCOVERED_NONLINEARITIES, relu_call

Function = Callable[[torch.Tensor], torch.Tensor]
Pool = Callable[[torch.Tensor], "tuple[torch.Tensor, torch.Tensor]"]


class PropagationRule:
    """How an attribution passes through the nonlinear ops; subclasses override both.

    ``elementwise(function, x, inplace, slope)`` returns ``function(x)`` (written into ``x`` when
    ``inplace``) with the rule's backward; ``slope`` is the function's derivative where known
    (the ReLU family), else None; ``max_pool(pool, x)`` returns the pooled ``x`` with
    the rule's backward, ``pool`` giving the pooled values and their flat indices."""

    def elementwise(self, function: Function, x: torch.Tensor, inplace: bool,
                    slope: Function | None = None) -> torch.Tensor:
        """``function(x)`` with this rule's backward."""
        raise NotImplementedError

    def max_pool(self, pool: Pool, x: torch.Tensor) -> torch.Tensor:
        """``pool(x)[0]`` with this rule's backward."""
        raise NotImplementedError

    # linear ops: their gradient unless a rule says otherwise (LRP)
    def layer(self, run: Callable[..., torch.Tensor], x: torch.Tensor, weight: torch.Tensor,
              bias: torch.Tensor | None, transposed: bool) -> torch.Tensor:
        """A convolution (``transposed`` for a transposed one) or linear layer, ``run(x, weight,
        bias)``, with parameters that do not depend on the input."""
        return run(x, weight, bias)

    def average_pool(self, run: Function, x: torch.Tensor) -> torch.Tensor:
        """Average pooling (plain or adaptive), ``run(x)``."""
        return run(x)

    def sum(self, a: torch.Tensor, b: torch.Tensor, inplace: bool) -> torch.Tensor:
        """``a + b`` of two input-dependent tensors (into ``a`` when ``inplace``): residual connections."""
        return a.add_(b) if inplace else a + b

    def batch_norm(self, run: Function, x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
        """An eval batch norm, ``run(x)``: per channel ``x * scale + shift``."""
        return run(x)


def _named(owner: Any, names: str) -> set:
    return {getattr(owner, name) for name in names.split() if hasattr(owner, name)}


T = torch.Tensor
# linear in every input-dependent argument
_LINEAR = (
    _named(torch, "cat concat concatenate stack hstack vstack flatten reshape squeeze unsqueeze transpose swapaxes "
                  "permute movedim moveaxis narrow select split chunk unbind tensor_split flip roll add sub subtract neg "
                  "negative sum mean cumsum t clone diagonal tile repeat_interleave conv1d conv2d conv3d "
                  "conv_transpose1d conv_transpose2d conv_transpose3d")
    | _named(T, "view view_as reshape reshape_as flatten unflatten permute transpose t contiguous unsqueeze squeeze "
                "expand expand_as repeat __getitem__ __setitem__ narrow select split chunk unbind clone to float double "
                "half bfloat16 type type_as movedim flip roll add add_ __add__ __radd__ __iadd__ sub sub_ __sub__ "
                "__rsub__ __isub__ neg neg_ __neg__ __pos__ sum mean cumsum copy_ diagonal tile")
    | _named(F, "linear avg_pool1d avg_pool2d avg_pool3d adaptive_avg_pool1d adaptive_avg_pool2d adaptive_avg_pool3d "
                "pad interpolate pixel_shuffle pixel_unshuffle fold unfold")
)
# linear while at most one factor depends on the input (a product of two is not)
_ONE_FACTOR = _named(torch, "mul multiply matmul mm bmm einsum") | _named(T, "mul mul_ __mul__ __rmul__ __imul__ "
                                                                           "matmul __matmul__ __rmatmul__ mm bmm")
# linear in the numerator only
_DIVISIONS = _named(torch, "div divide true_divide") | _named(T, "div div_ __truediv__ __itruediv__")
# identities in eval mode (``training`` False)
_TRAINING_FLAG = {F.dropout: 2, F.dropout1d: 2, F.dropout2d: 2, F.dropout3d: 2, F.alpha_dropout: 2,
                  F.feature_alpha_dropout: 2, F.batch_norm: 5}
# outputs that do not depend on the input's values
_CONSTANT = _named(torch, "zeros_like ones_like empty_like full_like rand_like randn_like") | _named(
    T, "new_zeros new_ones new_empty new_full new_tensor size dim numel detach")
# layers with parameters: a convolution (1-D to 3-D, transposed too) or a linear layer
_LAYERS = _named(torch, "conv1d conv2d conv3d conv_transpose1d conv_transpose2d conv_transpose3d") | {F.linear}
_TRANSPOSED = _named(torch, "conv_transpose1d conv_transpose2d conv_transpose3d")
_AVERAGE_POOLS = _named(F, "avg_pool1d avg_pool2d avg_pool3d adaptive_avg_pool1d adaptive_avg_pool2d adaptive_avg_pool3d")
_SUMS = _named(torch, "add") | _named(T, "add add_ __add__ __radd__ __iadd__")
# max pooling, and the position of its ``return_indices`` argument
_MAX_POOLS: dict[Any, int] = {F.max_pool1d: 6, F.max_pool2d: 6, F.max_pool3d: 6,
                              F.adaptive_max_pool1d: 2, F.adaptive_max_pool2d: 2, F.adaptive_max_pool3d: 2}


def _tensors(value: Any):
    """The tensors in an op's arguments or result (nested tuples, lists and dicts)."""
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (tuple, list)):
        for item in value:
            yield from _tensors(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _tensors(item)


def _name(func: Any) -> str:
    return UNCOVERED_NONLINEARITIES.get(func) or getattr(func, "__name__", None) or str(func)


class PropagationMode(TorchFunctionMode):
    """While active, ``rule`` handles the nonlinear ops on tensors that depend on ``source`` (the
    attributed input); ``ruled`` counts them and ``uncovered`` counts, by name, the ops on such
    tensors that are neither linear nor ruled. The forward is otherwise unchanged."""

    def __init__(self, rule: PropagationRule, source: torch.Tensor) -> None:
        super().__init__()
        self.rule = rule
        self.ruled = 0
        self.uncovered: Counter[str] = Counter()
        self._dependent: dict[int, weakref.ref] = {}  # by id, checked to be the same tensor (ids are reused)
        self._mark(source)

    def _mark(self, tensor: torch.Tensor) -> None:
        self._dependent[id(tensor)] = weakref.ref(tensor)

    def _depends(self, value: Any) -> bool:
        if not isinstance(value, torch.Tensor):
            return False
        known = self._dependent.get(id(value))
        return known is not None and known() is value

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _CONSTANT or not any(self._depends(t) for t in _tensors((args, kwargs))):
            return func(*args, **kwargs)
        result = self._run(func, args, kwargs)
        for tensor in _tensors(result):
            self._mark(tensor)
        if func is T.__setitem__:
            self._mark(args[0])
        return result

    def _run(self, func: Any, args: tuple, kwargs: dict) -> Any:
        relu = relu_call(func, args, kwargs)
        if relu is not None:
            inplace, upper = relu
            self.ruled += 1
            return self.rule.elementwise(lambda t: t.clamp(0, upper), args[0], inplace, _relu_slope(upper))
        if func in _ELEMENTWISE and self._depends(args[0]):
            self.ruled += 1
            return self.rule.elementwise(*_ELEMENTWISE[func](args, kwargs))
        if func in _MAX_POOLS and self._depends(args[0]) and not _argument(args, kwargs, _MAX_POOLS[func], "return_indices"):
            self.ruled += 1
            rest, options = args[1:], {k: v for k, v in kwargs.items() if k != "return_indices"}
            return self.rule.max_pool(lambda t: func(t, *rest, **options, return_indices=True), args[0])
        if func in _LAYERS and self._depends(args[0]):
            weight, bias = _argument(args, kwargs, 1, "weight", None), _argument(args, kwargs, 2, "bias", None)
            if not (self._depends(weight) or self._depends(bias)):
                rest, options = args[3:], {k: v for k, v in kwargs.items() if k not in ("weight", "bias")}
                return self.rule.layer(lambda t, w, b: func(t, w, b, *rest, **options), args[0], weight, bias,
                                       func in _TRANSPOSED)
        if func in _AVERAGE_POOLS and self._depends(args[0]):
            return self.rule.average_pool(lambda t: func(t, *args[1:], **kwargs), args[0])
        if func in _SUMS and len(args) == 2 and not kwargs and self._depends(args[0]) and self._depends(args[1]):
            return self.rule.sum(args[0], args[1], func in (T.__iadd__, T.add_))
        if func is F.batch_norm and self._depends(args[0]) and not _argument(args, kwargs, 5, "training"):
            return self.rule.batch_norm(lambda t: func(t, *args[1:], **kwargs), args[0], *_affine(args, kwargs))
        if not self._linear(func, args, kwargs):
            result = func(*args, **kwargs)
            if any(t.is_floating_point() for t in _tensors(result)):
                self.uncovered[_name(func)] += 1
            return result
        return func(*args, **kwargs)

    def _linear(self, func: Any, args: tuple, kwargs: dict) -> bool:
        if func in _LINEAR:
            return True
        if func in _ONE_FACTOR:
            return sum(self._depends(t) for t in _tensors((args, kwargs))) <= 1
        if func in _DIVISIONS:
            return not any(self._depends(t) for t in _tensors((args[1:], kwargs)))
        if func in _TRAINING_FLAG:
            return not _argument(args, kwargs, _TRAINING_FLAG[func], "training")
        if func in (torch.where, T.where):
            condition = args[0] if func is torch.where else args[1]
            return not self._depends(condition)
        if func in (torch.masked_fill, T.masked_fill, T.masked_fill_):
            return not self._depends(args[1])
        return False


def _affine(args: tuple, kwargs: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """An eval ``F.batch_norm``'s per-channel scale and shift."""
    mean, var = _argument(args, kwargs, 1, "running_mean"), _argument(args, kwargs, 2, "running_var")
    weight, bias = _argument(args, kwargs, 3, "weight", None), _argument(args, kwargs, 4, "bias", None)
    eps = _argument(args, kwargs, 7, "eps", 1e-5)
    scale = (var + eps).rsqrt() if weight is None else weight * (var + eps).rsqrt()
    return scale, (-mean * scale if bias is None else bias - mean * scale)


def _relu_slope(upper: float | None) -> Function:
    def slope(t: torch.Tensor) -> torch.Tensor:
        passed = t > 0 if upper is None else (t > 0) & (t < upper)
        return passed.to(t.dtype)

    return slope


def _argument(args: tuple, kwargs: dict, position: int, name: str, default: Any = False) -> Any:
    return args[position] if len(args) > position else kwargs.get(name, default)


def _bound(func: Any, inplace: bool = False, inplace_at: int | None = None) -> Callable[[tuple, dict], tuple]:
    """An elementwise op as ``(function of its first argument, that argument, in place)``."""

    def split(args: tuple, kwargs: dict) -> tuple:
        rest = dict(kwargs)
        written = inplace
        if inplace_at is not None:
            written = bool(_argument(args, kwargs, inplace_at, "inplace"))
            args = args[:inplace_at] + args[inplace_at + 1:]
            rest.pop("inplace", None)
        out_of_place = _OUT_OF_PLACE.get(func, func)
        return (lambda t: out_of_place(t, *args[1:], **rest)), args[0], written

    return split


# elementwise nonlinearities a rule covers, and where each says "in place"
_ELEMENTWISE: dict[Any, Callable[[tuple, dict], tuple]] = {}
_OUT_OF_PLACE = {torch.sigmoid_: torch.sigmoid, T.sigmoid_: torch.sigmoid, torch.tanh_: torch.tanh,
                 T.tanh_: torch.tanh, F.elu_: F.elu, F.leaky_relu_: F.leaky_relu}
for _func in (torch.sigmoid, T.sigmoid, F.sigmoid, torch.tanh, T.tanh, F.tanh, F.softplus, F.gelu, F.mish,
              F.hardsigmoid, F.softsign, F.logsigmoid, torch.erf, T.exp, torch.exp):
    _ELEMENTWISE[_func] = _bound(_func)
for _func in (torch.sigmoid_, T.sigmoid_, torch.tanh_, T.tanh_, F.elu_, F.leaky_relu_):
    _ELEMENTWISE[_func] = _bound(_func, inplace=True)
for _func, _position in ((F.elu, 2), (F.selu, 1), (F.celu, 2), (F.leaky_relu, 2), (F.silu, 1), (F.hardswish, 1),
                         (F.hardtanh, 3), (F.relu6, 1)):
    _ELEMENTWISE[_func] = _bound(_func, inplace_at=_position)
