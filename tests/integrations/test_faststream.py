"""A real FastStream app beside a mesh App on each broker: both directions, trace ids, dead letters."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from faststream.kafka import KafkaBroker
from faststream.nats import NatsBroker
from faststream.rabbit import ExchangeType, RabbitBroker, RabbitExchange, RabbitQueue
from faststream.redis import RedisBroker, StreamSub
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags
from pydantic import BaseModel

from mesh import App, Event
from mesh.integrations.faststream import MeshEvent, MeshEventType, MeshMiddleware
from tests.conftest import _spec
from tests.support import BrokerSpec, unique, wait_for

KINDS = ("kafka", "rabbitmq", "nats", "redis")
TIMEOUT = 30.0  # a Kafka group join on Tansu takes ~5 s


class Order(BaseModel):
    id: str
    qty: int


@pytest.fixture(params=[pytest.param(k, marks=getattr(pytest.mark, k)) for k in KINDS])
def spec(request: pytest.FixtureRequest) -> BrokerSpec:
    """Each broker in turn (Kafka is the session's Tansu)."""
    return _spec(request.param, request)


def faststream_broker(spec: BrokerSpec, middleware: MeshMiddleware) -> Any:
    """A FastStream broker of the spec's kind, with the mesh middleware (bound, for dead letters)."""
    url = spec.url or ""
    cls: Any = {"kafka": KafkaBroker, "rabbitmq": RabbitBroker, "nats": NatsBroker, "redis": RedisBroker}[spec.type]
    return middleware.bind(cls(url, middlewares=[middleware]))


def subscriber(broker: Any, spec: BrokerSpec, topic: str, group: str) -> Any:
    """A FastStream subscriber reading what the mesh writes on ``topic`` (its own group)."""
    if spec.type == "kafka":
        return broker.subscriber(topic, group_id=group, auto_offset_reset="earliest")
    if spec.type == "rabbitmq":
        exchange = RabbitExchange(topic, type=ExchangeType.TOPIC, durable=True)
        return broker.subscriber(RabbitQueue(f"{topic}.{group}", durable=True, routing_key="#"), exchange)
    if spec.type == "nats":
        return broker.subscriber(topic)
    return broker.subscriber(stream=StreamSub(topic, group=group, consumer="c1", last_id="0"))


async def publish(broker: Any, spec: BrokerSpec, topic: str, message: Any, headers: dict[str, str]) -> None:
    """FastStream's own ``publish`` to where a mesh App reads ``topic``."""
    if spec.type == "rabbitmq":
        exchange = RabbitExchange(topic, type=ExchangeType.TOPIC, durable=True)
        await broker.publish(message, exchange=exchange, routing_key=topic, headers=headers)
    elif spec.type == "redis":
        await broker.publish(message, stream=topic, headers=headers)
    else:
        await broker.publish(message, topic, headers=headers)


@asynccontextmanager
async def running(*parts: Any) -> AsyncIterator[None]:
    """Start FastStream brokers and mesh Apps in order; stop them in reverse."""
    started: list[Any] = []
    try:
        for part in parts:
            await part.start()
            started.append(part)
        yield
    finally:
        for part in reversed(started):
            await part.stop()


def a_trace() -> tuple[NonRecordingSpan, int]:
    """A span context to publish under (no SDK needed) and its trace id."""
    trace_id = secrets.randbits(128) or 1
    ctx = SpanContext(trace_id, secrets.randbits(64) or 1, is_remote=False, trace_flags=TraceFlags(1))
    return NonRecordingSpan(ctx), trace_id


def trace_id_of(traceparent: object) -> int:
    return int(str(traceparent).split("-")[1], 16)


async def test_faststream_handler_gets_the_mesh_event_with_typed_data_and_the_trace(spec: BrokerSpec) -> None:
    topic, group = unique("fs-in"), unique("billing")
    app = App("shop", config={"broker": spec.config()})
    fs = faststream_broker(spec, MeshMiddleware(source="/legacy-billing"))
    seen: list[tuple[Order, Event, int]] = []

    @subscriber(fs, spec, topic, group)
    async def handle(order: Order, event: MeshEvent) -> None:
        seen.append((order, event, trace.get_current_span().get_span_context().trace_id))

    span, trace_id = a_trace()
    async with running(fs, app):
        with trace.use_span(span):
            sent = await app.publish(topic, Order(id="A1", qty=2), type="shop.order.placed", subject="A1")
        await wait_for(lambda: len(seen) == 1, TIMEOUT, "the FastStream handler")
    order, event, current = seen[0]
    assert order == Order(id="A1", qty=2)
    assert (event.id, event.type, event.source, event.subject) == (sent.id, "shop.order.placed", "/shop", "A1")
    assert event.data == {"id": "A1", "qty": 2} and event.datacontenttype == "application/json"
    assert trace_id_of(event.extensions["traceparent"]) == trace_id
    assert current == trace_id  # the trace continues in the handler


async def test_mesh_handler_gets_a_cloudevent_from_a_faststream_publish(spec: BrokerSpec) -> None:
    topic = unique("fs-out")
    app = App("shop", config={"broker": spec.config()})
    fs = faststream_broker(spec, MeshMiddleware(source="/legacy-billing"))
    seen: list[Event] = []

    @app.subscribe(topic)
    async def on(event: Event) -> None:
        seen.append(event)

    span, trace_id = a_trace()
    async with running(app, fs):
        headers = MeshEvent.headers(type="shop.order.placed", subject="A1", region="eu", priority=3)
        with trace.use_span(span):
            await publish(fs, spec, topic, Order(id="A1", qty=2), headers)
        await wait_for(lambda: len(seen) == 1, TIMEOUT, "the mesh handler")
    event = seen[0]
    assert (event.type, event.source, event.subject) == ("shop.order.placed", "/legacy-billing", "A1")
    assert event.data == {"id": "A1", "qty": 2} and event.datacontenttype == "application/json"
    assert event.extensions["region"] == "eu" and event.extensions["priority"] == "3"
    assert event.id and event.time is not None
    assert trace_id_of(event.extensions["traceparent"]) == trace_id


async def test_a_failing_faststream_handler_dead_letters_with_the_failure_extensions(spec: BrokerSpec) -> None:
    topic, group = unique("fs-dl"), unique("billing")
    app = App("shop", config={"broker": spec.config()})
    fs = faststream_broker(spec, MeshMiddleware(source="/legacy-billing", group=group, dead_letter=True))
    letters: list[Event] = []

    @subscriber(fs, spec, topic, group)
    async def handle(order: Order) -> None:
        raise ValueError(f"no stock for {order.id}")

    @app.subscribe(f"{topic}.dlq")
    async def on_dead(event: Event) -> None:
        letters.append(event)

    async with running(fs, app):
        sent = await app.publish(topic, {"id": "A9", "qty": 1}, type="shop.order.placed")
        await wait_for(lambda: len(letters) == 1, TIMEOUT, "the dead letter")
    letter = letters[0]
    assert (letter.id, letter.type, letter.source, letter.data) == (sent.id, sent.type, "/shop", {"id": "A9", "qty": 1})
    ext = letter.extensions
    assert ext["mesherrortype"] == "ValueError" and ext["mesherror"] == "no stock for A9"
    assert (ext["meshtopic"], ext["meshgroup"], ext["meshattempts"]) == (topic, group, "1")
    assert ext["meshfirstfail"] and ext["meshlastfail"]


def test_mesh_event_headers_are_marked_and_checked() -> None:
    headers = MeshEventType.headers(type="t", source="/s", subject="x", flag=True)
    assert headers == {"_mesh.ce.type": "t", "_mesh.ce.source": "/s", "_mesh.ce.subject": "x", "_mesh.ce.flag": "true"}
    with pytest.raises(ValueError, match="extension"):
        MeshEvent.headers(type="t", Bad_Name="x")
