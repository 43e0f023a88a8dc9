"""Routes: the handlers of one (topic, group) of an App behind one broker subscription.

A :class:`Route` hands each delivery to the first of its handlers whose filters match; events no
handler wants are acked (``skipped``); an undecodable message goes straight to the dead-letter
step. Each handler's pipeline is composed once at start: the plugins' delivery layers around
handling plus settlement (:mod:`mesh.pipeline.settle`), their handler layers around the call.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from mesh.errors import DeadLetter
from mesh.event import Event
from mesh.extensions import RESERVED_PREFIX
from mesh.names import check_handler_signature
from mesh.pipeline.batch import BatchSpec
from mesh.pipeline.injection import injection_plan, matcher
from mesh.pipeline.settle import dead_letter, outcome, settling
from mesh.pipeline.stepping import is_taskless
from mesh.resiliency.breaker import CircuitBreaker
from mesh.resiliency.policies import Resiliency
from mesh.types import Context, Handle, HandlerLayer, SubscriptionInfo

if TYPE_CHECKING:
    from mesh.brokers.base import Delivery
    from mesh.runtime import Runtime

__all__ = ["HandlerSpec", "Route", "breaking"]


class HandlerSpec:
    """One decorated handler: its function, topic, group, filters and how to call it."""

    batched = False

    def __init__(
        self,
        fn: Callable[..., Any],
        topic: str,
        group: str,
        filters: Mapping[str, Any],
        concurrency: int | None,
    ) -> None:
        check_handler_signature(fn)
        self.fn = fn
        self.topic = topic
        self.group = group
        self.filters = dict(filters)
        self.concurrency = concurrency
        self.name = f"{fn.__module__}.{fn.__qualname__}"
        self._matchers = [(name, matcher(value)) for name, value in self.filters.items()]
        self._plan = injection_plan(fn)
        self._is_async = inspect.iscoroutinefunction(fn)
        self._simple = len(self._plan) == 1 and self._plan[0][1] == "event" and self._plan[0][2] is None

    def matches(self, event: Event) -> bool:
        """Whether the event passes every filter."""
        for name, match in self._matchers:
            if not match(event.get(name)):
                return False
        return True

    def arguments(self, ctx: Context) -> dict[str, Any]:
        """The handler's keyword arguments for this delivery."""
        event = ctx.event
        assert event is not None
        out: dict[str, Any] = {}
        for name, kind, convert in self._plan:
            if kind == "event":
                out[name] = event if convert is None else convert(event)  # an SDK CloudEvent parameter
            elif kind == "context":
                out[name] = ctx
            elif convert is None:
                out[name] = event.data
            else:
                try:
                    out[name] = convert(event.data)
                except ValidationError as exc:
                    summary = "; ".join(
                        f"{'.'.join(str(p) for p in e['loc']) or '<data>'}: {e['msg']}" for e in exc.errors()[:5]
                    )
                    raise DeadLetter(f"event data does not match parameter {name!r}: {summary}") from exc
        return out

    async def call(self, ctx: Context) -> Any:
        """Run the handler once for this delivery."""
        if self._simple:
            result = self.fn(ctx.event)
        else:
            result = self.fn(**self.arguments(ctx))
        if self._is_async or inspect.isawaitable(result):
            return await result
        return result


def _compose(layers: list[HandlerLayer], core: Handle) -> Handle:
    handle = core
    for layer in reversed(layers):
        handle = layer(handle)
    return handle


class Route:
    """The handlers of one (topic, group) in an App, behind one broker subscription."""

    def __init__(self, runtime: Runtime, topic: str, group: str) -> None:
        self.runtime = runtime
        self.topic = topic
        self.group = group
        self.handlers: list[tuple[HandlerSpec | BatchSpec, SubscriptionInfo, Handle]] = []
        self.config = runtime.config.for_topic(topic)
        self.undecodable_info = SubscriptionInfo(topic, group, "<undecodable>", self.config)
        self.breaker: CircuitBreaker | None = None
        """The inbound circuit breaker (``resiliency.targets.topics.<topic>.inbound``): while it is
        open, deliveries wait before their handler instead of failing into retries."""

    def add(self, spec: HandlerSpec | BatchSpec) -> None:
        """Add a handler, or a batch handler (layers are built at :meth:`build`)."""
        info = SubscriptionInfo(self.topic, self.group, spec.name, self.config, spec.filters)
        self.handlers.append((spec, info, spec.call))

    def build(self) -> None:
        """Ask plugins for layers and compose each handler's pipeline: delivery layers around
        handling plus settlement, handler layers around the handler call."""
        built = []
        runtime, hooks = self.runtime, self.runtime.hooks
        timeout = None
        if self.breaker is None and not self.topic.startswith(RESERVED_PREFIX):
            resiliency = Resiliency(runtime.config)
            self.breaker, timeout = resiliency.inbound(self.topic), resiliency.inbound_timeout(self.topic)
        for spec, info, _ in self.handlers:
            handler_layers, delivery_layers = hooks.handler_layers(runtime, info), hooks.delivery_layers(runtime, info)
            handle = _compose(handler_layers, spec.call)
            breaks = self.breaker is not None or timeout is not None
            if breaks:
                handle = breaking(self.breaker, handle, timeout)
            if isinstance(spec, BatchSpec):  # asyncio.timeout in breaking() needs a task per delivery
                spec.stepped = not breaks and all(is_taskless(x) for x in handler_layers + delivery_layers)
            built.append((spec, info, _compose(delivery_layers, settling(handle))))
        self.handlers = built

    @property
    def concurrency(self) -> int:
        """Handlers in flight at once for this subscription."""
        values = [s.concurrency for s, _, _ in self.handlers if s.concurrency]
        return max(values) if values else (self.config.concurrency or 1)

    async def __call__(self, delivery: Delivery) -> None:
        event = delivery.event
        if event is None:
            ctx = Context(self.runtime, delivery, None, self.undecodable_info)
            await dead_letter(ctx, delivery.error)
            return
        for spec, info, handle in self.handlers:  # noqa: B007 - the match is used after the loop
            if spec.matches(event):
                break
        else:
            await delivery.ack()
            if self.runtime.outcome_hooks:
                outcome(Context(self.runtime, delivery, event, self.undecodable_info), "skipped", None)
            return
        if self.breaker is not None:
            try:
                await self.breaker.admit()  # open: consumption pauses here, the delivery waits in hand
            except asyncio.CancelledError:  # the app stops while paused: give the delivery back untouched
                if not delivery.done:
                    with contextlib.suppress(Exception):
                        await delivery.nack()
                raise
        if isinstance(spec, BatchSpec):
            await spec.admit(handle(Context(self.runtime, delivery, event, info)))
        else:
            await handle(Context(self.runtime, delivery, event, info))

    @property
    def inline(self) -> bool:
        """Whether every handler is a batch handler: the adapter's runner then calls this route
        inline at any concurrency (the batch handlers hold the deliveries and the back-pressure)."""
        return bool(self.handlers) and all(spec.batched for spec, _, _ in self.handlers)

    async def drain(self) -> None:
        """Hand over the open batches and wait until their deliveries are settled (at stop)."""
        for spec, _, _ in self.handlers:
            if isinstance(spec, BatchSpec):
                await spec.drain()


def breaking(breaker: CircuitBreaker | None, handle: Handle, timeout: float | None = None) -> Handle:
    """``handle`` within ``timeout`` (a ``TimeoutError`` past it), telling ``breaker`` how each call
    went; its exception still goes on to settling (retry or dead letter)."""

    async def call(ctx: Context) -> Any:
        try:
            async with asyncio.timeout(timeout):
                result = await handle(ctx)
        except DeadLetter:  # the event is bad, the handler is fine
            if breaker is not None:
                breaker.record(True)
            raise
        except Exception:
            if breaker is not None:
                breaker.record(False)
            raise
        if breaker is not None:
            breaker.record(True)
        return result

    return call
