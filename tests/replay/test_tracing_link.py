"""A replayed event stays in its original trace: the consumer's span of the replay joins it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from mesh import App
from mesh.brokers.memory import MemoryBroker
from mesh.event import now
from mesh.replay import ReplaySpec, Target, Window, open_tools
from tests.replay.support import Consumer, flush, mesh_config, sqlite_url, wait_count
from tests.support import BrokerSpec, unique

pytestmark = [pytest.mark.memory, pytest.mark.timeout(60)]


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


@pytest.mark.parametrize("target", ["group", "original"])
async def test_the_replayed_delivery_is_in_the_original_trace(
    exporter: InMemorySpanExporter, tmp_path: Path, target: str
) -> None:
    spec = BrokerSpec("memory", None, {"name": unique("trace")})
    config = mesh_config(spec, sqlite_url(tmp_path))
    topic = unique("orders")
    shop, billing = App("shop", config=config), Consumer("billing", topic, config)
    try:
        async with shop, billing.app:
            start = now()
            await shop.publish(topic, {"a": 1}, type="t")
            await wait_count(billing, 1)
            await flush(shop, billing.app)
            async with open_tools(App("ops", config=config)) as tools:
                chosen = Target.group("billing") if target == "group" else Target.original()
                await tools.replayer.run(ReplaySpec(topic, name="traced", window=Window(start, now()), target=chosen))
            await wait_count(billing, 2)
            await billing.app.join()
    finally:
        MemoryBroker.reset(spec.options["name"])
    spans = [
        s for s in exporter.get_finished_spans() if (s.attributes or {}).get("messaging.destination.name") == topic
    ]
    sends = [s for s in spans if s.name == f"send {topic}"]
    processes = [s for s in spans if s.name == f"process {topic}"]
    assert len(processes) == 2
    original_trace = sends[0].context.trace_id  # type: ignore[union-attr]
    assert {p.context.trace_id for p in processes} == {original_trace}  # type: ignore[union-attr]
