"""The state block as an App runs it: builds the configured stores, their relays and sweepers.

==========================  =================================================================
situation                   behaviour
==========================  =================================================================
``state:`` names stores     each is validated against the registry, opened at :meth:`start`
no ``state:`` section       ``store(name)`` gives an in-process memory store (logged once)
unknown name otherwise      :class:`~mesh.state.errors.StoreNotFound` naming the known ones
store with an outbox        a :class:`~mesh.state.relay.Relay` publishes its rows
store with a watch          its changes are published on ``changes`` (NATS KV)
keys with a TTL             removed every ``sweep_interval`` seconds (reads hide them at once)
==========================  =================================================================
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import Any

from pydantic import ValidationError

from mesh.components import Registry
from mesh.errors import ConfigError
from mesh.event import Event
from mesh.state.base import Backend
from mesh.state.errors import StoreNotFound
from mesh.state.handle import StateStore
from mesh.state.memory import MemoryStore
from mesh.state.options import StateOptions
from mesh.state.relay import Relay, watch_changes

__all__ = ["StateBlock", "build_store"]


def build_store(name: str, config: Mapping[str, Any], registry: Registry, app_id: str) -> tuple[StateStore, Any]:
    """A (not yet open) store handle from one ``state.<name>`` config entry, and its options."""
    from mesh.state import register

    register(registry)
    cfg = dict(config)
    kind = cfg.pop("type", None)
    if not isinstance(kind, str):
        raise ConfigError([(f"state.{name}.type", "each store needs a type")])
    registry.info("state", kind, path=f"state.{name}.type")
    model = registry.options_model("state", kind, path=f"state.{name}.type") or StateOptions
    try:
        settings = model.model_validate(cfg)
    except ValidationError as exc:
        problems = [(f"state.{name}." + ".".join(str(p) for p in e["loc"]), e["msg"]) for e in exc.errors()]
        raise ConfigError(problems) from None
    backend: Backend = registry.load("state", kind)(name, settings)
    o: Any = settings
    handle = StateStore(name, backend, app_id, shared=o.shared, key_prefix=o.key_prefix, ttl=o.ttl,
                        changes=o.changes, changes_data=o.changes_data)
    return handle, settings


class StateBlock:
    """The stores of one app (see the module docstring)."""

    def __init__(
        self,
        app_id: str,
        configs: Mapping[str, Mapping[str, Any]],
        registry: Registry,
        publish: Callable[[str, Event], Awaitable[Any]],
        spawn: Callable[[Coroutine[Any, Any, Any]], asyncio.Task[Any]],
        log: Any,
    ) -> None:
        self.app_id = app_id
        self.registry = registry
        self.publish = publish
        self.spawn = spawn
        self.log = log
        self.owner = f"{app_id}-{os.getpid()}-{os.urandom(3).hex()}"
        self.stores: dict[str, StateStore] = {}
        self.relays: dict[str, Relay] = {}
        self._settings: dict[str, Any] = {}
        self._tasks: list[asyncio.Task[Any]] = []
        self._waits: list[asyncio.Event] = []
        self._started = False
        for name, config in configs.items():
            self.stores[name], self._settings[name] = build_store(name, config, registry, app_id)
        self._configured = bool(configs)

    async def start(self) -> None:
        """Open every store and start its relay or watcher and its sweeper."""
        opened = []
        try:
            for store in self.stores.values():
                await store.backend.open()
                opened.append(store)
        except BaseException:
            for store in opened:
                await store.backend.close()
            raise
        self._started = True
        for name, store in self.stores.items():
            self._run(store, self._settings[name])
        async with asyncio.timeout(10):
            for ready in self._waits:
                await ready.wait()

    def _run(self, store: StateStore, settings: Any) -> None:
        lease = settings.relay_lease
        if store.features.outbox:
            relay = self.relays[store.name] = Relay(store, self.publish, self.owner, self.log, lease=lease)
            store._notify = relay.notify
            self._tasks.append(self.spawn(relay.run()))
        elif store.features.watch and store.changes:
            ready = asyncio.Event()
            self._tasks.append(self.spawn(watch_changes(store, self.publish, self.owner, self.log, lease, ready)))
            self._waits.append(ready)
        if store.features.ttl:
            self._tasks.append(self.spawn(self._sweep(store, settings.sweep_interval)))

    async def _sweep(self, store: StateStore, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await store.backend.purge(time.time())
            except Exception as exc:
                self.log.warning("state store %r: removing expired keys failed: %s", store.name, exc)

    async def stop(self) -> None:
        """Stop relays and sweepers, then close every store."""
        for relay in self.relays.values():
            relay.stop()
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=5)
        self._tasks.clear()
        for store in self.stores.values():
            await store.backend.close()
        self._started = False

    def store(self, name: str) -> StateStore:
        """The store named ``name`` (an in-process memory store when none is configured)."""
        store = self.stores.get(name)
        if store is not None:
            return store
        if self._configured:
            raise StoreNotFound(name, list(self.stores))
        if not self.stores:
            self.log.info("no state store configured: %r and every other store is the in-process memory "
                          "store (name one under 'state:' for durable state)", name)
        store = self.stores[name] = StateStore(name, MemoryStore(name), self.app_id)
        self._settings[name] = StateOptions()
        if self._started:
            self._run(store, self._settings[name])
        return store
