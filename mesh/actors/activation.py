"""One active actor: its mailbox, its turns, its lease and its cached state.

==================  ==========================================================================
concern             behaviour
==================  ==========================================================================
activation          the first work item for an id creates it; it takes the actor's lease in the
                    actor store (an ETag-guarded key) before its first turn, or answers every
                    queued item ``NotOwner`` (the caller retries) while another owner holds it
turns               one at a time, in arrival order: methods, timers, reminders, routed events
reentrancy          opt-in per type: a call carrying the call chain of the running turn runs at
                    once as a nested turn (its writes join the outer turn's) up to ``max_depth``
commit              a turn's sets, deletes and published events commit in one state
                    transaction that also rewrites the lease with its ETag: an owner that lost
                    its lease cannot write (fencing); a turn that raises or times out writes nothing
lease               renewed every lease/3 while active; lost (ETag moved) -> no more turns
idle, moved, stop   ``on_deactivate`` runs as a last turn, timers stop, the lease is released
==================  ==========================================================================
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson
from opentelemetry import context as otel_context
from opentelemetry import metrics, trace

from mesh.actors.actor import ABSENT, HOOKS, Actor, ActorState
from mesh.actors.errors import NOT_OWNER, NotOwner, TurnTimeout
from mesh.codecs.data import json_dumps
from mesh.errors import InvalidHandler
from mesh.event import Event
from mesh.pipeline import data_adapter
from mesh.state.errors import ETagMismatch
from mesh.telemetry import span as span_of

if TYPE_CHECKING:
    from mesh.actors.host import Host
    from mesh.actors.proxy import ActorProxy

__all__ = ["Activation", "ActorType", "Turn", "Work"]

log = logging.getLogger("mesh.actors")
tracer = trace.get_tracer("mesh.actors")
meter = metrics.get_meter("mesh.actors")
ACTIVE = meter.create_up_down_counter("mesh.actors.active", unit="{actor}", description="active actors")
QUEUED = meter.create_up_down_counter("mesh.actors.queue_length", unit="{call}", description="work waiting for a turn")
TURNS = meter.create_histogram("mesh.actors.turn.duration", unit="s", description="duration of actor turns")

_BASE = {name for name in dir(Actor) if not name.startswith("_")} - {"on_event"}


class ActorType:
    """One registered actor type: its class, settings and callable methods."""

    def __init__(self, name: str, cls: type[Actor], idle_after: float | None, reentrant: bool) -> None:
        if not (isinstance(cls, type) and issubclass(cls, Actor)):
            raise InvalidHandler(f"@app.actor({name!r}) decorates a subclass of mesh.Actor, not {cls!r}")
        self.name = name
        self.cls = cls
        self.idle_after = idle_after
        self.reentrant = reentrant
        self.methods: dict[str, Callable[[Any], Any] | None] = {}
        """Method name -> the converter of its argument (``None``: it takes no argument)."""
        for attr in dir(cls):
            if attr.startswith("_") or attr in _BASE:
                continue
            fn = getattr(cls, attr)
            if not inspect.iscoroutinefunction(fn):
                continue
            params = list(inspect.signature(fn).parameters.values())[1:]
            if len(params) > 1:
                raise InvalidHandler(f"actor method {name}.{attr} takes at most one argument (the call's data)")
            if attr == "on_event":
                continue
            if not params:
                self.methods[attr] = None
                continue
            hints = inspect.get_annotations(fn, eval_str=True)
            annotation = hints.get(params[0].name, inspect.Parameter.empty)
            self.methods[attr] = (lambda v: v) if annotation is inspect.Parameter.empty else data_adapter(annotation)
        self.methods["on_event"] = _to_event


def _to_event(data: Any) -> Event:
    from mesh.codecs.structured import from_dict

    return data if isinstance(data, Event) else from_dict(data)


@dataclass
class Work:
    """One item for an actor's mailbox."""

    kind: str
    """``call``, ``event``, ``timer``, ``reminder`` or ``hook``."""
    method: str
    args: tuple[Any, ...]
    future: asyncio.Future[Any] | None = None
    deadline: float | None = None
    """Event-loop time after which nobody waits for the result."""
    chain: str | None = None
    depth: int = 0
    parent: otel_context.Context | None = None
    request: Event | None = None
    """The request event of a call: the turn's outcome is its reply (sent from the turn loop)."""
    answer: tuple[BaseException | None, Any] | None = None


@dataclass
class Turn:
    """What one turn wrote: state, events to publish, reminders to set (committed together)."""

    state: ActorState
    chain: str | None
    depth: int
    events: list[tuple[str, Event]] = field(default_factory=list)
    reminders: list[tuple[str, str, float | None, float | None, Any]] = field(default_factory=list)


class Activation:
    """One actor while it is active on this instance (see the module docstring)."""

    def __init__(self, host: Host, spec: ActorType, actor_id: str, previous: asyncio.Task[Any] | None) -> None:
        self.host = host
        self.spec = spec
        self.id = actor_id
        self.source = f"{host.runtime.source}/actors/{spec.name}/{actor_id}"
        self.previous = previous
        self.queue: deque[Work] = deque()
        self.wake = asyncio.Event()
        self.retiring = False
        self.lost = False
        self.closing = False
        self.cache: dict[str, Any] = {}
        self.lease_etag: str | None = None
        self.lock = asyncio.Lock()
        self.last_used = asyncio.get_running_loop().time()
        self.idle_after = spec.idle_after or host.config.idle_after
        self.timers: dict[str, asyncio.Task[None]] = {}
        self._stack: list[Turn] = []
        self._attrs = {"actor.type": spec.name}
        self.actor = spec.cls()
        self.actor.id = actor_id
        self.actor._activation = self
        self.task: asyncio.Task[None] = asyncio.get_running_loop().create_task(
            self._run(), name=f"actor {spec.name}/{actor_id}")

    # -- keys ----------------------------------------------------------------------------------

    def _key(self, key: str) -> str:
        return f"{self.spec.name}||{self.id}||s||{key}"

    @property
    def lease_key(self) -> str:
        """The store key of this actor's lease."""
        return f"{self.spec.name}||{self.id}||lease"

    def _lease_value(self) -> dict[str, Any]:
        return {"owner": self.host.runtime.instance_id, "until": time.time() + self.host.config.lease}

    # -- what the Actor calls ------------------------------------------------------------------

    def current(self) -> Turn:
        """The running turn (only inside a turn)."""
        if not self._stack:
            raise RuntimeError(f"{self.spec.name}/{self.id}: state and publish are only usable inside a turn")
        return self._stack[-1]

    def running_chain(self) -> str | None:
        """The call chain of the outermost running turn (``None`` between turns)."""
        return self._stack[0].chain if self._stack else None

    def turn_state(self) -> ActorState:
        """The state of the running turn."""
        return self.current().state

    def proxy(self, type: str, id: str) -> ActorProxy:
        """A proxy whose calls carry the running turn's call chain."""
        turn = self._stack[-1] if self._stack else None
        chain = turn.chain if turn is not None else None
        return self.host.caller.proxy(type, id, chain=chain, depth=turn.depth if turn is not None else 0)

    async def _load(self, key: str) -> Any:
        if key in self.cache:
            return self.cache[key]
        item = await self.host.store.get(self._key(key))
        value = ABSENT if item is None else item.value
        self.cache[key] = value
        return value

    # -- the mailbox ---------------------------------------------------------------------------

    def put(self, work: Work) -> bool:
        """Queue work (``False`` if this activation is closing: make a new one)."""
        if self.closing or self.retiring:
            return False
        self.queue.append(work)
        QUEUED.add(1, self._attrs)
        self.wake.set()
        return True

    def retire(self) -> None:
        """Finish what is queued, then deactivate (the actor moves or the app stops)."""
        self.retiring = True
        self.wake.set()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            if self.previous is not None:
                await asyncio.wait([self.previous])
            ok = await self._acquire()
        except Exception as exc:
            log.warning("actor %s/%s: taking its lease failed: %s", self.spec.name, self.id, exc)
            self.closing = True
            self.host.detach(self)
            self._fail_queue(exc)
            return
        if not ok:
            log.debug("actor %s/%s: its lease is held elsewhere", self.spec.name, self.id)
            self.closing = True
            self.host.detach(self)
            self._fail_queue(NotOwner("NotOwner", f"actor {self.spec.name}/{self.id} is active on another "
                                      "instance", NOT_OWNER))
            return
        ACTIVE.add(1, self._attrs)
        log.debug("actor %s/%s activated", self.spec.name, self.id)
        keeper = loop.create_task(self._keep())
        try:
            await self._turn(Work("hook", "on_activate", ()))
            await self._loop()
        finally:
            self.closing = True
            self.host.detach(self)
            for timer in self.timers.values():
                timer.cancel()
            keeper.cancel()
            await asyncio.wait([keeper], timeout=self.host.config.lease)
            if not self.lost:
                await self._turn(Work("hook", "on_deactivate", ()))
                await self._release()
            self._fail_queue(NotOwner("NotOwner", f"actor {self.spec.name}/{self.id} was deactivated", NOT_OWNER))
            ACTIVE.add(-1, self._attrs)
            log.debug("actor %s/%s deactivated", self.spec.name, self.id)

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self.queue:
                if self.retiring or self.lost:
                    return
                self.wake.clear()
                await self.wake.wait()  # work, retire() (idle: see _keep) or a lost lease
                continue
            work = self.queue.popleft()
            QUEUED.add(-1, self._attrs)
            if work.future is not None and work.future.done():
                continue
            if work.deadline is not None and work.deadline <= loop.time():
                continue  # the caller gave up: not run
            if self.lost:
                self._fail(work, NotOwner("NotOwner", f"actor {self.spec.name}/{self.id} lost its lease", NOT_OWNER))
                continue
            await self._turn(work)
            if work.kind in ("call", "event"):
                self.last_used = loop.time()

    def _fail_queue(self, exc: BaseException) -> None:
        while self.queue:
            work = self.queue.popleft()
            QUEUED.add(-1, self._attrs)
            self._fail(work, exc)

    def _fail(self, work: Work, exc: BaseException) -> None:
        if work.future is not None and not work.future.done():
            work.future.set_exception(exc)
        if work.request is not None:
            self.host.answer_later(work.request, exc, None)

    # -- turns ---------------------------------------------------------------------------------

    async def nested(self, work: Work) -> None:
        """Run a reentrant call at once, inside the running turn of the same call chain."""
        await self._turn(work, nested=True)

    async def _turn(self, work: Work, nested: bool = False) -> None:
        await self._run_turn(work, nested)
        answer, work.answer = work.answer, None
        if answer is not None and work.request is not None:
            await self.host.answer(work.request, *answer, ran=True)  # from the loop: no task per reply

    async def _run_turn(self, work: Work, nested: bool) -> None:
        loop = asyncio.get_running_loop()
        parent = self._stack[-1] if nested and self._stack else None
        turn = Turn(ActorState(self._load, parent.state if parent else None), work.chain or None, work.depth)
        start = loop.time()
        timeout = self.host.config.turn_timeout
        if work.deadline is not None:
            timeout = max(0.0, min(timeout, work.deadline - start))
        fn = getattr(self.actor, work.method)
        name = f"actor {self.spec.name}.{work.method}"
        links = [trace.Link(trace.get_current_span(work.parent).get_span_context())] if work.parent else []
        with span_of(tracer, name, context=work.parent, kind=trace.SpanKind.SERVER, links=links,
                     attributes={"actor.type": self.spec.name, "actor.id": self.id,
                                 "actor.method": work.method}) as span:
            self._stack.append(turn)
            try:
                async with asyncio.timeout(timeout) as cm:
                    result = fn(*work.args)
                    if inspect.isawaitable(result):
                        result = await result
            except TimeoutError as exc:
                self._stack.pop()
                error: BaseException = exc
                if cm.expired():
                    error = TurnTimeout("TurnTimeout", f"{self.spec.name}.{work.method} ran past its timeout "
                                        f"({timeout:g}s); the actor's state is unchanged", "deadline_exceeded")
                span.set_status(trace.StatusCode.ERROR, str(error))
                self._done(work, error, None, start)
                return
            except BaseException as exc:
                self._stack.pop()
                span.set_status(trace.StatusCode.ERROR, str(exc))
                if work.kind == "hook":
                    log.warning("actor %s/%s: %s failed: %r", self.spec.name, self.id, work.method, exc)
                self._done(work, exc, None, start)
                if not isinstance(exc, Exception):
                    raise
                return
            self._stack.pop()
            if parent is not None:
                parent.state.writes.update(turn.state.writes)
                parent.events.extend(turn.events)
                parent.reminders.extend(turn.reminders)
            else:
                try:
                    await self._commit(turn)
                except Exception as exc:
                    span.set_status(trace.StatusCode.ERROR, str(exc))
                    self._done(work, exc, None, start)
                    return
            self._done(work, None, result, start)

    def _done(self, work: Work, error: BaseException | None, result: Any, start: float) -> None:
        TURNS.record(asyncio.get_running_loop().time() - start,
                     {**self._attrs, "actor.method": work.method, "outcome": "ok" if error is None else "error"})
        if work.request is not None:
            work.answer = (error, result)
        if work.future is None or work.future.done():
            return
        if error is None:
            work.future.set_result(result)
        else:
            work.future.set_exception(error)

    async def _commit(self, turn: Turn) -> None:
        writes = turn.state.writes
        if writes or turn.events:
            store = self.host.store
            async with self.lock:
                if self.lost:
                    raise NotOwner("NotOwner", f"actor {self.spec.name}/{self.id} lost its lease", NOT_OWNER)
                tx = store.transaction()
                for key, value in writes.items():
                    if value is ABSENT:
                        tx.delete(self._key(key))
                    else:
                        tx.set(self._key(key), value)
                for topic, event in turn.events:
                    tx.publish(topic, event, type=event.type)
                tx.set(self.lease_key, self._lease_value(), etag=self.lease_etag)
                try:
                    async with tx:
                        pass
                except ETagMismatch:
                    self._lost()
                    raise NotOwner("NotOwner", f"actor {self.spec.name}/{self.id} lost its lease before its "
                                   "turn committed (nothing was written)", NOT_OWNER) from None
                self.lease_etag = tx.etags[self.lease_key]
            for key, value in writes.items():
                self.cache[key] = ABSENT if value is ABSENT else orjson.loads(json_dumps(value))
        for op, name, due, period, data in turn.reminders:
            if op == "set":
                await self.host.reminders.set(self.spec.name, self.id, name, due or 0.0, period, data)
            else:
                await self.host.reminders.cancel(self.spec.name, self.id, name)

    # -- the lease -----------------------------------------------------------------------------

    async def _acquire(self) -> bool:
        store = self.host.store
        item = await store.get(self.lease_key)
        if item is not None:
            held = item.value if isinstance(item.value, dict) else {}
            if held.get("owner") != self.host.runtime.instance_id and float(held.get("until", 0)) > time.time():
                return False
        try:
            self.lease_etag = await store.set(self.lease_key, self._lease_value(),
                                              etag=None if item is None else item.etag, create=item is None)
        except ETagMismatch:
            return False
        return True

    async def _keep(self) -> None:
        """Renew the lease every lease/3 seconds; hand the actor over when placement moved it;
        retire it once idle (no call for ``idle_after``; checked here, not by a timer per wait)."""
        loop = asyncio.get_running_loop()
        every = self.host.config.lease / 3
        step = min(every, max(self.idle_after / 4, 0.05))
        renewed = loop.time()
        while not self.closing:  # a flag as well as cancel(): a store client may swallow a cancellation
            await asyncio.sleep(step)
            if self.closing:
                return
            t = loop.time()
            if (not self.retiring and not self.queue and not self._stack
                    and t - self.last_used >= self.idle_after):
                log.debug("actor %s/%s is idle", self.spec.name, self.id)
                self.retire()
            if t - renewed < every - step / 2:
                continue
            renewed = t
            if not self.retiring and self.host.placed_elsewhere(self.spec.name, self.id):
                log.info("actor %s/%s moves to another instance", self.spec.name, self.id)
                self.retire()
            async with self.lock:
                try:
                    self.lease_etag = await self.host.store.set(self.lease_key, self._lease_value(),
                                                                etag=self.lease_etag)
                except ETagMismatch:
                    self._lost()
                    return
                except Exception as exc:  # the store is down: keep trying until the lease runs out
                    log.warning("actor %s/%s: renewing its lease failed: %s", self.spec.name, self.id, exc)

    def _lost(self) -> None:
        if not self.lost:
            log.warning("actor %s/%s lost its lease to another instance", self.spec.name, self.id)
        self.lost = True
        self.wake.set()

    async def _release(self) -> None:
        async with self.lock:
            try:
                await self.host.store.delete(self.lease_key, etag=self.lease_etag)
            except Exception as exc:  # it expires by itself
                log.debug("actor %s/%s: releasing its lease failed: %s", self.spec.name, self.id, exc)

    # -- timers --------------------------------------------------------------------------------

    def start_timer(self, name: str, due: float | None, period: float | None, callback: str, data: Any) -> None:
        """Start (or restart) a timer that queues a turn (see :meth:`Actor.timer`)."""
        if callback not in self.spec.methods and callback != "on_timer":
            raise AttributeError(f"actor type {self.spec.name!r} has no method {callback!r} for timer {name!r}")
        self.cancel_timer(name)
        args: tuple[Any, ...] = (name, data) if callback == "on_timer" else (
            () if self.spec.methods.get(callback) is None else (data,))
        self.timers[name] = asyncio.get_running_loop().create_task(self._tick(name, due or 0.0, period, callback, args))

    def cancel_timer(self, name: str) -> None:
        """Stop a timer (a no-op if there is none)."""
        timer = self.timers.pop(name, None)
        if timer is not None and timer is not asyncio.current_task():
            timer.cancel()

    async def _tick(self, name: str, due: float, period: float | None, callback: str, args: tuple[Any, ...]) -> None:
        await asyncio.sleep(due)
        while self.put(Work("timer", callback, args)):
            if period is None:
                self.timers.pop(name, None)
                return
            await asyncio.sleep(period)


assert HOOKS  # the hook names are documented in mesh.actors.actor
