"""The one exception hierarchy of interpkit.

Every error a user can cause raises a subclass of ``InterpkitError`` whose message says
what was wrong and what to do. Each also derives from the closest built-in exception, so code
that already catches ``ValueError`` or ``KeyError`` keeps working.
"""

from __future__ import annotations


class InterpkitError(Exception):
    """Base class of every error interpkit raises on bad input."""


class _PlainMessage:
    """LookupError subclasses would quote their message like a key; show it as written."""

    def __str__(self) -> str:
        args = getattr(self, "args", ())
        return str(args[0]) if args else ""


class InputError(InterpkitError, ValueError):
    """The inputs (images, model, options) are not what the call accepts."""


class ForwardError(InputError):
    """The model's own forward failed on the inputs it was given, or gave no row per sample."""


class WeightsError(InputError):
    """Weights are missing, corrupt or do not fit the model."""


class LayerError(InterpkitError, ValueError):
    """The chosen layer cannot be used by this method (for example it has no spatial output)."""


class LayerNotFoundError(_PlainMessage, LayerError, LookupError):
    """A layer name or module is not part of the model."""


class TargetError(InterpkitError, ValueError):
    """The target does not fit the model output or the batch."""


class NoReLUError(InterpkitError, ValueError):
    """The forward evaluated no ReLU, so a ReLU backward rule would change nothing."""


class UncoveredNonlinearityError(InterpkitError, ValueError):
    """A backward rule defined for ReLUs met other nonlinearities in the forward (strict mode)."""


class ReceptiveFieldError(InterpkitError, ValueError):
    """The receptive field cannot be traced exactly through the model's ops."""


class ModelChangedError(InterpkitError, RuntimeError):
    """A tensor of the model was written during an explanation where interpkit could not guard it."""


class PluginError(_PlainMessage, InterpkitError, LookupError):
    """A plugin or a registered name is missing, broken or taken twice."""


class VectorizationWarning(RuntimeWarning):
    """A computation fell back from one vectorised pass to a loop; the result is the same, slower."""


class LocalisationWarning(UserWarning):
    """A layer's grid has a single position at this input size: its maps are constant."""


class SamplingWarning(UserWarning):
    """A sampled estimate drew too few samples to be determined; the result is a fallback."""


class PluginWarning(UserWarning):
    """A plugin was skipped; the message names it and says why."""


__all__ = ["ForwardError", "InputError", "InterpkitError", "LayerError", "LayerNotFoundError", "LocalisationWarning",
           "ModelChangedError",
           "NoReLUError", "PluginError", "PluginWarning", "ReceptiveFieldError", "SamplingWarning", "TargetError",
           "UncoveredNonlinearityError",
           "VectorizationWarning", "WeightsError"]
