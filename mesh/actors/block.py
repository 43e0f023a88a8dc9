"""The actors block as an App runs it: registered types, the caller, and the host at run time.

=====================  =========================================================================
part                   role
=====================  =========================================================================
``register``           ``@app.actor(TYPE)``: an :class:`~mesh.actors.Actor` subclass this app hosts
``proxy``              ``app.actor(TYPE, ID)``: call any actor on the mesh (hosted here or not)
``start``              after the state and jobs blocks: opens the host on the ``actors.store`` store
``reminders``          each one a job of the jobs block aimed at ``_mesh.reminder.<app>``, a local
                       receiver of the jobs block: the instance that fires it calls the actor
                       (on its current owner), which runs ``on_reminder``; nothing is published
``stop``               before the state block: drains turns, releases leases
``router``             ``@app.subscribe(topic, actor=TYPE)``: events to ``on_event`` by subject
``heartbeat``          hosted types and active actors, carried in presence heartbeats
=====================  =========================================================================
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from mesh.actors.activation import ActorType
from mesh.actors.actor import Actor
from mesh.actors.config import ActorsConfig
from mesh.actors.host import REMINDER_METHOD, Host
from mesh.actors.proxy import ActorCaller, ActorProxy, Directory
from mesh.actors.reminders import REMINDER_TYPE, Reminders, reminder_topic
from mesh.errors import DeadLetter, FeatureNotSupported, MeshError
from mesh.event import Event

if TYPE_CHECKING:
    from mesh.invoke.presence import Presence
    from mesh.runtime import Runtime
    from mesh.state.block import StateBlock

__all__ = ["ActorsBlock"]

log = logging.getLogger("mesh.actors")


class ActorsBlock:
    """The actors of one app (see the module docstring)."""

    def __init__(self, runtime: Runtime, state: StateBlock, presence: Presence,
                 config: ActorsConfig | None = None) -> None:
        self.runtime = runtime
        self.state = state
        self.presence = presence
        self.config = config or ActorsConfig()
        self.types: dict[str, ActorType] = {}
        self.host: Host | None = None
        self.directory = Directory(presence, runtime.instance_id, self._hosted)
        self.caller = ActorCaller(runtime, presence, self.directory)
        if runtime.jobs is not None:  # whichever instance fires a reminder calls the actor itself
            runtime.jobs.local(reminder_topic(runtime.id), self._on_reminder)

    def _hosted(self) -> list[str]:
        return list(self.types) if self.host is not None and not self.host.stopping else []

    @property
    def hosting(self) -> bool:
        """Whether this app hosts any actor type."""
        return bool(self.types)

    def register(self, name: str, cls: type[Actor], *, idle_after: float | None = None,
                 reentrant: bool = False) -> None:
        """Host actor type ``name`` implemented by ``cls`` (before the app starts)."""
        if self.host is not None:
            raise MeshError("register actor types before the app starts")
        if name in self.types:
            raise MeshError(f"actor type {name!r} is registered twice")
        self.types[name] = ActorType(name, cls, idle_after, reentrant)
        cls.type_name = name

    def proxy(self, type: str, id: str) -> ActorProxy:
        """A handle on one actor of the mesh."""
        return self.caller.proxy(type, id)

    def router(self, actor_type: str) -> Callable[[Event], Awaitable[None]]:
        """The handler of ``subscribe(topic, actor=TYPE)``: each event to ``on_event`` of the actor
        its subject names (no subject: dead-lettered; a failed call raises, so it is retried)."""
        from mesh.codecs.structured import to_dict

        async def to_actor(event: Event) -> None:
            if not event.subject:
                raise DeadLetter(f"an event routed to actor type {actor_type!r} needs a subject (the actor id)")
            await self.proxy(actor_type, event.subject).call("on_event", to_dict(event))

        to_actor.__qualname__ = f"actor:{actor_type}"
        return to_actor

    def heartbeat(self) -> list[dict[str, Any]]:
        """Hosted types and active actors, for presence."""
        if self.host is not None:
            return self.host.heartbeat()
        return []

    async def start(self) -> None:
        """Open the host (when this app hosts actor types)."""
        if not self.types:
            return
        store = self.state.store(self.config.store)
        features = store.features
        if not (features.transactions and features.outbox and features.etag):
            raise FeatureNotSupported(store.backend.type, "actor state (transactions, an outbox and ETags)",
                                      "use a memory, sqlite, postgres or redis store for actors.store")
        jobs = self.runtime.jobs
        if jobs is None:
            raise FeatureNotSupported("actors", "reminders", "an App (its jobs block keeps reminders)")
        topic = reminder_topic(self.runtime.id)
        host = Host(self.runtime, self.config, self.types, store, self.caller, self.directory,
                    Reminders(jobs, topic))
        await host.start()
        self.host = host

    async def _on_reminder(self, event: Event) -> None:
        """A fired reminder job: call the actor (on its current owner) to run ``on_reminder``; a
        failed call raises, so the jobs block fires it again (``retries`` with ``backoff``)."""
        body = event.data
        if event.type != REMINDER_TYPE or not isinstance(body, dict) or not body.get("type") or not body.get("id"):
            raise MeshError(f"not a reminder of an actor: {event.type} {body!r}")
        await self.proxy(str(body["type"]), str(body["id"])).call(
            REMINDER_METHOD, {"name": body.get("name"), "data": body.get("data")})

    async def stop(self, timeout: float) -> None:
        """Drain the host: queued turns finish, actors deactivate, leases are released."""
        host, self.host = self.host, None
        if host is not None:
            await host.stop(timeout)

    async def close(self) -> None:
        """Stop the caller's reply consumer (after everything that may call actors stopped)."""
        await self.caller.close()
