"""One plugin manager per App: built-ins first, then entry points (group ``mesh``), then the user's.

The core calls hooks through :class:`Hooks`, one typed method per hook (as tox's plugin manager
does), so every call site is checked by mypy and returns what the hook's spec says. Under it,
implementations are looked up once per hook and cached (the hot path calls plain functions);
a plugin that raises is named with the hook in a :class:`~mesh.errors.PluginError`.
Implementations in pluggy's ``hookwrapper``/``wrapper`` style are refused at registration: mesh
hooks return values and layers, and a generator would be returned unrun.
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Callable, Iterable
from importlib.metadata import entry_points
from types import ModuleType
from typing import TYPE_CHECKING, Any, cast

import pluggy

from mesh.components import Registry
from mesh.errors import ConfigError, PluginError
from mesh.hooks import spec as hookspecs

if TYPE_CHECKING:
    import click

    from mesh.config import MeshConfig
    from mesh.event import Event, ExtensionValue
    from mesh.runtime import Runtime
    from mesh.types import Context, Decision, HandlerLayer, InvokeLayer, PublishLayer, SubscriptionInfo

__all__ = ["BUILTIN_PLUGINS", "Hooks", "PluginManager", "Registry"]

log = logging.getLogger("mesh.plugins")

BUILTIN_PLUGINS: tuple[tuple[str, str], ...] = (
    ("tracing", "mesh_plugins.tracing"),
    ("retry", "mesh_plugins.retry"),
    ("deadletter", "mesh_plugins.deadletter"),
    ("metrics", "mesh_plugins.metrics"),
    ("idempotency", "mesh_plugins.idempotency"),
    ("archive", "mesh_plugins.archive"),
    ("signing", "mesh_plugins.signing"),
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
                self._register(importlib.import_module(module), name)
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
            self._register(plugin, ep.name)
        self._cache.clear()

    def register(self, plugin: object, name: str | None = None) -> None:
        """Register a plugin (module, class instance or object with hook functions)."""
        name = name or getattr(plugin, "name", None) or _default_name(plugin)
        if name in self.disabled:
            return
        self._register(plugin, name)
        self._cache.clear()

    def _register(self, plugin: object, name: str) -> None:
        self.pm.register(plugin, name=name)
        for impl in self.pm.get_hookcallers(plugin) or []:
            for hookimpl in impl.get_hookimpls():
                if hookimpl.plugin is plugin and (hookimpl.hookwrapper or hookimpl.wrapper):
                    self.pm.unregister(plugin)
                    raise ConfigError(
                        [
                            (
                                "plugins",
                                f"plugin {name!r} implements {impl.name} as a hook wrapper: mesh hooks return "
                                "values and layers, not generators (return a layer from mesh_handler_layers, "
                                "mesh_delivery_layers or mesh_publish_layers to run code around the next step)",
                            )
                        ]
                    )

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

    def call(self, hook: str, **kwargs: Any) -> list[Any]:  # the typed methods of Hooks call this
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


class Hooks:
    """The core's typed door to the plugins: one method per hook of :mod:`mesh.hooks.spec`.

    Collect-all hooks return the non-``None`` results in call order; ``firstresult`` hooks the
    first non-``None`` answer. ``has_*`` properties tell whether any plugin implements a hook
    that sits on the hot path, so the core can skip it entirely.
    """

    __slots__ = ("plugins",)

    def __init__(self, plugins: PluginManager) -> None:
        self.plugins = plugins

    def implements(self, hook: str) -> bool:
        """Whether any registered plugin implements ``hook``."""
        return bool(self.plugins.implementations(hook))

    # -- lifecycle -----------------------------------------------------------------------------

    def register_components(self, registry: Registry) -> None:
        """``mesh_register_components``."""
        self.plugins.call("mesh_register_components", registry=registry)

    def configure(self, runtime: Runtime, config: MeshConfig) -> None:
        """``mesh_configure``."""
        self.plugins.call("mesh_configure", runtime=runtime, config=config)

    def register_commands(self, cli: click.Group) -> None:
        """``mesh_register_commands``."""
        self.plugins.call("mesh_register_commands", cli=cli)

    def app_started(self, runtime: Runtime) -> None:
        """``mesh_app_started``."""
        self.plugins.call("mesh_app_started", runtime=runtime)

    def app_stopping(self, runtime: Runtime) -> None:
        """``mesh_app_stopping``."""
        self.plugins.call("mesh_app_stopping", runtime=runtime)

    # -- publishing ----------------------------------------------------------------------------

    def publish_attributes(self, runtime: Runtime, topic: str, event: Event) -> list[dict[str, ExtensionValue]]:
        """``mesh_publish_attributes``: every plugin's attributes, in call order."""
        return self.plugins.call("mesh_publish_attributes", runtime=runtime, topic=topic, event=event)

    def publish_layers(self, runtime: Runtime) -> list[PublishLayer]:
        """``mesh_publish_layers``: outermost first."""
        return self.plugins.call("mesh_publish_layers", runtime=runtime)

    # -- delivery ------------------------------------------------------------------------------

    def handler_layers(self, runtime: Runtime, subscription: SubscriptionInfo) -> list[HandlerLayer]:
        """``mesh_handler_layers``: outermost first."""
        return self.plugins.call("mesh_handler_layers", runtime=runtime, subscription=subscription)

    def delivery_layers(self, runtime: Runtime, subscription: SubscriptionInfo) -> list[HandlerLayer]:
        """``mesh_delivery_layers``: outermost first."""
        return self.plugins.call("mesh_delivery_layers", runtime=runtime, subscription=subscription)

    def retry_decision(self, context: Context, error: BaseException) -> Decision | None:
        """``mesh_retry_decision`` (firstresult)."""
        return cast("Decision | None", self.plugins.first("mesh_retry_decision", context=context, error=error))

    def dead_letter_target(self, context: Context, error: BaseException | None) -> str | None:
        """``mesh_dead_letter_target`` (firstresult)."""
        return cast("str | None", self.plugins.first("mesh_dead_letter_target", context=context, error=error))

    def dead_letter_event(self, context: Context, error: BaseException | None, target: str) -> Event | None:
        """``mesh_dead_letter_event`` (firstresult)."""
        return cast(
            "Event | None",
            self.plugins.first("mesh_dead_letter_event", context=context, error=error, target=target),
        )

    def delivery_outcome(self, context: Context, outcome: str, error: BaseException | None) -> None:
        """``mesh_delivery_outcome``."""
        self.plugins.call("mesh_delivery_outcome", context=context, outcome=outcome, error=error)

    def event_dead_lettered(self, context: Context, event: Event, target: str) -> None:
        """``mesh_event_dead_lettered``."""
        self.plugins.call("mesh_event_dead_lettered", context=context, event=event, target=target)

    # -- invocation ----------------------------------------------------------------------------

    def invoke_layers(self, runtime: Runtime) -> list[InvokeLayer]:
        """``mesh_invoke_layers``: outermost first."""
        return self.plugins.call("mesh_invoke_layers", runtime=runtime)

    def invocation_outcome(
        self, runtime: Runtime, side: str, method: str, peer: str, outcome: str, error: BaseException | None
    ) -> None:
        """``mesh_invocation_outcome``."""
        self.plugins.call(
            "mesh_invocation_outcome",
            runtime=runtime,
            side=side,
            method=method,
            peer=peer,
            outcome=outcome,
            error=error,
        )


def _default_name(plugin: object) -> str:
    if isinstance(plugin, ModuleType):
        return plugin.__name__
    return f"{type(plugin).__module__}.{type(plugin).__qualname__}"
