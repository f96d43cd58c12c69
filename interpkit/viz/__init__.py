"""The one place where tensors become pixels: colormaps, overlays, PNG files and figures."""

from .images import COLORMAPS, colorize, gradient_images, overlay_maps, save_maps, to_uint8_images
from .figures import plot_confusion, plot_feature_maps, plot_patch, plot_image_grid

__all__ = ["COLORMAPS", "colorize", "gradient_images", "overlay_maps", "plot_confusion", "plot_feature_maps", "plot_patch", "plot_image_grid", "save_maps", "to_uint8_images"]
