"""interpkit: plugin-based interpretability for any PyTorch model.

An explainer wraps a model and is called on a batch: ``GradCAM(model)(images, target="all")``
returns an ``Explanation`` with one map per image and class.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

from .analysis import (
    FeatureMapSet,
    LayerRow,
    ReceptiveField,
    TopPatches,
    Visualisation,
    feature_maps,
    layer_table,
    receptive_field,
    top_patches,
    visualise,
)
from .core import ChannelsFirst, ChannelsLast, Explainer, Explanation, LayerExplainer, MapKind, Neuron, TokenGrid, provide_display
from .dataset import MapStore, explain_dataset, read_store
from .errors import (
    ForwardError,
    InputError,
    InterpkitError,
    LayerError,
    LayerNotFoundError,
    ModelChangedError,
    NoReLUError,
    PluginError,
    ReceptiveFieldError,
    SamplingWarning,
    TargetError,
    UncoveredNonlinearityError,
    WeightsError,
)
from .explainers import (
    Deconvnet,
    GradCAM,
    GuidedBackprop,
    GuidedGradCAM,
    MaxActivatingPatches,
    MultiLayerExplanation,
    PatchExplanation,
)
from .registry import (
    explain,
    get_explainer,
    get_metric,
    get_model,
    get_weights,
    list_explainers,
    list_metrics,
    list_models,
)
from .registry import registry as _registry
from .registry.hookspecs import hookimpl
from .version import __version__

# core knows no pixels: the package above it tells Explanation.overlay/save where they are made
provide_display(lambda: importlib.import_module(f"{__name__}.viz"))

# every submodule, read from the package itself so that the list cannot drift
_SUBMODULES = {found.name for found in pkgutil.iter_modules(__path__)}


def __getattr__(name: str) -> Any:
    """Explainer classes from plugins are importable by class name: ``from interpkit import X``."""
    if name in _SUBMODULES:  # not imported yet: import it, as ``import interpkit.name`` would
        return importlib.import_module(f"{__name__}.{name}")
    if name == "view":  # the viewer draws with OpenCV: imported when first asked for
        return importlib.import_module(f"{__name__}.viewer").view
    if name.startswith("_"):
        raise AttributeError(f"module 'interpkit' has no attribute '{name}'")
    for cls in _registry().entries["explainers"].values():
        if cls.__name__ == name:
            return cls
    raise AttributeError(f"module 'interpkit' has no attribute '{name}'")


__all__ = [
    "ChannelsFirst", "ChannelsLast", "MultiLayerExplanation", "TokenGrid", "Deconvnet", "Explainer", "Explanation",
    "FeatureMapSet", "GradCAM", "GuidedBackprop", "GuidedGradCAM",
    "ForwardError", "InputError", "InterpkitError", "LayerError", "LayerExplainer", "LayerNotFoundError", "LayerRow",
    "MapKind", "ModelChangedError",
    "MaxActivatingPatches", "Neuron", "NoReLUError", "PatchExplanation", "PluginError", "ReceptiveField",
    "ReceptiveFieldError", "SamplingWarning", "TargetError", "TopPatches", "UncoveredNonlinearityError", "WeightsError",
    "__version__",
    "MapStore", "explain", "explain_dataset", "feature_maps", "read_store",
    "get_explainer", "get_metric", "get_model", "get_weights", "hookimpl", "layer_table", "list_explainers",
    "list_metrics", "list_models", "receptive_field", "top_patches", "Visualisation", "view", "visualise",
]
