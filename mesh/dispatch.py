"""The delivery pipeline: decode -> handler layers -> handler -> ack, retry or dead-letter.

One :class:`Route` per (topic, group) of an App owns one broker subscription and hands each
delivery to the first of its handlers whose filters match (events no handler wants are acked).
A handler failure asks the ``mesh_retry_decision`` hook what to do; dead-lettering writes first
and acks after, so nothing is lost if the write fails (the delivery comes back instead).
"""

from __future__ import annotations

import asyncio
import fnmatch
import inspect
import logging
import re
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal, get_type_hints

from pydantic import BaseModel, TypeAdapter, ValidationError

from mesh.brokers.base import Delivery
from mesh.config import SubscriptionConfig
from mesh.errors import DeadLetter, PluginError
from mesh.event import Event, now

if TYPE_CHECKING:
    from mesh.app import App

__all__ = [
    "Context",
    "Decision",
    "HandlerLayer",
    "HandlerSpec",
    "PublishLayer",
    "Route",
    "SubscriptionInfo",
]

log = logging.getLogger("mesh.dispatch")

Handle = Callable[["Context"], Awaitable[Any]]
HandlerLayer = Callable[[Handle], Handle]
"""``layer(next) -> handle``: wraps the call of a handler (see ``mesh_handler_layers``)."""
Publish = Callable[[str, Event], Awaitable[None]]
PublishLayer = Callable[[Publish], Publish]
"""``layer(next) -> publish``: wraps publishing (see ``mesh_publish_layers``)."""

FALLBACK_REDELIVERY = 30.0
"""Seconds before a delivery comes back when it could be neither handled nor dead-lettered."""


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do with a delivery whose handler failed."""

    action: Literal["retry", "dead_letter"]
    delay: float = 0.0
    reason: str = ""

    @classmethod
    def retry(cls, delay: float = 0.0) -> Decision:
        """Deliver again after ``delay`` seconds (through the broker, not a sleeping handler)."""
        return cls("retry", delay)

    @classmethod
    def dead_letter(cls, reason: str = "") -> Decision:
        """Send to the dead-letter destination now."""
        return cls("dead_letter", 0.0, reason)


@dataclass(frozen=True, slots=True)
class SubscriptionInfo:
    """What plugins see of a subscription: topic, group, handler name, its settings and filters."""

    topic: str
    group: str
    name: str
    config: SubscriptionConfig
    filters: Mapping[str, Any] = field(default_factory=dict)


class Context:
    """One delivery on its way through the pipeline; layers and hooks read and annotate it.

    ``attempt`` is the handler call number (1 for the first call), kept by the retry plugin;
    ``state`` is a dict plugins may use to pass values along one delivery.
    """

    __slots__ = (
        "app",
        "attempt",
        "delivery",
        "error",
        "event",
        "first_failure",
        "outcome",
        "state",
        "subscription",
    )

    def __init__(self, app: App, delivery: Delivery, event: Event | None, subscription: SubscriptionInfo) -> None:
        self.app = app
        self.delivery = delivery
        self.event = event
        self.subscription = subscription
        self.attempt = delivery.attempt
        self.first_failure: datetime | None = None
        self.error: BaseException | None = None
        """The handler's exception, once it failed."""
        self.outcome = ""
        """How the delivery was settled: handled, skipped, retry, dead_letter or returned."""
        self.state: dict[str, Any] = {}

    @property
    def topic(self) -> str:
        """The topic the delivery came from."""
        return self.subscription.topic

    @property
    def group(self) -> str:
        """The consumer group it was delivered to."""
        return self.subscription.group


# -- filters -------------------------------------------------------------------------------


def _matcher(value: Any) -> Callable[[Any], bool]:
    if callable(value):
        return value  # type: ignore[no-any-return]
    if isinstance(value, list | tuple | set | frozenset):
        options = {str(v) for v in value}
        return lambda got: got is not None and str(got) in options
    text = str(value)
    if any(c in text for c in "*?["):
        rx = re.compile(fnmatch.translate(text))
        return lambda got: got is not None and rx.match(str(got)) is not None
    return lambda got: got is not None and (got == text or str(got) == text)


# -- parameter injection -------------------------------------------------------------------


def _data_adapter(annotation: Any) -> Callable[[Any], Any]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        model = annotation

        def to_model(data: Any) -> Any:
            if isinstance(data, model):
                return data
            if isinstance(data, BaseModel):
                data = data.model_dump()
            if isinstance(data, bytes | str):
                return model.model_validate_json(data)
            return model.model_validate(data)

        return to_model
    adapter: TypeAdapter[Any] = TypeAdapter(annotation)
    return adapter.validate_python


def _resolve(fn: Callable[..., Any]) -> dict[str, Any]:
    """The handler's annotations, resolved where possible (a name imported inside a function
    cannot be: ``Event`` and ``Context`` are then recognised by name)."""
    try:
        return get_type_hints(fn)
    except Exception:  # an annotation that does not resolve from the module: resolve one by one
        out: dict[str, Any] = {}
        namespace = dict(getattr(fn, "__globals__", {}))
        for name, ann in getattr(fn, "__annotations__", {}).items():
            if isinstance(ann, str):
                ann = ann.strip("'\"")  # a quoted annotation under postponed evaluation
                short = ann.rsplit(".", 1)[-1]
                known = {"Event": Event, "Context": Context}.get(short)
                try:
                    ann = known or eval(ann, namespace)  # annotations are the author's own code
                except Exception:
                    ann = inspect.Parameter.empty  # unresolvable: the data is passed as it is
                if isinstance(ann, str):
                    ann = inspect.Parameter.empty
            out[name] = ann
        return out


def _injection_plan(fn: Callable[..., Any]) -> list[tuple[str, str, Callable[[Any], Any] | None]]:
    """(parameter, kind, converter) per parameter: kind is event, context or data."""
    hints = _resolve(fn)
    plan: list[tuple[str, str, Callable[[Any], Any] | None]] = []
    for name, param in inspect.signature(fn).parameters.items():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        ann = hints.get(name, inspect.Parameter.empty)
        if ann is Event or (ann is inspect.Parameter.empty and name in ("event", "e", "ev")):
            plan.append((name, "event", None))
        elif ann is Context:
            plan.append((name, "context", None))
        elif ann is inspect.Parameter.empty or ann is Any:
            plan.append((name, "data", None))
        else:
            plan.append((name, "data", _data_adapter(ann)))
    return plan


class HandlerSpec:
    """One decorated handler: its function, topic, group, filters and how to call it."""

    def __init__(
        self,
        fn: Callable[..., Any],
        topic: str,
        group: str,
        filters: Mapping[str, Any],
        concurrency: int | None,
    ) -> None:
        self.fn = fn
        self.topic = topic
        self.group = group
        self.filters = dict(filters)
        self.concurrency = concurrency
        self.name = f"{fn.__module__}.{fn.__qualname__}"
        self._matchers = [(name, _matcher(value)) for name, value in self.filters.items()]
        self._plan = _injection_plan(fn)
        self._is_async = inspect.iscoroutinefunction(fn)
        self._simple = len(self._plan) == 1 and self._plan[0][1] == "event"

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
                out[name] = event
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

    def __init__(self, app: App, topic: str, group: str) -> None:
        self.app = app
        self.topic = topic
        self.group = group
        self.handlers: list[tuple[HandlerSpec, SubscriptionInfo, Handle]] = []
        self.config = app.config.for_topic(topic)
        self.undecodable_info = SubscriptionInfo(topic, group, "<undecodable>", self.config)

    def add(self, spec: HandlerSpec) -> None:
        """Add a handler (layers are built at :meth:`build`)."""
        info = SubscriptionInfo(self.topic, self.group, spec.name, self.config, spec.filters)
        self.handlers.append((spec, info, spec.call))

    def build(self) -> None:
        """Ask plugins for layers and compose each handler's pipeline: delivery layers around
        handling plus settlement, handler layers around the handler call."""
        built = []
        plugins = self.app.plugins
        for spec, info, _ in self.handlers:
            handle = _compose(plugins.call("mesh_handler_layers", app=self.app, subscription=info), spec.call)
            built.append(
                (
                    spec,
                    info,
                    _compose(plugins.call("mesh_delivery_layers", app=self.app, subscription=info), _settling(handle)),
                )
            )
        self.handlers = built

    @property
    def concurrency(self) -> int:
        """Handlers in flight at once for this subscription."""
        values = [s.concurrency for s, _, _ in self.handlers if s.concurrency]
        return max(values) if values else (self.config.concurrency or 1)

    async def __call__(self, delivery: Delivery) -> None:
        event = delivery.event
        if event is None:
            ctx = Context(self.app, delivery, None, self.undecodable_info)
            await dead_letter(ctx, delivery.error)
            return
        for spec, info, handle in self.handlers:  # noqa: B007 - the match is used after the loop
            if spec.matches(event):
                break
        else:
            await delivery.ack()
            if self.app.outcome_hooks:
                outcome(Context(self.app, delivery, event, self.undecodable_info), "skipped", None)
            return
        await handle(Context(self.app, delivery, event, info))


def _settling(handle: Handle) -> Handle:
    """Run the handler pipeline, then settle the delivery: ack, or retry / dead-letter on failure."""

    async def process(ctx: Context) -> None:
        try:
            await handle(ctx)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            ctx.error = exc
            await failed(ctx, exc)
            return
        await ctx.delivery.ack()
        ctx.outcome = "handled"
        if ctx.app.outcome_hooks:
            outcome(ctx, "handled", None)

    return process


def outcome(ctx: Context, what: str, error: BaseException | None) -> None:
    """Tell plugins how a delivery was settled (``mesh_delivery_outcome``); never raises."""
    ctx.outcome = what
    try:
        ctx.app.plugins.call("mesh_delivery_outcome", context=ctx, outcome=what, error=error)
    except PluginError:
        log.exception("a plugin failed in mesh_delivery_outcome")


class FailureMemory:
    """When each event first failed in each group, as far as this process saw (bounded LRU)."""

    def __init__(self, size: int = 10_000) -> None:
        self._seen: OrderedDict[tuple[str, str, str], datetime] = OrderedDict()
        self._size = size

    def first(self, ctx: Context) -> datetime:
        """The first failure time of the context's event, recording now if it is new."""
        event = ctx.event
        key = (ctx.group, event.source if event else "", event.id if event else str(id(ctx)))
        seen = self._seen.get(key)
        if seen is None:
            seen = self._seen[key] = now()
            if len(self._seen) > self._size:
                self._seen.popitem(last=False)
        return seen

    def forget(self, ctx: Context) -> None:
        """Drop the record once the event left the group (handled or dead-lettered)."""
        event = ctx.event
        if event is not None:
            self._seen.pop((ctx.group, event.source, event.id), None)


async def failed(ctx: Context, exc: BaseException) -> None:
    """A handler failed: retry or dead-letter as the plugins decide (dead-letter if none does)."""
    ctx.first_failure = ctx.app.failures.first(ctx)
    try:
        decision = ctx.app.plugins.first("mesh_retry_decision", context=ctx, error=exc)
    except PluginError:
        log.exception("retry decision failed; the delivery comes back in %ss", FALLBACK_REDELIVERY)
        await ctx.delivery.nack(delay=FALLBACK_REDELIVERY)
        ctx.outcome = "returned"
        if ctx.app.outcome_hooks:
            outcome(ctx, "returned", exc)
        return
    if decision is None:
        decision = Decision.dead_letter(str(exc))
    if decision.action == "retry":
        await ctx.delivery.nack(delay=decision.delay or None)
        ctx.outcome = "retry"
        if ctx.app.outcome_hooks:
            outcome(ctx, "retry", exc)
        return
    if not isinstance(exc, DeadLetter):
        reason, cause = decision.reason or str(exc), exc
        exc = DeadLetter(reason)
        exc.__cause__ = cause
    await dead_letter(ctx, exc)


async def dead_letter(ctx: Context, error: BaseException | None) -> None:
    """Write to the dead-letter destination, then ack; if anything fails, the delivery comes back."""
    app = ctx.app
    try:
        target = app.plugins.first("mesh_dead_letter_target", context=ctx, error=error)
        if target is None:
            log.error(
                "no dead-letter destination for %s (is the deadletter plugin disabled?): "
                "the delivery comes back in %ss",
                ctx.topic,
                FALLBACK_REDELIVERY,
            )
            await ctx.delivery.nack(delay=FALLBACK_REDELIVERY)
            ctx.outcome = "returned"
            if app.outcome_hooks:
                outcome(ctx, "returned", error)
            return
        event = app.plugins.first("mesh_dead_letter_event", context=ctx, error=error, target=target)
        if event is None:
            event = ctx.event
        if event is None:
            raise RuntimeError("no plugin made a dead-letter event for an undecodable message")
        await app.send(target, event)
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("dead-lettering from %s failed; the delivery comes back", ctx.topic)
        await ctx.delivery.nack(delay=1.0)
        ctx.outcome = "returned"
        if app.outcome_hooks:
            outcome(ctx, "returned", error)
        return
    await ctx.delivery.ack()
    app.failures.forget(ctx)
    ctx.outcome = "dead_letter"
    if app.outcome_hooks:
        outcome(ctx, "dead_letter", error)
    try:
        app.plugins.call("mesh_event_dead_lettered", context=ctx, event=event, target=target)
    except PluginError:
        log.exception("a plugin failed after dead-lettering to %s", target)
