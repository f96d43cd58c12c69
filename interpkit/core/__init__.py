"""The explainer-author API: everything a built-in or third-party explainer is built from.

An explainer subclasses :class:`Explainer` (or :class:`LayerExplainer` to read an inner layer,
or :class:`ReLURuleExplainer` for a backward rule at every ReLU), implements ``explain`` and
returns ``self.result(maps, selection, kind)``. ``LayerExplainer.layer_gradients`` gives a
layer's activation and the gradients of every target in one forward and one batched backward;
``per_target_gradients`` does the same for any tensors; ``capture_outputs`` and
``forward_hooks`` register hooks for one forward only; ``evaluation`` holds a model in eval mode
and restores it.
"""

from .explainer import Explainer, LayerExplainer, LayerGradients, check_flag, check_inputs
from .explanation import Explanation
from .gradients import per_target_gradients
from .hooks import Captured, capture_outputs, forward_hooks
from .layers import LayerLike, is_spatial, last_spatial_layer, resolve_layer
from .maps import MapKind, normalize_maps
from .relu_rules import ReLURuleExplainer, ReLURuleMode, Rule, deconvnet_rule, guided_rule
from .state import ModelSnapshot, evaluation, mixes_samples, model_device, run_model
from .targets import Neuron, TargetLike, TargetSelection, neurons_of, select_targets

__all__ = [
    "Captured", "Explainer", "Explanation", "LayerExplainer", "LayerGradients", "LayerLike", "MapKind",
    "ModelSnapshot", "Neuron", "ReLURuleExplainer", "ReLURuleMode", "Rule", "TargetLike", "TargetSelection",
    "capture_outputs", "check_flag", "check_inputs", "deconvnet_rule", "evaluation", "forward_hooks", "guided_rule",
    "is_spatial", "last_spatial_layer", "mixes_samples", "model_device", "neurons_of", "normalize_maps", "per_target_gradients",
    "resolve_layer", "run_model", "select_targets",
]
