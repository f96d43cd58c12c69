"""The one exception hierarchy of interpkit.

Every error a user can cause raises a subclass of :class:`InterpkitError` whose message says
what was wrong and what to do. Each also derives from the closest built-in exception, so code
that already catches ``ValueError`` or ``KeyError`` keeps working.
"""

from __future__ import annotations


class InterpkitError(Exception):
    """Base class of every error interpkit raises on bad input."""


class InputError(InterpkitError, ValueError):
    """The inputs (images, model, options) are not what the call accepts."""


class LayerError(InterpkitError, ValueError):
    """The chosen layer cannot be used by this method (for example it has no spatial output)."""


class LayerNotFoundError(LayerError, LookupError):
    """A layer name or module is not part of the model."""

    def __str__(self) -> str:  # LookupError would quote the message like a key
        return str(self.args[0]) if self.args else ""


class TargetError(InterpkitError, ValueError):
    """The target does not fit the model output or the batch."""


class PluginError(InterpkitError, LookupError):
    """A plugin or a registered name is missing, broken or taken twice."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""
