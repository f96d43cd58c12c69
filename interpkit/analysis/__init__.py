"""Layer analysis: results about a model's layers rather than per-target maps.

Feature maps of a batch, exact receptive fields, the layer table, and the top patches of every
channel over a whole dataset, each with a typed result.
"""

from .feature_maps import FeatureMapSet, feature_maps
from .layer_table import LayerRow, layer_table
from .receptive_field import ReceptiveField, receptive_field
from .top_patches import TopPatches, top_patches

__all__ = ["FeatureMapSet", "LayerRow", "ReceptiveField", "TopPatches", "feature_maps", "layer_table",
           "receptive_field", "top_patches"]
