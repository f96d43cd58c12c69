"""The built-in explainers, registered through the same hook as third-party plugins."""

from ..hookspecs import hookimpl
from .feature_maps import FeatureMaps, FeatureMapSet
from .gradcam import GradCAM
from .guided_backprop import Deconvnet, GuidedBackprop, NoReLUError
from .guided_gradcam import GuidedGradCAM
from .patches import MaxActivatingPatches, PatchExplanation
from .top_patches import TopPatches, top_patches

BUILTIN_EXPLAINERS = {cls.name: cls for cls in (GradCAM, FeatureMaps, GuidedBackprop, Deconvnet, GuidedGradCAM, MaxActivatingPatches)}


@hookimpl
def interpkit_register_explainers(register):
    for name, cls in BUILTIN_EXPLAINERS.items():
        register(name, cls)


__all__ = ["Deconvnet", "FeatureMapSet", "FeatureMaps", "GradCAM", "GuidedBackprop", "GuidedGradCAM", "MaxActivatingPatches",
           "NoReLUError", "PatchExplanation", "TopPatches", "top_patches"]
