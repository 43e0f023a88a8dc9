"""One registry for every pluggable backend: brokers, state stores, secret stores, bindings.

Every kind is registered the same way: a :class:`ComponentInfo` names the ``type`` used in
``mesh.yaml``, the class to build (imported on first use, so ``import mesh`` loads no client
library), the pydantic model of its options, and the extra to install when its client library is
missing. Brokers carry a little more (:class:`BrokerInfo`: wire binding, OpenTelemetry messaging
system). Built-ins and plugins use the same door: a plugin's ``mesh_register_components(registry)``
calls :meth:`Registry.add`, and config validation then accepts its ``type`` like a built-in one.

======================  ==================================  =============================
kind                    built-ins                           config section
======================  ==================================  =============================
``broker``              memory, kafka, rabbitmq, nats,      ``broker: {type: ...}``
                        jetstream, redis
``state``               memory, sqlite, postgres, redis,    ``state: {<name>: {type: ...}}``
                        nats-kv
``secrets``             env, file                           ``secrets: {<store>: {...}}``
``binding``             http-in/out, mqtt-in/out,           ``bindings: {<name>: {type: ...}}``
                        postgres-in/out, files-in/out,
                        smtp-out, cron
======================  ==================================  =============================

>>> registry = Registry()
>>> registry.info("broker", "redis").extra
'redis'
>>> sorted(registry.types("broker"))[:3]
['jetstream', 'kafka', 'memory']
"""

from __future__ import annotations

import builtins
import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict

from mesh.errors import ComponentNotInstalled, ConfigError

if TYPE_CHECKING:
    from mesh.codecs.binary import Binding

__all__ = ["BrokerInfo", "ComponentInfo", "ComponentOptions", "Registry", "SecretStoreFactory"]

SecretStoreFactory = Callable[[Mapping[str, Any]], Callable[[str], str]]
"""``factory(settings)(secret_name) -> value``: what ``secretKeyRef: {store: <name>}`` resolves with."""


class ComponentOptions(BaseModel):
    """Base of every component's options model: unknown keys are errors, values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True, slots=True, kw_only=True)
class ComponentInfo:
    """One registered backend type of one kind."""

    kind: str
    """``broker``, ``state``, ``secrets``, ``binding``, or a kind a plugin introduces."""
    type: str
    """The name used as ``type:`` in the config."""
    target: str | Callable[..., Any]
    """``"package.module:Class"`` (imported on first use) or the class or factory itself."""
    options: str | builtins.type[BaseModel] | None = None
    """``"package.module:Model"`` or the model validating this type's options (``None``: none)."""
    extra: str = ""
    """The ``event-mesh[<extra>]`` that installs the client library."""
    client: str | None = None
    """Import name of the client library, checked before the target is imported."""
    summary: str = ""
    """One line for listings (``mesh config types``, docs)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class BrokerInfo(ComponentInfo):
    """A broker type: a :class:`ComponentInfo` plus how it carries CloudEvents."""

    kind: str = "broker"
    binding: Binding | None = None
    """The protocol binding it writes (header prefixes; see :mod:`mesh.codecs.bindings`)."""
    messaging_system: str = ""
    """OpenTelemetry ``messaging.system`` for its spans (``kafka``, ``rabbitmq``, ``nats``, ...)."""


BUILTIN_LISTS: tuple[str, ...] = (
    "mesh.brokers:BUILTIN_BROKERS",
    "mesh.state:BUILTIN_STATE_STORES",
    "mesh.bindings:BUILTIN_BINDINGS",
)
"""Where the built-in entries of each kind are listed (each module imports no client library)."""


def _import(ref: str) -> Any:
    module, _, name = ref.partition(":")
    return getattr(importlib.import_module(module), name)


@dataclass
class Registry:
    """The component types one App (or one CLI run) knows: built-ins plus what plugins added."""

    _entries: dict[str, dict[str, ComponentInfo]] = field(default_factory=dict)
    secret_stores: dict[str, SecretStoreFactory] = field(default_factory=dict)
    """Secret stores added by plugins (the built-in ``env`` and ``file`` are in :mod:`mesh.config`)."""

    def __post_init__(self) -> None:
        if not self._entries:
            for ref in BUILTIN_LISTS:  # the built-in lists live with their kind
                for info in _import(ref):
                    self.add(info)

    # -- adding --------------------------------------------------------------------------------

    def add(self, info: ComponentInfo) -> None:
        """Register a component type (a later entry of the same kind and type replaces one before)."""
        if not info.type or not isinstance(info.type, str):
            raise ConfigError([(f"{info.kind}.type", f"a component type must be a non-empty name, not {info.type!r}")])
        self._entries.setdefault(info.kind, {})[info.type] = info

    def add_broker(
        self,
        type: str | BrokerInfo,
        factory: Callable[..., Any] | str | None = None,
        *,
        options: str | type[BaseModel] | None = None,
        extra: str = "",
        binding: Binding | None = None,
    ) -> None:
        """Make ``broker: {type: <type>}`` build brokers with ``factory(url, **kwargs)``.

        Pass a ready :class:`BrokerInfo`, or a type name and a broker class or factory (with its
        options model, so the config checks ``broker.options`` for it).
        """
        if isinstance(type, BrokerInfo):
            self.add(type)
            return
        if factory is None:
            raise TypeError("add_broker(type, factory) needs the broker class or factory")
        self.add(BrokerInfo(type=type, target=factory, options=options, extra=extra, binding=binding))

    def add_secret_store(self, name: str, factory: SecretStoreFactory) -> None:
        """Make ``secretKeyRef: {store: <name>}`` resolve with ``factory(settings)(secret_name)``."""
        self.secret_stores[name] = factory

    # -- reading -------------------------------------------------------------------------------

    def types(self, kind: str) -> list[str]:
        """The registered types of one kind, in registration order."""
        return list(self._entries.get(kind, {}))

    def info(self, kind: str, type: str, *, path: str | None = None) -> ComponentInfo:
        """The entry of a type, or a :class:`ConfigError` at ``path`` listing the known ones."""
        entries = self._entries.get(kind, {})
        try:
            return entries[type]
        except (KeyError, TypeError):
            known = ", ".join(entries) or "none registered"
            raise ConfigError([(path or f"{kind}.type", f"unknown {kind} type {type!r} (one of: {known})")]) from None

    def broker(self, type: str) -> BrokerInfo:
        """The entry of a broker type."""
        info = self.info("broker", type, path="broker.type")
        assert isinstance(info, BrokerInfo)
        return info

    @property
    def brokers(self) -> Mapping[str, ComponentInfo]:
        """Broker types by name."""
        return dict(self._entries.get("broker", {}))

    def options_model(self, kind: str, type: str, *, path: str | None = None) -> builtins.type[BaseModel] | None:
        """The options model of a type (imported now), or ``None`` if it takes none."""
        ref = self.info(kind, type, path=path).options
        if ref is None or not isinstance(ref, str):
            return ref
        model: builtins.type[BaseModel] = _import(ref)
        return model

    def load(self, kind: str, type: str) -> Any:
        """The class or factory of a type, imported now; :class:`ComponentNotInstalled` names the extra."""
        info = self.info(kind, type)
        if info.client is not None:
            try:
                importlib.import_module(info.client)
            except ImportError as exc:
                raise _not_installed(info) from exc
        if not isinstance(info.target, str):
            return info.target
        return _import(info.target)


def _not_installed(info: ComponentInfo) -> ComponentNotInstalled:
    if info.kind == "broker":
        from mesh.errors import BrokerNotInstalled

        return BrokerNotInstalled(info.type, info.extra)
    return ComponentNotInstalled(info.kind, info.type, info.extra)
