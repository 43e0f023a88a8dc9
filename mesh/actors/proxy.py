"""Calling actors: placement from presence, requests to the owner's actor destination, retries.

A call is an invocation request (``mesh.invoke.request``, see :mod:`mesh.invoke.protocol`) sent
to ``_mesh.actor.<owner instance id>`` with the extensions ``meshactortype``, ``meshactorid``,
``meshcallchain`` and ``meshcalldepth``; the reply comes back on this instance's actor reply
topic (``_mesh.reply.<instance id>-actors``), where pending futures are keyed by request id.
It is a caller of its own rather than :class:`mesh.invoke.Caller` because the destination is
one instance, chosen per call, and the caller must resend when that owner changes.

==============================  =========================================================
situation                       what the call does
==============================  =========================================================
no live instance hosts the type NoResponders (after presence's warm-up; at once once warm)
owner answers ``not_owner``     asks placement again and resends (backoff up to 0.5 s)
owner vanishes from presence    resends to the next owner (the turn may have run: at least
                                once for calls whose owner died with them in hand)
deadline passes                 InvocationTimeout
error reply                     the typed error (see :mod:`mesh.actors.errors`)
==============================  =========================================================
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypeVar, overload

from opentelemetry import propagate, trace
from pydantic import ValidationError

from mesh import extensions as ext
from mesh.actors.errors import NotOwner, actor_error
from mesh.actors.placement import owner
from mesh.brokers.base import Delivery, Subscription
from mesh.errors import InvocationError, InvocationTimeout, MeshError, NoResponders
from mesh.event import Event, ExtensionValue, new_id, now
from mesh.invoke.protocol import MalformedMessage, parse_reply, reply_topic, request_event
from mesh.pipeline import data_adapter
from mesh.security import open_reply
from mesh.telemetry import span

if TYPE_CHECKING:
    from mesh.invoke.presence import Presence
    from mesh.runtime import Runtime

__all__ = ["ActorCaller", "ActorProxy", "Directory", "actor_topic"]

T = TypeVar("T")
log = logging.getLogger("mesh.actors")
tracer = trace.get_tracer("mesh.actors")


def actor_topic(instance_id: str) -> str:
    """The actor destination of one instance."""
    return ext.ACTOR_PREFIX + instance_id


class Directory:
    """Which live instances host each actor type (from presence), and who owns an actor."""

    def __init__(self, presence: Presence, instance_id: str, hosted: Callable[[], Iterable[str]]) -> None:
        self.presence = presence
        self.instance_id = instance_id
        self.hosted = hosted
        self._hosts: dict[str, list[str]] = {}
        self._apps: dict[str, str] = {}  # live instance -> its app
        self._live: set[str] = set()
        self._at = -1.0

    def _refresh(self) -> None:
        t = asyncio.get_running_loop().time()
        if t - self._at < 0.1:
            return
        hosts: dict[str, set[str]] = {}
        live: set[str] = set()
        apps: dict[str, str] = {}
        for app_id, instances in self.presence.apps().items():
            for instance in instances:
                live.add(instance.instance)
                apps[instance.instance] = app_id
                for actor_type in instance.actors:
                    hosts.setdefault(actor_type, set()).add(instance.instance)
        for actor_type in self.hosted():
            hosts.setdefault(actor_type, set()).add(self.instance_id)
            live.add(self.instance_id)
        self._hosts = {k: sorted(v) for k, v in hosts.items()}
        self._live = live
        self._apps = apps
        self._at = t

    def hosts(self, actor_type: str) -> list[str]:
        """The live instances hosting ``actor_type``."""
        self._refresh()
        return self._hosts.get(actor_type, [])

    def owner(self, actor_type: str, actor_id: str) -> str | None:
        """The instance that should run the actor now (``None``: nobody hosts the type)."""
        return owner(self.hosts(actor_type), actor_type, actor_id)

    def app_of(self, instance_id: str) -> str | None:
        """The app an instance belongs to, as presence heard (``None``: not heard of)."""
        self._refresh()
        return self._apps.get(instance_id)

    def live(self, instance_id: str) -> bool:
        """Whether an instance is still heard of."""
        self._refresh()
        return instance_id in self._live


class ActorCaller:
    """This instance's calls to actors (see the module docstring)."""

    def __init__(self, runtime: Runtime, presence: Presence, directory: Directory) -> None:
        self.runtime = runtime
        self.presence = presence
        self.directory = directory
        self.reply_topic = reply_topic(f"{runtime.instance_id}-actors")
        self._pending: dict[str, asyncio.Future[Event | None]] = {}
        self._targets: dict[str, str] = {}  # request id -> the instance it went to
        self._watch: asyncio.Task[None] | None = None
        self._sub: Subscription | None = None
        self._starting: asyncio.Task[None] | None = None
        self._since = 0.0

    def proxy(self, type: str, id: str, *, chain: str | None = None, depth: int = 0) -> ActorProxy:
        """A handle on one actor."""
        return ActorProxy(self, type, id, chain, depth)

    async def ready(self) -> None:
        """Start the reply consumer and presence listener (once)."""
        if self._sub is not None:
            return
        if self._starting is None:
            self._starting = asyncio.get_running_loop().create_task(self._start())
        try:
            await asyncio.shield(self._starting)
        except BaseException:
            if self._starting is not None and self._starting.done():
                self._starting = None
            raise

    async def _start(self) -> None:
        sub = await self.runtime.broker.subscribe_ephemeral(self.reply_topic, self._on_reply, exclusive=True)
        await self.presence.listen()
        self._since = asyncio.get_running_loop().time()
        self._watch = asyncio.get_running_loop().create_task(self._watchdog(), name="mesh-actors:watchdog")
        self._sub = sub

    async def _watchdog(self) -> None:
        """Every 0.5 s: wake the calls whose owner vanished from presence (they send again)."""
        while True:
            await asyncio.sleep(0.5)
            gone = {t for t in set(self._targets.values()) if not self.directory.live(t)}
            if not gone:
                continue
            for request_id, target in list(self._targets.items()):
                future = self._pending.get(request_id)
                if target in gone and future is not None and not future.done():
                    log.info("instance %s vanished with an actor call in hand: sending it again", target)
                    future.set_result(None)

    async def close(self) -> None:
        """Stop the reply consumer; calls still waiting fail."""
        starting, self._starting = self._starting, None
        if starting is not None and not starting.done():
            starting.cancel()
            await asyncio.gather(starting, return_exceptions=True)
        watch, self._watch = self._watch, None
        if watch is not None:
            watch.cancel()
        sub, self._sub = self._sub, None
        if sub is not None:
            await sub.stop(drain=False)
        for future in self._pending.values():
            if not future.done():
                future.set_exception(MeshError(f"{self.runtime.id} stopped while an actor call waited"))
        self._pending.clear()

    async def _on_reply(self, delivery: Delivery) -> None:
        await delivery.ack()
        event = delivery.event
        try:
            if event is None:
                raise MalformedMessage(f"unreadable message: {delivery.error}")
            correlation, _, _ = parse_reply(event)
        except MalformedMessage as exc:
            log.warning("dropped a message on %s that is not a reply: %s", self.reply_topic, exc)
            return
        future = self._pending.get(correlation)
        if future is None or future.done():
            return
        target = self._targets.get(correlation)
        if target == self.runtime.instance_id:
            app: str | None = self.runtime.id
        else:
            app = self.directory.app_of(target) if target else None
        if app is not None and event.source != f"/{app}":  # only the app the call went to answers it
            log.warning("dropped a reply to actor call %s from %r: it went to %s", correlation, event.source, target)
            return
        event, rejected = open_reply(self.runtime, self.reply_topic, event)  # signed replies, when on
        if rejected is None:
            future.set_result(event)

    async def call(self, type: str, id: str, method: str, data: Any, timeout: float,
                   chain: str | None = None, depth: int = 0) -> Any:
        """Call ``method`` of actor ``type``/``id`` and return the reply's data."""
        if not type or not id or not method:
            raise MeshError("an actor call needs a type, an id and a method")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        expires = now() + timedelta(seconds=timeout)
        await self.ready()
        chain = chain or new_id()
        call_id = new_id()  # every send of this call carries it: an owner runs it at most once
        backoff = 0.02
        with span(tracer, f"call actor {type}.{method}", kind=trace.SpanKind.CLIENT,
                  attributes={"actor.type": type, "actor.id": id, "actor.method": method}):
            while True:
                target = self.directory.owner(type, id)
                if target is None:
                    if loop.time() >= self._since + self.presence.warmup:
                        raise NoResponders(f"no live instance hosts actor type {type!r} (none announced it on "
                                           f"{ext.PRESENCE_TOPIC})")
                    await self._pause(0.05, deadline, type, id, method)
                    continue
                reply = await self._send(target, call_id, type, id, method, data, chain, depth, expires, deadline)
                if reply is None:
                    continue  # the owner vanished: ask placement again
                _, ok, result = parse_reply(reply)
                if ok:
                    return result
                error = actor_error(result, method, f"{type}/{id}")
                if not isinstance(error, NotOwner):
                    raise error
                await self._pause(backoff, deadline, type, id, method)
                backoff = min(backoff * 2, 0.5)

    async def _pause(self, seconds: float, deadline: float, type: str, id: str, method: str) -> None:
        remaining = deadline - asyncio.get_running_loop().time()
        if remaining <= 0:
            raise InvocationTimeout(f"no reply from actor {type}/{id}.{method} before the deadline")
        await asyncio.sleep(min(seconds, remaining))

    async def _send(self, target: str, call_id: str, type: str, id: str, method: str, data: Any, chain: str,
                    depth: int, expires: Any, deadline: float) -> Event | None:
        loop = asyncio.get_running_loop()
        extensions: dict[str, ExtensionValue] = {
            ext.ACTOR_TYPE: type, ext.ACTOR_ID: id, ext.CALL_CHAIN: chain, ext.CALL_DEPTH: depth + 1}
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        extensions.update({k: v for k, v in carrier.items() if k in ("traceparent", "tracestate")})
        event = request_event(self.runtime.source, method, data, reply_to=self.reply_topic, deadline=expires,
                              key=f"{type}/{id}", extensions=extensions, id=call_id)
        topic = actor_topic(target)
        if self.runtime.attribute_hooks:
            event = self.runtime.with_attributes(topic, event)
        future: asyncio.Future[Event | None] = loop.create_future()
        self._pending[event.id] = future
        self._targets[event.id] = target
        try:
            await self.runtime.broker.publish_ephemeral(topic, event)
            remaining = deadline - loop.time()
            try:
                async with asyncio.timeout(remaining if remaining > 0 else 0):
                    return await future  # None: the owner vanished (the watchdog says so)
            except TimeoutError:
                raise InvocationTimeout(f"no reply from actor {type}/{id}.{method} within the timeout") from None
        finally:
            self._pending.pop(event.id, None)
            self._targets.pop(event.id, None)


class ActorProxy:
    """One actor as a caller sees it: ``await app.actor("Cart", "c-42").call("add", item)``."""

    def __init__(self, caller: ActorCaller, type: str, id: str, chain: str | None, depth: int) -> None:
        self.caller = caller
        self.type = type
        self.id = id
        self.chain = chain
        self.depth = depth

    @overload
    async def call(self, method: str, data: Any = None, *, timeout: float | None = None,
                   result_type: type[T]) -> T: ...
    @overload
    async def call(self, method: str, data: Any = None, *, timeout: float | None = None,
                   result_type: None = None) -> Any: ...

    async def call(self, method: str, data: Any = None, *, timeout: float | None = None,
                   result_type: Any = None) -> Any:
        """Call a method of the actor and return its result (validated as ``result_type`` if given).

        Raises NoResponders, InvocationTimeout, MethodNotFound, TurnTimeout, ActorTypeNotFound or
        RemoteError (code ``invalid_argument`` and the actor's own errors)."""
        if timeout is None:
            timeout = self.caller.runtime.config.invoke.timeout
        data = await self.caller.call(self.type, self.id, method, data, timeout, self.chain, self.depth)
        if result_type is None:
            return data
        try:
            return data_adapter(result_type)(data)
        except ValidationError as exc:
            raise InvocationError(f"the reply of actor {self.type}/{self.id}.{method} is not a "
                                  f"{getattr(result_type, '__name__', result_type)}: {exc}") from exc

    def __repr__(self) -> str:
        return f"ActorProxy({self.type!r}, {self.id!r})"
