"""Layer-wise relevance propagation (Bach et al., 2015; Montavon et al., 2019) on the op-level
propagation engine, with zennit's rules, composites and defaults.

Relevance starts as the target's score and flows backwards as the "gradient": every
convolution and linear layer redistributes it by its rule, every linear op that combines
input-dependent values (average pooling, residual sums, means) by contributions (the Norm rule),
elementwise nonlinearities and arithmetic with a constant pass it on unchanged, max pooling
routes it to the maximum, and reshaping ops keep it where it is. An eval batch norm that alone
reads a layer's output is folded into that layer (the canonizer zennit applies by module order,
here by data flow, for one call and nothing written to the model), and a sum of two
input-dependent tensors (a residual connection, written as ``+`` or ``+=`` anywhere in a
``forward``) splits relevance by contribution, so ResNets conserve it without a model-specific
canonizer. Transformers take AttnLRP's rules (Achtibat et al., 2024): the uniform rule at a
product of input-dependent tensors, a Taylor rule at softmax, a layer norm's standard deviation
held constant. The map is the relevance at the input, (N, K, C, *grid).
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass, field, replace
from typing import Any, Callable, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ..core import (
    Call,
    Explainer,
    Explanation,
    MapKind,
    PropagationMode,
    PropagationRule,
    check_baseline,
    check_flag,
    check_number,
    forward_hooks,
    model_cache,
    neurons_of,
    out_of_graph,
    per_target_gradients,
    resolve_layer,
    user_hooked,
)
from ..errors import InputError

Run = Callable[..., torch.Tensor]  # run(x, weight, bias): the layer


def stabilize(z: torch.Tensor, epsilon: float) -> torch.Tensor:
    """``z + epsilon * sign(z)``, with the sign of 0 taken as +1 (zennit's stabilizer). With
    ``epsilon`` 0 (LRP-0) a zero denominator becomes infinite: a unit whose contributions sum to
    exactly 0 passes on no relevance, where 0 / 0 made the whole map NaN (zennit's too)."""
    if epsilon == 0:
        return torch.where(z == 0, torch.inf, z)
    # ``|z| + epsilon`` given the sign of ``z + 0`` (which turns -0.0 into +0.0): four passes over z,
    # where arithmetic on a 0/1 sign mask took six (7.0 against 4.3 ms on an (8, 64, 112, 112) map) and
    # torch.where's CPU kernel is slower still on random signs. In float32 at least: a half-precision
    # epsilon below its smallest subnormal (6e-8) would be 0, and 0 / 0 NaN
    wide = torch.promote_types(z.dtype, torch.float32)
    return z.abs().to(wide).add_(epsilon).copysign_(z + 0.0)


Pairs = list[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]]  # (input_k, weight_k, bias_k)


@dataclass
class _Terms:
    """A rule's modified layers ``run(input_k, weight_k, bias_k)`` (``outputs``, with the graph to
    ``leaves``) and the stabilised denominator its shares divide by."""

    pairs: Pairs
    leaves: list[torch.Tensor]
    outputs: list[torch.Tensor]
    denominator: torch.Tensor

    def pulled(self, grads: list[torch.Tensor]) -> list[torch.Tensor]:
        """Each term's ``J_k^T g_k``: the modified layer's transpose applied to its output share
        (the graph kept for the next target's backward)."""
        return list(torch.autograd.grad(self.outputs, self.leaves, grads, retain_graph=True))


def _terms(layer: "LayerCall", rule: "LayerRule", tag: str, pairs: Callable[[], Pairs],
           denominator: Callable[[list[torch.Tensor]], torch.Tensor]) -> _Terms:
    """The terms ``tag`` of ``rule`` (with its settings) for this layer. They do not depend on the
    relevance: where several targets' backwards come (``layer.memo``), the first makes them and
    the others reuse them, so K targets run the modified layers once."""
    try:
        key: Any = (rule, tag)
        found = None if layer.memo is None else layer.memo.get(key)
    except TypeError:  # a rule that cannot be a key (unhashable): made each time
        key, found = None, None
    if found is None:
        made = pairs()
        with torch.enable_grad():
            leaves = [x.detach().requires_grad_(True) for x, _, _ in made]
            outputs = [layer.run(leaf, w, b) for leaf, (_, w, b) in zip(leaves, made)]
        found = _Terms(made, leaves, outputs, denominator([z.detach() for z in outputs]))
        if layer.memo is not None and key is not None:
            layer.memo[key] = found
    return found


def _part(t: torch.Tensor | None, positive: bool) -> torch.Tensor | None:
    return None if t is None else t.clamp(min=0) if positive else t.clamp(max=0)


@dataclass
class LayerCall:
    """What a rule reads of one layer's call: ``run(x, weight, bias)`` the layer, its input and
    parameters (a folded batch norm included), its ``output`` (made by ``made_output`` when first
    read), ``pull(g)`` its transpose ``J^T g`` (from the forward's own graph), and whether the
    input is known to be non-negative (a ReLU's output, pooled or not: the rules' negative-input
    terms are then zero and skipped). ``memo`` keeps the rules' relevance-independent terms for
    the next target's backward."""

    run: Run
    x: torch.Tensor
    weight: torch.Tensor
    bias: torch.Tensor | None
    made_output: Callable[[], torch.Tensor]
    pull: Callable[[torch.Tensor], torch.Tensor]
    nonnegative: bool
    # the rules' terms by (rule, tag) when several targets' backwards share this call (else None); not
    # an argument, so a ``dataclasses.replace`` of the call (other weights) starts without them
    memo: dict[Any, Any] | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def output(self) -> torch.Tensor:
        """The layer's output ``z`` (a folded batch norm included)."""
        return self.made_output()


@dataclass(frozen=True)
class LayerRule:
    """A rule for a convolution or linear layer: ``relevance(layer, R)`` is the input's relevance
    given the output's ``R``. ``stabilizer`` is added to denominators with their sign (the sign
    of 0 taken as +1). A rule that never reads ``layer.output`` sets ``reads_output`` False: the
    forward then keeps no copy of it, and a rule that reads it all the same gets it made again
    after an in-place write that its version counter shows (a write through ``.data`` it does
    not: a rule that reads the output keeps ``reads_output`` True)."""

    stabilizer: float = 1e-6
    reads_output: ClassVar[bool] = True

    def __post_init__(self) -> None:
        check_number("stabilizer", self.stabilizer)

    def relevance(self, layer: LayerCall, relevance: torch.Tensor) -> torch.Tensor:
        """The input's relevance."""
        raise NotImplementedError


@dataclass(frozen=True)
class Epsilon(LayerRule):
    """LRP-epsilon: ``R_in = x * W^T (R / (z + epsilon sign z))``; ``epsilon=0`` is LRP-0."""

    epsilon: float = 1e-6

    def __post_init__(self) -> None:
        super().__post_init__()
        check_number("epsilon", self.epsilon)

    def relevance(self, layer, relevance):
        """The input's relevance by this rule."""
        return layer.x * layer.pull(relevance / stabilize(layer.output, self.epsilon))


def _signed_terms(layer: LayerCall, rule: "LayerRule", tag: str, positive_weight, negative_weight, bias, relevance,
                  stabilizer):
    """``x+ A^T g + x- B^T g`` with ``g = R / stab(A x+ + bias + B x-)``: one signed half of z+,
    alpha-beta and gamma (the ``x-`` term dropped for a non-negative input). The weights and the
    bias are callables, made only when the terms are."""

    def pairs() -> Pairs:
        x = layer.x
        made = [(x if layer.nonnegative else x.clamp(min=0), positive_weight(), bias())]
        if not layer.nonnegative:
            made.append((x.clamp(max=0), negative_weight(), None))
        return made

    terms = _terms(layer, rule, tag, pairs, lambda z: stabilize(sum(z[1:], z[0]), stabilizer))
    pulled = terms.pulled([relevance / terms.denominator] * len(terms.outputs))
    shares = [inputs * p for (inputs, _, _), p in zip(terms.pairs, pulled)]
    return sum(shares[1:], shares[0])  # not sum(shares): 0 + a tensor is one more pass over it


@dataclass(frozen=True)
class ZPlus(LayerRule):
    """LRP-z+: positive contributions only, ``z = W+ x+ + W- x- + b+``."""

    reads_output = False

    def relevance(self, layer, relevance):
        """The input's relevance by this rule."""
        w, b = layer.weight, layer.bias
        return _signed_terms(layer, self, "z+", lambda: w.clamp(min=0), lambda: w.clamp(max=0), lambda: _part(b, True),
                             relevance, self.stabilizer)


@dataclass(frozen=True)
class AlphaBeta(LayerRule):
    """LRP-alpha-beta: positive contributions weighted ``alpha``, negative ``beta``
    (``alpha - beta = 1``); ``AlphaBeta(alpha=2, beta=1)`` is alpha2-beta1, ``(1, 0)`` z+."""

    alpha: float = 2.0
    beta: float = 1.0
    reads_output = False

    def __post_init__(self) -> None:
        super().__post_init__()
        check_number("alpha", self.alpha)
        check_number("beta", self.beta)
        if not math.isclose(self.alpha - self.beta, 1.0):
            raise InputError(f"alpha - beta must be 1, got alpha={self.alpha}, beta={self.beta}")

    def relevance(self, layer, relevance):
        """The input's relevance by this rule."""
        w, b = layer.weight, layer.bias
        positive = _signed_terms(layer, self, "alpha", lambda: w.clamp(min=0), lambda: w.clamp(max=0),
                                 lambda: _part(b, True), relevance, self.stabilizer)
        negative = _signed_terms(layer, self, "beta", lambda: w.clamp(max=0), lambda: w.clamp(min=0),
                                 lambda: _part(b, False), relevance, self.stabilizer)
        return self.alpha * positive - self.beta * negative


@dataclass(frozen=True)
class Gamma(LayerRule):
    """LRP-gamma (generalised to inputs of either sign, as zennit): contributions of the output's
    sign favoured by ``gamma``."""

    gamma: float = 0.25

    def __post_init__(self) -> None:
        super().__post_init__()
        check_number("gamma", self.gamma)

    def relevance(self, layer, relevance):
        """The input's relevance by this rule."""
        g, w, b = self.gamma, layer.weight, layer.bias

        def up() -> torch.Tensor:
            return w + g * w.clamp(min=0)

        def down() -> torch.Tensor:
            return w + g * w.clamp(max=0)

        positive = (layer.output > 0).to(relevance) * relevance
        negative = (layer.output < 0).to(relevance) * relevance
        return (_signed_terms(layer, self, "gamma+", up, down, lambda: None if b is None else b + g * b.clamp(min=0),
                              positive, self.stabilizer)
                + _signed_terms(layer, self, "gamma-", down, up, lambda: None if b is None else b + g * b.clamp(max=0),
                                negative, self.stabilizer))


@dataclass(frozen=True)
class Flat(LayerRule):
    """LRP-flat: relevance spread uniformly over the receptive field (weights and inputs 1, no bias)."""

    reads_output = False

    def relevance(self, layer, relevance):
        """The input's relevance by this rule."""
        terms = _terms(layer, self, "flat", lambda: [(torch.ones_like(layer.x), torch.ones_like(layer.weight), None)],
                       lambda z: stabilize(z[0], self.stabilizer))
        return terms.pulled([relevance / terms.denominator])[0]


@dataclass(frozen=True)
class WSquare(LayerRule):
    """LRP-w^2: relevance spread by squared weights (inputs 1, the bias squared too, as zennit)."""

    reads_output = False

    def relevance(self, layer, relevance):
        """The input's relevance by this rule."""
        b = layer.bias
        terms = _terms(layer, self, "w2", lambda: [(torch.ones_like(layer.x), layer.weight ** 2, None if b is None else b ** 2)],
                       lambda z: stabilize(z[0], self.stabilizer))
        return terms.pulled([relevance / terms.denominator])[0]


@dataclass(frozen=True)
class ZBox(LayerRule):
    """LRP-z^B for inputs bounded by ``low`` and ``high`` (numbers or tensors broadcastable to
    the input, e.g. (1, C, 1, 1) per channel), usually the first layer."""

    low: Any = 0.0
    high: Any = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        bounds = []
        for name in ("low", "high"):
            value = getattr(self, name)
            try:
                check_baseline(value)
            except InputError:
                raise InputError(f"ZBox {name} must be a finite number or a finite floating tensor (broadcastable "
                                 f"to its layer's input, e.g. (1, C, 1, 1)), not {value!r}") from None
            bounds.append(torch.as_tensor(value, dtype=torch.float64))
        try:
            inverted = bool((bounds[0] > bounds[1]).any())
        except RuntimeError:
            raise InputError(f"low {tuple(bounds[0].shape)} and high {tuple(bounds[1].shape)} do not broadcast") from None
        if inverted:
            raise InputError("ZBox needs low <= high everywhere")

    def bounds(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``low`` and ``high`` as tensors shaped like ``x``, or an InputError."""
        try:
            return tuple(torch.as_tensor(v, dtype=x.dtype, device=x.device).expand_as(x)  # type: ignore[return-value]
                         for v in (self.low, self.high))
        except RuntimeError:
            raise InputError(f"ZBox bounds of shapes {tuple(torch.as_tensor(self.low).shape)} and "
                             f"{tuple(torch.as_tensor(self.high).shape)} do not broadcast to its layer's input "
                             f"{tuple(x.shape)}: give numbers or tensors like (1, C, 1, 1)") from None

    def relevance(self, layer, relevance):
        """The input's relevance by this rule."""
        x, w, b = layer.x, layer.weight, layer.bias
        low, high = self.bounds(x)
        terms = _terms(layer, self, "box", lambda: [(low, w.clamp(min=0), _part(b, True)), (high, w.clamp(max=0), _part(b, False))],
                       lambda z: stabilize(layer.output - z[0] - z[1], self.stabilizer))
        share = relevance / terms.denominator
        p = terms.pulled([share] * 2)
        return x * layer.pull(share) - low * p[0] - high * p[1]


@dataclass(frozen=True)
class Composite:
    """Which rule each layer gets: ``first`` for the first convolution or linear layer the input
    reaches (None: by its kind; ``first_convolution_only`` as zennit's EpsilonGammaBox, whose box
    rule applies to a first convolution and not to a first linear layer), ``convolution`` and
    ``linear`` for the others; ``stabilizer`` for average pooling and residual sums (the Norm rule)."""

    convolution: LayerRule = field(default_factory=ZPlus)
    linear: LayerRule = field(default_factory=Epsilon)
    first: LayerRule | None = None
    first_convolution_only: bool = False
    stabilizer: float = 1e-6

    def __post_init__(self) -> None:
        for name in ("convolution", "linear", "first"):
            rule = getattr(self, name)
            if not isinstance(rule, LayerRule) and not (name == "first" and rule is None):
                raise InputError(f"Composite {name} must be a LayerRule (Epsilon(), ZPlus(), ...), not {rule!r}")
        check_flag("first_convolution_only", self.first_convolution_only)
        check_number("stabilizer", self.stabilizer)


def epsilon_plus(epsilon: float = 1e-6, stabilizer: float = 1e-6) -> Composite:
    """zennit's EpsilonPlus: z+ for convolutions, epsilon for linear layers."""
    return Composite(ZPlus(stabilizer), Epsilon(stabilizer, epsilon), stabilizer=stabilizer)


def epsilon_plus_flat(epsilon: float = 1e-6, stabilizer: float = 1e-6) -> Composite:
    """zennit's EpsilonPlusFlat: EpsilonPlus with the flat rule for the first layer."""
    return Composite(ZPlus(stabilizer), Epsilon(stabilizer, epsilon), Flat(stabilizer), stabilizer=stabilizer)


def epsilon_gamma_box(low: Any, high: Any, epsilon: float = 1e-6, gamma: float = 0.25,
                      stabilizer: float = 1e-6) -> Composite:
    """zennit's EpsilonGammaBox: gamma for convolutions, epsilon for linear layers, z^B with the
    input's bounds for a first convolution."""
    return Composite(Gamma(stabilizer, gamma), Epsilon(stabilizer, epsilon), ZBox(stabilizer, low, high), True,
                     stabilizer)


def epsilon_alpha2_beta1(epsilon: float = 1e-6, stabilizer: float = 1e-6) -> Composite:
    """zennit's EpsilonAlpha2Beta1: alpha2-beta1 for convolutions, epsilon for linear layers."""
    return Composite(AlphaBeta(stabilizer, 2.0, 1.0), Epsilon(stabilizer, epsilon), stabilizer=stabilizer)


def epsilon(epsilon: float = 1e-6, stabilizer: float = 1e-6) -> Composite:
    """The epsilon rule for every layer: with the rules for products, softmax and layer norms,
    AttnLRP as its authors compute it for transformers (gradient times input through their rules)."""
    return Composite(Epsilon(stabilizer, epsilon), Epsilon(stabilizer, epsilon), stabilizer=stabilizer)


COMPOSITES: dict[str, Callable[..., Composite]] = {
    "epsilon": epsilon, "epsilon_plus": epsilon_plus, "epsilon_plus_flat": epsilon_plus_flat, "epsilon_gamma_box": epsilon_gamma_box,
    "epsilon_alpha2_beta1": epsilon_alpha2_beta1,
}


class _Layer(torch.autograd.Function):
    """A layer whose backward is its rule. The forward keeps its own graph (the layer's
    transpose, for the rules at the original weights); ``folded`` holds a batch norm's (scale,
    shift) once one reads the output, folded into what the rule sees."""

    @staticmethod
    def forward(ctx: Any, x, weight, bias, run, rule, folded, transposed, nonnegative, targets):
        with torch.enable_grad():
            leaf = x.detach().requires_grad_(True)
            output = run(leaf, weight.detach(), None if bias is None else bias.detach())
        ctx.leaf, ctx.inner, ctx.weight, ctx.bias, ctx.version = leaf, output, weight.detach(), bias, x._version
        ctx.run, ctx.rule, ctx.folded, ctx.transposed, ctx.nonnegative = run, rule, folded, transposed, nonnegative
        ctx.targets = targets  # [K], set once the forward has resolved them
        ctx.made = output._version
        # a copy for a rule that reads z: an in-place ReLU after the layer must not rewrite it (without one,
        # a z written since is made again if read: ``_layer_call``)
        return output.detach().clone() if rule.reads_output else output.detach()

    @staticmethod
    def backward(ctx: Any, relevance):
        if ctx.leaf._version != ctx.version:  # the rules read the layer's input as the layer did
            raise InputError("LRP: the model wrote in place into a tensor after a layer had read it (the layer's "
                             "rule needs its input as it was); write out of place (h = h.relu(), not h.relu_(), "
                             "after the layer)")
        if not hasattr(ctx, "layer"):  # once per layer call: K targets' backwards share it and its terms
            ctx.layer = _layer_call(ctx)
            if ctx.targets[0] > 1:  # one target has no later backward: keeping its terms would only cost memory
                ctx.layer.memo = {}
        found = ctx.rule.relevance(ctx.layer, relevance)
        if not isinstance(found, torch.Tensor) or found.shape != ctx.leaf.shape:  # a user's rule, most likely
            shape = tuple(found.shape) if isinstance(found, torch.Tensor) else type(found).__name__
            raise InputError(f"LRP: the rule {type(ctx.rule).__name__} returned relevance of shape {shape} for a layer "
                             f"whose input has shape {tuple(ctx.leaf.shape)}; a LayerRule's relevance has its layer "
                             "input's shape")
        return found, None, None, None, None, None, None, None, None


def _layer_call(ctx: Any) -> LayerCall:
    """What the rule reads of a ``_Layer`` call, a batch norm that alone reads its output folded in."""
    weight, bias = ctx.weight, None if ctx.bias is None else ctx.bias.detach()
    inner, leaf, run, made = ctx.inner, ctx.leaf, ctx.run, ctx.made  # not ctx: ctx keeps this call
    unfolded = (weight, bias)
    scale = shift = None
    if ctx.folded and ctx.folded[0][2][0] == 1:  # the batch norm is the output's only reader
        scale, shift, _ = ctx.folded[0]
        weight = _folded_weight(weight, scale, ctx.transposed)
        bias = shift if bias is None else bias * scale + shift
        channel = (-1,) + (1,) * (inner.dim() - 2) if inner.dim() > 2 else (-1,)
        scale, shift = scale.view(channel), shift.view(channel)
    kept: list[torch.Tensor] = []

    def output() -> torch.Tensor:
        if not kept:
            z = inner.detach()
            if inner._version != made:  # written in place since, uncopied (``reads_output``): made again
                with torch.no_grad():
                    z = run(leaf.detach(), *unfolded)
            kept.append(z if scale is None else z * scale + shift)
        return kept[0]

    def pull(g: torch.Tensor) -> torch.Tensor:
        return torch.autograd.grad(inner, leaf, g if scale is None else g * scale, retain_graph=True)[0]

    return LayerCall(run, leaf.detach(), weight, bias, output, pull, ctx.nonnegative)


def _folded_weight(weight: torch.Tensor, scale: torch.Tensor, transposed: bool) -> torch.Tensor:
    """The layer's weight times a batch norm's per-output-channel scale: a transposed
    convolution's weight is (in, out / groups, *kernel), its output channels by group."""
    kernel = (1,) * (weight.dim() - 2)
    if not transposed:  # (out, in / groups, *kernel) or a linear layer's (out, in)
        return weight * scale.view(-1, *(1,) * (weight.dim() - 1))
    groups = scale.numel() // weight.shape[1]
    grouped = weight.view(groups, weight.shape[0] // groups, *weight.shape[1:])
    return (grouped * scale.view(groups, 1, -1, *kernel)).view_as(weight)


class _Norm(torch.autograd.Function):
    """An op ``run`` linear in its inputs with the Norm rule: each input's share
    ``x_i * J_i^T (R / stab(y))``, which conserves relevance (sums, differences, means, average
    pooling, scaling), times ``share``. A product of n input-dependent tensors, linear in each,
    takes ``share`` 1/n (AttnLRP's uniform rule: the n shares would each be the whole); a layer
    norm takes ``linear``, its linearisation, for ``J`` (AttnLRP's identity rule on the division
    by the standard deviation), where ``run`` gives the value."""

    @staticmethod
    def forward(ctx: Any, stabilizer, share, run, linear, *inputs):
        ctx.save_for_backward(*inputs)  # not the output: the forward may write into it afterwards
        ctx.linear, ctx.stabilizer, ctx.share = linear, stabilizer, share
        return run(*inputs)

    @staticmethod
    def backward(ctx: Any, relevance):
        inputs = ctx.saved_tensors
        with torch.enable_grad():
            leaves = [t.detach().requires_grad_(True) for t in inputs]
            y = ctx.linear(*leaves)
            pulled = torch.autograd.grad(y, leaves, relevance / stabilize(y.detach(), ctx.stabilizer))
        share = ctx.share
        return (None, None, None, None, *((t * p if share == 1 else t * p * share) for t, p in zip(inputs, pulled)))


class _Softmax(torch.autograd.Function):
    """Softmax over ``dim`` with AttnLRP's rule (its Taylor expansion at the input, Achtibat et
    al. 2024, Proposition 3.1): ``R_in = x * (R - s * sum(R))``, 0 where ``s`` is 0 (a masked
    score, at -inf, holds no relevance). Not conservative: the expansion's bias term absorbs
    ``sum(s * x) * sum(R)``."""

    @staticmethod
    def forward(ctx: Any, x, run, dim):
        s = run(x)
        ctx.save_for_backward(x, s)
        ctx.dim = dim
        return s

    @staticmethod
    def backward(ctx: Any, relevance):
        x, s = ctx.saved_tensors
        r = relevance.to(s.dtype)
        passed = x.to(s.dtype) * (r - s * r.sum(ctx.dim, keepdim=True))
        return torch.where(s == 0, 0.0, passed).to(x.dtype), None, None


class _Pass(torch.autograd.Function):
    """An op whose output takes its input's relevance unchanged: elementwise nonlinearities
    (zennit's Pass rule) and batch norms (folded into their layer, or passed through)."""

    @staticmethod
    def forward(ctx: Any, x, run, inplace):
        if inplace:
            ctx.mark_dirty(x)
            return x.copy_(run(x))
        return run(x)

    @staticmethod
    def backward(ctx: Any, relevance):
        return relevance, None, None


class _Scaled(_Pass):
    """``x`` times a constant factor: relevance passes unchanged where the factor is not 0, and
    none where it is (the output does not depend on ``x`` there)."""

    @staticmethod
    def forward(ctx: Any, x, run, inplace):
        ctx.run = run
        return _Pass.forward(ctx, x, run, inplace)

    @staticmethod
    def backward(ctx: Any, relevance):
        with torch.no_grad():  # the factor, whatever constant the product also adds
            factor = ctx.run(torch.ones_like(relevance)) - ctx.run(torch.zeros_like(relevance))
        return relevance * (factor != 0), None, None


class _Relevance(PropagationRule):
    """One call's LRP: each layer gets the composite's rule; a batch norm folds into the layer
    whose output it reads (when it is that output's only reader, decided after the forward).
    Facts about tensors (a layer's output, a ReLU's non-negative output) are kept with the
    tensor's version: an in-place write afterwards makes them void."""

    def __init__(self, composite: Composite) -> None:
        self.composite = composite
        self.mode: PropagationMode | None = None
        self.first = True
        self.targets = [1]  # how many targets' backwards will come, known after the forward
        self.layers: dict[int, tuple[weakref.ref, int, list, bool]] = {}  # output -> version, fold, is linear
        self.nonnegative: dict[int, tuple[weakref.ref, int]] = {}

    @staticmethod
    def _known(table: dict, tensor: torch.Tensor) -> tuple | None:
        found = table.get(id(tensor))
        return found if found is not None and found[0]() is tensor and found[1] == tensor._version else None

    def _is_nonnegative(self, tensor: torch.Tensor) -> bool:
        return self._known(self.nonnegative, tensor) is not None

    def _mark_nonnegative(self, tensor: torch.Tensor) -> None:
        self.nonnegative[id(tensor)] = (weakref.ref(tensor), tensor._version)

    def layer(self, run, x, weight, bias, transposed):
        convolution = weight.dim() > 2
        rule = self.composite.convolution if convolution else self.composite.linear
        if self.first:
            self.first = False
            if self.composite.first is not None and (convolution or not self.composite.first_convolution_only):
                rule = self.composite.first
        folded: list = []
        y = _Layer.apply(x, weight, bias, run, rule, folded, transposed, self._is_nonnegative(x), self.targets)
        self.layers[id(y)] = (weakref.ref(y), y._version, folded, not convolution)
        return y

    def batch_norm(self, run, x, scale, shift):
        found = self._known(self.layers, x)
        # a batch norm normalises axis 1: a linear layer's features only when its output is (N, F)
        if found is not None and not found[2] and (not found[3] or x.dim() == 2) and self.mode is not None:
            found[2].append((scale.detach(), shift.detach(), self.mode.reads(x)))
        return _Pass.apply(x, run, False)

    def elementwise(self, function, x, inplace, slope=None):
        y = _Pass.apply(x, function, inplace)
        if slope is not None:  # the ReLU family: clamp(x, 0, upper)
            self._mark_nonnegative(y)
        return y

    def scaled(self, function, x, inplace):
        return _Scaled.apply(x, function, inplace)

    def max_pool(self, pool, x, dims):
        y = pool(x)[0]  # the gradient: relevance to the maximum
        if self._is_nonnegative(x):
            self._mark_nonnegative(y)
        return y

    def linear(self, run, inputs):
        return _Norm.apply(self.composite.stabilizer, 1, run, run, *inputs)

    attention = True

    def product(self, run, inputs):
        return _Norm.apply(self.composite.stabilizer, 1 / len(inputs), run, run, *inputs)

    def softmax(self, run, x, dim):
        return _Softmax.apply(x, run, dim)

    def normalisation(self, run, linearised, x):
        return _Norm.apply(self.composite.stabilizer, 1, run, linearised, x)


class LRP(Explainer):
    """Layer-wise relevance propagation with a ``composite``: a name (``"epsilon_plus_flat"``, the
    default, ``"epsilon_plus"``, ``"epsilon_alpha2_beta1"``, ``"epsilon"``, ``"epsilon_gamma_box"`` with
    ``low`` and ``high``: the input's bounds) or a ``Composite`` of rules. ``epsilon``, ``gamma``
    and ``stabilizer`` are zennit's defaults. Relevance starts as the target's score, so the
    map (N, K, C, *grid) sums to about the score (less what biases and epsilon absorb).

    Defined for networks of convolutions, linear layers, eval batch norms, pooling, residual
    sums, concatenation and elementwise nonlinearities, and for transformers with AttnLRP's rules
    (Achtibat et al., 2024): products of input-dependent tensors, softmax, norms (layer, RMS,
    group, instance, ``F.normalize``, and norms written out, as Llama's RMS norm, with their
    statistic held constant), and torch's fused attention written out as those (``"epsilon"`` is
    AttnLRP as its authors compute it). With ``strict=True`` any other op on input-dependent
    tensors (an index computed from the input, a division by one) is refused by name;
    ``strict=False`` gives it its plain gradient."""

    name = "lrp"
    supports = frozenset({"1d", "2d", "3d", "several_inputs", "tokens"})

    def __init__(self, model: nn.Module, composite: str | Composite = "epsilon_plus_flat", epsilon: float = 1e-6,
                 gamma: float = 0.25, low: Any = None, high: Any = None, stabilizer: float = 1e-6,
                 strict: bool = True) -> None:
        super().__init__(model)
        self.strict = check_flag("strict", strict)
        self.composite = _composite(composite, check_number("epsilon", epsilon), check_number("gamma", gamma), low, high,
                                    check_number("stabilizer", stabilizer))

    def explain(self, call: Call) -> Explanation:
        """One forward under the composite's rules and one batched backward of every target's
        score; Neuron targets on different layers one at a time, since a neuron's read of its
        layer's output decides whether a batch norm after that layer folds into it."""
        neurons = neurons_of(call.target)
        if len({id(resolve_layer(self.model, n.layer)[1]) for n in neurons}) > 1:
            parts = [self._relevance(call.with_(target=neuron)) for neuron in neurons]
            return replace(parts[0], maps=torch.cat([p.maps for p in parts], 1),
                           targets=torch.cat([p.targets for p in parts], 1),
                           scores=torch.cat([p.scores for p in parts], 1))
        return self._relevance(call)

    def _relevance(self, call: Call) -> Explanation:
        x = call.x.detach().clone().requires_grad_(True)
        rule = _Relevance(self.composite)
        mode = rule.mode = PropagationMode(rule, x)
        try:
            frozen, reads_before = _frozen_norms(self.model), {}

            def before(module: nn.Module, args: tuple) -> None:
                reads_before[id(module)] = mode.reads(args[0])[0]

            def as_batch_norm(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor | None:
                reads = reads_before.pop(id(module))
                if user_hooked((module,)):  # the user's hooks may change its output: it stays as they made it
                    return None
                mode.reads(args[0])[0] = reads  # its own arithmetic is discarded: no read
                return _as_batch_norm(module, args[0])

            with forward_hooks(frozen, before, pre=True), forward_hooks(frozen, as_batch_norm):
                selection, _ = self.forward_with_targets(call.with_(x), mode=mode, mode_reads_targets=True)
        finally:
            rule.mode = None  # the mode keeps the rule: no reference cycle outlives the forward
        rule.targets[0] = selection.scores.shape[1]
        mode.check_decompositions("LRP")
        if self.strict:
            mode.refuse_uncovered("LRP", "no rule covers (the composites have rules for convolutions, linear layers, "
                                  "batch norms, pooling, linear ops, elementwise nonlinearities, products of "
                                  "input-dependent tensors, softmax, norms, and a target score read "
                                  "linearly from the output)", "")
        with torch.enable_grad():
            scores = selection.scores * selection.scores.detach()  # relevance at the output: the score itself
        unreached = out_of_graph("LRP") if mode.detaching else None
        (relevance,) = per_target_gradients(scores, [x], selection.graph_elements, unreached=unreached)
        mode.checkpoints.refuse_recomputation("LRP")
        return self.result(relevance, selection, MapKind.INPUT_CHANNELS)


def _composite(composite: Any, epsilon: float, gamma: float, low: Any, high: Any, stabilizer: float) -> Composite:
    if isinstance(composite, Composite):
        return composite
    if not isinstance(composite, str) or composite not in COMPOSITES:
        raise InputError(f"unknown composite {composite!r}; use one of {', '.join(sorted(COMPOSITES))} or a Composite")
    if composite == "epsilon_gamma_box":
        if low is None or high is None:
            raise InputError("the epsilon_gamma_box composite needs the input's bounds: pass low= and high=")
        return epsilon_gamma_box(low, high, epsilon, gamma, stabilizer)
    return COMPOSITES[composite](epsilon, stabilizer)


def _frozen_norms(model: nn.Module) -> list[nn.Module]:
    """The model's batch norms frozen into buffers (torchvision's and timm's ``FrozenBatchNorm2d``):
    an eval batch norm written as ``x * scale + shift``, which the rules would see as arithmetic."""
    cache = model_cache(model)
    found = cache.get("frozen batch norms")
    if found is None:
        found = cache["frozen batch norms"] = [
            m for m in model.modules() if type(m).__name__ == "FrozenBatchNorm2d"
            and all(isinstance(getattr(m, name, None), torch.Tensor) for name in ("weight", "bias", "running_mean",
                                                                                  "running_var"))]
    return found


def _as_batch_norm(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A frozen batch norm's output for ``x`` recomputed as the eval batch norm it is, so that it
    folds into the layer before it as ``nn.BatchNorm2d`` does."""
    mean, var, weight, bias = (getattr(module, name) for name in ("running_mean", "running_var", "weight", "bias"))
    return F.batch_norm(x, mean, var, weight, bias, False, 0.0, getattr(module, "eps", 1e-5))
