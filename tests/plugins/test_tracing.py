"""The tracing plugin: one trace across apps on every broker, retries and dead letters, API-only propagation.

A tracer provider can be set only once per process, so one module fixture sets an SDK
``TracerProvider`` (or reuses one already set) and adds an ``InMemorySpanExporter`` to it; each test
reads only the spans of its own unique topics. The API-only test runs in a subprocess where the
SDK cannot be imported.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from mesh import App, Event
from mesh.brokers.memory import MemoryBroker
from tests.support import BrokerSpec, unique, wait_for

pytestmark = pytest.mark.timeout(90)


@pytest.fixture(scope="module")
def exporter() -> Iterator[InMemorySpanExporter]:
    """Finished spans of this module (the global provider is set once per process)."""
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield exporter
    exporter.shutdown()


def spans_on(exporter: InMemorySpanExporter, *topics: str) -> list[ReadableSpan]:
    """Finished spans whose destination is one of ``topics``, in end order."""
    return [
        s for s in exporter.get_finished_spans() if (s.attributes or {}).get("messaging.destination.name") in topics
    ]


def one(spans: list[ReadableSpan], name: str) -> ReadableSpan:
    [span] = [s for s in spans if s.name == name]
    return span


def parent_id(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def span_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return span.context.span_id


def trace_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return span.context.trace_id


def ids_in(event: Event) -> tuple[int, int]:
    """(trace id, parent span id) of an event's ``traceparent``."""
    _, trace, parent, _ = str(event.extensions["traceparent"]).split("-")
    return int(trace, 16), int(parent, 16)


async def test_one_trace_across_three_apps(broker_spec: BrokerSpec, exporter: InMemorySpanExporter) -> None:
    orders, invoices = unique("orders"), unique("invoices")
    cfg = {"broker": {**broker_spec.config(), "namespace": unique("tr") + "."}}
    a, b, c = App(unique("a"), config=cfg), App(unique("b"), config=cfg), App(unique("c"), config=cfg)
    got: list[Event] = []

    @b.subscribe(orders)
    async def relay(event: Event) -> None:
        await b.publish(invoices, {"order": event.data["id"]}, type="shop.invoice.created")

    @c.subscribe(invoices)
    async def sink(event: Event) -> None:
        got.append(event)

    await asyncio.gather(b.start(), c.start())  # consumers first: some brokers keep no history
    try:
        async with a:
            sent = await a.publish(orders, {"id": "A1"}, type="shop.order.created", subject="A1")
            await wait_for(lambda: len(got) == 1, timeout=30, what="the event to reach app C")
            await wait_for(lambda: len(spans_on(exporter, orders, invoices)) == 4, what="four finished spans")
    finally:
        await asyncio.gather(b.stop(), c.stop())
        if broker_spec.type == "memory":
            MemoryBroker.reset(broker_spec.options["name"])

    spans = spans_on(exporter, orders, invoices)
    send_a, process_b = one(spans, f"send {orders}"), one(spans, f"process {orders}")
    send_b, process_c = one(spans, f"send {invoices}"), one(spans, f"process {invoices}")
    assert len({trace_id(s) for s in spans}) == 1, "one trace for the whole flow"
    assert send_a.parent is None
    assert parent_id(process_b) == span_id(send_a)
    assert parent_id(send_b) == span_id(process_b)
    assert parent_id(process_c) == span_id(send_b)
    assert [link.context.span_id for link in process_b.links] == [span_id(send_a)]
    assert [link.context.span_id for link in process_c.links] == [span_id(send_b)]
    assert [s.kind for s in (send_a, process_b, send_b, process_c)] == [
        SpanKind.PRODUCER,
        SpanKind.CONSUMER,
        SpanKind.PRODUCER,
        SpanKind.CONSUMER,
    ]
    system = "nats" if broker_spec.type == "jetstream" else broker_spec.type
    assert dict(send_a.attributes or {}) == {
        "messaging.system": system,
        "messaging.destination.name": orders,
        "messaging.operation.type": "send",
        "messaging.operation.name": "send",
        "messaging.message.id": sent.id,
        "cloudevents.event_id": sent.id,
        "cloudevents.event_type": "shop.order.created",
        "cloudevents.event_source": a.source,
        "cloudevents.event_spec_version": "1.0",
        "cloudevents.event_subject": "A1",
    }
    attrs = dict(process_b.attributes or {})
    assert attrs["messaging.system"] == system
    assert attrs["messaging.operation.type"] == "process"
    assert attrs["messaging.consumer.group.name"] == b.id
    assert attrs["messaging.message.id"] == attrs["cloudevents.event_id"] == sent.id
    assert attrs["cloudevents.event_type"] == "shop.order.created"
    assert attrs["cloudevents.event_source"] == a.source
    assert (process_c.attributes or {})["messaging.consumer.group.name"] == c.id
    assert (process_c.attributes or {})["cloudevents.event_id"] == got[0].id
    # the context was updated on the hop: C received the context of B's send span
    assert ids_in(got[0]) == (trace_id(send_b), span_id(send_b))
    assert all(s.status.status_code is StatusCode.UNSET for s in spans)


@pytest.mark.memory
async def test_retries_and_the_dead_letter_stay_in_the_trace(
    memory_spec: BrokerSpec, exporter: InMemorySpanExporter, caplog: pytest.LogCaptureFixture
) -> None:
    jobs = unique("jobs")
    cfg = {
        "broker": memory_spec.config(),
        "defaults": {"retry": {"attempts": 3, "immediate": 1, "initial": "1ms", "max": "5ms"}},
    }
    app = App(unique("svc"), config=cfg)

    @app.subscribe(jobs)
    async def work(event: Event) -> None:
        raise RuntimeError("boom")

    async with app:
        sent = await app.publish(jobs, {"n": 1}, type="job")
        await app.join()
    [dead] = app.broker.dead_letters(jobs)  # type: ignore[attr-defined]
    MemoryBroker.reset(memory_spec.options["name"])

    spans = spans_on(exporter, jobs, f"{jobs}.dlq")
    assert [s.name for s in spans] == [f"send {jobs}", f"process {jobs}", f"send {jobs}.dlq", f"process {jobs}"]
    send, first, dlq_send, second = spans
    assert len({trace_id(s) for s in spans}) == 1
    assert parent_id(first) == parent_id(second) == span_id(send)
    assert [link.context.span_id for link in second.links] == [span_id(send)]
    # first delivery: a call, an immediate retry, then a delayed retry through the broker
    assert {k: (first.attributes or {}).get(k) for k in ("mesh.delivery.attempt", "mesh.attempt")} == {
        "mesh.delivery.attempt": 1,
        "mesh.attempt": 2,
    }
    assert (first.attributes or {})["mesh.immediate_retries"] == 1
    assert (first.attributes or {})["mesh.outcome"] == "retry"
    # redelivery: the last call, then the dead-letter publish happens inside the process span
    assert (second.attributes or {})["mesh.delivery.attempt"] == 2
    assert (second.attributes or {})["mesh.attempt"] == 3
    assert (second.attributes or {})["mesh.outcome"] == "dead_letter"
    assert parent_id(dlq_send) == span_id(second)
    assert dlq_send.start_time is not None and second.start_time is not None
    assert second.start_time <= dlq_send.start_time and dlq_send.end_time <= second.end_time  # type: ignore[operator]
    for failed in (first, second):
        assert failed.status.status_code is StatusCode.ERROR
        assert (failed.attributes or {})["error.type"] == "RuntimeError"
        assert [e.name for e in failed.events] == ["exception"]
    assert (dlq_send.attributes or {})["messaging.message.id"] == sent.id, "the dead letter is the original event"
    assert ids_in(dead) == (trace_id(dlq_send), span_id(dlq_send)), "a redrive continues the trace"
    assert not [
        r for r in caplog.records if r.levelno >= logging.WARNING and r.name != "mesh.delivery"
    ], "each span ended and detached once"


@pytest.mark.memory
async def test_a_handler_publish_without_incoming_context_starts_from_the_process_span(
    memory_spec: BrokerSpec, exporter: InMemorySpanExporter
) -> None:
    """An event from a producer without tracing still gets a process span, and a trace from there."""
    src, out = unique("src"), unique("out")
    app = App(unique("svc"), config={"broker": memory_spec.config()})

    @app.subscribe(src)
    async def relay(event: Event) -> None:
        await app.publish(out, None, type="relayed")

    async with app:
        await app.broker.publish(src, Event(type="legacy", source="/elsewhere"))  # no traceparent
        await app.join()
    MemoryBroker.reset(memory_spec.options["name"])
    spans = spans_on(exporter, src, out)
    process, send = one(spans, f"process {src}"), one(spans, f"send {out}")
    assert process.parent is None and process.links == ()
    assert parent_id(send) == span_id(process)
    [relayed] = app.broker.messages(out)  # type: ignore[attr-defined]
    assert ids_in(relayed) == (trace_id(send), span_id(send))


API_ONLY = textwrap.dedent(
    """
    import asyncio, json, sys
    sys.modules["opentelemetry.sdk"] = None  # only opentelemetry-api is importable
    from opentelemetry import trace
    from mesh import App, Event

    TRACE, PARENT = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"

    async def main():
        app = App("relay", config={"broker": {"type": "memory", "options": {"name": "api-only"}}})
        seen = {}

        @app.subscribe("in")
        async def relay(event: Event) -> None:
            seen["current"] = format(trace.get_current_span().get_span_context().trace_id, "032x")
            await app.publish("out", event.data, type="relayed")

        async with app:
            await app.publish(
                "in", {"n": 1}, type="incoming",
                extensions={"traceparent": f"00-{TRACE}-{PARENT}-01", "tracestate": "vendor=1"},
            )
            await app.publish("plain", None, type="plain")
            await app.join()
        [out] = app.broker.messages("out")
        [plain] = app.broker.messages("plain")
        return {
            "trace": TRACE,
            "current": seen["current"],
            "out": {k: v for k, v in out.extensions.items() if k.startswith("trace")},
            "plain": sorted(plain.extensions),
            "plugins": app.plugins.names(),
            "outcome_hooks": app.runtime.outcome_hooks,
            "sdk_loaded": any(m.startswith("opentelemetry.sdk.") for m in sys.modules),
        }

    print(json.dumps(asyncio.run(main())))
    """
)


@pytest.mark.memory
def test_api_only_forwards_the_incoming_trace_context() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "MESH_"))}
    proc = subprocess.run([sys.executable, "-c", API_ONLY], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    got: dict[str, Any] = json.loads(proc.stdout)
    assert got["current"] == got["trace"], "the incoming context is current in the handler"
    assert got["out"] == {"traceparent": f"00-{got['trace']}-b7ad6b7169203331-01", "tracestate": "vendor=1"}
    assert got["plain"] == [], "no context, nothing written"
    assert "tracing" in got["plugins"]
    assert got["outcome_hooks"] is False, "without an SDK the plugins add no outcome hook"
    assert got["sdk_loaded"] is False


@pytest.mark.memory
async def test_publish_many_makes_a_span_per_event_linked_to_one_batch_span(
    memory_spec: BrokerSpec, exporter: InMemorySpanExporter
) -> None:
    topic = unique("bulk")
    app = App(unique("svc"), config={"broker": memory_spec.config()})
    async with app:
        result = await app.publish_many(topic, [1, 2, 3], type="n")
    MemoryBroker.reset(memory_spec.options["name"])
    assert result.ok
    spans = spans_on(exporter, topic)
    [batch] = [s for s in spans if (s.attributes or {}).get("messaging.batch.message_count") == 3]
    events = [s for s in spans if s is not batch]
    assert len(events) == 3 and all(s.name == f"send {topic}" and s.kind == SpanKind.PRODUCER for s in events)
    assert all([link.context.span_id for link in s.links] == [span_id(batch)] for s in events)
    assert {ids_in(e)[1] for e in app.broker.messages(topic)} == {span_id(s) for s in events}  # type: ignore[attr-defined]
