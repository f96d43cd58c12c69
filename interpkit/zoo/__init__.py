"""The model zoo: the study's three Caltech CNNs, the fine-tuned VGG19 and its offline stand-in
(VGG19's layout at 1/8 width, transfer-learned from Caltech-101's other categories), torchvision-style.

Each model is a builder function, ``caltech5_arch1(*, weights=None, **kwargs)``, marked with its
weights enum (``caltech5_arch1.weights``). Look models up by name with
``interpkit.get_model(name, weights="DEFAULT")``; third-party zoos register builders through the
``interpkit_register_models`` plugin hook.
"""

from .caltech_cnn import (
    Caltech5Arch1Weights,
    Caltech5Arch2Weights,
    Caltech5Arch3Weights,
    CaltechCNN,
    caltech5_arch1,
    caltech5_arch2,
    caltech5_arch3,
)
from .vgg import Vgg19Caltech5Weights, vgg19_caltech5
from .vgg_slim import Vgg19SlimCaltech5Weights, slim_vgg19, vgg19_slim_caltech5
from .weights import Weights, WeightsFile, sha256_file, with_weights

BUILTIN_MODELS = (caltech5_arch1, caltech5_arch2, caltech5_arch3, vgg19_caltech5, vgg19_slim_caltech5)

__all__ = [
    "BUILTIN_MODELS", "Caltech5Arch1Weights", "Caltech5Arch2Weights", "Caltech5Arch3Weights", "CaltechCNN",
    "Vgg19Caltech5Weights", "Vgg19SlimCaltech5Weights", "Weights", "WeightsFile", "caltech5_arch1", "caltech5_arch2",
    "caltech5_arch3", "sha256_file", "slim_vgg19", "vgg19_caltech5", "vgg19_slim_caltech5", "with_weights",
]
