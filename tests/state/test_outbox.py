"""The outbox under failure: a relay SIGKILLed mid-batch loses nothing; a broker down keeps the changes."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from mesh.brokers import create_broker
from mesh.brokers.base import Delivery
from mesh.components import Registry
from mesh.event import Event
from mesh.state.block import StateBlock, build_store
from tests.support import DEFAULT_URLS, reachable, unavailable, unique, wait_for

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.redis
async def test_relay_sigkilled_mid_batch_loses_nothing(tmp_path: Path) -> None:
    url = DEFAULT_URLS["redis"]
    if not reachable(url, 6379):
        unavailable(f"redis at {url}")
    db, topic, n = tmp_path / "state.db", unique("changes"), 1000
    store, _ = build_store("s", {"type": "sqlite", "url": f"sqlite:///{db}", "changes": topic}, Registry(), "crash")
    await store.backend.open()
    for i in range(n):
        await store.set(f"k{i}", i)
    await store.backend.close()

    broker = create_broker("redis", url)
    await broker.connect()
    seen: list[str] = []

    async def handler(d: Delivery) -> None:
        assert d.event is not None
        seen.append(d.event.id)
        await d.ack()

    sub = await broker.subscribe(topic, unique("g"), handler)

    def relay() -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-m", "tests.state.relay_proc", str(db), topic, url], cwd=ROOT,
                                env={**os.environ, "PYTHONPATH": str(ROOT)})

    proc: subprocess.Popen[bytes] | None = None
    try:
        proc = relay()
        await wait_for(lambda: len(seen) >= 100, 15, "the first relay to publish")
        proc.send_signal(signal.SIGKILL)
        proc.wait(5)
        killed_at = len(set(seen))
        assert killed_at < n, "the relay finished before it was killed"
        proc = relay()
        await wait_for(lambda: len(set(seen)) >= n, 15, f"every change ({len(set(seen))}/{n})")
        proc.send_signal(signal.SIGKILL)
        proc.wait(5)
        assert len(set(seen)) == n  # 0 lost; duplicates (at least once) keep their ids
    finally:
        if proc is not None and proc.poll() is None:  # a failed wait: no relay left behind
            proc.kill()
            proc.wait(5)
        await sub.stop(drain=False)
        await broker.close()


@pytest.mark.slow
@pytest.mark.jetstream
async def test_relay_keeps_changes_while_the_broker_is_down(tmp_path: Path) -> None:
    from tests.brokers.nats_support import NatsServer

    server = NatsServer(tmp_path / "js")
    topic, n = unique("down"), 1000
    broker = create_broker("jetstream", server.url)
    await broker.connect()
    await broker.ensure_topic(topic)
    got: set[str] = set()

    async def handler(d: Delivery) -> None:
        assert d.event is not None
        got.add(d.event.subject or "")
        await d.ack()

    published = 0

    async def publish(t: str, event: Event) -> None:
        nonlocal published
        await asyncio.wait_for(broker.publish(t, event), 2)
        published += 1

    block = StateBlock("down", {"s": {"type": "sqlite", "url": f"sqlite:///{tmp_path}/s.db", "changes": topic}},
                       Registry(), publish, asyncio.ensure_future, logging.getLogger("down"))
    await block.start()
    store = block.store("s")
    try:
        await store.set("before", 0)
        await wait_for(lambda: published >= 1, 10, "the first change")
        server.stop()
        for i in range(n):
            await store.set(f"k{i}", i)
        assert published < n + 1
        server.start()
        await wait_for(lambda: published >= n + 1, 20, "every change once the broker is back")
        sub = await broker.subscribe(topic, unique("g"), handler)
        await wait_for(lambda: len(got) >= n + 1, 15, f"every change delivered ({len(got)})")
        await sub.stop(drain=False)
    finally:
        await block.stop()
        await broker.close()
        server.stop()
