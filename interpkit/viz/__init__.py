"""The one place where tensors become pixels: colormaps, overlays, PNG files and figures."""

from .figures import (
    NeuronPanel,
    plot_confusion,
    plot_contact_sheet,
    plot_feature_maps,
    plot_image_grid,
    plot_metric_curves,
    plot_neuron_gradients,
    plot_patch,
    plot_signal_map,
    plot_top_patches,
    save_visualisation,
)
from .images import (
    COLORMAPS,
    STRIP_HEIGHT,
    colorize,
    gradient_images,
    montage,
    overlay_maps,
    save_maps,
    to_uint8_images,
    write_png,
)

__all__ = [
    "COLORMAPS", "NeuronPanel", "STRIP_HEIGHT", "colorize", "gradient_images", "montage", "overlay_maps",
    "plot_confusion", "plot_contact_sheet", "plot_feature_maps", "plot_image_grid", "plot_metric_curves", "plot_neuron_gradients",
    "plot_patch", "plot_signal_map", "plot_top_patches", "save_maps", "save_visualisation", "to_uint8_images", "write_png",
]
