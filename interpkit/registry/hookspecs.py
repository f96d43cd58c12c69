"""The pluggy hook specifications of interpkit.

A plugin module (or object) implements any of these with ``@interpkit.hookimpl`` and is
found through the entry-point group ``interpkit``. Each hook receives ``register``, a function
``register(obj)`` that files ``obj`` under its snake_case name: an explainer class's ``name``,
a model builder's function name, a metric's ``name``.
"""

from __future__ import annotations

import pluggy

PROJECT = "interpkit"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def interpkit_register_explainers(register):
    """Register explainer classes (subclasses of ``interpkit.core.Explainer``): ``register(GradCAM)``."""


@hookspec
def interpkit_register_models(register):
    """Register model builders ``def name(*, weights=None, **kwargs)``: ``register(caltech5_arch1)``."""


@hookspec
def interpkit_register_metrics(register):
    """Register metrics on explanations (objects with a snake_case ``name``): ``register(Deletion)``."""
