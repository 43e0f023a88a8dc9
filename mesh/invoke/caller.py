"""The calling side of invocation: pending futures keyed by request id on one reply consumer.

Each App instance has one private reply topic (``_mesh.reply.<instance id>``), consumed by one
ephemeral subscription started on the first invoke. A call registers a future under its request
id, publishes the request and waits; the reply consumer resolves the future whose id the reply's
``correlationid`` names. Calls never wait on each other: there is no lock on the path.

What a call can end with:

- the reply's data (``meshstatus: ok``), or the :class:`~mesh.errors.RemoteError` it carries;
- :class:`~mesh.errors.NoResponders` at once when nobody serves the app: the broker says so
  natively (NATS no-responders), else presence does (after its warm-up, see
  :meth:`mesh.invoke.presence.Presence.wait_live`);
- :class:`~mesh.errors.InvocationTimeout` when no reply came within the timeout. The request
  carries the same deadline (``expirytime``), so the callee does not start work nobody waits for.

Where a request goes: to one live instance of the callee chosen by
:class:`~mesh.resiliency.Balancer` (power of two choices on in-flight, ejected instances skipped),
on its own destination; to the app's shared group when no such instance is known.

Retries (see docs/resiliency.md): the caller sends a request again only for a method its callee
declares idempotent (presence carries the flag), and within the same deadline: when an attempt
got no reply within its attempt timeout (the app's timeout policy, else
``instances.attempt_share`` of the call's timeout), to another instance, as the app's retry
policy and the retry budget allow (``invoke.retries`` times by default); and when presence sees
an instance of the callee vanish while the call is pending. Any call is sent again when the
broker says nobody took it on the chosen instance's destination. Every attempt has its own
request id mapped to the same future, so whichever reply comes first answers the call (earlier
attempts stay pending). A reply that comes after its call ended is dropped and counted
(``late_replies``, and ``mesh_invocation_outcome``). At the end of a call each attempt's
instance is told how it went: answered, silent for a whole attempt timeout (counts towards its
ejection), or overtaken (no verdict).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from opentelemetry import trace

from mesh.brokers.base import Delivery, Subscription
from mesh.errors import InvocationTimeout, MeshError, NoResponders, PluginError
from mesh.event import Event, now
from mesh.invoke.protocol import (
    CORRELATION,
    INVALID_ARGUMENT,
    METHOD_NOT_FOUND,
    PERMISSION_DENIED,
    PING,
    MalformedMessage,
    instance_topic,
    invoke_topic,
    parse_reply,
    remote_error,
    reply_topic,
    request_event,
)
from mesh.resiliency.breaker import CircuitOpen
from mesh.resiliency.instances import Balancer
from mesh.resiliency.policies import Resiliency
from mesh.resiliency.retry import interval
from mesh.resiliency.telemetry import telemetry
from mesh.security import open_reply, seal
from mesh.types import Invocation, InvokeHandle, InvokeLayer

if TYPE_CHECKING:
    from mesh.invoke.presence import Presence
    from mesh.runtime import Runtime

__all__ = ["Caller", "Invocation", "InvokeHandle", "InvokeLayer"]

log = logging.getLogger("mesh.invoke")


class Caller:
    """An App instance's outgoing calls: its reply topic, pending futures and the invoke layers."""

    def __init__(self, runtime: Runtime, presence: Presence) -> None:
        self.runtime = runtime
        self.presence = presence
        self.reply_topic = reply_topic(runtime.instance_id)
        conf = runtime.config.invoke
        self.default_timeout = conf.timeout
        self.retries = conf.retries
        self.late_replies = 0
        """Replies that came after their call ended (dropped)."""
        self.malformed_replies = 0
        """Messages on the reply topic that are not replies (dropped)."""
        self._pending: dict[str, asyncio.Future[Event]] = {}
        self._expected: dict[str, str] = {}  # request id -> the source its reply must come from
        self.foreign_replies = 0
        """Replies to a pending call from a source other than the called app (dropped)."""
        self.rejected_replies = 0
        """Replies that failed verification when signing is on (dropped; see :mod:`mesh.security`)."""
        self._sub: Subscription | None = None
        self._starting: asyncio.Task[None] | None = None
        self._handle: InvokeHandle = self._call
        self._hooks = False
        self._attributes = False
        self.resiliency = Resiliency(runtime.config)
        """The policies of calls to each app (``resiliency.targets.apps``)."""
        self.balancer = Balancer(runtime.config.resiliency.instances, self.probe, runtime.spawn)
        """Which instance each request goes to, and which are ejected."""

    def build(self) -> None:
        """Compose the invoke layers (at app start)."""
        hooks = self.runtime.hooks
        handle: InvokeHandle = self._call
        for layer in reversed(hooks.invoke_layers(self.runtime)):
            handle = layer(handle)
        self._handle = handle
        self._hooks = hooks.implements("mesh_invocation_outcome")
        self._attributes = hooks.implements("mesh_publish_attributes")

    @property
    def pending(self) -> int:
        """Requests waiting for a reply (every attempt counts)."""
        return len(self._pending)

    async def invoke(self, target: str, method: str, data: Any, timeout: float | None, key: str | None) -> Any:
        """Call ``target``'s ``method`` and return the reply's data (see the module docstring)."""
        if not target or not method:
            raise MeshError("invoke needs an app id and a method name")
        call = Invocation(self.runtime, target, method, data, self.default_timeout if timeout is None else timeout, key)
        return await self._handle(call)

    # -- the reply consumer --------------------------------------------------------------------

    async def ready(self) -> None:
        """Start the reply consumer and the presence listener (once; concurrent calls share it)."""
        if self._sub is not None:
            return
        if self._starting is None:
            self._starting = asyncio.get_running_loop().create_task(self._start())
        try:
            await asyncio.shield(self._starting)
        except BaseException:
            if self._starting.done():
                self._starting = None  # a failed start is tried again by the next call
            raise

    async def _start(self) -> None:
        subscribe = self.runtime.broker.subscribe_ephemeral(self.reply_topic, self._on_reply, exclusive=True)
        sub, _ = await asyncio.gather(subscribe, self.presence.listen())
        self._sub = sub

    async def close(self) -> None:
        """Stop the reply consumer; calls still waiting fail."""
        starting, self._starting = self._starting, None
        if starting is not None and not starting.done():
            starting.cancel()
            await asyncio.gather(starting, return_exceptions=True)
        sub, self._sub = self._sub, None
        if sub is not None:
            await sub.stop(drain=False)
        self._expected.clear()
        for future in self._pending.values():
            if not future.done():
                future.set_exception(MeshError(f"{self.runtime.id} stopped while the call was waiting for its reply"))
        self._pending.clear()

    async def _on_reply(self, delivery: Delivery) -> None:
        await delivery.ack()
        event = delivery.event
        try:
            if event is None:
                raise MalformedMessage(f"unreadable message: {delivery.error}")
            correlation, _, _ = parse_reply(event)
        except MalformedMessage as exc:
            self.malformed_replies += 1
            log.warning("dropped a message on %s that is not a reply: %s", self.reply_topic, exc)
            self._outcome(event, "malformed_reply", exc)
            return
        event, rejected = open_reply(self.runtime, self.reply_topic, event)
        if rejected is not None:  # unsigned where required, forged or tampered: never answers a call
            self.rejected_replies += 1
            self._outcome(event, "rejected_reply", None)
            return
        future = self._pending.get(correlation)
        if future is not None and event.source != self._expected.get(correlation):
            self.foreign_replies += 1
            log.warning(
                "dropped a reply to request %s from %r: the request went to %r",
                correlation,
                event.source,
                self._expected.get(correlation),
            )
            self._outcome(event, "foreign_reply", None)
            return
        if future is None:
            self.late_replies += 1
            log.debug("dropped a late reply to request %s (%s)", correlation, event.subject)
            self._outcome(event, "late_reply", None)
            return
        if not future.done():
            future.set_result(event)

    def _outcome(self, reply: Event | None, outcome: str, error: BaseException | None) -> None:
        if not self._hooks:
            return
        try:
            self.runtime.hooks.invocation_outcome(
                self.runtime,
                "caller",
                (reply.subject or "") if reply is not None else "",
                reply.source.removeprefix("/") if reply is not None else "",
                outcome,
                error,
            )
        except PluginError:
            log.exception("a plugin failed in mesh_invocation_outcome")

    # -- one call ------------------------------------------------------------------------------

    async def _call(self, call: Invocation) -> Any:
        try:
            reply = await self._round_trip(call)
        except NoResponders as exc:
            call.outcome, call.error = "no_responders", exc
            raise
        except InvocationTimeout as exc:
            call.outcome, call.error = "timeout", exc
            raise
        except CircuitOpen as exc:
            call.outcome, call.error = "circuit_open", exc
            raise
        except BaseException as exc:
            call.outcome, call.error = "failed", exc
            raise
        _, ok, data = parse_reply(reply)
        if ok:
            call.outcome = "ok"
            return data
        error = remote_error(data, call.method, call.target)
        call.outcome, call.error = error.code, error
        raise error

    async def _round_trip(self, call: Invocation) -> Event:
        loop = asyncio.get_running_loop()
        begun = loop.time()
        deadline = begun + call.timeout
        expires = now() + timedelta(seconds=call.timeout)
        await self.ready()
        presence = self.presence
        native = self.runtime.broker.features.native_request_reply
        if presence.enabled:
            if not native:  # NATS says "no responders" itself, at once
                await presence.wait_live(call.target, deadline)
            call.idempotent = presence.idempotent(call.target, call.method)
        policy = self.resiliency.for_app(call.target)
        if policy.breaker is not None:
            policy.breaker.check()
        policy.budget.call(begun)
        retries = self.resiliency.retries_of(policy)
        trip = _Trip(call, loop.create_future())
        status: asyncio.Future[None] | None = None
        try:
            status = await self._attempt(trip, expires)
            while True:
                t = loop.time()
                if t >= deadline:
                    break
                retry = (presence.enabled and call.idempotent is not False and not trip.exhausted
                         and (retries < 0 or call.attempts <= retries))
                attempt = self._attempt_timeout(call, policy.timeout)
                next_at = min(deadline, trip.last + attempt) if retry and call.idempotent and attempt else deadline
                waiters: list[asyncio.Future[Any]] = [trip.future]
                if status is not None:
                    waiters.append(status)
                departure = presence.departure(call.target) if retry else None
                if departure is not None:
                    waiters.append(departure)
                await _first_done(loop, waiters, next_at - t)
                if trip.future.done():
                    return trip.future.result()
                if status is not None and status.done():
                    error = None if status.cancelled() else status.exception()
                    status = None
                    if isinstance(error, NoResponders):
                        if trip.instance is None:
                            raise NoResponders(f"no instance of app {call.target!r} is listening ({error})") from None
                        # nobody took the request: sending it elsewhere is safe even if it is not idempotent
                        live = self._live(call.target)
                        self.balancer.finished(call.target, trip.instance, None)
                        trip.settled.add(trip.ids[-1])
                        self.balancer.eject(call.target, trip.instance, "no_responders", live)
                        status = await self._again(trip, expires, "no_responders", status)
                elif departure is not None and departure.done():
                    if call.idempotent is None:
                        call.idempotent = presence.idempotent(call.target, call.method)
                    if call.idempotent:
                        if not presence.has_live(call.target) and not native:
                            raise NoResponders(
                                f"every instance of app {call.target!r} vanished while {call.method} was pending"
                            )
                        log.info("an instance of %s vanished: sending %s again (idempotent)", call.target, call.method)
                        status = await self._again(trip, expires, "departure", status)
                elif retry and loop.time() >= next_at and next_at < deadline:
                    if not policy.budget.take(loop.time()):
                        trip.exhausted = True
                        telemetry().retried(f"app:{call.target}", "budget_exhausted")
                        continue
                    if policy.retry is not None:  # the policy's interval; the first attempt may still answer
                        pause = min(interval(policy.retry, call.attempts), deadline - loop.time())
                        await asyncio.wait([trip.future], timeout=max(0.0, pause))
                        if trip.future.done():
                            return trip.future.result()
                    status = await self._again(trip, expires, "timeout", status)
            raise InvocationTimeout(
                f"no reply from {call.target}.{call.method} within {call.timeout:g}s "
                f"({call.attempts} attempt{'s' if call.attempts > 1 else ''})"
            )
        finally:
            self._settle(trip, policy.timeout)
            if status is not None:
                status.cancel()
            if policy.breaker is not None:
                policy.breaker.record(_healthy(trip.future))

    def _attempt_timeout(self, call: Invocation, configured: float | None) -> float | None:
        """Seconds an attempt gets before an idempotent call goes to another instance."""
        if configured is not None:
            return configured
        return call.timeout * self.resiliency.config.instances.attempt_share

    def _live(self, app_id: str) -> tuple[str, ...]:
        """The live instances of an app that serve their own request destination."""
        if not self.presence.enabled:
            return ()
        return self.presence.direct_instances(app_id)

    def _settle(self, trip: _Trip, configured: float | None) -> None:
        """Tell the balancer how each attempt went, and forget the pending ids."""
        target = trip.call.target
        answered = None
        future = trip.future
        if future.done() and not future.cancelled() and future.exception() is None:
            answered = future.result().extensions.get(CORRELATION)
        pending, expected, finished = self._pending, self._expected, self.balancer.finished
        silent: float | None = None  # sent before this loop time: silent for a whole attempt timeout
        for request_id, (instance, sent) in trip.sent.items():
            pending.pop(request_id, None)
            expected.pop(request_id, None)
            if instance is None or request_id in trip.settled:
                continue
            if request_id == answered:
                finished(target, instance, True)
                continue
            if silent is None:
                limit = self._attempt_timeout(trip.call, configured) or trip.call.timeout
                silent = asyncio.get_running_loop().time() - limit * 0.99
            if sent <= silent:  # it counts against the instance (the live set bounds ejections)
                finished(target, instance, False, "timeout", self._live(target))
            else:  # overtaken by another attempt's reply: no verdict
                finished(target, instance, None)

    async def _again(
        self, trip: _Trip, expires: datetime, reason: str, status: asyncio.Future[None] | None
    ) -> asyncio.Future[None] | None:
        """Send the call again, to another instance if there is one (a span event says so)."""
        previous = trip.instance
        if status is not None:
            status.cancel()
        telemetry().retried(f"app:{trip.call.target}", reason)
        new = await self._attempt(trip, expires)
        trace.get_current_span().add_event(
            "mesh.invoke.retry",
            {"mesh.retry.reason": reason, "mesh.instance.previous": previous or "<group>",
             "mesh.instance": trip.instance or "<group>", "mesh.attempt": trip.call.attempts},
        )
        log.debug("%s.%s: attempt %d to %s after %s on %s", trip.call.target, trip.call.method, trip.call.attempts,
                  trip.instance or "the group", reason, previous or "the group")
        return new

    async def _attempt(self, trip: _Trip, expires: datetime) -> asyncio.Future[None] | None:
        """Send one attempt: to a chosen instance's own destination, else the app's shared group."""
        call = trip.call
        instance: str | None = None
        if self.resiliency.config.instances.enabled:
            live = self._live(call.target)
            if live:
                instance = self.balancer.choose(call.target, live, trip.tried)
                if instance is None and trip.tried:
                    instance = self.balancer.choose(call.target, live)
        topic = instance_topic(call.target, instance) if instance is not None else invoke_topic(call.target)
        trip.instance = instance
        if instance is not None:
            trip.tried.add(instance)
            self.balancer.started(call.target, instance)
        trip.last = asyncio.get_running_loop().time()
        ids: list[str] = []
        try:
            return await self._send(call, topic, trip.future, ids, expires)
        finally:
            if ids:
                trip.ids.append(ids[0])
                trip.sent[ids[0]] = (instance, trip.last)
            elif instance is not None:
                self.balancer.finished(call.target, instance, None)

    async def probe(self, app_id: str, instance: str) -> bool:
        """Whether ``instance`` of ``app_id`` answers a ping on its own destination in time."""
        loop = asyncio.get_running_loop()
        wait = min(2.0, self.resiliency.config.instances.ejection)
        event = request_event(self.runtime.source, PING, None, reply_to=self.reply_topic,
                              deadline=now() + timedelta(seconds=wait))
        topic = instance_topic(app_id, instance)
        event = seal(self.runtime, topic, event)
        future: asyncio.Future[Event] = loop.create_future()
        self._pending[event.id] = future
        self._expected[event.id] = f"/{app_id}"
        try:
            await self.runtime.broker.publish_ephemeral(topic, event)
            async with asyncio.timeout(wait):
                await future
            return True
        except (TimeoutError, MeshError, OSError):
            return False
        finally:
            self._pending.pop(event.id, None)
            self._expected.pop(event.id, None)

    async def _send(
        self, call: Invocation, topic: str, future: asyncio.Future[Event], ids: list[str], expires: datetime
    ) -> asyncio.Future[None] | None:
        app = self.runtime
        event = request_event(
            app.source,
            call.method,
            call.data,
            reply_to=self.reply_topic,
            deadline=expires,
            key=call.key,
            extensions=call.extensions,
        )
        if self._attributes:
            event = app.with_attributes(topic, event)
        event = seal(app, topic, event)
        self._pending[event.id] = future
        self._expected[event.id] = f"/{call.target}"
        ids.append(event.id)
        call.attempts += 1
        if call.request_id is None:
            call.request_id = event.id
        return await app.broker.publish_request(topic, event)


async def _first_done(loop: asyncio.AbstractEventLoop, waiters: list[asyncio.Future[Any]], timeout: float) -> None:
    """Return when one of ``waiters`` is done or ``timeout`` seconds passed: ``asyncio.wait``
    with ``FIRST_COMPLETED``, without the sets and the task wrapping it makes for every call
    (the caller looks at the futures itself)."""
    for future in waiters:
        if future.done():
            return
    waiter = loop.create_future()

    def wake(_: object = None) -> None:
        if not waiter.done():
            waiter.set_result(None)

    timer = loop.call_later(max(0.0, timeout), wake)
    for future in waiters:
        future.add_done_callback(wake)
    try:
        await waiter
    finally:
        timer.cancel()
        for future in waiters:
            future.remove_done_callback(wake)


_CALLER_FAULTS = frozenset({METHOD_NOT_FOUND, PERMISSION_DENIED, INVALID_ARGUMENT})


def _healthy(future: asyncio.Future[Event]) -> bool:
    """Whether a call's outcome speaks for the callee's health (for its app's circuit breaker)."""
    if not future.done() or future.cancelled() or future.exception() is not None:
        return False
    _, ok, data = parse_reply(future.result())
    return ok or (isinstance(data, dict) and data.get("code") in _CALLER_FAULTS)


class _Trip:
    """The attempts of one call: where each went and when."""

    __slots__ = ("call", "exhausted", "future", "ids", "instance", "last", "sent", "settled", "tried")

    def __init__(self, call: Invocation, future: asyncio.Future[Event]) -> None:
        self.call = call
        self.future = future
        self.ids: list[str] = []
        self.sent: dict[str, tuple[str | None, float]] = {}
        """Request id -> (the instance it went to, ``None`` for the shared group; loop time sent)."""
        self.settled: set[str] = set()
        """Attempts the balancer was already told about."""
        self.tried: set[str] = set()
        self.instance: str | None = None
        """Where the last attempt went."""
        self.last = 0.0
        self.exhausted = False
        """The retry budget refused a retry: no more for this call."""
