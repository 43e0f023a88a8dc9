"""One plugin manager per App: built-ins first, then entry points (group ``mesh``), then the user's.

Hooks are called through :meth:`PluginManager.call` and :meth:`PluginManager.first`, which name
the plugin and hook in a :class:`~mesh.errors.PluginError` when a plugin raises.
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Callable, Iterable
from importlib.metadata import entry_points
from types import ModuleType
from typing import Any

import pluggy

from mesh import hookspecs
from mesh.components import Registry
from mesh.errors import ConfigError, PluginError

__all__ = ["BUILTIN_PLUGINS", "PluginManager", "Registry"]

log = logging.getLogger("mesh.plugins")

BUILTIN_PLUGINS: tuple[tuple[str, str], ...] = (
    ("tracing", "mesh_plugins.tracing"),
    ("retry", "mesh_plugins.retry"),
    ("deadletter", "mesh_plugins.deadletter"),
    ("metrics", "mesh_plugins.metrics"),
    ("idempotency", "mesh_plugins.idempotency"),
    ("archive", "mesh_plugins.archive"),
)
"""(name, module) of the built-in plugins, registered in this order before any other."""

ENTRY_POINT_GROUP = "mesh"


def disabled_by_env() -> set[str]:
    """Plugin names in ``MESH_DISABLE_PLUGINS`` (comma separated)."""
    return {n.strip() for n in os.environ.get("MESH_DISABLE_PLUGINS", "").split(",") if n.strip()}


class PluginManager:
    """A pluggy manager with the mesh's hookspecs, loading order and error reporting."""

    def __init__(
        self,
        plugins: Iterable[object] = (),
        *,
        disable: Iterable[str] = (),
        entry_points: bool = True,
    ) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self._cache: dict[str, list[tuple[str, Callable[..., Any], frozenset[str]]]] = {}
        self.disabled = set(disable) | disabled_by_env()
        for name, module in BUILTIN_PLUGINS:
            if name not in self.disabled:
                self.pm.register(importlib.import_module(module), name=name)
        if entry_points:
            self._load_entry_points()
        for plugin in plugins:
            self.register(plugin)

    def _load_entry_points(self) -> None:
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            if ep.name in self.disabled or self.pm.has_plugin(ep.name):
                continue
            try:
                plugin = ep.load()
            except Exception as exc:
                raise PluginError(ep.name, "load", exc) from exc
            self.pm.register(plugin, name=ep.name)
        self._cache.clear()

    def register(self, plugin: object, name: str | None = None) -> None:
        """Register a plugin (module, class instance or object with hook functions)."""
        name = name or getattr(plugin, "name", None) or _default_name(plugin)
        if name in self.disabled:
            return
        self.pm.register(plugin, name=name)
        self._cache.clear()

    def disable(self, names: Iterable[str]) -> None:
        """Unregister plugins by name (``plugins.disable`` in the config)."""
        for name in names:
            self.disabled.add(name)
            plugin = self.pm.get_plugin(name)
            if plugin is not None:
                self.pm.unregister(plugin)
        self._cache.clear()

    def check(self) -> None:
        """Fail on a hook implementation whose name matches no hookspec."""
        try:
            self.pm.check_pending()
        except pluggy.PluginValidationError as exc:
            raise ConfigError([("plugins", str(exc))]) from exc

    def names(self) -> list[str]:
        """Registered plugin names, in registration order."""
        return [name for name, _ in self.pm.list_name_plugin()]

    def implementations(self, hook: str) -> list[tuple[str, Callable[..., Any]]]:
        """(plugin name, function) of a hook's implementations, in call order."""
        return [(plugin, function) for plugin, function, _ in self._impls(hook)]

    def _impls(self, hook: str) -> list[tuple[str, Callable[..., Any], frozenset[str]]]:
        impls = self._cache.get(hook)
        if impls is None:
            caller = getattr(self.pm.hook, hook)
            impls = [
                (impl.plugin_name, impl.function, frozenset(impl.argnames)) for impl in reversed(caller.get_hookimpls())
            ]
            self._cache[hook] = impls
        return impls

    def call(self, hook: str, **kwargs: Any) -> list[Any]:
        """Call every implementation; the non-``None`` results in call order."""
        results = []
        for plugin, function, names in self._impls(hook):
            try:
                result = function(**{k: v for k, v in kwargs.items() if k in names})
            except ConfigError:
                raise  # a plugin's own settings are wrong: report them as config problems
            except Exception as exc:
                raise PluginError(plugin, hook, exc) from exc
            if result is not None:
                results.append(result)
        return results

    def first(self, hook: str, **kwargs: Any) -> Any:
        """Call implementations in order until one returns something other than ``None``."""
        for plugin, function, names in self._impls(hook):
            try:
                result = function(**{k: v for k, v in kwargs.items() if k in names})
            except ConfigError:
                raise
            except Exception as exc:
                raise PluginError(plugin, hook, exc) from exc
            if result is not None:
                return result
        return None


def _default_name(plugin: object) -> str:
    if isinstance(plugin, ModuleType):
        return plugin.__name__
    return f"{type(plugin).__module__}.{type(plugin).__qualname__}"
