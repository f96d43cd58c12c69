"""The pluggy hook specifications of interpkit.

A plugin module (or object) implements any of these with ``@interpkit.hookimpl`` and is
found through the entry-point group ``interpkit``. Each hook receives ``register``, a function
``register(name, obj)`` that adds ``obj`` under the snake_case ``name``.
"""

from __future__ import annotations

import pluggy

PROJECT = "interpkit"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def interpkit_register_explainers(register):
    """Register explainer classes: ``register("gradcam", GradCAM)``."""


@hookspec
def interpkit_register_models(register):
    """Register model builders: ``register("caltech5_arch1", builder)``."""


@hookspec
def interpkit_register_metrics(register):
    """Register metrics on explanations: ``register("deletion_auc", metric)``."""
