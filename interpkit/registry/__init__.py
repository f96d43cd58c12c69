"""The one registry: plugin discovery, registration and every lookup by name.

The built-in plugin modules (``BUILTIN_PLUGINS``, by module path) register first, then every
entry point of the group ``interpkit``. Each plugin is loaded and asked to register in
isolation: one that fails to import (even by calling ``sys.exit``), raises while registering,
registers something of the wrong kind or takes a used name is skipped with a warning naming
its distribution and the cause, and everything else loads. Setting
``INTERPKIT_DISABLE_PLUGIN_AUTOLOAD=1`` turns entry-point loading off.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import os
import re
import warnings
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, Callable

import pluggy
import torch

from ..core import Explainer, Explanation, TargetLike
from ..errors import InputError, PluginError, PluginWarning
from . import hookspecs

KINDS = ("explainers", "models", "metrics")
BUILTIN_PLUGINS = ("interpkit.registry.builtin",)
NAME = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclass
class Registry:
    """Everything the plugins registered, by kind and name, with who registered it."""

    entries: dict[str, dict[str, Any]] = field(default_factory=lambda: {kind: {} for kind in KINDS})
    sources: dict[str, dict[str, str]] = field(default_factory=lambda: {kind: {} for kind in KINDS})
    failures: list[tuple[str, str]] = field(default_factory=list)
    plugins: list[str] = field(default_factory=list)
    manager: pluggy.PluginManager = field(default_factory=lambda: _manager(), repr=False)

    def names(self, kind: str) -> list[str]:
        """The registered names of one kind, sorted."""
        return sorted(self.entries[kind])

    def get(self, kind: str, name: str) -> Any:
        """The object registered under ``name``; a PluginError with close names otherwise."""
        table = self.entries[kind]
        if not isinstance(name, str):
            raise PluginError(f"a {kind[:-1]} is named by a string, not {name!r:.60}")
        if name in table:
            return table[name]
        close = difflib.get_close_matches(str(name), list(table), n=3, cutoff=0.6)
        hint = f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""
        known = ", ".join(sorted(table)) or "none"
        raise PluginError(f"no {kind[:-1]} named {name!r}{hint}; registered {kind}: {known}")


_registry: Registry | None = None


def registry() -> Registry:
    """The registry, built on first use."""
    global _registry
    if _registry is None:
        _registry = load()
        _warn(_registry)
    return _registry


def reload() -> Registry:
    """Discover plugins again (after installing one in a running process, or in tests)."""
    global _registry
    _registry = load()
    _warn(_registry)
    return _registry


def register_plugin(plugin: Any, source: str = "registered in this process") -> None:
    """Register a plugin module or object in the running registry, without an entry point (a
    notebook, a test): all of its registrations are committed, or none and a PluginError says why."""
    current = registry()
    failures = len(current.failures)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PluginWarning)
        _register_plugin(current, plugin, source)
    if len(current.failures) > failures:
        raise PluginError(f"plugin {source} {current.failures.pop()[1]}")


def _manager() -> pluggy.PluginManager:
    manager = pluggy.PluginManager(hookspecs.PROJECT)
    manager.add_hookspecs(hookspecs)
    return manager


def load() -> Registry:
    """A new registry: the built-in plugins, then every entry point unless autoload is off."""
    result = Registry()
    for path in BUILTIN_PLUGINS:
        _register_plugin(result, importlib.import_module(path), f"interpkit (built-in {path})")
    if os.environ.get("INTERPKIT_DISABLE_PLUGIN_AUTOLOAD", "").strip() not in ("", "0"):
        return result
    for entry in sorted(entry_points(group=hookspecs.PROJECT), key=lambda e: e.name):
        source = _distribution(entry)
        try:
            plugin = entry.load()
        except (Exception, SystemExit) as error:  # a broken plugin must not break the library
            _fail(result, source, f"failed to import ({type(error).__name__}: {error})")
            continue
        _register_plugin(result, plugin, source)
    return result


def _register_plugin(result: Registry, plugin: Any, source: str) -> None:
    """Collect the plugin's registrations into a staging area; commit them only if all succeed."""
    staged: dict[str, dict[str, Any]] = {kind: {} for kind in KINDS}
    manager = result.manager
    try:
        manager.register(plugin, name=f"{source} ({id(plugin):#x})")  # two plugins may share a source
        manager.check_pending()  # a misspelt hook (interpkit_register_explainer) is an error, not ignored
        for kind in KINDS:
            caller = getattr(manager.hook, f"interpkit_register_{kind}")
            for impl in caller.get_hookimpls():
                if impl.plugin is plugin:
                    impl.function(register=_stager(kind, staged[kind], result, source))
    except (Exception, SystemExit) as error:
        if manager.is_registered(plugin):
            manager.unregister(plugin)
        _fail(result, source, f"raised while registering ({type(error).__name__}: {error})")
        return
    for kind in KINDS:
        result.entries[kind].update(staged[kind])
        result.sources[kind].update({name: source for name in staged[kind]})
    result.plugins.append(source)


def _stager(kind: str, staged: dict[str, Any], result: Registry, source: str) -> Callable[[Any], None]:
    def register(obj: Any) -> None:
        name = _registered_name(kind, obj)
        if name in result.entries[kind] or name in staged:
            owner = result.sources[kind].get(name, source)
            raise PluginError(f"{kind[:-1]} name '{name}' is already registered by {owner}")
        staged[name] = obj

    return register


def _registered_name(kind: str, obj: Any) -> str:
    """The name ``obj`` is filed under, after checking it is something of that kind."""
    if kind == "explainers":
        if not (inspect.isclass(obj) and issubclass(obj, Explainer)):
            raise PluginError(f"register() takes an interpkit.core.Explainer subclass, not {obj!r}")
        name = obj.name
    elif kind == "models":
        if not inspect.isfunction(obj) or "weights" not in inspect.signature(obj).parameters:
            raise PluginError(f"register() takes a model builder function def name(*, weights=None, ...), "
                              f"not {obj!r}")
        name = obj.__name__
    else:
        if not callable(obj) or not isinstance(getattr(obj, "name", None), str):
            raise PluginError(f"register() takes a metric (an interpkit.metrics.Metric subclass, or a callable with "
                              f"a 'name'), not {obj!r}")
        name = obj.name
    if not isinstance(name, str) or not NAME.match(name):
        raise PluginError(f"{kind[:-1]} name {name!r} of {obj!r} is not snake_case")
    return name


def _fail(result: Registry, source: str, reason: str) -> None:
    result.failures.append((source, reason))


def _warn(result: Registry) -> None:
    """Each skipped plugin, said once the registry is in place: where warnings are errors (pytest's
    ``filterwarnings = error``) the first lookup raises the warning, and the next ones work."""
    for source, reason in result.failures:
        warnings.warn(f"interpkit plugin {source} skipped: {reason}", PluginWarning, stacklevel=4)


def _distribution(entry: Any) -> str:
    dist = getattr(entry, "dist", None)
    label = f"{dist.name} {dist.version}" if dist is not None else "unknown distribution"
    return f"'{entry.name}' from {label}"


def list_explainers() -> list[str]:
    """Names of every registered explainer, built-in and from plugins, sorted."""
    return registry().names("explainers")


def get_explainer(name: str) -> type[Explainer]:
    """The explainer class registered under ``name`` (PluginError, with close names, if unknown)."""
    return registry().get("explainers", name)


def explain(model: torch.nn.Module, inputs: torch.Tensor, method: str = "gradcam", target: TargetLike = None,
            **options: Any) -> Explanation:
    """One-call form: ``get_explainer(method)(model, **options)(inputs, target)``."""
    return get_explainer(method)(model, **options)(inputs, target)


def list_models() -> list[str]:
    """Names of every registered model, built-in and from plugins, sorted."""
    return registry().names("models")


def get_model(name: str, weights: Any = None, **kwargs: Any) -> torch.nn.Module:
    """Build model ``name``; ``weights`` is None (random), ``"DEFAULT"``, a member name or member."""
    builder = registry().get("models", name)
    try:
        inspect.signature(builder).bind(weights=weights, **kwargs)
    except TypeError as error:
        raise InputError(f"model '{name}' takes no such option ({error}); its options: "
                         f"{', '.join(inspect.signature(builder).parameters)}") from None
    return builder(weights=weights, **kwargs)


def get_weights(name: str) -> Any:
    """The ``DEFAULT`` member of model ``name``'s weights enum."""
    weights_enum = getattr(registry().get("models", name), "weights", None)
    if weights_enum is None:
        raise PluginError(f"model '{name}' declares no weights")
    return weights_enum.DEFAULT


def list_metrics() -> list[str]:
    """Names of every registered metric, sorted."""
    return registry().names("metrics")


def get_metric(name: str) -> Any:
    """The metric registered under ``name``."""
    return registry().get("metrics", name)
