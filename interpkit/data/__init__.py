"""Bundled images and dataset loaders."""

from .datasets import (
    ImageDataset,
    SplitSizes,
    bundled_root,
    caltech5,
    caltech101_categories,
    image_folder,
    torchvision_caltech101,
)
from .images import read_image
from .transforms import IMAGENET_MEAN, IMAGENET_STD, ImageTransform

__all__ = [
    "IMAGENET_MEAN", "IMAGENET_STD", "ImageDataset", "ImageTransform", "SplitSizes", "bundled_root", "caltech5",
    "caltech101_categories",
    "image_folder", "read_image", "torchvision_caltech101",
]
