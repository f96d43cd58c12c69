"""Plugin manager: built-in plugins first, then every entry point of the group ``interpkit``.

Each entry point is loaded and asked to register in isolation: one that fails to import,
raises while registering, or registers a name already taken is skipped with a warning naming
its distribution and the cause, and everything else loads. Setting the environment variable
``INTERPKIT_DISABLE_PLUGIN_AUTOLOAD=1`` turns entry-point loading off.
"""

from __future__ import annotations

import os
import re
import warnings
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any

import pluggy

from . import hookspecs
from .errors import PluginError

KINDS = ("explainers", "models", "metrics")
NAME = re.compile(r"^[a-z][a-z0-9_]*$")


class PluginWarning(UserWarning):
    """A plugin was skipped; the message names it and says why."""


@dataclass
class Registry:
    """Everything the plugins registered, by kind and name, with who registered it."""

    entries: dict[str, dict[str, Any]] = field(default_factory=lambda: {kind: {} for kind in KINDS})
    sources: dict[str, dict[str, str]] = field(default_factory=lambda: {kind: {} for kind in KINDS})
    failures: list[tuple[str, str]] = field(default_factory=list)
    plugins: list[str] = field(default_factory=list)

    def get(self, kind: str, name: str) -> Any:
        table = self.entries[kind]
        if name not in table:
            known = ", ".join(sorted(table)) or "none"
            raise PluginError(f"no {kind[:-1]} named '{name}'; registered {kind}: {known}")
        return table[name]


_registry: Registry | None = None


def registry() -> Registry:
    """The registry, built on first use."""
    global _registry
    if _registry is None:
        _registry = load()
    return _registry


def reload() -> Registry:
    """Discover plugins again (after installing one in a running process, or in tests)."""
    global _registry
    _registry = load()
    return _registry


def load() -> Registry:
    manager = pluggy.PluginManager(hookspecs.PROJECT)
    manager.add_hookspecs(hookspecs)
    result = Registry()
    for plugin in _builtin_plugins():
        _register_plugin(manager, result, plugin, f"interpkit (built-in {plugin.__name__})")
    if os.environ.get("INTERPKIT_DISABLE_PLUGIN_AUTOLOAD", "").strip() not in ("", "0"):
        return result
    for entry in sorted(entry_points(group=hookspecs.PROJECT), key=lambda e: e.name):
        source = _distribution(entry)
        try:
            plugin = entry.load()
        except Exception as error:  # a broken plugin must not break the library
            _fail(result, source, f"failed to import ({type(error).__name__}: {error})")
            continue
        _register_plugin(manager, result, plugin, source)
    return result


def _builtin_plugins() -> list[Any]:
    from . import explainers, zoo

    return [explainers, zoo]


def _register_plugin(manager: pluggy.PluginManager, result: Registry, plugin: Any, source: str) -> None:
    """Collect the plugin's registrations into a staging area; commit them only if all succeed."""
    staged: dict[str, dict[str, Any]] = {kind: {} for kind in KINDS}
    try:
        manager.register(plugin, name=source)
        for kind in KINDS:
            caller = getattr(manager.hook, f"interpkit_register_{kind}")
            for impl in caller.get_hookimpls():
                if impl.plugin is plugin:
                    impl.function(register=_stager(kind, staged[kind], result, source))
    except Exception as error:
        if manager.is_registered(plugin):
            manager.unregister(plugin)
        _fail(result, source, f"raised while registering ({type(error).__name__}: {error})")
        return
    for kind in KINDS:
        result.entries[kind].update(staged[kind])
        result.sources[kind].update({name: source for name in staged[kind]})
    result.plugins.append(source)


def _stager(kind: str, staged: dict[str, Any], result: Registry, source: str):
    def register(name: str, obj: Any) -> None:
        if not isinstance(name, str) or not NAME.match(name):
            raise PluginError(f"{kind[:-1]} name {name!r} is not snake_case")
        if name in result.entries[kind] or name in staged:
            owner = result.sources[kind].get(name, source)
            raise PluginError(f"{kind[:-1]} name '{name}' is already registered by {owner}")
        staged[name] = obj

    return register


def _fail(result: Registry, source: str, reason: str) -> None:
    result.failures.append((source, reason))
    warnings.warn(f"interpkit plugin {source} skipped: {reason}", PluginWarning, stacklevel=3)


def _distribution(entry: Any) -> str:
    dist = getattr(entry, "dist", None)
    label = f"{dist.name} {dist.version}" if dist is not None else "unknown distribution"
    return f"'{entry.name}' from {label}"
