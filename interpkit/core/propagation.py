"""Op-level propagation: a rule says how an attribution passes through each op of the forward
that reads the attributed input, and an op no rule covers is named, never passed silently.

A ``TorchFunctionMode`` sees every torch function the forward calls, whatever calls it: modules,
reused modules, ``F.relu``, ``Tensor.relu_``, in-place variants alike. It follows which tensors
depend on the attributed input (a write into a tensor, or into a view of it, makes its storage
dependent), and hands each op that reads one to the rule:

- an elementwise nonlinearity (the ReLU family, clamps, sigmoid, tanh, GELU, SiLU, PReLU, abs,
  ...) to ``rule.elementwise``;
- max pooling (plain and adaptive, 1-D to 3-D) to ``rule.max_pool``;
- a convolution or linear layer whose parameters do not depend on the input to ``rule.layer``;
- an eval batch norm to ``rule.batch_norm``;
- a linear op that combines values (sums, differences, means, average pooling, interpolation,
  products and quotients with a constant) to ``rule.linear``;
- a linear op that only moves values (reshaping, indexing with constant indices, concatenation,
  padding, copies) runs unchanged: its gradient routes any attribution exactly;
- where the rule covers what attention is made of (``rule.attention``): a product of several
  input-dependent tensors to ``rule.product``, softmax to ``rule.softmax``, torch's norms (layer,
  RMS, group, instance, ``F.normalize``) to ``rule.normalisation``, a norm written out (``h *
  rsqrt(mean(h ** 2) + eps)``) with its statistic held constant (``interpkit.core.normalisations``),
  and torch's fused attention written out as those (``interpkit.core.attention``);
- anything else with a floating result is uncovered: counted by name in ``uncovered`` (without
  those rules a product of two input-dependent tensors, softmax, layer norm; an index or mask
  computed from the input, a value taken out of the graph), so that an explainer refuses the
  model instead of returning a silently wrong map.

``path`` records each op on a dependent tensor with the parameters it read, so that two forwards
(DeepLift's input and baseline) can be checked to have taken the same path.
"""

from __future__ import annotations

import itertools
import weakref
from collections import Counter
from typing import Any, Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from ..errors import UncoveredNonlinearityError
from .attention import mismatch, written_out
from .normalisations import (
    BASE_MAKERS,
    CENTRINGS,
    IN_PLACE_MAKERS,
    MAKERS,
    MEAN,
    MEANS,
    MOMENT,
    MOMENT_MAKERS,
    NORMS,
    PAIRED,
    ROOT,
    SCALES,
    SQUARE,
    STATISTICS,
    VARIANCE,
    combined,
    dim_of,
    keeps_places,
    kept,
    layout_of,
    linearised,
    meets,
    moment_made,
    normalises,
    over_the_batch,
    regroups,
    scales_only,
    statistic_made,
)
from .relu_rules import CLAMPS, IN_PLACE_CLAMPS, UNCOVERED_NONLINEARITIES, input_first, relu_call
from .saved import Checkpoints

Function = Callable[[torch.Tensor], torch.Tensor]
Pool = Callable[[torch.Tensor], "tuple[torch.Tensor, torch.Tensor]"]


class PropagationRule:
    """How an attribution passes through the ops of a forward; subclasses override what they
    change (the nonlinear ops at least), the rest keeps its gradient.

    ``elementwise(function, x, inplace, slope)`` returns ``function(x)`` (written into ``x`` when
    ``inplace``) with the rule's backward; ``slope`` is the function's derivative where known
    (the ReLU family: a boolean mask, True where it passes), else None. ``max_pool(pool, x,
    dims)`` returns the pooled ``x`` (over its last ``dims`` axes) with the rule's backward,
    ``pool`` giving the pooled values and their flat indices."""

    def elementwise(self, function: Function, x: torch.Tensor, inplace: bool,
                    slope: Function | None = None) -> torch.Tensor:
        """``function(x)`` with this rule's backward."""
        raise NotImplementedError

    def max_pool(self, pool: Pool, x: torch.Tensor, dims: int) -> torch.Tensor:
        """``pool(x)[0]`` with this rule's backward."""
        raise NotImplementedError

    def scaled(self, function: Function, x: torch.Tensor, inplace: bool) -> torch.Tensor:
        """``function(x)``: ``x`` times a constant tensor (or zero) that may be 0 somewhere, where
        the output does not depend on ``x``; by default as ``elementwise``."""
        return self.elementwise(function, x, inplace)

    def layer(self, run: Callable[..., torch.Tensor], x: torch.Tensor, weight: torch.Tensor,
              bias: torch.Tensor | None, transposed: bool) -> torch.Tensor:
        """A convolution (``transposed`` for a transposed one) or linear layer, ``run(x, weight,
        bias)``, with parameters that do not depend on the input."""
        return run(x, weight, bias)

    def linear(self, run: Callable[..., torch.Tensor], inputs: list[torch.Tensor]) -> torch.Tensor:
        """A linear op combining values, ``run(*inputs)`` of its input-dependent tensors."""
        return run(*inputs)

    def batch_norm(self, run: Function, x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
        """An eval batch norm, ``run(x)``: per channel ``x * scale + shift``."""
        return run(x)

    #: whether the rule covers what attention is made of (``product``, ``softmax``, ``normalisation``);
    #: with it, fused attention ops are written out as those parts (``interpkit.core.attention``)
    attention = False

    def product(self, run: Callable[..., torch.Tensor], inputs: list[torch.Tensor]) -> torch.Tensor:
        """A product of several input-dependent tensors (``a * b``, ``q @ k.mT``, an einsum),
        ``run(*inputs)``: multilinear in them."""
        raise NotImplementedError

    def softmax(self, run: Function, x: torch.Tensor, dim: int) -> torch.Tensor:
        """``run(x)``: a softmax over axis ``dim``."""
        raise NotImplementedError

    def normalisation(self, run: Function, linearised: Function, x: torch.Tensor) -> torch.Tensor:
        """A norm ``run(x)`` (layer, RMS, group, instance, ``F.normalize``); ``linearised`` is the
        same norm with the input's statistic of scale (its standard deviation, root mean square or
        norm) held constant: linear."""
        raise NotImplementedError


def _named(owner: Any, names: str) -> set:
    return {getattr(owner, name) for name in names.split() if hasattr(owner, name)}


def _properties(names: str) -> set:
    return {getattr(torch.Tensor, name).__get__ for name in names.split() if hasattr(torch.Tensor, name)}


T = torch.Tensor
# linear ops that only move values: their gradient routes an attribution exactly
_MOVES = (
    _named(torch, "cat concat concatenate stack hstack vstack flatten reshape squeeze unsqueeze transpose swapaxes "
                  "permute movedim moveaxis narrow select split chunk unbind tensor_split flip roll rot90 t clone "
                  "diagonal tile repeat_interleave broadcast_to channel_shuffle")
    | _named(T, "view view_as reshape reshape_as flatten unflatten permute transpose t contiguous unsqueeze unsqueeze_ "
                "squeeze squeeze_ expand expand_as broadcast_to repeat repeat_interleave narrow select split chunk unbind "
                "clone to cpu cuda float double half bfloat16 type type_as movedim flip roll rot90 copy_ diagonal tile unfold")
    | _named(F, "pad pixel_shuffle pixel_unshuffle unfold channel_shuffle")
    | _properties("T mT H mH")
)
# moves whose index arguments (position 1, or ``index``) must not depend on the input
_INDEXED = {T.__getitem__: 1, T.__setitem__: 1, torch.index_select: 2, T.index_select: 2, torch.gather: 2,
            T.gather: 2, torch.take_along_dim: 1, T.take_along_dim: 1}
# linear ops that combine values
_MIXES = (_named(torch, "add sub subtract neg negative sum mean cumsum diff sum_to_size")
          | _named(T, "add add_ __add__ __radd__ __iadd__ sub sub_ __sub__ __rsub__ __isub__ neg neg_ __neg__ __pos__ "
                      "sum mean cumsum diff sum_to_size")
          | _named(F, "avg_pool1d avg_pool2d avg_pool3d adaptive_avg_pool1d adaptive_avg_pool2d adaptive_avg_pool3d "
                      "interpolate fold"))
# linear while at most one factor depends on the input (a product of two is not)
_ONE_FACTOR = (_named(torch, "mul multiply matmul mm bmm einsum tensordot")
               | _named(T, "mul mul_ __mul__ __rmul__ __imul__ matmul __matmul__ __rmatmul__ mm bmm"))
# linear in the numerator only (and without rounding)
_DIVISIONS = _named(torch, "div divide true_divide") | _named(T, "div div_ __truediv__ __itruediv__")
# arithmetic that is elementwise and affine when one operand is a constant
_ARITHMETIC = (_named(torch, "add sub subtract neg negative mul multiply div divide true_divide")
               | _named(T, "add add_ __add__ __radd__ __iadd__ sub sub_ __sub__ __rsub__ __isub__ neg neg_ __neg__ "
                           "mul mul_ __mul__ __rmul__ __imul__ div div_ __truediv__ __itruediv__"))
# ``beta * input + alpha * (a @ b)``: the names of the two factors, linear while at most one depends on the input
_ADDED_PRODUCTS = {
    **{f: ("mat1", "mat2") for f in _named(torch, "addmm") | _named(T, "addmm addmm_")},
    **{f: ("batch1", "batch2") for f in _named(torch, "baddbmm addbmm") | _named(T, "baddbmm baddbmm_ addbmm addbmm_")},
    **{f: ("mat", "vec") for f in _named(torch, "addmv") | _named(T, "addmv addmv_")},
    **{f: ("vec1", "vec2") for f in _named(torch, "addr") | _named(T, "addr addr_")},
}
# autograd Functions whose forward hands its inputs on and whose backward is the rules' own: a
# checkpointed region (recomputed under the mode). The identity a full backward hook puts around a
# module is not one: the hook would run on the rules' values, and what it returns replaces them.
_PASSING_FUNCTIONS = {"CheckpointFunctionBackward"}
# products with a constant factor: where the factor is 0 the output does not depend on the input
_CONSTANT_FACTORS = _named(torch, "mul multiply") | _named(T, "mul mul_ __mul__ __rmul__ __imul__")
# in-place ops that combine values, and their out-of-place forms
_IN_PLACE = {T.add_: T.add, T.__iadd__: T.__add__, T.sub_: T.sub, T.__isub__: T.__sub__, T.neg_: T.neg,
             T.mul_: T.mul, T.__imul__: T.__mul__, T.div_: T.div, T.__itruediv__: T.__truediv__,
             T.addmm_: T.addmm, T.baddbmm_: T.baddbmm, T.addbmm_: T.addbmm, T.addmv_: T.addmv, T.addr_: T.addr}
# identities in eval mode (``training`` False)
_TRAINING_FLAG = {F.dropout: 2, F.dropout1d: 2, F.dropout2d: 2, F.dropout3d: 2, F.alpha_dropout: 2,
                  F.feature_alpha_dropout: 2}
# outputs that do not depend on the input's values
_CONSTANT = _named(torch, "zeros_like ones_like empty_like full_like rand_like randn_like") | _named(
    T, "new_zeros new_ones new_empty new_full new_tensor size dim numel")
# a constant converted to an input-dependent tensor's dtype or device (``pe.to(h)``): still a constant
_CONVERSIONS = _named(T, "to type_as")
# a value taken out of the graph: an op that reads it loses its attribution
_DETACH = _named(T, "detach detach_") | _properties("data")
# layers with parameters: a convolution (1-D to 3-D, transposed too) or a linear layer
_LAYERS = _named(torch, "conv1d conv2d conv3d conv_transpose1d conv_transpose2d conv_transpose3d") | {F.linear}
_TRANSPOSED = _named(torch, "conv_transpose1d conv_transpose2d conv_transpose3d")
# max pooling: the position of its ``return_indices`` argument and the axes it pools
_MAX_POOLS: dict[Any, tuple[int, int]] = {
    F.max_pool1d: (6, 1), F.max_pool2d: (6, 2), F.max_pool3d: (6, 3),
    F.adaptive_max_pool1d: (2, 1), F.adaptive_max_pool2d: (2, 2), F.adaptive_max_pool3d: (2, 3)}
# max pooling that also returns the maxima's indices (``return_indices=True``): the axes it pools
_MAX_POOLS_WITH_INDICES = {getattr(F, f"{kind}max_pool{d}d_with_indices"): d for kind in ("", "adaptive_") for d in (1, 2, 3)}
# maxima over named axes (``torch.max(h, 2)``, ``h.amax((2, 3))``): max pooling those axes away
_MAXIMA = _named(torch, "max amax") | _named(T, "max amax")


# softmax over one axis and fused attention: covered by rules with ``attention`` (as norms are)
_SOFTMAX = {torch.softmax, T.softmax, F.softmax}
_ATTENTION = {F.scaled_dot_product_attention, F.multi_head_attention_forward}


_NOT_A_SCALE = object()  # ``_scale``'s answer where no norm's scale is involved
# moves that read only the shape, dtype or device of their other tensor
_SHAPE_READS = _named(T, "expand_as view_as reshape_as type_as to")
_UNSEEN = "an op out of the rules' sight (a TorchScript function, a C++ extension)"


def _tensors(value: Any) -> list[torch.Tensor]:
    """The tensors in an op's arguments or result (nested tuples, lists and dicts), in order."""
    found: list[torch.Tensor] = []
    _collect(value, found)
    return found


def _collect(value: Any, found: list[torch.Tensor]) -> None:
    # a loop over the items, recursing only into containers: most arguments are numbers, shapes
    # and tensors, and this runs for every op of the forward
    if isinstance(value, torch.Tensor):
        found.append(value)
        return
    if isinstance(value, dict):
        value = value.values()
    elif not isinstance(value, (tuple, list)):
        return
    for item in value:
        if isinstance(item, torch.Tensor):
            found.append(item)
        elif isinstance(item, (tuple, list, dict)):
            _collect(item, found)


def _name(func: Any) -> str:
    name = UNCOVERED_NONLINEARITIES.get(func) or getattr(func, "__name__", None) or str(func)
    if name == "__get__":  # a property: its own name
        return getattr(getattr(func, "__self__", None), "__name__", name)
    return name


class PropagationMode(TorchFunctionMode):
    """While active, ``rule`` handles the ops on tensors that depend on ``source`` (the attributed
    input); ``ruled`` counts its nonlinear ops, ``uncovered`` counts by name the ops on such
    tensors that no rule covers, ``path`` lists every op on them that gives a tensor, with the
    parameters it read, and
    ``reads(tensor)`` says how many ops read a dependent tensor (``forward_ops``: how many of
    ``path`` ran before the mode was first left). The forward is otherwise unchanged."""

    def __init__(self, rule: PropagationRule, source: torch.Tensor) -> None:
        super().__init__()
        self.rule = rule
        self.ruled = 0
        self.uncovered: Counter[str] = Counter()
        self.checkpoints = Checkpoints()
        self.path: list[tuple] = []
        self.forward_ops: int | None = None  # the length of ``path`` when the mode was first left
        self._dependent: dict[int, tuple[weakref.ref, list[int]]] = {}  # id -> (the tensor, its read count)
        self._detached: dict[int, weakref.ref] = {}
        self._blind: dict[int, weakref.ref] = {}  # made under no_grad: inside an autograd Function's forward, say
        self._origins: dict[int, tuple[Any, bool]] = {}  # autograd node id -> (the node, whether it reads the source)
        self._source = weakref.ref(source)
        self._written: set[int] = set()  # storages that received input-dependent values in place
        self._kept: list[torch.Tensor] = []  # the written tensors, alive so that no other storage takes their place
        # with a graph from the source, a value read with grad on that has none (made under no_grad) is out
        # of the graph as if detached (under no_grad nothing is judged: autograd Functions' forwards run so)
        self._graph = source.requires_grad
        self.detaching = False  # whether an input-dependent value was taken out of the graph
        self._mismatches: list[tuple[str, torch.Tensor]] = []  # attention decompositions against the fused ops
        # id -> (the tensor, its version, its kind, its origin, the origin's version, its layout): the parts of a norm
        # written out, the tensor whose statistic they are (held: it may be a temporary), and the shape the statistic
        # was taken over with its groups (that shape, the reduced axes at 1; ``interpkit.core.normalisations``)
        self._kinds: dict[int, tuple[weakref.ref, int, str, torch.Tensor, int, tuple | None]] = {}
        # id -> (the tensor, its version, its base, the base's version, the layout of the mean it was centred by): a value
        # converted, reshaped, scaled by constants, or centred
        self._bases: dict[int, tuple[weakref.ref, int, weakref.ref, int, tuple | None]] = {}
        self._mark(source)

    def _mark(self, tensor: torch.Tensor) -> None:
        self._dependent[id(tensor)] = (weakref.ref(tensor), [0])

    def _depends(self, value: Any) -> bool:
        if not isinstance(value, torch.Tensor):
            return False
        known = self._dependent.get(id(value))
        if known is not None and known[0]() is value:
            return True
        return bool(self._written) and _storage(value) in self._written

    def _kind(self, value: Any) -> str | None:
        """What part of a written-out norm ``value`` is, if any (void once written in place since)."""
        known = self._kinds.get(id(value))
        tensor = None if known is None else known[0]()
        return known[2] if known is not None and tensor is value and tensor._version == known[1] else None

    def _tag(self, tensor: torch.Tensor, kind: str, origin: torch.Tensor, layout: tuple | None) -> None:
        if not (tensor.is_inference() or origin.is_inference()):  # inference-mode tensors keep no version
            self._kinds[id(tensor)] = (weakref.ref(tensor), tensor._version, kind, origin, origin._version, layout)

    def _tagged(self, value: Any) -> tuple:
        """``(origin, layout)`` of a tagged value: the tensor whose statistic (square, mean) it is,
        and the shape it was taken over with its groups; ``(None, None)`` once the origin was
        written in place (it holds other values than the statistic was taken of)."""
        known = self._kinds.get(id(value))
        if known is None or known[0]() is not value or known[3]._version != known[4]:
            return None, None
        return known[3], known[5]

    def _origin(self, tagged: Any) -> Any:
        return self._tagged(tagged)[0]

    def _based(self, value: Any) -> tuple:
        """``(base, centred over)``: what ``value`` was converted, reshaped, scaled by constants or
        centred from (``value`` itself if none, or if either was written in place since), and the
        layout of the mean it was centred by (None if not centred)."""
        known = self._bases.get(id(value))
        tensor = None if known is None else known[0]()
        if known is None or tensor is not value or tensor._version != known[1]:
            return value, None
        base = known[2]()
        return (value, None) if base is None or base._version != known[3] else (base, known[4])

    def _base(self, value: Any) -> Any:
        return self._based(value)[0]

    def __exit__(self, *exc_info: Any) -> None:
        if self.forward_ops is None:  # the first exit ends the forward; later entries read its output
            self.forward_ops = len(self.path)
        super().__exit__(*exc_info)

    def refuse_uncovered(self, method: str, covered: str, otherwise: str) -> None:
        """Raise ``UncoveredNonlinearityError`` naming the uncovered ops, if any: ``covered`` says
        what the method's rules are defined for, ``otherwise`` what ``strict=False`` gives."""
        if self.uncovered:
            kinds = ", ".join(f"{name} ({count})" for name, count in self.uncovered.most_common())
            raise UncoveredNonlinearityError(
                f"{method}: the forward ran {kinds} on input-dependent tensors, which {covered}; explain a model "
                f"without them, or pass strict=False to give them their plain gradient{otherwise}")

    def check_decompositions(self, method: str) -> None:
        """Refuse the call if an attention op written out as its parts did not reproduce the fused
        op (one synchronisation, and only where attention was written out)."""
        if not self._mismatches:
            return
        worst = torch.stack([m.to(self._mismatches[0][1].device) for _, m in self._mismatches])
        largest = worst.max().item()
        if largest > 1:
            name = self._mismatches[int(worst.argmax())][0]
            raise UncoveredNonlinearityError(
                f"{method}: {name} written out as its parts (projections, products, softmax) did not reproduce torch's "
                f"result ({largest:.3g} times the rounding tolerance), so their rules would explain another function; "
                "explain the model in float32 if it runs in half precision or under autocast, or with its attention "
                "written out in Python (timm: fused_attn=False; HuggingFace: attn_implementation='eager'), and please "
                "report it")

    @property
    def unseen(self) -> int:
        """How many input-dependent values came from ops this mode did not see."""
        return self.uncovered[_UNSEEN]

    def reads(self, tensor: torch.Tensor) -> list[int]:
        """How many ops read ``tensor`` (a dependent tensor) into the graph: a one-element list
        that later reads keep counting in, so it can be read after the forward."""
        known = self._dependent.get(id(tensor))
        return known[1] if known is not None and known[0]() is tensor else [0]

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if self.checkpoints.inside():  # saved as without checkpointing: nothing is recomputed without the rules
            with self.checkpoints.kept():
                return self._handle(func, args, kwargs or {})
        return self._handle(func, args, kwargs or {})

    def _handle(self, func: Any, args: tuple, kwargs: dict) -> Any:
        args, kwargs = input_first(args, kwargs)  # torch.tanh(input=x)
        given = _tensors((args, kwargs))  # once per op: the flattening is most of the mode's own cost
        dependent = [t for t in given if self._depends(t)]
        judged = self._graph and torch.is_grad_enabled()
        if judged and len(dependent) < len(given):
            dependent += self._unseen(given, dependent)
        if func in _CONSTANT or not dependent or (func in _CONVERSIONS and not self._depends(args[0])):
            return func(*args, **kwargs)
        counted = sum(self.uncovered.values())
        kind = self._kind(args[0]) if self._kinds and args else None  # before an in-place op moves its version
        if kwargs.get("out") is not None:  # the rules return new tensors: an ``out=`` would stay unwritten
            result = self._uncovered(func, args, kwargs, always=True)
        else:
            result = self._run(func, args, kwargs, dependent)
        tensors = _tensors(result)
        if not tensors and func is not T.__setitem__:
            return result  # a size, a length, a dtype: no value read
        if self.rule.attention:
            self._note_moment(func, args, kwargs, dependent, tensors, kind)
            self._note_base(func, args, kwargs, dependent, tensors)
        # reads: a batch norm folds only into a layer whose output it alone reads; a read that makes no
        # graph (under no_grad, a detached copy, an integer result) carries nothing back, so it does not count
        if func not in _DETACH and any(t.requires_grad for t in ([args[0]] if func is T.__setitem__ else tensors)):
            for tensor in dependent:
                known = self._dependent.get(id(tensor))
                if known is not None:
                    known[1][0] += 1
        if func not in _MOVES and func not in _INDEXED:  # the path: what changes values, with its parameters
            self.path.append((func, tuple(id(t) for t in given if isinstance(t, nn.Parameter))))
        detached = [self._detached.get(id(t), _dead)() is t or (judged and t.is_floating_point() and not t.requires_grad)
                    for t in dependent]
        self.detaching = self.detaching or any(detached)  # a detached value read again (not a log's copy)
        if self._kinds:  # a norm's scale, detached, is read as a constant where it normalises (``_scale``)
            detached = [d for d, t in zip(detached, dependent) if self._kind(t) not in SCALES]
        made = [args[0]] if func is T.__setitem__ else tensors  # a write returns None: the written tensor
        if sum(self.uncovered.values()) == counted and any(t.is_floating_point() for t in made):
            if any(detached) and not all(detached):
                self.uncovered[f"{_name(func)} of a detached input-dependent value"] += 1
            elif any(not t.is_floating_point() for t in dependent):
                self.uncovered[f"{_name(func)} of an input-dependent index, mask or integer"] += 1
            elif judged and any(self._blind.get(id(t), _dead)() is t and t.requires_grad and
                                type(t.grad_fn).__name__ not in _PASSING_FUNCTIONS for t in dependent):
                # made where no graph was recorded, yet in the graph now: a custom autograd Function's output,
                # whose own backward replaces the rules of the ops inside it
                hooked = any(type(t.grad_fn).__name__ == "BackwardHookFunctionBackward" for t in dependent)
                self.uncovered["a full backward hook (register_full_backward_hook), which would run on the rule's "
                               "values and may replace them; remove it for the call" if hooked else
                               "a custom autograd Function (or a write under torch.no_grad)"] += 1
        constants = {id(t) for t in given if not self._depends(t)}
        for tensor in tensors:
            if id(tensor) in constants and not _writes(func):
                continue  # a constant returned as it was (``w.to(x)``, ``w.type_as(x)``)
            self._mark(tensor)
            if func in _DETACH or all(detached):
                self._detached[id(tensor)] = weakref.ref(tensor)
            elif self._graph and not torch.is_grad_enabled():
                self._blind[id(tensor)] = weakref.ref(tensor)
        if _writes(func) and args and isinstance(args[0], torch.Tensor):
            written = _storage(args[0])  # an in-place write: every view of that storage depends
            if written:
                self._written.add(written)
                self._kept.append(args[0])
        return result

    def _unseen(self, given: list[torch.Tensor], dependent: list[torch.Tensor]) -> list[torch.Tensor]:
        """The tensors among ``given`` that depend on the source through ops this mode never saw
        (a TorchScript function, a C++ extension, an autograd Function returning its input): counted
        as uncovered, then followed as dependent. Only a tensor in a graph that the mode did not
        make is looked at, and each autograd node is searched once per call."""
        found = []
        for tensor in given:
            node = tensor.grad_fn if tensor.requires_grad and not any(tensor is t for t in dependent) else None
            if node is not None and self._reads_source(node):
                self.uncovered[_UNSEEN] += 1
                self._mark(tensor)
                found.append(tensor)
        return found

    def _reads_source(self, node: Any) -> bool:
        """Whether the autograd graph from ``node`` reaches the source (memoised per node)."""
        known = self._origins.get(id(node))
        if known is not None:
            return known[1]
        source, stack, visited = self._source(), [node], {}
        while stack:
            current = stack.pop()
            if id(current) in visited:
                continue
            visited[id(current)] = current
            memo = self._origins.get(id(current))
            if (memo is not None and memo[1]) or (source is not None and getattr(current, "variable", None) is source):
                self._origins[id(node)] = (node, True)
                return True
            if memo is None:
                stack.extend(following for following, _ in current.next_functions if following is not None)
        self._origins.update((key, (value, False)) for key, value in visited.items())  # no path: none of them reads it
        return False

    def _run(self, func: Any, args: tuple, kwargs: dict, dependent: list[torch.Tensor]) -> Any:
        x: Any = args[0] if args else None
        if self.rule.attention and (self._kinds or func in MAKERS):
            scaled = self._scale(func, args, kwargs, dependent)
            if scaled is not _NOT_A_SCALE:
                return scaled
        first = self._depends(x)
        relu = relu_call(func, args, kwargs)
        if relu is not None and first:
            inplace, upper = relu
            self.ruled += 1
            return self.rule.elementwise(lambda t: t.clamp(0, upper), x, inplace, _relu_slope(upper))
        if first and (func in _ELEMENTWISE or func in CLAMPS or func in _POWERS):
            elementwise = _elementwise(func, args, kwargs, self._depends)
            if elementwise is not None:
                self.ruled += 1
                return self.rule.elementwise(*elementwise)
        if func in _MAX_POOLS and first and not _argument(args, kwargs, _MAX_POOLS[func][0], "return_indices"):
            self.ruled += 1
            rest, options = args[1:], {k: v for k, v in kwargs.items() if k != "return_indices"}
            return self.rule.max_pool(lambda t: func(t, *rest, **options, return_indices=True), x, _MAX_POOLS[func][1])
        if func in _MAX_POOLS_WITH_INDICES and first:
            self.ruled += 1

            def pool(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
                return func(t, *args[1:], **kwargs)

            return self.rule.max_pool(pool, x, _MAX_POOLS_WITH_INDICES[func]), pool(x.detach())[1]
        if func in _MAXIMA and first and len(dependent) == 1:
            maxima = _maxima(func, args, kwargs, self.rule)
            if maxima is not None:
                self.ruled += 1
                return maxima
        if func in _LAYERS:
            weight, bias = _argument(args, kwargs, 1, "weight", None), _argument(args, kwargs, 2, "bias", None)
            if first and not (self._depends(weight) or self._depends(bias)):
                rest, options = args[3:], {k: v for k, v in kwargs.items() if k not in ("weight", "bias")}
                return self.rule.layer(lambda t, w, b: func(t, w, b, *rest, **options), x, weight, bias,
                                       func in _TRANSPOSED)
            if first and self._depends(weight):  # a product of the input and an input-dependent weight
                return self._uncovered(func, args, kwargs)
            return self._mixed(func, args, kwargs, dependent)
        if func is F.batch_norm and first:
            statistics = [_argument(args, kwargs, i, name, None)
                          for i, name in ((1, "running_mean"), (2, "running_var"), (3, "weight"), (4, "bias"))]
            if _argument(args, kwargs, 5, "training") or any(map(self._depends, statistics)):
                return self._uncovered(func, args, kwargs)  # a normalisation by the input's own statistics
            return self.rule.batch_norm(lambda t: func(t, *args[1:], **kwargs), x, *_affine(args, kwargs))
        if self.rule.attention:
            ruled = self._attention(func, args, kwargs, dependent)
            if ruled is not None:
                self.ruled += 1
                return ruled
        if self._moves(func, args, kwargs):
            return func(*args, **kwargs)
        if self._mixes(func, args, kwargs, dependent):
            return self._mixed(func, args, kwargs, dependent)
        return self._uncovered(func, args, kwargs)

    def _attention(self, func: Any, args: tuple, kwargs: dict, dependent: list[torch.Tensor]) -> Any:
        """What attention is made of, through the rule's ``product``, ``softmax`` and
        ``normalisation``, and fused attention written out as those; None for anything else."""
        x, rule = args[0] if args else None, self.rule
        if func in _ONE_FACTOR and len(dependent) > 1 and all(t.is_floating_point() for t in dependent):
            out_of_place = _IN_PLACE.get(func)
            if out_of_place is None:
                return rule.product(_substituted(func, args, kwargs, dependent), dependent)
            # written in place (h *= g): made out of place from a copy of the written tensor, then written
            written = args[0]
            inputs = [t.clone() if t is written else t for t in dependent]
            return written.copy_(rule.product(_substituted(out_of_place, args, kwargs, dependent), inputs))
        if func in _ADDED_PRODUCTS and func not in _IN_PLACE:
            return self._added_product(func, args, kwargs)
        if len(dependent) != 1 or dependent[0] is not x:
            return self._fused(func, args, kwargs) if func in _ATTENTION else None
        rest, options, dim = args[1:], kwargs, _argument(args, kwargs, 1, "dim", None)
        if func in _SOFTMAX and isinstance(dim, int):
            return rule.softmax(lambda t: func(t, *rest, **options), x, dim)
        if func in NORMS and not over_the_batch(func, args, kwargs):
            return rule.normalisation(lambda t: func(t, *rest, **options), linearised(func, args, kwargs), x)
        return self._fused(func, args, kwargs) if func in _ATTENTION else None

    def _note_moment(self, func: Any, args: tuple, kwargs: dict, dependent: list[torch.Tensor],
                     tensors: list[torch.Tensor], kind: str | None) -> None:
        """Tag a square or second moment on its way to a norm's statistic, and keep the tag of
        one moved or converted (``h.pow(2).float()``), or shifted or scaled by a constant
        (``v += eps``); ``kind`` is ``args[0]``'s before the op."""
        if kind is None and func not in MOMENT_MAKERS:
            return  # neither tagged nor a square or mean: the cost of most ops in a model is this one check
        if kind in STATISTICS or any(self._kind(t) in STATISTICS for t in tensors):
            return  # a statistic, tagged by ``_scale``
        x = args[0]
        made = moment_made(func, args, kwargs, self._kind)
        origin, layout = self._tagged(x)
        if made == SQUARE or (made == MEAN and kind is None):
            origin, layout = self._based(x)  # a square keeps the layout its values were centred by
        if made in (MEAN, MOMENT):
            centre, layout = layout, layout_of(func, args, kwargs, x)
            if made == MOMENT and centre not in (None, layout):
                return  # a mean of squares centred over other axes: no statistic of the tensor's groups
        alone = all(t is x for t in dependent) or func in _SHAPE_READS
        if made is None and kind is not None and alone and not regroups(tensors[0].shape, layout and layout[1]) and (
                keeps_places(func, args) or kept(func, args, kwargs, x, VARIANCE)
                or (func in CLAMPS and _elementwise(func, args, kwargs, self._depends) is not None)):
            made = kind
        if made is not None and origin is not None:
            for tensor in tensors:
                self._tag(tensor, made, origin, layout)

    def _note_base(self, func: Any, args: tuple, kwargs: dict, dependent: list[torch.Tensor],
                   tensors: list[torch.Tensor]) -> None:
        """Record what a value is a copy of, for ``_base``: a move or conversion of one tensor, the
        tensor shifted or scaled by constants, or centred (``h - h.mean(-1, keepdim=True)``)."""
        if func not in BASE_MAKERS:
            return
        x = args[0] if args else None
        one = dependent[0]
        if self._kind(one) is not None or any(self._kind(t) for t in tensors):
            return
        alone = all(t is one for t in dependent)
        base, centre = self._based(one)
        centred = (len(dependent) == 2 and func in CENTRINGS and one is x and centre is None
                   and self._kind(dependent[1]) == MEAN and self._origin(dependent[1]) is base)
        if centred:
            centre = self._tagged(dependent[1])[1]  # the mean's layout
        scaled = alone and scales_only(func, args, kwargs, one) and all(t.shape == one.shape for t in tensors)
        if base.is_inference():  # an inference-mode tensor keeps no version
            return
        if centred or scaled or (x is one and (alone or func in _SHAPE_READS) and keeps_places(func, args)):
            for tensor in tensors:
                if tensor is not one and not tensor.is_inference():  # an inference tensor keeps no version
                    self._bases[id(tensor)] = (weakref.ref(tensor), tensor._version, weakref.ref(base), base._version,
                                               centre)

    def _scale(self, func: Any, args: tuple, kwargs: dict, dependent: list[torch.Tensor]) -> Any:
        """A norm written out: its statistic (a variance, a standard deviation or norm, a root of a
        second moment), made detached and tagged; an op on a statistic and constants, tagged as
        what it keeps (moved, clamped, shifted or scaled by constants, inverted); or a tensor
        normalised by a scale, which is held constant there (AttnLRP's rule for norms). A
        statistic read with other input-dependent values otherwise is uncovered; ``_NOT_A_SCALE``
        where no statistic is read."""
        x = args[0] if args else None
        if func in MAKERS and all(t is x for t in dependent):
            making = statistic_made(PAIRED.get(func, func), args, kwargs, self._kind)
            if func in IN_PLACE_MAKERS and isinstance(x, torch.Tensor) and x.requires_grad:
                making = None  # a root written into a moment in the graph: the moment would stay in it, undetached
            if making is not None:
                return self._statistic(func, making, args, kwargs)
            if over_the_batch(func, args, kwargs):
                self.uncovered[f"{_name(func)} over the first (batch) axis, which would mix the samples"] += 1
                return func(*args, **kwargs)
        statistics = [t for t in dependent if self._kind(t) in STATISTICS]
        if not statistics:
            return _NOT_A_SCALE
        statistic, kind = statistics[0], self._kind(statistics[0])
        assert kind is not None
        others = [t for t in dependent if self._kind(t) not in STATISTICS]
        if (len(others) == 1 and len(statistics) == 1 and not (x is statistic and func in _IN_PLACE)
                and self._normalised(others[0], statistic) and normalises(func, args, kwargs, statistic, kind, others[0])):
            return self._mixed(func, args, kwargs, others)  # the statistic, detached, is a constant there
        made: str | None = None
        origin, layout = self._tagged(statistic)
        moved = x is statistic and (not others or func in _SHAPE_READS) and keeps_places(func, args)
        if moved:
            made = kind  # ``s.expand_as(h)``, ``s.to(h)``, ``s[..., None]``, ``s.detach()``
        elif not others and all(t is statistic for t in dependent):
            clamped = func in CLAMPS and _elementwise(func, args, kwargs, self._depends) is not None
            made = kept(func, args, kwargs, statistic, kind) or (
                kind if clamped and kind in (VARIANCE, ROOT) else None)  # ``norm.clamp_min(eps)``
            if made is not None and func in MEANS and layout is not None:  # a root's mean: coarser groups
                layout = (layout[0], layout_of(func, args, kwargs, statistic)[1]) if statistic.shape == layout[1] else None
        elif not others and len({id(self._origin(t)) for t in dependent}) == 1:  # of one tensor
            made = combined(func, args, kwargs, [self._kind(t) for t in dependent])
            layouts = [self._tagged(t)[1] for t in dependent]
            same = None not in layouts and len({layout[0] for layout in layouts}) == 1
            layout = (layouts[0][0], torch.broadcast_shapes(*(layout[1] for layout in layouts))) if same else None
        else:
            self.uncovered[f"{_name(func)} of a norm's statistic (a variance, a standard deviation or norm, read "
                           "otherwise than to divide a tensor by it)"] += 1
        result = func(*args, **kwargs)
        if moved and regroups(_tensors(result)[0].shape, layout and layout[1]):
            made = None  # reshaped across axes: its values now meet other positions
        if made is not None and origin is not None:
            for tensor in _tensors(result):
                self._tag(tensor, made, origin, layout)
        return result

    def _normalised(self, t: torch.Tensor, statistic: torch.Tensor) -> bool:
        """Whether ``statistic`` is of ``t`` (of the tensor ``t`` copies, at ``t``'s shape, centred
        over the same groups if centred) and holds one value per group at the groups' positions."""
        origin, layout = self._tagged(statistic)
        base, centre = self._based(t)
        return (origin is not None and base is origin and layout is not None and t.shape == layout[0]
                and meets(statistic, layout[1]) and centre in (None, layout))

    def _statistic(self, func: Any, kind: str, args: tuple, kwargs: dict) -> Any:
        """A norm's statistic, detached and tagged ``kind``; with ``torch.var_mean`` (or
        ``std_mean``) the mean too, through the rules (the centring reads it), at the op's value."""
        self.ruled += 1
        self.detaching = True  # a score made of statistics alone has nothing to pass back: ``out_of_graph`` says why
        own, x = PAIRED.get(func, func), args[0]
        if self._kind(x) is None:  # read before the op: an in-place root (``rsqrt_``) moves the moment's version
            origin, layout = self._base(x), layout_of(own, args, kwargs, x)
        else:
            origin, layout = self._tagged(x)
        with torch.no_grad():
            statistic = own(*args, **kwargs)  # in place (``rsqrt_``) only into a moment out of the graph
        self._tag(statistic, kind, origin, layout)
        self._detached[id(statistic)] = weakref.ref(statistic)
        if own is func:
            return statistic
        keepdim = kwargs.get("keepdim", args[3] if len(args) > 3 else False)
        mean = self._handle(torch.mean, (x, dim_of(args, kwargs)), {"keepdim": keepdim})
        with torch.no_grad():
            exact = func(*args, **kwargs)[1]
        centre = _Valued.apply(mean, [exact])
        self._tag(centre, MEAN, origin, layout)  # ``h - centre`` is ``h`` centred
        return statistic, centre

    def _fused(self, func: Any, args: tuple, kwargs: dict) -> Any:
        """A fused attention op with the value torch gives, and the backward of its parts."""
        others = _tensors((args[3:], {k: v for k, v in kwargs.items() if k not in ("query", "key", "value")}))
        # SDPA's float mask is added to the scores, so one computed from the input (SAM's relative positions)
        # passes through the sum's rule; any other argument from the input (a boolean mask) the parts do not expect
        mask = _argument(args, kwargs, 3, "attn_mask", None) if func is F.scaled_dot_product_attention else None
        added = isinstance(mask, torch.Tensor) and mask.is_floating_point()
        if any(self._depends(t) and not (added and t is mask) for t in others):
            return None
        with torch.no_grad():
            exact = func(*args, **kwargs)

        def op(inner: Any, *inner_args: Any, **inner_kwargs: Any) -> Any:
            return self._handle(inner, inner_args, inner_kwargs)

        parts = written_out(func, op, args, kwargs)
        if parts is None:
            return None
        exacts, parts = (exact, parts) if isinstance(exact, tuple) else ((exact,), (parts,))
        for value, part in zip(exacts, parts):
            if part is not None:
                self._mismatches.append((_name(func), mismatch(value, part)))
        outputs = tuple(None if part is None else _Valued.apply(part, [value]) for part, value in zip(parts, exacts))
        return outputs if isinstance(exact, tuple) else outputs[0]

    def _added_product(self, func: Any, args: tuple, kwargs: dict) -> Any:
        """``beta * input + alpha * (a @ b)`` of two input-dependent factors (BLOOM's scores, its
        ALiBi bias added by ``baddbmm``) written out as a product and a sum through the rules, at
        the fused op's value; None where at most one factor depends on the input (a linear op)."""
        a, b = _factors(func, args, kwargs)
        if not (self._depends(a) and self._depends(b) and a.is_floating_point() and b.is_floating_point()):
            return None
        op, name = self._handle, func.__name__
        if name == "addr":  # an outer product
            product = op(torch.mul, (op(T.unsqueeze, (a, -1), {}), b), {})
        else:
            product = op(torch.matmul, (a, b), {})
            if name == "addbmm":  # summed over the batch of products
                product = op(T.sum, (product, 0), {})
        alpha, beta = kwargs.get("alpha", 1), kwargs.get("beta", 1)
        if alpha != 1:
            product = op(torch.mul, (product, alpha), {})
        added = _argument(args, kwargs, 0, "input", None)
        if beta != 0:  # with beta 0 torch ignores the input (NaN in it included)
            product = op(torch.add, (added if beta == 1 else op(torch.mul, (added, beta), {}), product), {})
        with torch.no_grad():
            exact = func(*args, **kwargs)
        self._mismatches.append((_name(func), mismatch(exact, product)))
        return _Valued.apply(product, [exact])

    def _uncovered(self, func: Any, args: tuple, kwargs: dict, always: bool = False) -> Any:
        result = func(*args, **kwargs)
        if always or func is T.__setitem__ or (
                func not in _DETACH and any(t.is_floating_point() for t in _tensors(result))):
            self.uncovered[_name(func) + (" with out=" if always else "")] += 1
        return result

    def _mixed(self, func: Any, args: tuple, kwargs: dict, dependent: list[torch.Tensor]) -> Any:
        """A linear op combining values, through ``rule.linear`` (in place: computed out of place
        from a copy of the written tensor, then written). Arithmetic with a constant on one
        input-dependent tensor (``x * k + c``, a normalisation) is elementwise and affine: it goes
        to ``rule.elementwise``, whose rules pass an attribution through it exactly."""
        out_of_place = _IN_PLACE.get(func)
        written = args[0] if out_of_place is not None else None
        if written is not None and not any(written is t for t in dependent):
            # written into a constant (``acc += h``): the rule keeps its value, not the tensor, which the write
            # links to the rule's own node (a cycle through autograd's nodes that no collection frees)
            args = (written.detach().clone(), *args[1:])
        if func in _ARITHMETIC and len(dependent) == 1:
            shapes = [t.shape for t in _tensors((args, kwargs))]
            if torch.broadcast_shapes(*shapes) == dependent[0].shape:
                self.ruled += 1
                run = _substituted(out_of_place or func, args, kwargs, dependent)
                rule = self.rule.scaled if _may_zero(func, args, kwargs, dependent[0]) else self.rule.elementwise
                if written is None or written is dependent[0]:
                    return rule(run, dependent[0], written is not None)
                # written into a constant (``acc.add_(h)``): the sum made out of place, then written there
                return written.copy_(rule(run, dependent[0], False))
        if written is None:
            return self.rule.linear(_substituted(func, args, kwargs, dependent), dependent)
        inputs = [t.clone() if t is written else t for t in dependent]
        return written.copy_(self.rule.linear(_substituted(out_of_place, args, kwargs, dependent), inputs))

    def _moves(self, func: Any, args: tuple, kwargs: dict) -> bool:
        if func in _MOVES:
            return True
        if func in _INDEXED:
            position = _INDEXED[func]
            return not any(self._depends(t) for t in _tensors(_argument(args, kwargs, position, "index", None)))
        if func in _TRAINING_FLAG:
            return not _argument(args, kwargs, _TRAINING_FLAG[func], "training")
        if func in (torch.where, T.where):
            return not self._depends(_argument(args, kwargs, 0 if func is torch.where else 1, "condition", None))
        if func in (torch.masked_fill, T.masked_fill, T.masked_fill_):
            return not self._depends(_argument(args, kwargs, 1, "mask", None)) and not self._depends(
                _argument(args, kwargs, 2, "value", None))
        return False

    def _mixes(self, func: Any, args: tuple, kwargs: dict, dependent: list[torch.Tensor]) -> bool:
        if func in _MIXES:
            return True
        if func in _ONE_FACTOR:
            return len(dependent) <= 1
        if func in _DIVISIONS:
            return (_argument(args, kwargs, 2, "rounding_mode", None) is None
                    and not any(self._depends(t) for t in _tensors((args[1:], kwargs))))
        if func in (torch.addcmul, T.addcmul, torch.addcdiv, T.addcdiv) and not isinstance(
                _argument(args, kwargs, 1, "tensor1", None), torch.Tensor):
            return False  # the deprecated overload (input, value, tensor1, tensor2): not read here
        if func in (torch.addcmul, T.addcmul):  # input + value * tensor1 * tensor2: linear in one factor
            return not (self._depends(_argument(args, kwargs, 1, "tensor1", None))
                        and self._depends(_argument(args, kwargs, 2, "tensor2", None)))
        if func in (torch.addcdiv, T.addcdiv):  # input + value * tensor1 / tensor2
            return not self._depends(_argument(args, kwargs, 2, "tensor2", None))
        if func in (torch.lerp, T.lerp):
            return not self._depends(_argument(args, kwargs, 2, "weight", None))
        if func in _ADDED_PRODUCTS:
            return sum(map(self._depends, _factors(func, args, kwargs))) <= 1
        return False


class _Valued(torch.autograd.Function):
    """``exact[0]`` (a fused op's own output) as the value, with the backward of ``parts`` (the
    same op written out as ops the rules cover)."""

    @staticmethod
    def forward(ctx: Any, parts, exact):
        value = exact[0]
        return value if value._base is None else value.clone()  # a view could not be written in place

    @staticmethod
    def backward(ctx: Any, grad):
        return grad, None


def out_of_graph(method: str) -> str:
    """What ``method`` says when no attribution reaches the input: the forward took the input's
    path out of the graph before the target's score."""
    return (f"{method}: the forward took the input's path out of the graph (under torch.no_grad, by .detach(), or "
            "through a norm's statistic, which the rules hold constant) before the target's score, so nothing reaches "
            "the input; explain a model that keeps the graph from its input to its output")


def _dead() -> None:
    return None


def _writes(func: Any) -> bool:
    """Whether ``func`` writes into its first argument: ``x.add_(y)``, ``x += y``, ``x[i] = y``."""
    name = getattr(func, "__name__", "")
    return func is T.__setitem__ or (name.endswith("_") and not name.startswith("__")) or (
        name.startswith("__i") and name.endswith("__") and name not in ("__index__", "__int__", "__invert__"))


def _storage(tensor: torch.Tensor) -> int:
    """The address of the tensor's storage (0: none to follow, an empty or storage-less tensor)."""
    try:
        return tensor.untyped_storage().data_ptr()
    except (RuntimeError, NotImplementedError):  # meta tensors, functional wrappers
        return 0


def _may_zero(func: Any, args: tuple, kwargs: dict, dependent: torch.Tensor) -> bool:
    """Whether a product with a constant may multiply by 0 somewhere: a tensor factor (read
    without a sync), or the number 0."""
    if func not in _CONSTANT_FACTORS:
        return False
    factors = [a for a in (*args, *kwargs.values()) if a is not dependent]
    return any(isinstance(a, torch.Tensor) or a == 0 for a in factors)


def _substituted(func: Any, args: tuple, kwargs: dict, dependent: list[torch.Tensor]) -> Callable[..., Any]:
    """``func`` as a function of its input-dependent tensors, in the order they appear. It keeps
    the other arguments only: a rule's backward keeps it, and an input-dependent tensor it kept
    (one written in place, whose node then leads back to that backward) would be a cycle through
    autograd's nodes that no garbage collection frees: the whole graph, leaked per call."""
    places = {id(t) for t in dependent}
    slots = itertools.repeat(_SLOT)
    template_args, template_kwargs = _swap(args, places, slots), _swap(kwargs, places, slots)

    def run(*inputs: torch.Tensor) -> Any:
        replacements = iter(inputs)
        return func(*_fill(template_args, replacements), **_fill(template_kwargs, replacements))

    return run


_SLOT = object()  # where ``_substituted``'s function takes an input-dependent tensor


def _swap(value: Any, places: set[int], replacements: Iterator[Any]) -> Any:
    """``value`` with each tensor whose id is in ``places`` replaced by the next replacement (a
    module-level function: a nested recursive one would be a reference cycle per op)."""
    if isinstance(value, torch.Tensor):
        return next(replacements) if id(value) in places else value
    if isinstance(value, (tuple, list)) and any(True for _ in _tensors(value)):
        return type(value)(_swap(item, places, replacements) for item in value)
    if isinstance(value, dict):
        return {key: _swap(item, places, replacements) for key, item in value.items()}
    return value


def _fill(value: Any, replacements: Iterator[torch.Tensor]) -> Any:
    """``value`` with each ``_SLOT`` replaced by the next replacement."""
    if value is _SLOT:
        return next(replacements)
    if isinstance(value, (tuple, list)) and any(item is _SLOT or isinstance(item, (tuple, list, dict)) for item in value):
        return type(value)(_fill(item, replacements) for item in value)
    if isinstance(value, dict):
        return {key: _fill(item, replacements) for key, item in value.items()}
    return value


def _affine(args: tuple, kwargs: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """An eval ``F.batch_norm``'s per-channel scale and shift."""
    mean, var = _argument(args, kwargs, 1, "running_mean"), _argument(args, kwargs, 2, "running_var")
    weight, bias = _argument(args, kwargs, 3, "weight", None), _argument(args, kwargs, 4, "bias", None)
    eps = _argument(args, kwargs, 7, "eps", 1e-5)
    scale = (var + eps).rsqrt() if weight is None else weight * (var + eps).rsqrt()
    return scale, (-mean * scale if bias is None else bias - mean * scale)


def _relu_slope(upper: float | None) -> Function:
    def slope(t: torch.Tensor) -> torch.Tensor:  # a mask: ``torch.where`` and products promote it, a pass saved
        return t > 0 if upper is None else (t > 0) & (t < upper)

    return slope


def _maxima(func: Any, args: tuple, kwargs: dict, rule: PropagationRule) -> Any:
    """``torch.max(x, dim)`` or ``x.amax(dims)`` through ``rule.max_pool``: the axes moved last
    and pooled to one position each; None for what is not such a maximum (an elementwise maximum
    of two tensors, a maximum over every axis or over the batch, which would mix the samples)."""
    x, dim = args[0], _argument(args, kwargs, 1, "dim", None)
    dims = (dim,) if isinstance(dim, int) else tuple(dim) if isinstance(dim, (tuple, list)) and func not in (
        torch.max, T.max) else ()
    if not dims or not all(isinstance(d, int) for d in dims) or x.dim() == 0 or not x.is_floating_point():
        return None
    axes = sorted({d % x.dim() for d in dims})
    if axes[0] == 0:
        return None
    k = len(axes)
    moved = x.movedim(axes, list(range(x.dim() - k, x.dim())))

    def pool(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        values, indices = t.flatten(-k).max(-1, keepdim=True)
        shape = (*t.shape[:-k], *[1] * k)
        return values.view(shape), indices.view(shape)

    kept = [1 if axis in axes else size for axis, size in enumerate(x.shape)]
    shape = kept if _argument(args, kwargs, 2, "keepdim", False) else [s for a, s in enumerate(x.shape) if a not in axes]
    values = rule.max_pool(pool, moved, k).reshape(shape)
    if func in (torch.max, T.max):
        return torch.return_types.max((values, pool(moved.detach())[1].reshape(shape)))
    return values


def _argument(args: tuple, kwargs: dict, position: int, name: str, default: Any = False) -> Any:
    return args[position] if len(args) > position else kwargs.get(name, default)


def _factors(func: Any, args: tuple, kwargs: dict) -> tuple[Any, Any]:
    """The two factors of an ``_ADDED_PRODUCTS`` op (``alibi.baddbmm(batch1=q, batch2=k)`` names them)."""
    first, second = _ADDED_PRODUCTS[func]
    return _argument(args, kwargs, 1, first, None), _argument(args, kwargs, 2, second, None)


def _elementwise(func: Any, args: tuple, kwargs: dict, depends: Callable[[Any], bool]) -> tuple | None:
    """``(function of the first argument, that argument, in place)`` for an elementwise op whose
    other arguments do not depend on the input, else None."""
    if any(depends(t) for t in _tensors((args[1:], kwargs))):
        return None
    if func in CLAMPS or func in _POWERS:  # a clamp with constant bounds, a power with a constant exponent
        inplace = func in IN_PLACE_CLAMPS or func in _POWERS_IN_PLACE
        out_of_place = _OUT_OF_PLACE.get(func, func)
        return (lambda t: out_of_place(t, *args[1:], **kwargs)), args[0], inplace
    return _ELEMENTWISE[func](args, kwargs)


def _bound(func: Any, inplace: bool = False, inplace_at: int | None = None, training_at: int | None = None
           ) -> Callable[[tuple, dict], tuple | None]:
    """An elementwise op as ``(function of its first argument, that argument, in place)``."""

    def split(args: tuple, kwargs: dict) -> tuple | None:
        if training_at is not None and _argument(args, kwargs, training_at, "training"):
            return None  # random in training mode (RReLU): not a function of its input
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
_ELEMENTWISE: dict[Any, Callable[[tuple, dict], tuple | None]] = {}
_OUT_OF_PLACE: dict[Any, Any] = {torch.sigmoid_: torch.sigmoid, T.sigmoid_: torch.sigmoid, torch.tanh_: torch.tanh,
                 T.tanh_: torch.tanh, F.elu_: F.elu, F.leaky_relu_: F.leaky_relu, torch.clamp_: torch.clamp,
                 T.clamp_: torch.clamp, T.clip_: torch.clamp, T.clamp_min_: torch.clamp_min, torch.clamp_min_: torch.clamp_min,
                 T.clamp_max_: torch.clamp_max, T.abs_: torch.abs, torch.abs_: torch.abs, T.exp_: torch.exp,
                 torch.exp_: torch.exp, T.pow_: torch.pow, T.__ipow__: torch.pow, F.threshold_: F.threshold,  # type: ignore[attr-defined]
                 F.rrelu_: F.rrelu}
_POWERS = _named(torch, "pow") | _named(T, "pow pow_ __pow__ __ipow__")
_POWERS_IN_PLACE = _named(T, "pow_ __ipow__")
_func: Any
for _func in (torch.sigmoid, T.sigmoid, F.sigmoid, torch.tanh, T.tanh, F.tanh, F.softplus, F.gelu, F.softsign,
              F.logsigmoid, torch.erf, T.exp, torch.exp, torch.abs, T.abs, T.__abs__, torch.square, T.square,
              torch.clamp_max, T.clamp_max, F.prelu, torch.prelu):
    _ELEMENTWISE[_func] = _bound(_func)
for _func in (torch.sigmoid_, T.sigmoid_, torch.tanh_, T.tanh_, F.elu_, F.leaky_relu_, T.clamp_max_, T.abs_,
              torch.abs_, T.exp_, torch.exp_):
    _ELEMENTWISE[_func] = _bound(_func, inplace=True)
for _func, _position in ((F.elu, 2), (F.selu, 1), (F.celu, 2), (F.leaky_relu, 2), (F.silu, 1), (F.hardswish, 1),
                         (F.hardtanh, 3), (F.relu6, 1), (F.mish, 1), (F.hardsigmoid, 1), (F.threshold, 3)):
    _ELEMENTWISE[_func] = _bound(_func, inplace_at=_position)
_ELEMENTWISE[F.threshold_] = _bound(F.threshold_, inplace=True)  # type: ignore[attr-defined]
_ELEMENTWISE[F.rrelu] = _bound(F.rrelu, inplace_at=4, training_at=3)
_ELEMENTWISE[F.rrelu_] = _bound(F.rrelu_, inplace=True, training_at=3)
