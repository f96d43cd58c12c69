"""The built-in explainers; ``interpkit.registry.builtin`` registers them like any plugin."""

from .ablation import FeatureAblation, ShapleyValueSampling, shapley_permutations
from .deeplift import DeepLift, DeepLiftShap
from .features import feature_mask, grid_cells, superpixels
from .gradcam import GradCAM, MultiLayerExplanation, fuse, principal_projection, upsample
from .gradients import GradientShap, InputXGradient, Saliency, gradient_shap_draws
from .guided_backprop import Deconvnet, GuidedBackprop
from .guided_gradcam import GuidedGradCAM
from .lrp import (
    LRP,
    AlphaBeta,
    Composite,
    Epsilon,
    Flat,
    Gamma,
    LayerRule,
    WSquare,
    ZBox,
    ZPlus,
    epsilon_alpha2_beta1,
    epsilon_gamma_box,
    epsilon_plus,
    epsilon_plus_flat,
)
from .occlusion import Occlusion
from .patches import MaxActivatingPatches, PatchExplanation
from .perturbation import perturbed_scores
from .rise import RISE, rise_masks
from .surrogate import LIME, KernelSHAP, fit_linear, kernel_shap_coalitions, lime_coalitions

__all__ = ["AlphaBeta", "Composite", "Deconvnet", "DeepLift", "DeepLiftShap", "Epsilon", "FeatureAblation", "Flat",
           "Gamma", "GradCAM", "GradientShap", "GuidedBackprop", "GuidedGradCAM", "InputXGradient", "KernelSHAP",
           "LIME", "LRP", "LayerRule", "MaxActivatingPatches", "MultiLayerExplanation", "Occlusion",
           "PatchExplanation", "RISE", "Saliency", "ShapleyValueSampling", "WSquare", "ZBox", "ZPlus",
           "epsilon_alpha2_beta1", "epsilon_gamma_box", "epsilon_plus", "epsilon_plus_flat", "feature_mask",
           "fit_linear", "fuse", "gradient_shap_draws", "grid_cells", "kernel_shap_coalitions", "lime_coalitions",
           "perturbed_scores", "principal_projection", "rise_masks", "shapley_permutations", "superpixels",
           "upsample"]
