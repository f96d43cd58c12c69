"""Op-level backward rules for the ReLU family, active only during an explainer's forward pass.

A ``TorchFunctionMode`` sees every op the forward evaluates, whatever calls it: ``nn.ReLU``
modules (in-place or not, reused or not), ``F.relu``, ``torch.relu``, ``Tensor.relu`` and the
in-place variants, ``ReLU6`` / ``F.relu6`` / ``F.hardtanh`` with a lower bound of 0, and
``clamp(min=0)`` / ``clamp_min(0)``. Each is routed to an autograd Function with the same forward
value and the chosen backward rule, so no module is ever replaced. Every other elementwise
nonlinearity (GELU, SiLU, Hardswish, sigmoid, ...) is counted, since a rule defined for ReLUs
does not cover it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from ..errors import InputError, NoReLUError, UncoveredNonlinearityError
from .explainer import Call, Explainer
from .explanation import Explanation
from .gradients import per_target_gradients
from .maps import MapKind
from .options import check_flag
from .saved import Checkpoints
from .state import model_cache

# backward rules: (incoming gradient, the op's forward output, its upper bound or None) -> gradient
Rule = Callable[[torch.Tensor, torch.Tensor, Optional[float]], torch.Tensor]


def guided_rule(grad: torch.Tensor, output: torch.Tensor, upper: float | None) -> torch.Tensor:
    """Guided backprop: only positive gradient, only where the forward passed its input on
    (0 < output, and output < upper for a bounded member such as ReLU6)."""
    # threshold_backward is ReLU's own backward kernel (zero where output <= 0)
    passed = torch.ops.aten.threshold_backward(grad, output, 0)
    if upper is not None:
        passed = passed.masked_fill_(output >= upper, 0)
    return passed.clamp_min_(0)


def deconvnet_rule(grad: torch.Tensor, output: torch.Tensor, upper: float | None) -> torch.Tensor:
    """Deconvnet: the ReLU is applied to the gradient, ignoring the forward input."""
    return grad.clamp_min(0)


# a rule as a post hook on a ReLU's or ReLU6's backward node: (the gradient the node's own backward
# passed, the incoming gradient) -> gradient. It reads no saved tensor: a checkpointed region's
# are unpacked once, by the node
NodeRule = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def guided_node_rule(passed: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """``guided_rule`` on the node: its own backward already zeroed the gradient where the forward
    did not pass its input on (ReLU's and ReLU6's backward kernels, the same selection)."""
    return passed.clamp_min(0)


def deconvnet_node_rule(passed: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """``deconvnet_rule`` on the node."""
    return grad.clamp_min(0)


class _RuledReLU(torch.autograd.Function):
    """``clamp(x, 0, upper)`` with a replaceable backward. What the op's own backward saves is
    saved (``save_input``: a ReLU6's or clamp's input, else the output): it tells where the input
    was passed on. Its context is set up apart from the forward, so torch.func transforms apply
    it too (a model running its ReLUs under ``vmap``)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x: torch.Tensor, upper: float | None, rule: Rule, save_input: bool) -> torch.Tensor:
        return x.clamp(0, upper)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: torch.Tensor) -> None:
        x, ctx.upper, ctx.rule, ctx.save_input = inputs
        # what the op's own backward saves: a ReLU its output, a hardtanh or clamp its input (a
        # model may write the other in place afterwards, as plain autograd lets it)
        saved = x if ctx.save_input else output
        ctx.save_for_backward(saved)
        ctx.save_for_forward(saved)

    @staticmethod
    def jvp(ctx: Any, tangent: torch.Tensor, *_: Any) -> torch.Tensor:
        """Forward mode (``torch.func.jvp`` inside a model) is the op's own derivative: the rules
        change the backward only."""
        output = _output(ctx)
        passed = output > 0 if ctx.upper is None else (output > 0) & (output < ctx.upper)
        return tangent * passed

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None, None]:
        return ctx.rule(grad, _output(ctx), ctx.upper), None, None, None


def _output(ctx: Any) -> torch.Tensor:
    """The op's forward output, from what ``_RuledReLU`` saved."""
    (saved,) = ctx.saved_tensors
    return saved.clamp(0, ctx.upper) if ctx.save_input else saved


class _RuledReLUInPlace(torch.autograd.Function):
    """``_RuledReLU`` written into ``x``: the saved output survives the in-place variants (an
    in-place Function sets its context in the forward, which torch.func transforms refuse)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, upper: float | None, rule: Rule) -> torch.Tensor:
        ctx.mark_dirty(x)
        output = x.clamp_(0, upper)
        ctx.upper, ctx.rule, ctx.save_input = upper, rule, False
        ctx.save_for_backward(output)
        return output

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        return ctx.rule(grad, _output(ctx), ctx.upper), None, None


# a backward the model runs inside its forward
_BACKWARDS = {torch.autograd.grad, torch.autograd.backward, torch.Tensor.backward}


def _off_the_gradient(args: tuple, kwargs: dict) -> bool:
    """Whether an op surely changes no gradient: grad mode on, no torch.func transform, and no
    tensor argument that requires grad (a sigmoid of a buffer). Inside an autograd Function's
    forward (grad mode off) or a transform, where that cannot be read, it may."""
    if not torch.is_grad_enabled() or torch._C._are_functorch_transforms_active():
        return False
    values = [*args, *kwargs.values()]
    values += [v for value in values if isinstance(value, (list, tuple)) for v in value]
    return not any(isinstance(value, torch.Tensor) and value.requires_grad for value in values)


def _transformed(x: torch.Tensor) -> bool:
    """Whether a torch.func transform (``vmap``) is running, or ``x`` is one's tensor."""
    return torch._C._are_functorch_transforms_active() or torch._C._functorch.is_functorch_wrapped_tensor(x)


def _argument(args: tuple, kwargs: dict, position: int, name: str, default: Any) -> Any:
    return args[position] if len(args) > position else kwargs.get(name, default)


def relu_call(func: Any, args: tuple, kwargs: dict) -> tuple[bool, float | None] | None:
    """``(inplace, upper)`` when ``func(*args, **kwargs)`` is a ReLU-family op, else None."""
    if func in (torch.relu, torch.Tensor.relu, F.relu):
        return bool(_argument(args, kwargs, 1, "inplace", False)) and func is F.relu, None
    if func in (torch.relu_, torch.Tensor.relu_, F.relu_):
        return True, None
    if func is F.relu6:
        return bool(_argument(args, kwargs, 1, "inplace", False)), 6.0
    if func is F.hardtanh and _argument(args, kwargs, 1, "min_val", -1.0) == 0:
        return bool(_argument(args, kwargs, 3, "inplace", False)), float(_argument(args, kwargs, 2, "max_val", 1.0))
    if func in CLAMPS:
        low, high = _argument(args, kwargs, 1, "min", None), _argument(args, kwargs, 2, "max", None)
        if isinstance(low, (int, float)) and low == 0 and (high is None or isinstance(high, (int, float))):
            return func in IN_PLACE_CLAMPS, None if high is None else float(high)
    return None


def input_first(args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """An op's arguments with ``input=`` given by keyword (``torch.relu(input=h)``) moved first,
    where every rule reads it; ``torch.where(condition=c, input=x, other=y)`` keeps its keywords
    (its first argument is the condition)."""
    if args or "input" not in kwargs or "condition" in kwargs:
        return args, kwargs
    kwargs = dict(kwargs)
    return (kwargs.pop("input"),), kwargs


CLAMPS = {torch.clamp, torch.clip, torch.Tensor.clamp, torch.Tensor.clip, torch.clamp_, torch.Tensor.clamp_,
           torch.Tensor.clip_, torch.clamp_min, torch.Tensor.clamp_min, torch.Tensor.clamp_min_, torch.clamp_min_}
IN_PLACE_CLAMPS = {torch.clamp_, torch.Tensor.clamp_, torch.Tensor.clip_, torch.Tensor.clamp_min_, torch.clamp_min_}
# elementwise nonlinearities a ReLU rule is not defined for, by the name reported to the user
UNCOVERED_NONLINEARITIES = {
    F.gelu: "GELU", F.silu: "SiLU", F.hardswish: "Hardswish", F.mish: "Mish", F.elu: "ELU", F.elu_: "ELU",
    F.selu: "SELU", F.celu: "CELU", F.leaky_relu: "LeakyReLU", F.leaky_relu_: "LeakyReLU", F.softplus: "Softplus",
    F.hardsigmoid: "Hardsigmoid", F.sigmoid: "Sigmoid", torch.sigmoid: "Sigmoid", torch.Tensor.sigmoid: "Sigmoid",
    torch.sigmoid_: "Sigmoid", torch.Tensor.sigmoid_: "Sigmoid", F.tanh: "Tanh", torch.tanh: "Tanh",
    torch.Tensor.tanh: "Tanh", torch.tanh_: "Tanh", torch.Tensor.tanh_: "Tanh", F.prelu: "PReLU", F.rrelu: "RReLU",
    F.softsign: "Softsign", F.tanhshrink: "Tanhshrink", F.logsigmoid: "LogSigmoid", F.glu: "GLU",
    F.hardshrink: "Hardshrink", F.softshrink: "Softshrink", F.hardtanh: "Hardtanh", F.threshold: "Threshold",
    torch.threshold: "Threshold", torch.threshold_: "Threshold", torch.special.expit: "Sigmoid",
    torch.erf: "erf", torch.erf_: "erf", torch.Tensor.erf: "erf", torch.Tensor.erf_: "erf", torch.special.erf: "erf",
    torch.erfc: "erfc", torch.erfc_: "erfc", torch.Tensor.erfc: "erfc", torch.Tensor.erfc_: "erfc",
    torch.special.erfc: "erfc", torch.special.erfcx: "erfcx", torch.erfinv: "erfinv", torch.Tensor.erfinv: "erfinv",
    torch.Tensor.erfinv_: "erfinv", torch.special.erfinv: "erfinv", torch.special.ndtr: "ndtr",
    torch.special.ndtri: "ndtri", torch.special.log_ndtr: "log_ndtr",
}


class ReLURuleMode(TorchFunctionMode):
    """While active, every ReLU-family op uses ``rule`` in its backward; ``count`` tallies them
    and ``uncovered`` counts, by kind, the other elementwise nonlinearities that ran; ``marks``
    number the autograd nodes of the forward it first enclosed."""

    def __init__(self, rule: Rule) -> None:
        super().__init__()
        self.rule, self.marks = rule, ForwardMarks()
        self.count = 0
        self.unhookable = 0  # what a node hook could not stand in for: ruled clamps, ops under vmap, backwards
        self.uncovered: Counter[str] = Counter()
        self.checkpoints = Checkpoints()

    def __enter__(self) -> "ReLURuleMode":
        self.marks.__enter__()
        return super().__enter__()

    def __exit__(self, *exc_info: Any) -> None:
        super().__exit__(*exc_info)
        self.marks.__exit__()  # outside the mode: the marking ops are not the model's

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if self.checkpoints.inside():  # saved as without checkpointing: nothing is recomputed without the rule
            with self.checkpoints.kept():
                return self._handle(func, args, kwargs or {})
        return self._handle(func, args, kwargs or {})

    def _handle(self, func: Any, args: tuple, kwargs: dict) -> Any:
        args, kwargs = input_first(args, kwargs)
        relu = relu_call(func, args, kwargs)
        if relu is not None and not args[0].is_floating_point():
            return func(*args, **kwargs)  # an integer clamp (position buckets): no gradient, no ReLU
        if relu is not None:
            self.count += 1
            x, (inplace, upper) = args[0], relu
            self.unhookable += func in CLAMPS or _transformed(x)
            save_input = upper is not None or func in CLAMPS
            if not inplace:
                return _RuledReLU.apply(x, upper, self.rule, save_input)
            if _transformed(x):  # under vmap: computed out of place (its output saved), then written
                return x.copy_(_RuledReLU.apply(x, upper, self.rule, False))
            return _RuledReLUInPlace.apply(x, upper, self.rule)
        if func in UNCOVERED_NONLINEARITIES and not _off_the_gradient(args, kwargs):
            self.uncovered[UNCOVERED_NONLINEARITIES[func]] += 1
        if func in _BACKWARDS:  # the model's own backward: ruled under the mode, plain under hooks
            self.unhookable += 1
        return func(*args, **kwargs)


class ReLURuleExplainer(Explainer):
    """Input gradients with a backward rule at every ReLU-family op the forward evaluates.

    Subclasses set ``rule`` (a staticmethod ``(grad, output, upper) -> grad``: the incoming
    gradient, the op's forward output and its upper bound, None for a plain ReLU).
    Maps have shape (N, K, C, H, W). K targets (classes or
    ``Neuron`` units) share one forward and one batched backward. With ``strict=True`` (the
    default) a forward without any ReLU raises ``NoReLUError``, and a forward that also ran
    other elementwise nonlinearities (GELU, SiLU, Hardswish, sigmoid, ...) raises
    ``UncoveredNonlinearityError`` naming them, instead of returning a map that is partly
    the plain gradient. ``strict=False`` accepts that partial rule.
    """

    rule: ClassVar[Rule]
    #: the rule as a node hook, for the calls after the first per input shape (None: every call
    #: runs the mode, as for a subclass that gives ``rule`` only)
    node_rule: ClassVar[Optional[NodeRule]] = None

    def __init__(self, model: nn.Module, strict: bool = True) -> None:
        super().__init__(model)
        self.strict = check_flag("strict", strict)

    def explain(self, call: Call) -> Explanation:
        """Input gradients of every target under the rule; the model is already in eval mode.

        The first call per input shape runs the forward under ``ReLURuleMode``, which sees every
        op. When that graph shows the rule landed on plain ReLU / ReLU6 ops only, later calls run
        a plain forward and put the rule on its ReLU nodes as backward hooks: no per-op Python in
        the forward. A graph that differs from the first one's (a data-dependent branch) is
        explained under the mode again."""
        x = call.x.clone().requires_grad_(True)
        key = ("ReLU graph", tuple(x.shape[1:]), x.dtype, x.device)
        cache = model_cache(self.model)
        known = cache.get(key)  # None: not yet seen; False: the mode only; else the graph's census
        if known and type(self).node_rule is not None:
            explanation = self._explain_with_node_hooks(call, x, known)
            if explanation is not None:
                return explanation
        mode = ReLURuleMode(type(self).rule)  # this call's: counts its ReLUs
        selection, _ = self.forward_with_targets(call.with_(x), mode=mode)
        self._refuse_partial_rules(mode)
        census = graph_census(selection.scores, mode.marks)
        unseen = census.plain_relus + census.opaque_relus
        if self.strict and unseen:
            raise UncoveredNonlinearityError(
                f"{type(self).__name__}: the forward ran {unseen} ReLU(s) or TorchScript graph(s) out of "
                "the rule's sight (a TorchScript function, a C++ extension), whose ReLUs would keep their plain "
                "gradient; explain the eager model, or pass strict=False to accept a partial rule")
        if known is None:
            hookable = not (unseen or census.unhookable or mode.unhookable or mode.uncovered
                            or mode.checkpoints.frames or census.ruled == 0)
            cache[key] = census if hookable else False
        (gradients,) = per_target_gradients(selection.scores, [x], selection.graph_elements)
        mode.checkpoints.refuse_recomputation(type(self).__name__)
        return self.result(gradients, selection, MapKind.INPUT_CHANNELS)

    def _refuse_partial_rules(self, mode: ReLURuleMode) -> None:
        if self.strict and mode.count == 0:
            ran = ", ".join(f"{count} {kind}" for kind, count in mode.uncovered.most_common())
            ran = f" (it ran {ran}, which the rule is not defined for)" if ran else ""
            raise NoReLUError(
                f"{type(self).__name__}: the forward evaluated no ReLU{ran}, so the result would be the "
                "plain input gradient; pass strict=False if that is what you want"
            )
        if self.strict and mode.uncovered:
            kinds = ", ".join(f"{count} {kind}" for kind, count in mode.uncovered.most_common())
            raise UncoveredNonlinearityError(
                f"{type(self).__name__}: besides {mode.count} ReLU-family ops the forward ran {kinds}, "
                "which the rule is not defined for, so the map would be partly the plain gradient; "
                "pass strict=False to accept a partial rule"
            )

    def _explain_with_node_hooks(self, call: Call, x: torch.Tensor, known: "GraphCensus") -> Explanation | None:
        """The rule as hooks on a plain forward's ReLU nodes, or None when its graph is not the
        one the mode's first call saw (the same node kinds in order, its ruled ops as plain ReLUs)."""
        marks = ForwardMarks()
        selection, _ = self.forward_with_targets(call.with_(x), mode=marks)
        relus: list[Any] = []
        census = graph_census(selection.scores, marks, relus)
        if census.opaque_relus or census.unhookable or census.kinds != known.kinds:
            return None
        node_rule = type(self).node_rule
        assert node_rule is not None  # checked by the caller
        hook = _node_hook(node_rule)
        handles = [node.register_hook(hook) for node in relus]
        try:
            (gradients,) = per_target_gradients(selection.scores, [x], selection.graph_elements)
        except InputError:  # a backward the plain ops refuse (a ReLU6's saved input written since): the mode's
            return None
        finally:
            for handle in handles:
                handle.remove()
        return self.result(gradients, selection, MapKind.INPUT_CHANNELS)


# backward nodes of ReLUs a hook does not rule (a threshold, a ReLU autograd records by another
# name) and of TorchScript's differentiable graphs (a warmed-up scripted function), whose ReLUs no
# name shows; in the mode's graph these, like a plain ReLU's, are ReLUs out of the rule's sight
_OPAQUE_RELUS = {"ReluBackward1", "ThresholdBackward0", "ThresholdBackward1", "CppFunction",
                 "DifferentiableGraphBackward"}
# backward nodes a hook cannot rule as the mode does: clamps (their gradient passes at 0), reentrant
# checkpoints (recomputed out of sight), the nonlinearities a ReLU rule is not defined for, and an
# in-place op on a view (its node wraps the op's, a ReLU's too, out of the census's sight)
_UNHOOKABLE = {"ClampBackward0", "ClampBackward1", "ClampMinBackward0", "ClampMinBackward1", "ClampMaxBackward0",
               "ClampMaxBackward1", "CheckpointFunctionBackward", "GeluBackward0", "SiluBackward0",
               "HardswishBackward0", "MishBackward0", "EluBackward0", "EluBackward1", "LeakyReluBackward0",
               "LeakyReluBackward1", "SoftplusBackward0", "HardsigmoidBackward0", "SigmoidBackward0", "TanhBackward0",
               "PreluKernelBackward0", "RreluWithNoiseBackward0", "LogSigmoidBackward0", "GluBackward0",
               "HardshrinkBackward0", "SoftshrinkBackward0", "ErfBackward0", "CopySlices"}
_RULED = {"_RuledReLUBackward", "_RuledReLUInPlaceBackward"}
_ACCUMULATOR = torch._C._functions.AccumulateGrad


@dataclass(frozen=True)
class GraphCensus:
    """What the forward (autograd's sequence numbers ``start`` to ``end``) put in the graph behind
    the scores (weights made before the forward and the target's own ops after it are not the
    forward's): its nodes' kinds in the walk's order, a ruled or plain ReLU or ReLU6 as "ReLU";
    the mode's ruled ops, the plain ReLU / ReLU6 nodes, other ReLU-like nodes (``_OPAQUE_RELUS``)
    and the nodes a hook could not rule as the mode does."""

    kinds: tuple[str, ...]
    ruled: int
    plain_relus: int
    opaque_relus: int
    unhookable: int


def _plain_relu(node: Any, name: str) -> bool:
    """A ReLU's node, or a ReLU6's (a hardtanh from 0): a hook rules both exactly."""
    return name == "ReluBackward0" or (name == "HardtanhBackward0" and node._saved_min_val == 0)


def graph_census(scores: torch.Tensor, marks: "ForwardMarks", relus: list[Any] | None = None) -> GraphCensus:
    """The census of the forward's graph behind ``scores`` (its nodes numbered within ``marks``);
    its plain ReLU nodes go to ``relus``.
    The walk goes through nodes outside the forward's numbers too: autograd numbers each thread's
    nodes apart, so a step of the forward run on another thread lies outside them, with the
    forward's nodes behind it."""
    assert marks.start is not None and marks.end is not None  # the forward ran inside them
    start, end = marks.start, marks.end
    stack: list[Any] = [] if scores.grad_fn is None else [scores.grad_fn]  # None: refused at the backward
    seen: set[Any] = set(stack)
    kinds: list[str] = []
    ruled = plain = opaque = unhookable = 0
    while stack:
        node = stack.pop()
        for following, _ in node.next_functions:  # parameters' accumulators lie outside any forward
            if following is not None and following not in seen and type(following) is not _ACCUMULATOR:
                seen.add(following)
                stack.append(following)
        if not start <= node._sequence_nr() < end:
            continue
        name = type(node).__name__
        if name in _RULED:
            ruled, name = ruled + 1, "ReLU"
        elif _plain_relu(node, name):
            plain, name = plain + 1, "ReLU"
            if relus is not None:
                relus.append(node)
        elif name in _OPAQUE_RELUS:
            opaque += 1
        elif name in _UNHOOKABLE or name == "HardtanhBackward0":  # a hardtanh not from 0
            unhookable += 1
        kinds.append(name)
    return GraphCensus(tuple(kinds), ruled, plain, opaque, unhookable)


def _node_hook(rule: NodeRule) -> Callable[[tuple, tuple], tuple]:
    """A post hook giving a ReLU's or ReLU6's node the rule's gradient."""
    return lambda grad_inputs, grad_outputs: (rule(grad_inputs[0], grad_outputs[0]),)


class ForwardMarks:
    """A context that numbers the autograd nodes of the forward it first encloses: ``start`` to
    ``end`` (a later entry, reading the targets, leaves them)."""

    def __init__(self) -> None:
        self.start: int | None = None
        self.end: int | None = None

    def __enter__(self) -> "ForwardMarks":
        if self.start is None:
            self.start = _sequence_number()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        if self.end is None:
            self.end = _sequence_number()


def _sequence_number() -> int:
    with torch.inference_mode(False), torch.enable_grad():  # a node is made whatever mode the caller is in
        return torch.zeros((), requires_grad=True).mul(1).grad_fn._sequence_nr()  # type: ignore[union-attr]
