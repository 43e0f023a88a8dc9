"""Presence: which apps are live on the mesh, from heartbeats on ``_mesh.presence``.

Every App instance with something to offer (methods or subscriptions) announces itself: a
heartbeat every ``presence.interval`` seconds naming its app id, instance id, version, methods
(and which are idempotent) and subscriptions, and a leave message when it stops. Listeners keep
a table; an instance not heard of for the ``expiry`` it announced is gone (it crashed).

Who listens: an app with methods from its start (it must answer probes), any other app from its
first :meth:`~mesh.App.invoke`, and ``mesh apps``. A listener that starts sends a probe, and
every announcing listener answers at once with a heartbeat, so a new caller knows the live
callees after one round trip instead of one interval.

Presence travels on the broker's ephemeral destinations (:meth:`Broker.subscribe_ephemeral`
without a group: every listener gets every heartbeat; nothing is kept for later). It bypasses
the publish layers: no spans or metrics per heartbeat.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from mesh.brokers.base import Delivery, Subscription
from mesh.errors import InvocationTimeout, MeshError, NoResponders
from mesh.event import Event, now
from mesh.extensions import PRESENCE_TOPIC
from mesh.security import open_reply, seal

if TYPE_CHECKING:
    from mesh.runtime import Runtime

Offers = Callable[[], tuple[Mapping[str, bool], list[tuple[str, str]]]]
"""What an instance serves, asked at each heartbeat: methods (name -> idempotent), (topic, group)s."""

__all__ = ["HEARTBEAT", "LEAVE", "PRESENCE_TOPIC", "PROBE", "Instance", "Presence"]

log = logging.getLogger("mesh.presence")

HEARTBEAT = "mesh.presence.heartbeat"
LEAVE = "mesh.presence.leave"
PROBE = "mesh.presence.probe"
STALE_GRACE = 10.0
"""Seconds of clock difference tolerated before a heartbeat is taken for an old one replayed."""


@dataclass
class Instance:
    """One live instance as the presence table knows it."""

    app: str
    instance: str
    version: str = ""
    methods: dict[str, bool] = field(default_factory=dict)
    """Method name -> idempotent."""
    subscriptions: list[tuple[str, str]] = field(default_factory=list)
    """(topic, group) pairs."""
    publishes: list[dict[str, str]] = field(default_factory=list)
    """What the app declares it publishes (``App.publishes``): ``{"topic", "type"}`` each."""
    actors: dict[str, list[str]] = field(default_factory=dict)
    """Hosted actor type -> its active actor ids (at most 100 shown)."""
    started: str = ""
    direct: bool = False
    """Whether it serves its own request destination (``_mesh.invoke.<app>.<id>``), so callers may choose it."""
    expiry: float = 6.0
    seen: float = 0.0
    """Event-loop time of the last heartbeat."""

    def as_dict(self) -> dict[str, Any]:
        """A JSON-friendly view (what ``mesh apps --json`` prints)."""
        out: dict[str, Any] = {
            "instance": self.instance,
            "version": self.version,
            "started": self.started,
            "methods": [{"name": n, "idempotent": i} for n, i in sorted(self.methods.items())],
            "subscriptions": [{"topic": t, "group": g} for t, g in self.subscriptions],
        }
        if self.actors:
            out["actors"] = [{"type": t, "active": ids} for t, ids in sorted(self.actors.items())]
        return out


def _instance(data: Any, default_expiry: float) -> Instance | None:
    """An instance from heartbeat data; ``None`` if it is not one (foreign or broken input)."""
    if not isinstance(data, dict) or not isinstance(data.get("app"), str) or not isinstance(data.get("instance"), str):
        return None
    methods: dict[str, bool] = {}
    for item in data.get("methods") or ():
        if isinstance(item, dict) and isinstance(item.get("name"), str):
            methods[item["name"]] = bool(item.get("idempotent", False))
    subs = [
        (str(s["topic"]), str(s.get("group", "")))
        for s in data.get("subscriptions") or ()
        if isinstance(s, dict) and "topic" in s
    ]
    actors = {
        str(a["type"]): [str(i) for i in a.get("active") or ()]
        for a in data.get("actors") or ()
        if isinstance(a, dict) and "type" in a
    }
    expiry = data.get("expiry")
    return Instance(
        app=data["app"],
        instance=data["instance"],
        version=str(data.get("version", "")),
        methods=methods,
        subscriptions=subs,
        actors=actors,
        started=str(data.get("started", "")),
        publishes=[
            {"topic": str(p["topic"]), "type": str(p.get("type", ""))}
            for p in data.get("publishes") or ()
            if isinstance(p, dict) and "topic" in p
        ],
        expiry=float(expiry) if isinstance(expiry, int | float) and expiry > 0 else default_expiry,
        direct=data.get("direct") is True,
    )


class Presence:
    """One App's view of the mesh, and its own announcements (see the module docstring)."""

    def __init__(self, runtime: Runtime, offers: Offers) -> None:
        self.runtime = runtime
        self._offers = offers
        """What this instance serves: its methods (name -> idempotent) and (topic, group) subscriptions."""
        conf = runtime.config.presence
        self.enabled = conf.enabled
        self.interval = conf.interval
        self.expiry = conf.expiry
        self.warmup = conf.warmup
        self.announcing = False
        self._table: dict[str, dict[str, Instance]] = {}
        self._sub: Subscription | None = None
        self._listening: asyncio.Task[None] | None = None
        self._since: float | None = None
        self._arrivals: dict[str, asyncio.Future[None]] = {}
        self._departures: dict[str, asyncio.Future[None]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._heartbeat: asyncio.Task[None] | None = None
        self._flags: dict[tuple[str, str], bool] = {}
        self._direct: dict[str, tuple[tuple[str, ...], float]] = {}
        """App id -> (its live instances serving their own destination, loop time until all stay live)."""
        self._started = now().isoformat()
        self.publishes: list[dict[str, str]] = []
        """What the app declares it publishes (filled by ``App.publishes``), sent in heartbeats."""
        self.direct = runtime.config.resiliency.instances.enabled
        """Whether this instance serves its own request destination (as the callee does, from the config)."""
        self.hosted: Callable[[], list[dict[str, Any]]] = list
        """The actor types this instance hosts, with their active ids (set by the actors block)."""

    # -- lifecycle (called by the App) -------------------------------------------------------

    async def start(self, listen: bool) -> None:
        """Begin announcing (if the app offers anything) and, with ``listen``, listening."""
        if not self.enabled:
            return
        methods, subscriptions = self._offers()
        self.announcing = bool(methods or subscriptions or self.publishes or self.hosted())
        if listen:
            await self.listen()
        if self.announcing:
            name = f"mesh-presence:{self.runtime.id}"
            self._heartbeat = asyncio.get_running_loop().create_task(self._beat(), name=name)

    async def listen(self) -> None:
        """Start listening (once; concurrent callers share the start) and probe the mesh."""
        if not self.enabled:
            return
        if self._listening is None:
            self._listening = asyncio.get_running_loop().create_task(self._listen())
        await asyncio.shield(self._listening)

    async def _listen(self) -> None:
        self._sub = await self.runtime.broker.subscribe_ephemeral(PRESENCE_TOPIC, self._on_message)
        self._since = asyncio.get_running_loop().time()
        self._spawn(self._sweep())
        await self._send(PROBE, {"app": self.runtime.id, "instance": self.runtime.instance_id})

    async def leave(self) -> None:
        """Stop announcing and say goodbye (called first when the app stops)."""
        beat, self._heartbeat = self._heartbeat, None
        if beat is not None:
            beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beat
        if self.announcing:
            self.announcing = False
            await self._send(LEAVE, {"app": self.runtime.id, "instance": self.runtime.instance_id})

    async def close(self) -> None:
        """Stop listening (after the app's handlers drained)."""
        await self.leave()
        listening, self._listening = self._listening, None
        if listening is not None and not listening.done():
            listening.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            if listening is not None:
                await listening
        sub, self._sub = self._sub, None
        if sub is not None:
            await sub.stop(drain=False)
        tasks, self._tasks = list(self._tasks), set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for futures in (self._arrivals, self._departures):
            for future in futures.values():
                future.cancel()
            futures.clear()
        self._since = None

    # -- what callers ask --------------------------------------------------------------------

    def live(self, app_id: str) -> list[Instance]:
        """The instances of an app heard of within their expiry."""
        instances = self._table.get(app_id)
        if not instances:
            return []
        t = asyncio.get_running_loop().time()
        return [i for i in instances.values() if t - i.seen <= i.expiry]

    def direct_instances(self, app_id: str) -> tuple[str, ...]:
        """The ids of the live instances of an app that serve their own request destination (what
        a caller chooses among, on every call): kept until the first of them expires or a
        heartbeat, leave or sweep changes the app's instances."""
        t = asyncio.get_running_loop().time()
        known = self._direct.get(app_id)
        if known is not None and t <= known[1]:
            return known[0]
        live = self.live(app_id)
        ids = tuple(i.instance for i in live if i.direct)
        self._direct[app_id] = (ids, min((i.seen + i.expiry for i in live), default=float("inf")))
        return ids

    def has_live(self, app_id: str) -> bool:
        """Whether an app has a live instance (the cheap form of :meth:`live`, for every call)."""
        instances = self._table.get(app_id)
        if not instances:
            return False
        t = asyncio.get_running_loop().time()
        return any(t - i.seen <= i.expiry for i in instances.values())

    def apps(self) -> dict[str, list[Instance]]:
        """Every live app and its instances, by app id."""
        out = {app_id: self.live(app_id) for app_id in sorted(self._table)}
        return {k: sorted(v, key=lambda i: i.instance) for k, v in out.items() if v}

    def idempotent(self, app_id: str, method: str) -> bool | None:
        """Whether live instances declare ``method`` idempotent (``None``: nobody says)."""
        key = (app_id, method)
        if key in self._flags:
            return self._flags[key]
        flags = {i.methods[method] for i in self.live(app_id) if method in i.methods}
        answer = None if not flags else flags == {True}
        if answer is not None:
            self._flags[key] = answer  # until the instances of the app change
        return answer

    def departure(self, app_id: str) -> asyncio.Future[None]:
        """A future done when an instance of ``app_id`` vanishes (its presence expires).

        Shared by every caller waiting on that app: never cancel it, wait on it with
        ``asyncio.wait`` or ``asyncio.shield``."""
        return self._future(self._departures, app_id)

    async def wait_live(self, app_id: str, deadline: float) -> None:
        """Return once ``app_id`` has a live instance; :class:`NoResponders` when the warm-up is
        over without one, :class:`InvocationTimeout` at ``deadline`` (event-loop time)."""
        if self.has_live(app_id):
            return
        await self.listen()
        loop = asyncio.get_running_loop()
        limit = (self._since if self._since is not None else loop.time()) + self.warmup
        while not self.has_live(app_id):
            t = loop.time()
            if t >= limit:
                raise NoResponders(
                    f"no live instance of app {app_id!r}: none announced itself on {PRESENCE_TOPIC} "
                    f"(is it running on this broker and namespace?)"
                )
            if t >= deadline:
                raise InvocationTimeout(f"no instance of app {app_id!r} showed up before the deadline")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(limit, deadline) - t):
                    await asyncio.shield(self._future(self._arrivals, app_id))

    # -- announcing ----------------------------------------------------------------------------

    def heartbeat_data(self) -> dict[str, Any]:
        """What this instance announces."""
        runtime = self.runtime
        methods, subscriptions = self._offers()
        data: dict[str, Any] = {
            "app": runtime.id,
            "instance": runtime.instance_id,
            "version": runtime.version,
            "methods": [{"name": n, "idempotent": idempotent} for n, idempotent in methods.items()],
            "subscriptions": [{"topic": topic, "group": group} for topic, group in subscriptions],
            "interval": self.interval,
            "expiry": self.expiry,
            "started": self._started,
            "publishes": self.publishes,
        }
        if methods and self.direct:
            data["direct"] = True
        actors = self.hosted()
        if actors:
            data["actors"] = actors
        return data

    async def _beat(self) -> None:
        while True:
            await self._send(HEARTBEAT, self.heartbeat_data())
            await asyncio.sleep(self.interval)

    async def _send(self, kind: str, data: dict[str, Any]) -> None:
        event = Event(kind, self.runtime.source, data, subject=self.runtime.instance_id)
        event = seal(self.runtime, PRESENCE_TOPIC, event)
        try:
            await self.runtime.broker.publish_ephemeral(PRESENCE_TOPIC, event)
        except asyncio.CancelledError:
            raise
        except (MeshError, OSError) as exc:  # presence is best effort: the next beat tries again
            log.warning("presence of %s: %s not sent: %s", self.runtime.instance_id, kind, exc)

    # -- listening -----------------------------------------------------------------------------

    async def _on_message(self, delivery: Delivery) -> None:
        await delivery.ack()
        event = delivery.event
        if event is None:
            return
        if event.type != PROBE:  # what enters the live table is verified when signing is on; a probe
            event, rejected = open_reply(self.runtime, PRESENCE_TOPIC, event)  # only asks for a heartbeat
            if rejected is not None:
                return
        try:
            if event.type == HEARTBEAT:
                self._heard(event)
            elif event.type == LEAVE:
                self._left(event.data)
            elif event.type == PROBE and self.announcing and event.subject != self.runtime.instance_id:
                self._spawn(self._send(HEARTBEAT, self.heartbeat_data()))
        except Exception:  # foreign input never stops the listener
            log.debug("presence: ignored a broken %s message", event.type, exc_info=True)

    def _heard(self, event: Event) -> None:
        instance = _instance(event.data, self.expiry)
        if instance is None:
            return
        if event.time is not None and event.time < now() - timedelta(seconds=instance.expiry + STALE_GRACE):
            return  # an old heartbeat read again (a log broker's end offset can be approximate)
        instance.seen = asyncio.get_running_loop().time()
        instances = self._table.setdefault(instance.app, {})
        self._direct.pop(instance.app, None)
        known = instances.get(instance.instance)
        if known is None or known.methods != instance.methods:
            self._forget_flags(instance.app)
        instances[instance.instance] = instance
        arrival = self._arrivals.pop(instance.app, None)
        if arrival is not None and not arrival.done():
            arrival.set_result(None)

    def _left(self, data: Any) -> None:
        if isinstance(data, dict):
            app_id = str(data.get("app"))
            instances = self._table.get(app_id)
            if instances is not None and instances.pop(str(data.get("instance")), None) is not None:
                self._direct.pop(app_id, None)
                self._forget_flags(app_id)

    def _forget_flags(self, app_id: str) -> None:
        if self._flags:
            self._flags = {k: v for k, v in self._flags.items() if k[0] != app_id}

    async def _sweep(self) -> None:
        """Drop instances whose heartbeats stopped, and tell who waits on their departure."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(min(self.interval, self.expiry) / 2)
            t = loop.time()
            for app_id, instances in list(self._table.items()):
                gone = [k for k, i in instances.items() if t - i.seen > i.expiry]
                for key in gone:
                    log.info("presence: %s is gone (no heartbeat for %.1fs)", key, t - instances[key].seen)
                    del instances[key]
                if gone:
                    self._direct.pop(app_id, None)
                    self._forget_flags(app_id)
                    departure = self._departures.pop(app_id, None)
                    if departure is not None and not departure.done():
                        departure.set_result(None)
                if not instances:
                    del self._table[app_id]

    # -- helpers -------------------------------------------------------------------------------

    @staticmethod
    def _future(futures: dict[str, asyncio.Future[None]], app_id: str) -> asyncio.Future[None]:
        future = futures.get(app_id)
        if future is None or future.done():
            future = futures[app_id] = asyncio.get_running_loop().create_future()
        return future

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
