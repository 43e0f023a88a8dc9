"""The batch contenders of the pub/sub benchmark: ``publish_many`` into a batch subscription.

``mesh-bulk`` publishes with ``app.publish_many`` in chunks of ``CHUNK`` events (one chunk
awaited at a time, so at most ``CHUNK`` are unconfirmed, like the single-event rows' window)
and consumes with ``@app.subscribe(topic, batch=BatchPolicy(max_size=BATCH, max_wait=50 ms))``,
each event acked on its own. ``benchmarks.pubsub`` runs it beside the single-event rows and
reports ``bulk/raw`` against the raw client's single-message row on the same broker.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from benchmarks import contenders

CHUNK = 500
"""Events per ``publish_many`` call."""
BATCH = 500
"""``max_size`` of the batch subscription."""


async def bulk_consume(kind: str, url: str | None, topic: str, group: str, n: int, ready: Any, done: Any) -> None:
    """The mesh consumer with a batch subscription."""
    from mesh import App, Event
    from mesh.batch import BatchPolicy

    app = App(group, config=contenders._mesh_config(kind, url))
    counter = contenders._Counter(n, done)

    @app.subscribe(topic, batch=BatchPolicy(max_size=BATCH, max_wait=timedelta(milliseconds=50)))
    async def handle(events: list[Event]) -> None:
        for _ in events:
            counter.hit()

    async with app:
        ready.set()
        await counter.finished.wait()


async def bulk_produce(kind: str, url: str | None, topic: str, n: int) -> None:
    """The mesh producer with ``publish_many``."""
    from mesh import App

    async with App("bench-producer", config=contenders._mesh_config(kind, url)) as app:
        if contenders.on_first_publish is not None:
            contenders.on_first_publish()
        for start in range(0, n, CHUNK):
            items = [contenders._body(i) for i in range(start, min(n, start + CHUNK))]
            result = await app.publish_many(topic, items, type="bench.event")
            result.raise_for_failures()


async def memory_bulk(n: int) -> float:
    """Events per second from ``publish_many`` into a batch subscription on the memory broker."""
    import time
    import uuid

    from mesh import App, Event
    from mesh.batch import BatchPolicy

    config = {
        "broker": {"type": "memory", "options": {"name": f"bench-{uuid.uuid4().hex[:6]}", "retention": n}},
        "plugins": {"disable": ["tracing", "metrics"]},
    }
    consumer, producer = App("bench-consumer", config=config), App("bench-producer", config=config)
    seen = 0
    finished = asyncio.Event()

    @consumer.subscribe("bench", batch=BatchPolicy(max_size=BATCH, max_wait=timedelta(milliseconds=50)))
    async def handle(events: list[Event]) -> None:
        nonlocal seen
        seen += len(events)
        if seen >= n:
            finished.set()

    async with consumer, producer:
        start = time.monotonic()
        for first in range(0, n, CHUNK):
            items = [contenders._body(i) for i in range(first, min(n, first + CHUNK))]
            await producer.publish_many("bench", items, type="bench.event")
            await asyncio.sleep(0)
        await finished.wait()
        return n / (time.monotonic() - start)


contenders.CONSUMERS.setdefault("mesh-bulk", bulk_consume)
contenders.PRODUCERS.setdefault("mesh-bulk", bulk_produce)
