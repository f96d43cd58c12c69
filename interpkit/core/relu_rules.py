"""Op-level backward rules for ReLU, active only during an explainer's forward pass.

A ``TorchFunctionMode`` sees every ReLU the forward evaluates, whatever calls it: ``nn.ReLU``
modules (in-place or not, reused or not), ``F.relu``, ``torch.relu``, ``Tensor.relu`` and the
in-place variants. Each is routed to an autograd Function with the same forward value and the
chosen backward rule, so no module is ever replaced.
"""

from __future__ import annotations

from typing import Any, Callable, ClassVar, ContextManager

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from ..errors import NoReLUError
from .explainer import Explainer
from .explanation import Explanation
from .gradients import per_target_gradients
from .maps import MapKind
from .targets import TargetLike

# backward rules: (incoming gradient, the ReLU's forward output) -> outgoing gradient
Rule = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def guided_rule(grad: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
    """Guided backprop: only positive gradient, only where the forward input was positive."""
    # threshold_backward is ReLU's own backward kernel (zero where output <= 0)
    return torch.ops.aten.threshold_backward(grad, output, 0).clamp_min_(0)


def deconvnet_rule(grad: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
    """Deconvnet: the ReLU is applied to the gradient, ignoring the forward input."""
    return grad.clamp_min(0)


class _RuledReLU(torch.autograd.Function):
    """ReLU with a replaceable backward. The output is saved, as ReLU's own backward does:
    output > 0 exactly where the input was, and it survives the in-place variant."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, inplace: bool, rule: Rule) -> torch.Tensor:
        ctx.rule = rule
        if inplace:
            ctx.mark_dirty(x)
            output = torch.relu_(x)
        else:
            output = torch.relu(x)
        ctx.save_for_backward(output)
        return output

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (output,) = ctx.saved_tensors
        return ctx.rule(grad, output), None, None


_OUT_OF_PLACE = {torch.relu, F.relu, torch.Tensor.relu}
_IN_PLACE = {torch.relu_, torch.Tensor.relu_, F.relu_}


class ReLURuleMode(TorchFunctionMode):
    """While active, every ReLU uses ``rule`` in its backward; ``count`` tallies them."""

    def __init__(self, rule: Rule) -> None:
        super().__init__()
        self.rule = rule
        self.count = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _OUT_OF_PLACE or func in _IN_PLACE:
            x = args[0]
            inplace = func in _IN_PLACE or bool(kwargs.get("inplace", args[1] if len(args) > 1 else False))
            self.count += 1
            return _RuledReLU.apply(x, inplace, self.rule)
        return func(*args, **kwargs)


class ReLURuleExplainer(Explainer):
    """Input gradients with a backward rule at every ReLU the forward evaluates.

    Subclasses set ``rule`` (a staticmethod ``(grad, relu_output) -> grad``). Maps have shape
    (N, K, C, H, W). K targets (classes or ``Neuron`` units) share one forward and one batched
    backward. With ``strict=True`` a forward without any ReLU raises :class:`NoReLUError`
    instead of silently returning the plain gradient.
    """

    rule: ClassVar[Rule]

    def __init__(self, model: nn.Module, strict: bool = True) -> None:
        super().__init__(model)
        self.strict = strict
        self._mode: ReLURuleMode | None = None

    def forward_mode(self) -> ContextManager[ReLURuleMode]:
        """A fresh mode that applies ``rule`` to every ReLU of this call's forward and counts them."""
        self._mode = ReLURuleMode(type(self).rule)
        return self._mode

    def explain(self, inputs: torch.Tensor, target: TargetLike = None) -> Explanation:
        """Input gradients of every target under the rule; the model is already in eval mode."""
        x = inputs.clone().requires_grad_(True)
        selection, _ = self.forward_with_targets(x, target)
        assert self._mode is not None
        if self.strict and self._mode.count == 0:
            raise NoReLUError(
                f"{type(self).__name__}: the forward evaluated no ReLU, so the result would be the "
                "plain input gradient; pass strict=False if that is what you want"
            )
        (gradients,) = per_target_gradients(selection.scores, [x])
        return self.result(gradients, selection, MapKind.INPUT_CHANNELS)
