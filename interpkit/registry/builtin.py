"""The built-in plugin: interpkit's own explainers, models and metrics, registered through the same hooks
as any third-party distribution. The registry loads it by its module path before the entry points."""

from __future__ import annotations

from ..explainers import (
    LIME,
    LRP,
    RISE,
    Deconvnet,
    DeepLift,
    DeepLiftShap,
    FeatureAblation,
    GradCAM,
    GradientShap,
    GuidedBackprop,
    GuidedGradCAM,
    InputXGradient,
    KernelSHAP,
    MaxActivatingPatches,
    Occlusion,
    Saliency,
    ShapleyValueSampling,
)
from ..metrics import BUILTIN_CHECKS, BUILTIN_METRICS
from ..zoo import BUILTIN_MODELS
from .hookspecs import hookimpl


@hookimpl
def interpkit_register_explainers(register):
    for cls in (GradCAM, GuidedBackprop, Deconvnet, GuidedGradCAM, MaxActivatingPatches, Occlusion, RISE, FeatureAblation,
                ShapleyValueSampling, KernelSHAP, LIME, Saliency, InputXGradient, GradientShap, DeepLift, DeepLiftShap, LRP):
        register(cls)


@hookimpl
def interpkit_register_models(register):
    for builder in BUILTIN_MODELS:
        register(builder)


@hookimpl
def interpkit_register_metrics(register):
    for metric in BUILTIN_METRICS + BUILTIN_CHECKS:
        register(metric)
