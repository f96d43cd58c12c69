"""interpkit: plugin-based interpretability for any PyTorch model.

>>> from interpkit import GradCAM
>>> explanation = GradCAM(model)(images, target="all")   # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

from .core import Explainer, Explanation, LayerExplainer, Neuron
from .errors import InputError, InterpkitError, LayerError, LayerNotFoundError, PluginError, TargetError
from .core.receptive_field import ReceptiveField, ReceptiveFieldError, receptive_field
from .core.summary import LayerRow, layer_table
from .explainers import (
    Deconvnet, FeatureMaps, FeatureMapSet, GradCAM, GuidedBackprop, GuidedGradCAM, MaxActivatingPatches,
    NoReLUError, PatchExplanation, TopPatches, top_patches,
)
from .hookspecs import hookimpl
from .plugins import registry

__version__ = "0.1.0"

_SUBMODULES = {"cli", "core", "data", "errors", "explainers", "hookspecs", "plugins", "testing", "train", "viz", "zoo"}


def list_explainers() -> list[str]:
    """Names of every registered explainer, built-in and from plugins, sorted."""
    return sorted(registry().entries["explainers"])


def get_explainer(name: str) -> type[Explainer]:
    """The explainer class registered under ``name`` (raises PluginError if unknown)."""
    return registry().get("explainers", name)


def explain(model: Any, inputs: Any, method: str = "gradcam", target: Any = None, **options: Any) -> Any:
    """One-call form: ``get_explainer(method)(model, **options)(inputs, target)``."""
    return get_explainer(method)(model, **options)(inputs, target)


def __getattr__(name: str) -> Any:
    """Explainer classes from plugins are importable by class name: ``from interpkit import X``."""
    if name.startswith("_") or name in _SUBMODULES:  # submodules import themselves; avoid recursion
        raise AttributeError(f"module 'interpkit' has no attribute '{name}'")
    for cls in registry().entries["explainers"].values():
        if getattr(cls, "__name__", None) == name:
            return cls
    raise AttributeError(f"module 'interpkit' has no attribute '{name}'")


__all__ = [
    "Deconvnet", "Explainer", "Explanation", "FeatureMapSet", "FeatureMaps", "GradCAM", "GuidedBackprop",
    "GuidedGradCAM", "InputError", "InterpkitError", "LayerRow", "MaxActivatingPatches", "NoReLUError",
    "PatchExplanation", "layer_table",
    "ReceptiveField", "ReceptiveFieldError", "TopPatches", "receptive_field", "top_patches",
    "LayerError", "LayerExplainer", "LayerNotFoundError", "Neuron", "PluginError", "TargetError",
    "__version__", "explain", "get_explainer", "hookimpl", "list_explainers",
]
