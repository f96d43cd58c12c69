"""DeepLift with the rescale rule (Shrikumar et al., 2017) and DeepLiftShap, on the op-level
propagation engine.

The baseline goes through the model first, under ``no_grad``, and every nonlinear op records
its input; the input's forward then pairs its nonlinear ops with those records in call order,
so a reused module, a functional ``F.relu`` or an in-place one each gets its own reference, and
no batch layout is assumed. An elementwise op's multiplier is the secant
``(f(x) - f(x0)) / (x - x0)`` (its derivative where ``|x - x0| <= eps``); max pooling routes
``max(y, y0) - y0`` to the input's maximum and ``y - max(y, y0)`` to the baseline's, so that
the attributions of a ReLU / max-pooling / linear network sum to ``f(x) - f(x0)`` exactly.

The reveal-cancel rule (``rule="reveal_cancel"``) splits the difference at a nonlinearity's
input into the sum of its positive and of its negative terms, as the convolution or linear layer
that produced it (through an eval batch norm) gives them, and passes each part through the
nonlinearity with its own multiplier.
"""

from __future__ import annotations

import weakref
from typing import Any, Callable

import torch
from torch import nn
from torch.utils._pytree import tree_map

from ..core import (
    BaselineLike,
    Call,
    Explainer,
    Explanation,
    MapKind,
    PropagationMode,
    PropagationRule,
    baseline_pools,
    check_flag,
    check_number,
    check_reference,
    neurons_of,
    out_of_graph,
    per_target_gradients,
    reference,
    select_targets,
)
from ..errors import InputError, UncoveredNonlinearityError

Parts = tuple[torch.Tensor, torch.Tensor]  # a difference's sums of positive and of negative terms


class _PathChanged(Exception):
    """The input's forward ran other nonlinear ops than the baseline's."""


class _Recorder(PropagationRule):
    """The baseline's forward: each nonlinear op's input, and each layer's with ``layers``, in
    call order."""

    def __init__(self, layers: bool) -> None:
        self.inputs: list[torch.Tensor] = []
        self.layers = layers

    def layer(self, run, x, weight, bias, transposed):
        if self.layers:
            self.inputs.append(x.detach().clone())
        return run(x, weight, bias)

    def elementwise(self, function, x, inplace, slope=None):
        self.inputs.append(x.detach().clone())
        return x.copy_(function(x)) if inplace else function(x)

    def max_pool(self, pool, x, dims):
        self.inputs.append(x.detach().clone())
        return pool(x)[0]


class _Rescale(PropagationRule):
    """The input's forward: each nonlinear op paired with the baseline's, its backward rescaled.
    A baseline run as one row pairs only with tensors whose first axis is the batch (N rows
    against its 1, the other axes equal): any other layout could pair the wrong elements."""

    def __init__(self, references: list[torch.Tensor], eps: float, batch: int) -> None:
        self.references, self.paired_so_far = references, 0
        self.eps, self.batch = eps, batch

    def paired(self, x: torch.Tensor) -> torch.Tensor:
        if self.finished():
            raise _PathChanged
        found = self.references[self.paired_so_far]
        self.paired_so_far += 1
        if found.shape[1:] != x.shape[1:] or (found.shape[0], x.shape[0]) not in (
                (x.shape[0], x.shape[0]), (1, self.batch)):
            raise _PathChanged
        return found

    def elementwise(self, function, x, inplace, slope=None):
        return _RescaledElementwise.apply(x, self.paired(x), function, slope, inplace, self.eps)

    def max_pool(self, pool, x, dims):
        return _RescaledMaxPool.apply(x, self.paired(x), pool, self.eps, dims)

    def finished(self) -> bool:
        return self.paired_so_far == len(self.references)


class _RevealCancel(_Rescale):
    """The input's forward under reveal-cancel: a convolution or linear layer also computes the
    sums of its positive and of its negative terms ``w_i (x_i - x0_i)`` (its parts), an eval
    batch norm scales them, and a nonlinearity whose input has them passes each through with its
    own multiplier. A nonlinearity whose input came otherwise (a residual sum, an affine op with a
    constant, the input itself, a tensor moved or written in place since) sees one term, where
    reveal-cancel is the rescale rule."""

    def __init__(self, references: list[torch.Tensor], eps: float, batch: int) -> None:
        super().__init__(references, eps, batch)
        # id -> [the tensor, its version, the grad mode it was made in, its parts or how to make them]
        self.parts: dict[int, list] = {}

    def _keep(self, y: torch.Tensor, make: Callable[["_RevealCancel"], Parts | None]) -> None:
        """``y``'s parts, made when a nonlinearity first asks (a layer's output that only a
        residual sum or the classifier's score reads never pays for them), in the grad mode the
        layer ran in. ``make`` takes the rule as an argument: a closure over it would be a
        reference cycle."""
        self.parts[id(y)] = [weakref.ref(y), y._version, torch.is_grad_enabled(), make]

    def _parts_of(self, x: torch.Tensor) -> Parts | None:
        found = self.parts.get(id(x))
        if found is None or found[0]() is not x or found[1] != x._version:
            return None
        if callable(found[3]):
            with torch.set_grad_enabled(found[2]):
                found[3] = found[3](self)
        return found[3]

    def layer(self, run, x, weight, bias, transposed):
        if self.finished():  # past the forward (a target that reads the output through a layer), or a
            return run(x, weight, bias)  # path that differs, which the caller's path check refuses
        x0, version = self.paired(x), x._version

        def make(rule: _RevealCancel) -> Parts | None:
            if x._version != version:  # written in place since the layer read it
                return None
            positive, negative = _SignParts.apply(x - x0)
            above, below = weight.clamp(min=0), weight.clamp(max=0)
            return (run(positive, above, None) + run(negative, below, None),
                    run(negative, above, None) + run(positive, below, None))

        y = run(x, weight, bias)
        self._keep(y, make)
        return y

    def batch_norm(self, run, x, scale, shift):
        def make(rule: _RevealCancel) -> Parts | None:
            parts = rule._parts_of(x)
            if parts is None:
                return None
            up, down = parts
            per_channel = scale.reshape(-1, *[1] * (x.dim() - 2))  # on axis 1
            above, below = per_channel.clamp(min=0), per_channel.clamp(max=0)
            return above * up + below * down, above * down + below * up

        y = run(x)
        self._keep(y, make)
        return y

    def elementwise(self, function, x, inplace, slope=None):
        parts = self._parts_of(x)
        x0 = self.paired(x)
        if parts is None:
            return _RescaledElementwise.apply(x, x0, function, slope, inplace, self.eps)
        return _RevealCancelled.apply(x, x0, *parts, function, slope, inplace, self.eps)


class _SignParts(torch.autograd.Function):
    """``(max(d, 0), min(d, 0))``, each passing the gradient where ``d`` has its sign and half of
    it where ``d`` is 0 (so a zero difference sends half its multiplier each way)."""

    @staticmethod
    def forward(ctx: Any, delta):
        ctx.save_for_backward(delta)
        return delta.clamp(min=0), delta.clamp(max=0)

    @staticmethod
    def backward(ctx: Any, grad_positive, grad_negative):
        (delta,) = ctx.saved_tensors
        half = 0.5 * (grad_positive + grad_negative)
        return torch.where(delta > 0, grad_positive, torch.where(delta < 0, grad_negative, half))


class _RevealCancelled(torch.autograd.Function):
    """``function(x)`` whose backward sends the gradient into the input's positive part ``up``
    times ``(f(x0 + up) - f(x0) + f(x0 + up + down) - f(x0 + down)) / (2 up)`` and into its
    negative part ``down`` likewise; a part within ``eps`` of zero gets multiplier 0, as in the
    authors' implementation (its rise is zero too); nothing goes back through ``x`` itself."""

    @staticmethod
    def forward(ctx: Any, x, x0, up, down, function, slope, inplace, eps):
        y = function(x)
        start, both = function(x0), function(x0 + up + down)
        after_up, after_down = function(x0 + up), function(x0 + down)
        rise_up = 0.5 * (after_up - start + both - after_down)
        rise_down = 0.5 * (after_down - start + both - after_up)
        ctx.save_for_backward(torch.where(up.abs() <= eps, 0.0, rise_up / up),
                              torch.where(down.abs() <= eps, 0.0, rise_down / down))
        return _output(ctx, x, y, inplace)

    @staticmethod
    def backward(ctx: Any, grad):
        multiplier_up, multiplier_down = ctx.saved_tensors
        return None, None, grad * multiplier_up, grad * multiplier_down, None, None, None, None


class _RescaledElementwise(torch.autograd.Function):
    """``function(x)`` whose backward multiplies by the secant slope to the baseline's input."""

    @staticmethod
    def forward(ctx: Any, x, x0, function, slope, inplace, eps):
        y = function(x)
        delta = x - x0
        secant = (y - function(x0)).div_(delta)  # in place where it can: this runs at every nonlinearity
        distance = delta.abs_()
        if not _apart(distance, eps):
            torch.where(distance <= eps, _derivative(function, slope, x), secant, out=secant)
        ctx.save_for_backward(secant)
        return _output(ctx, x, y, inplace)

    @staticmethod
    def backward(ctx: Any, grad):
        (multiplier,) = ctx.saved_tensors
        return grad * multiplier, None, None, None, None, None


def _apart(distance: torch.Tensor, eps: float) -> bool:
    """Whether every ``distance`` is known to exceed ``eps`` (NaN is not) without waiting for a
    device: on the CPU one reduction costs less than the mask, the derivative and the ``where``
    it spares, each a pass over newly allocated memory (``linalg.vector_norm(d, -inf)`` would
    spare the ``abs_`` but is 14x slower than it and ``min`` together); on an accelerator the
    read would synchronise, so the ``where`` always runs there."""
    return distance.device.type == "cpu" and distance.numel() > 0 and bool(distance.min() > eps)


def _output(ctx: Any, x: torch.Tensor, y: torch.Tensor, inplace: bool) -> torch.Tensor:
    """An elementwise rule's result ``y``, written into ``x`` (marked dirty) for an in-place op."""
    if inplace:
        ctx.mark_dirty(x)
        return x.copy_(y)
    return y


def _derivative(function, slope, x: torch.Tensor) -> torch.Tensor:
    """The elementwise ``function``'s derivative at ``x``: ``slope`` where known, else by autograd."""
    if slope is not None:
        return slope(x)
    with torch.enable_grad():
        leaf = x.detach().requires_grad_(True)
        return torch.autograd.grad(function(leaf).sum(), leaf)[0]


class _RescaledMaxPool(torch.autograd.Function):
    """Max pooling whose backward routes the output's difference to the two maxima (captum's
    rule, with both parts kept and overlapping windows added), each part divided by the input's
    difference at the maximum it goes to (its derivative, 1 or 0, where that is within ``eps``).
    The parts are formed on the pooled grid, so the backward is two scatters onto the input."""

    @staticmethod
    def forward(ctx: Any, x, x0, pool, eps, dims):
        y, at_x = pool(x)
        y0, at_x0 = pool(x0)
        at_x0 = at_x0.expand_as(at_x)
        top = torch.maximum(y, y0)
        lead = x.shape[:x.dim() - dims]  # the axes not pooled (batched or not)
        # the input's difference at each maximum: x's against x0 there, and x0's against x
        delta_at_x = y - _flat(x0, dims).expand(*lead, -1).gather(-1, _flat(at_x, dims)).view_as(y)
        delta_at_x0 = _flat(x, dims).gather(-1, _flat(at_x0, dims)).view_as(y) - y0
        ctx.save_for_backward(at_x, at_x0, _secant(top - y0, delta_at_x, eps, 1.0),
                              _secant(y - top, delta_at_x0, eps, 0.0))
        ctx.shape, ctx.dims = x.shape, dims
        return y

    @staticmethod
    def backward(ctx: Any, grad):
        at_x, at_x0, share_at_x, share_at_x0 = ctx.saved_tensors
        dims = ctx.dims
        # from the gradient: under a batched backward (several targets) the zeros are batched as it is, so the
        # sums go in place (out of place, a copy of the input's grid, which cost more than the scatter)
        routed = grad.new_zeros(ctx.shape[:len(ctx.shape) - dims] + (ctx.shape[len(ctx.shape) - dims:].numel(),))
        routed.scatter_add_(-1, _flat(at_x, dims), _flat(grad * share_at_x, dims))
        routed.scatter_add_(-1, _flat(at_x0, dims), _flat(grad * share_at_x0, dims))
        return routed.reshape(ctx.shape), None, None, None, None


def _flat(t: torch.Tensor, dims: int) -> torch.Tensor:
    """``t`` with its last ``dims`` axes as one (reshape, not flatten: it has a batching rule;
    their size given, not -1, which an empty tensor leaves undetermined)."""
    lead = t.dim() - dims
    return t.reshape(*t.shape[:lead], t.shape[lead:].numel())


def _secant(rise: torch.Tensor, delta: torch.Tensor, eps: float, derivative: float) -> torch.Tensor:
    """``rise / delta``, and ``derivative`` where ``|delta| <= eps`` (``delta`` is overwritten)."""
    quotient = rise / delta
    distance = delta.abs_()
    return quotient if _apart(distance, eps) else torch.where(distance <= eps, derivative, quotient)


RULES = ("rescale", "reveal_cancel")


class DeepLift(Explainer):
    """DeepLift, rescale rule: ``(x - x0) * m`` per channel, maps (N, K, C, *grid), where ``m``
    is the input gradient with each nonlinearity's derivative replaced by its secant slope to
    the baseline ``x0`` (``baseline``: a number, a tensor of one sample or one per sample, or a
    callable of the inputs). The attributions sum to ``f(x) - f(x0)``. ``rule="reveal_cancel"``
    passes the positive and negative terms of a layer's difference through the nonlinearity
    after it separately (Shrikumar et al., section 3.5.3); the sum still holds.

    The rule is defined for elementwise nonlinearities and max pooling between linear ops. With
    ``strict=True`` a forward that also runs another op on input-dependent tensors (a product of
    two, softmax, layer norm, attention) is refused naming it; ``strict=False`` gives those ops
    their plain gradient, and the sum no longer holds."""

    name = "deeplift"
    supports = frozenset({"1d", "2d", "3d", "several_inputs"})  # attention and layer norm are refused by name

    def __init__(self, model: nn.Module, baseline: BaselineLike = 0.0, eps: float = 1e-10, strict: bool = True,
                 rule: str = "rescale") -> None:
        super().__init__(model)
        self.baseline = check_reference(baseline)
        self.eps, self.strict = check_number("eps", eps), check_flag("strict", strict)
        if rule not in RULES:
            raise InputError(f"rule must be one of {', '.join(map(repr, RULES))}, not {rule!r}")
        self.rule = rule

    def explain(self, call: Call) -> Explanation:
        """``(x - x0)`` times every target's multipliers."""
        x0 = reference(self.baseline, call)
        selection, multipliers = self.multipliers(call, x0)
        return self.result((call.x - x0).unsqueeze(1) * multipliers, selection, MapKind.INPUT_CHANNELS)

    def multipliers(self, call: Call, x0: torch.Tensor):
        """The resolved targets and DeepLift's multipliers (N, K, C, *grid) against baseline ``x0``
        (1 or N rows). A shared baseline goes through the model once, as one row, unless the
        model's other inputs are batched; where that row fails (a forward that needs a batch) or
        does not pair with the batch (another layout, another path), it goes as N rows."""
        n = len(call.x)
        if len(x0) == 1 and n > 1 and call.inputs.others_batched:
            x0 = x0.expand(n, *x0.shape[1:])
        try:
            return self._pass(call, x0)
        except (_PathChanged, InputError) as error:
            if isinstance(error, _PathChanged) and any(neuron.y is None for neuron in neurons_of(call.target)):
                raise UncoveredNonlinearityError(
                    f"{type(self).__name__}: a Neuron without a position on a layer with a grid is its channel's "
                    "maximum over the grid, which the baseline's pass does not read; give the neuron's position "
                    "(y, x)") from None
            if len(x0) == n:
                if isinstance(error, InputError):
                    raise
                raise InputError(f"{type(self).__name__}: the forward took another path for the baseline than for "
                                 "the input (control flow on the input's values), so their ops cannot be "
                                 "paired") from None
        return self.multipliers(call, x0.expand(n, *x0.shape[1:]))

    def _pass(self, call: Call, x0: torch.Tensor):
        reveal_cancel = self.rule == "reveal_cancel"
        recorder = _Recorder(layers=reveal_cancel)
        x0 = x0.clone(memory_format=torch.contiguous_format)  # the model may write into its input
        inputs = call.inputs.sample(0).with_primary(x0) if len(x0) == 1 else call.model_inputs(x0)
        reference = PropagationMode(recorder, x0)
        with torch.no_grad(), reference:
            output = inputs.run(self.model, fresh=True)
        if callable(call.target) and not isinstance(call.target, torch.Tensor):
            n = len(call.x)  # the target reads N rows, as in the input's pass: a shared baseline's row repeated
            if len(x0) == 1:
                output = tree_map(lambda t: t.expand(n, *t.shape[1:])
                                  if isinstance(t, torch.Tensor) and t.dim() and len(t) == 1 else t, output)
            with torch.no_grad(), reference:  # its ops on the output need references too (a scaled logit)
                select_targets(call.target, output, n)
        self._refuse_uncovered(reference)
        x = call.x.detach().clone().requires_grad_(True)
        rescale = (_RevealCancel if reveal_cancel else _Rescale)(recorder.inputs, self.eps, len(x))
        mode = PropagationMode(rescale, x)
        try:
            selection, _ = self.forward_with_targets(call.with_(x), mode=mode, mode_reads_targets=True)
        except _PathChanged:
            self._refuse_unseen(mode)  # the likelier cause
            raise
        self._refuse_uncovered(mode)
        self._refuse_unseen(mode)
        if not rescale.finished() or mode.path[:mode.forward_ops] != reference.path[:reference.forward_ops]:
            raise _PathChanged
        (gradients,) = per_target_gradients(selection.scores, [x], selection.graph_elements,
                                            unreached=out_of_graph(type(self).__name__) if mode.detaching else None)
        mode.checkpoints.refuse_recomputation(type(self).__name__)
        return selection, gradients

    def _refuse_unseen(self, mode: PropagationMode) -> None:
        if mode.unseen:  # the baseline's forward, without a graph to search, cannot tell where they are
            raise UncoveredNonlinearityError(
                f"{type(self).__name__}: the forward ran ops out of the rules' sight (a TorchScript function, a C++ "
                "extension), which cannot be paired with the baseline's, even with strict=False; explain the eager "
                "model (the function before torch.jit.script)")

    def _refuse_uncovered(self, mode: PropagationMode) -> None:
        if self.strict:
            rule = self.rule.replace("_", "-")
            mode.refuse_uncovered(type(self).__name__, f"the {rule} rule is not defined for (only elementwise "
                                  "nonlinearities and max pooling between linear ops are, and a target score linear "
                                  "in the output)", " (the attributions then no longer sum to f(x) - f(baseline))")


class DeepLiftShap(DeepLift):
    """DeepLift averaged over ``baselines`` (B, C, *grid): for each input, the mean of its
    DeepLift attributions against each baseline (captum's ``DeepLiftShap``), one pass per
    baseline, by ``rule`` (``"rescale"`` or ``"reveal_cancel"``, as DeepLift). The attributions
    sum to ``f(x)`` minus the baselines' mean score."""

    name = "deeplift_shap"

    def __init__(self, model: nn.Module, baselines: BaselineLike = 0.0, eps: float = 1e-10, strict: bool = True,
                 rule: str = "rescale") -> None:
        super().__init__(model, baselines, eps, strict, rule)

    def explain(self, call: Call) -> Explanation:
        """DeepLift against each baseline in turn, averaged."""
        baselines = baseline_pools(self.baseline, call)
        total, selection = None, None
        for x0 in baselines:
            found, multipliers = self.multipliers(call, x0)
            selection = found if selection is None else selection
            part = (call.x - x0).unsqueeze(1) * multipliers
            total = part if total is None else total + part
        assert selection is not None and total is not None
        return self.result(total / len(baselines), selection, MapKind.INPUT_CHANNELS)

