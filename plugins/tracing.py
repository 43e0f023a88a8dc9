"""Built-in tracing plugin: W3C trace context on every hop and OpenTelemetry messaging spans.

Publishing runs inside a ``send <topic>`` span (kind PRODUCER) whose context is written into the
event as the ``traceparent``/``tracestate`` extensions (the codecs put them on the wire as the
plain W3C headers). Handling runs inside a ``process <topic>`` span (kind CONSUMER): a child of
the producer's context read back from the event, with a link to it. The process layer is
``tryfirst`` and a *delivery* layer, so its span wraps the retry layer and the settlement: a
dead-letter publish is a ``send <topic>.dlq`` child of it, and a delayed retry is a new
``process`` span in the same trace.

A ``publish_many`` gives each event its own ``send <topic>`` span, as a ``publish`` would, and
one more ``send <topic>`` span for the whole batch (``messaging.batch.message_count``) that each
event's span links to.

Only ``opentelemetry-api`` is required. Without an SDK tracer provider no span is made, but an
incoming ``traceparent`` is made current while the handler runs and is forwarded on every event
the handler publishes; with no context to forward, the layers only pass the call on. Whether an
App makes spans is decided when it is created and started (set the tracer provider first), so
no event pays for a provider lookup.

Invocation follows the RPC conventions: a call is one ``<app>/<method>`` span of kind CLIENT
around the whole round trip (every attempt), whose context its requests carry; the callee
handles each request inside a ``<app>/<method>`` span of kind SERVER, its child. Requests and
replies skip the publish layers, so there is no ``send`` span between the two. See
``docs/plugins/tracing.md``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.propagators.textmap import Getter
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode

from mesh import __version__
from mesh.event import Event, ExtensionValue
from mesh.hooks import hookimpl
from mesh.invoke import Invocation, InvokeHandle, InvokeLayer
from mesh.invoke.protocol import INVOKE_PREFIX
from mesh.pipeline.stepping import taskless
from mesh.telemetry import tracing_on
from mesh.types import (
    PUBLISH_BATCH,
    Context,
    Handle,
    HandlerLayer,
    Publish,
    PublishBatch,
    PublishLayer,
    SubscriptionInfo,
)

if TYPE_CHECKING:
    from mesh.runtime import Runtime

name = "tracing"

TRACER_NAME = "mesh"
RPC_SYSTEM = "mesh"
"""``rpc.system`` of invocation spans."""
SYSTEMS = {"jetstream": "nats"}
"""``messaging.system`` for broker types whose name differs from the system's."""

_EMPTY = otel_context.Context()
_tracer: trace.Tracer | None = None


class ExtensionsGetter(Getter[Mapping[str, ExtensionValue]]):
    """Reads W3C trace context from an event's extensions (bytes are decoded, as Kafka gives them)."""

    def get(self, carrier: Mapping[str, ExtensionValue], key: str) -> list[str] | None:
        value = carrier.get(key)
        if value is None:
            return None
        if isinstance(value, bytes):
            return [value.decode("latin-1")]
        return [str(value)]

    def keys(self, carrier: Mapping[str, ExtensionValue]) -> list[str]:
        return list(carrier)


GETTER = ExtensionsGetter()


def sdk_tracer() -> trace.Tracer | None:
    """The mesh tracer once a real tracer provider is set; ``None`` while spans would be no-ops."""
    global _tracer
    if _tracer is None:
        if not tracing_on():
            return None
        _tracer = trace.get_tracer(TRACER_NAME, __version__)
    return _tracer


def extract(event: Event) -> otel_context.Context:
    """The trace context an event carries (empty when it has none); never the ambient one."""
    if "traceparent" not in event.extensions:
        return _EMPTY
    return propagate.extract(event.extensions, context=_EMPTY, getter=GETTER)


def inject(event: Event) -> Event:
    """The event with the current trace context as ``traceparent``/``tracestate``."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    traceparent = carrier.get("traceparent")
    if traceparent is None:
        return event
    ext = event.extensions
    tracestate = carrier.get("tracestate")
    if ext.get("traceparent") == traceparent and ext.get("tracestate") == tracestate:
        return event
    return event.with_extensions(traceparent=traceparent, tracestate=tracestate)


def system_of(runtime: Runtime) -> str:
    """``messaging.system`` of the App's broker (``jetstream`` is ``nats``)."""
    kind = runtime.config.broker.type
    return SYSTEMS.get(kind, kind)


def event_attributes(event: Event) -> dict[str, str]:
    """The per-event attributes of the messaging and CloudEvents conventions."""
    attrs = {
        "messaging.message.id": event.id,
        "cloudevents.event_id": event.id,
        "cloudevents.event_type": event.type,
        "cloudevents.event_source": event.source,
        "cloudevents.event_spec_version": event.specversion,
    }
    if event.subject is not None:
        attrs["cloudevents.event_subject"] = event.subject
    return attrs


# -- publishing ----------------------------------------------------------------------------


@hookimpl(tryfirst=True)
def mesh_publish_layers(runtime: Runtime) -> PublishLayer:
    tracer = sdk_tracer()  # decided once per App, at start: no provider lookup per event
    if tracer is None:
        return _forward_context
    system = system_of(runtime)

    def layer(next_: Publish) -> Publish:
        async def publish(topic: str, event: Event) -> None:
            parent = otel_context.get_current()
            if not trace.get_current_span(parent).get_span_context().is_valid:
                parent = extract(event)  # outside a handler: continue the trace the event carries
            attributes = event_attributes(event)
            attributes["messaging.system"] = system
            attributes["messaging.destination.name"] = topic
            attributes["messaging.operation.type"] = "send"
            attributes["messaging.operation.name"] = "send"
            batch = PUBLISH_BATCH.get()
            links = None if batch is None else [Link(_batch_span(tracer, batch, system).get_span_context())]
            with tracer.start_as_current_span(
                f"send {topic}", context=parent, kind=SpanKind.PRODUCER, attributes=attributes, links=links
            ):
                await next_(topic, inject(event))

        return publish

    return layer


def _batch_span(tracer: trace.Tracer, batch: PublishBatch, system: str) -> Span:
    """The one ``send <topic>`` span of a ``publish_many`` (made by its first event, ended with
    the batch); each event's own ``send`` span links to it."""
    span: Span | None = batch.state.get(name)
    if span is None:
        attributes: dict[str, Any] = {
            "messaging.system": system,
            "messaging.destination.name": batch.topic,
            "messaging.operation.type": "send",
            "messaging.operation.name": "send",
            "messaging.batch.message_count": batch.size,
        }
        span = tracer.start_span(f"send {batch.topic}", kind=SpanKind.PRODUCER, attributes=attributes)
        batch.state[name] = span
        batch.on_done(span.end)
    return span


def _forward_context(next_: Publish) -> Publish:
    """The publish layer without an SDK: write the current context into the event, if there is one."""

    async def publish(topic: str, event: Event) -> None:
        if otel_context.get_current() and trace.get_current_span().get_span_context().is_valid:
            event = inject(event)
        await next_(topic, event)

    return publish


# -- handling ------------------------------------------------------------------------------


@hookimpl(tryfirst=True)
def mesh_delivery_layers(runtime: Runtime, subscription: SubscriptionInfo) -> HandlerLayer:
    tracer = sdk_tracer()  # decided once per subscription, at start
    if tracer is None:
        return _attach_context
    span_name = f"process {subscription.topic}"
    static = {
        "messaging.system": system_of(runtime),
        "messaging.destination.name": subscription.topic,
        "messaging.consumer.group.name": subscription.group,
        "messaging.operation.type": "process",
        "messaging.operation.name": "process",
    }
    serving = subscription.topic.startswith(INVOKE_PREFIX)  # the app's methods: RPC server spans
    if serving:
        static.update({"rpc.system": RPC_SYSTEM, "rpc.service": runtime.id})

    def layer(next_: Handle) -> Handle:
        async def handle(ctx: Context) -> Any:
            event = ctx.event
            assert event is not None  # undecodable messages do not pass through delivery layers
            parent = extract(event)
            producer = trace.get_current_span(parent).get_span_context()
            attributes: dict[str, Any] = {**static, **event_attributes(event)}
            attributes["mesh.delivery.attempt"] = ctx.delivery.attempt
            name, kind = span_name, SpanKind.CONSUMER
            if serving:
                name, kind = f"{runtime.id}/{event.subject}", SpanKind.SERVER
                attributes["rpc.method"] = event.subject or ""
            span = tracer.start_span(
                name,
                context=parent,
                kind=kind,
                attributes=attributes,
                links=[Link(producer)] if producer.is_valid else None,
            )
            token = otel_context.attach(trace.set_span_in_context(span, parent))
            try:
                return await next_(ctx)  # the handler and its settlement: a dead letter is a child span
            finally:
                _annotate(span, ctx)
                exc = ctx.error
                if exc is not None:
                    span.record_exception(exc)
                    span.set_attribute("error.type", type(exc).__qualname__)
                    span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
                otel_context.detach(token)
                span.end()

        return handle

    return taskless(layer)


@taskless
def _attach_context(next_: Handle) -> Handle:
    """The handler layer without an SDK: the incoming context is current while the handler runs."""

    async def handle(ctx: Context) -> Any:
        event = ctx.event
        if event is None or "traceparent" not in event.extensions:
            return await next_(ctx)
        token = otel_context.attach(extract(event))
        try:
            return await next_(ctx)
        finally:
            otel_context.detach(token)

    return handle


def _annotate(span: Span, ctx: Context) -> None:
    span.set_attribute("mesh.attempt", ctx.attempt)
    if ctx.outcome:
        span.set_attribute("mesh.outcome", ctx.outcome)
    retries = ctx.state.get("immediate_retries", 0)
    if retries:
        span.set_attribute("mesh.immediate_retries", retries)


# -- invocation ----------------------------------------------------------------------------


@hookimpl(tryfirst=True)
def mesh_invoke_layers(runtime: Runtime) -> InvokeLayer:
    tracer = sdk_tracer()  # decided once per App, at start
    if tracer is None:
        return _forward_invoke_context
    system = system_of(runtime)

    def layer(next_: InvokeHandle) -> InvokeHandle:
        async def invoke(call: Invocation) -> Any:
            attributes = {
                "rpc.system": RPC_SYSTEM,
                "rpc.service": call.target,
                "rpc.method": call.method,
                "messaging.system": system,
                "messaging.destination.name": INVOKE_PREFIX + call.target,
            }
            with tracer.start_as_current_span(
                f"{call.target}/{call.method}",
                kind=SpanKind.CLIENT,
                attributes=attributes,
                record_exception=False,
                set_status_on_exception=False,
            ) as span:
                _inject_into(call)
                try:
                    return await next_(call)
                finally:
                    span.set_attribute("mesh.invoke.attempts", call.attempts)
                    if call.outcome:
                        span.set_attribute("mesh.invoke.outcome", call.outcome)
                    if call.request_id:
                        span.set_attribute("messaging.message.id", call.request_id)
                    exc = call.error
                    if exc is not None:
                        span.record_exception(exc)
                        span.set_attribute("error.type", getattr(exc, "type", None) or type(exc).__qualname__)
                        span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))

        return invoke

    return layer


def _forward_invoke_context(next_: InvokeHandle) -> InvokeHandle:
    """The invoke layer without an SDK: the current context, if any, travels with the requests."""

    async def invoke(call: Invocation) -> Any:
        if otel_context.get_current() and trace.get_current_span().get_span_context().is_valid:
            _inject_into(call)
        return await next_(call)

    return invoke


def _inject_into(call: Invocation) -> None:
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    for key in ("traceparent", "tracestate"):
        value = carrier.get(key)
        if value:
            call.extensions[key] = value
