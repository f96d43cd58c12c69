"""The model zoo: the study's three Caltech CNNs and the fine-tuned VGG19, torchvision-style.

>>> from interpkit import zoo
>>> zoo.list_models()
['caltech5_arch1', 'caltech5_arch2', 'caltech5_arch3', 'vgg19_caltech5']

Third-party zoos register builders through the ``interpkit_register_models`` plugin hook; a
builder takes ``weights`` and keyword options and may carry its weights enum as ``.weights``.
"""

from __future__ import annotations

from typing import Any, Callable

from torch import nn

from ..errors import PluginError
from ..hookspecs import hookimpl
from ..plugins import registry
from . import caltech_cnn, vgg
from .weights import Weights, WeightsError, WeightsFile


def _with_weights(weights_enum: type[Weights]) -> Callable[[Callable], Callable]:
    def mark(builder: Callable) -> Callable:
        builder.weights = weights_enum  # type: ignore[attr-defined]
        return builder

    return mark


def _resolve(weights_enum: type[Weights], weights: Any) -> Weights | None:
    if weights is None or isinstance(weights, weights_enum):
        return weights
    if isinstance(weights, str):
        try:
            return weights_enum[weights]
        except KeyError:
            options = ", ".join(weights_enum.__members__)
            raise WeightsError(f"unknown weights {weights!r}; choose one of {options}") from None
    raise WeightsError(f"weights must be None, a name or a {weights_enum.__name__} member, not {weights!r}")


def _cnn_builder(name: str) -> Callable[..., nn.Module]:
    weights_enum = caltech_cnn.WEIGHTS[name]

    @_with_weights(weights_enum)
    def builder(weights: Any = None, num_classes: int = 5, dropout: float = 0.5) -> nn.Module:
        chosen = _resolve(weights_enum, weights)
        if chosen is not None:
            num_classes = len(chosen.meta["categories"])
        model = caltech_cnn.build(name, num_classes, dropout)
        if chosen is not None:
            model.load_state_dict(chosen.state_dict())
        return model

    builder.__name__ = name
    builder.__doc__ = f"The study's {name[-5:]} CNN; ``weights='DEFAULT'`` loads the bundled, trained weights."
    return builder


@_with_weights(vgg.Vgg19Caltech5Weights)
def vgg19_caltech5(weights: Any = None, num_classes: int = 5, backbone: Any = vgg.IMAGENET) -> nn.Module:
    """torchvision VGG19, ImageNet weights frozen, a new last layer; ``weights`` loads a trained head.

    ``backbone`` is ``'IMAGENET1K_V1'`` (downloaded once by torchvision), a state-dict file, a
    state dict, or ``None`` for random weights.
    """
    chosen = _resolve(vgg.Vgg19Caltech5Weights, weights)
    if chosen is not None:
        head_state = chosen.state_dict()
        num_classes = head_state["weight"].shape[0]
    model = vgg.build(num_classes, backbone)
    if chosen is not None:
        vgg.head(model).load_state_dict(head_state)
    return model


BUILTIN_MODELS = {name: _cnn_builder(name) for name in caltech_cnn.ARCHITECTURES}
BUILTIN_MODELS["vgg19_caltech5"] = vgg19_caltech5


@hookimpl
def interpkit_register_models(register):
    for name, builder in BUILTIN_MODELS.items():
        register(name, builder)


def list_models() -> list[str]:
    """Names of every registered model, built-in and from plugins."""
    return sorted(registry().entries["models"])


def get_model(name: str, weights: Any = None, **kwargs: Any) -> nn.Module:
    """Build model ``name``; ``weights`` is None (random), ``"DEFAULT"``, a member name or member."""
    return registry().get("models", name)(weights=weights, **kwargs)


def get_weights(name: str) -> Weights:
    """The ``DEFAULT`` weights member of model ``name``."""
    builder = registry().get("models", name)
    weights_enum = getattr(builder, "weights", None)
    if weights_enum is None:
        raise PluginError(f"model '{name}' declares no weights")
    return weights_enum.DEFAULT


__all__ = ["Weights", "WeightsError", "WeightsFile", "get_model", "get_weights", "list_models"]
