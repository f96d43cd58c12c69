"""Layer analysis: results about a model's layers rather than per-target maps.

Feature maps of a batch, exact receptive fields, the layer table, the top patches of every
channel over a whole dataset, and feature visualisation (images optimised to excite units),
each with a typed result.
"""

from .feature_maps import FeatureMapSet, feature_maps
from .layer_table import LayerRow, layer_table
from .objectives import Objective, channel, class_logit, direction, diversity, neuron
from .receptive_field import ReceptiveField, receptive_field
from .top_patches import TopPatches, top_patches
from .views import NO_TRANSFORMS, STANDARD_TRANSFORMS, Transforms
from .visualise import (
    DECORRELATION,
    Visualisation,
    decorrelate_colours,
    frequency_scale,
    pixel_image,
    spectral_image,
    visualise,
)

__all__ = ["DECORRELATION", "FeatureMapSet", "LayerRow", "NO_TRANSFORMS", "Objective", "ReceptiveField",
           "STANDARD_TRANSFORMS", "TopPatches", "Transforms", "Visualisation", "channel", "class_logit",
           "decorrelate_colours", "direction", "diversity", "feature_maps", "frequency_scale", "layer_table", "neuron",
           "pixel_image", "receptive_field", "spectral_image", "top_patches", "visualise"]
