"""The explainer-author API: everything a built-in or third-party explainer is built from.

An explainer subclasses ``Explainer`` (or ``LayerExplainer`` to read an inner layer,
or ``ReLURuleExplainer`` for a backward rule at every ReLU), implements ``explain`` and
returns ``self.result(maps, selection, kind)``. ``LayerExplainer.layer_gradients`` gives a
layer's activation and the gradients of every target in one forward and one batched backward;
``per_target_gradients`` does the same for any tensors; ``capture_outputs`` and
``forward_hooks`` register hooks for one forward only; ``evaluation`` holds a model in eval mode
and restores it.
"""

from .attention import mismatch
from .baselines import BaselineLike, baseline_pools, check_reference, reference
from .explainer import Call, Explainer, LayerExplainer, LayerGradients
from .explanation import Explanation, concatenate
from .gradients import per_target_gradients
from .hooks import Captured, capture_outputs, forward_hooks
from .inputs import InputsLike, ModelInputs, check_finite, check_tensor, model_inputs, parse_device
from .layers import LayerChoice, LayerLike, ModuleLike, choose_layer, detect_layout, layer_choices, resolve_layer, unwrap
from .layouts import ChannelsFirst, ChannelsLast, Layout, TokenGrid, token_layout
from .maps import MapKind, display, normalize_maps, provide_display, upsample
from .noise import normal_draws, uniform_draws
from .options import check_baseline, check_flag, check_generator, check_int, check_number, check_seed, check_sizes
from .propagation import PropagationMode, PropagationRule, out_of_graph
from .relu_rules import (
    NodeRule,
    ReLURuleExplainer,
    ReLURuleMode,
    Rule,
    deconvnet_node_rule,
    deconvnet_rule,
    guided_node_rule,
    guided_rule,
)
from .state import ModelSnapshot, evaluation, mixes_samples, model_cache, model_device, probing, user_hooked
from .targets import Neuron, TargetLike, TargetSelection, class_scores, neurons_of, sample_target, select_targets

__all__ = [
    "BaselineLike", "Call", "Captured", "ChannelsFirst", "ChannelsLast", "Explainer", "Explanation", "InputsLike", "LayerChoice",
    "LayerExplainer", "LayerGradients", "LayerLike", "Layout", "MapKind", "ModelInputs", "ModelSnapshot",
    "ModuleLike", "Neuron", "NodeRule", "PropagationMode", "PropagationRule", "ReLURuleExplainer", "ReLURuleMode", "Rule",
    "TargetLike", "TargetSelection",
    "TokenGrid", "capture_outputs", "check_baseline",
    "check_finite", "check_flag", "check_generator", "check_sizes", "check_reference", "check_int", "check_number",
    "check_seed", "check_tensor", "token_layout",
    "choose_layer", "class_scores", "concatenate", "deconvnet_node_rule", "deconvnet_rule", "detect_layout", "display",
    "evaluation", "forward_hooks",
    "guided_node_rule", "guided_rule", "layer_choices", "mismatch",
    "mixes_samples", "model_cache", "model_device", "model_inputs", "neurons_of", "out_of_graph",
    "normal_draws", "normalize_maps", "parse_device", "probing", "uniform_draws", "per_target_gradients", "provide_display",
    "reference", "baseline_pools", "resolve_layer", "sample_target", "select_targets",
    "unwrap", "upsample", "user_hooked",
]
