"""Spans of state calls once a real tracer provider is set (none are made before: see handle.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from mesh.state import ETagMismatch
from mesh.state.handle import StateStore
from mesh.state.memory import MemoryStore


@pytest.fixture(scope="module")
def exporter() -> Iterator[InMemorySpanExporter]:
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield exporter
    exporter.shutdown()


async def test_each_call_is_one_client_span_with_the_database_attributes(exporter: InMemorySpanExporter) -> None:
    store = StateStore("carts", MemoryStore("carts"), "shop")
    exporter.clear()
    etag = await store.set("c-1", {"n": 1})
    await store.get("c-1")
    with pytest.raises(ETagMismatch) as info:
        await store.set("c-1", {"n": 2}, etag="stale")
    assert info.value.key == "c-1"  # reported without the app prefix
    async with store.transaction() as tx:
        tx.set("c-1", {"n": 3}, etag=etag)
    spans = exporter.get_finished_spans()
    assert [s.name for s in spans] == ["set carts", "get carts", "set carts", "transaction carts"]
    assert all(s.kind == trace.SpanKind.CLIENT for s in spans)
    assert dict(spans[1].attributes or {}) == {
        "db.system.name": "memory", "db.namespace": "carts", "db.operation.name": "get"}
    assert not spans[2].status.is_ok and spans[2].events[0].name == "exception"
