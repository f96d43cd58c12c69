"""The explainer contract: base classes, layers, targets, gradients and the Explanation."""

from .explainer import Explainer, LayerExplainer, check_inputs
from .explanation import Explanation, normalize_maps
from .layers import last_spatial_layer, resolve_layer
from .state import ModelSnapshot, evaluation
from .targets import Neuron, TargetSelection, select_targets

__all__ = [
    "Explainer", "Explanation", "LayerExplainer", "ModelSnapshot", "Neuron", "TargetSelection",
    "check_inputs", "evaluation", "last_spatial_layer", "normalize_maps", "resolve_layer", "select_targets",
]
