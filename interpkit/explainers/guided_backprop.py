"""Guided backprop (Springenberg et al., 2015) and Deconvnet (Zeiler and Fergus, 2014)."""

from __future__ import annotations

from typing import ClassVar, ContextManager

import torch
from torch import nn

from ..core.explainer import Explainer
from ..core.explanation import Explanation
from ..core.gradients import per_target_gradients
from ..core.relu_rules import ReLURuleMode, Rule, deconvnet_rule, guided_rule
from ..core.targets import TargetLike
from ..errors import InterpkitError


class NoReLUError(InterpkitError, ValueError):
    """The forward evaluated no ReLU, so a ReLU backward rule would change nothing."""


class ReLURuleExplainer(Explainer):
    """Input gradients with a backward rule at every ReLU the forward evaluates.

    Maps have shape (N, K, C, H, W). K targets (classes or ``Neuron`` units) share one forward
    and one batched backward. With ``strict=True`` a forward without any ReLU raises
    :class:`NoReLUError` instead of silently returning the plain gradient.
    """

    rule: ClassVar[Rule]  # a staticmethod in subclasses

    def __init__(self, model: nn.Module, strict: bool = True) -> None:
        super().__init__(model)
        self.strict = strict
        self._mode: ReLURuleMode | None = None

    def forward_mode(self) -> ContextManager[ReLURuleMode]:
        self._mode = ReLURuleMode(type(self).rule)
        return self._mode

    def explain(self, inputs: torch.Tensor, target: TargetLike = None) -> Explanation:
        x = inputs.clone().requires_grad_(True)
        selection, _ = self.forward_with_targets(x, target)
        assert self._mode is not None
        if self.strict and self._mode.count == 0:
            raise NoReLUError(
                f"{type(self).__name__}: the forward evaluated no ReLU, so the result would be the "
                "plain input gradient; pass strict=False if that is what you want"
            )
        (gradients,) = per_target_gradients(selection.scores, [x])
        return Explanation(gradients.float(), selection.indices, selection.scores.detach(), self.name)


class GuidedBackprop(ReLURuleExplainer):
    """Input gradient passing only positive gradient through positive ReLU inputs."""

    name = "guided_backprop"
    rule = staticmethod(guided_rule)  # type: ignore[assignment]


class Deconvnet(ReLURuleExplainer):
    """Input gradient with each ReLU's backward replaced by a ReLU of the gradient."""

    name = "deconvnet"
    rule = staticmethod(deconvnet_rule)  # type: ignore[assignment]
