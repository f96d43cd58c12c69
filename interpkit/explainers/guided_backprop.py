"""Guided backprop (Springenberg et al., 2015) and Deconvnet (Zeiler and Fergus, 2014)."""

from __future__ import annotations

from ..core import ReLURuleExplainer, deconvnet_node_rule, deconvnet_rule, guided_node_rule, guided_rule


class GuidedBackprop(ReLURuleExplainer):
    """Input gradient passing only positive gradient through positive ReLU inputs."""

    name = "guided_backprop"
    rule = staticmethod(guided_rule)  # type: ignore[assignment]
    node_rule = staticmethod(guided_node_rule)  # type: ignore[assignment]


class Deconvnet(ReLURuleExplainer):
    """Input gradient with each ReLU's backward replaced by a ReLU of the gradient."""

    name = "deconvnet"
    rule = staticmethod(deconvnet_rule)  # type: ignore[assignment]
    node_rule = staticmethod(deconvnet_node_rule)  # type: ignore[assignment]
