"""``mesh tail``: a live view of a topic on every broker, joining no group, with ``--since``."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import orjson
import pytest
import yaml

from mesh import App, Event
from mesh.brokers.capabilities import keeps_history
from mesh.errors import FeatureNotSupported
from mesh.event import now
from mesh.replay.filters import EventFilter
from mesh.tail import tail
from tests.support import DEFAULT_URLS, BrokerSpec, unique, wait_for


@pytest.mark.timeout(90)
async def test_tail_shows_recent_and_live_events_without_taking_them_from_groups(broker_spec: BrokerSpec) -> None:
    topic = unique("tail")
    config = {"broker": broker_spec.config()}
    producer, consumer = App("tail-pub", config=config), App("tail-sub", config=config)
    consumed: list[str] = []

    @consumer.subscribe(topic)
    async def on(event: Event) -> None:
        consumed.append(event.id)

    shown: list[Event] = []
    stop, live = asyncio.Event(), asyncio.Event()
    async with consumer, producer:
        before = await producer.publish(topic, {"n": 0}, type="shop.order.placed")
        history = keeps_history(producer.broker, topic)
        since = now() - timedelta(minutes=10) if history else None
        task = asyncio.create_task(
            tail(
                producer.broker,
                topic,
                shown.append,
                filter=EventFilter(types=("shop.order.*",)),
                since=since,
                stop=stop,
                live=live,
            )
        )
        await asyncio.wait_for(live.wait(), 30)
        sent = [
            await producer.publish(topic, {"n": 1}, type="shop.order.placed"),
            await producer.publish(topic, {"n": 2}, type="other.thing"),
            await producer.publish(topic, {"n": 3}, type="shop.order.cancelled", extensions={"tenant": "acme"}),
        ]
        expected = ([before.id] if history else []) + [sent[0].id, sent[2].id]
        await wait_for(lambda: len(shown) >= len(expected), timeout=20, what="the tailed events")
        await wait_for(lambda: len(consumed) == 4, timeout=20, what="the group's own deliveries")
        stop.set()
        count = await asyncio.wait_for(task, 10)
    assert [e.id for e in shown] == expected
    assert count == len(expected)
    assert shown[-1].extensions["tenant"] == "acme" and shown[-1].data == {"n": 3}
    assert sorted(consumed) == sorted([before.id, *(e.id for e in sent)])  # the tail took nothing away


@pytest.mark.nats
async def test_since_without_a_broker_log_or_archive_names_the_archive() -> None:
    app = App("tail-pub", config={"broker": {"type": "nats", "url": DEFAULT_URLS["nats"]}})
    async with app:
        with pytest.raises(FeatureNotSupported, match="archive"):
            await tail(app.broker, unique("tail"), print, since=now() - timedelta(minutes=5))


@pytest.mark.redis
@pytest.mark.timeout(60)
def test_the_command_prints_json_lines_and_ends_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    topic = unique("tail")
    conf = tmp_path / "mesh.yaml"
    conf.write_text(yaml.safe_dump({"broker": {"type": "redis", "url": DEFAULT_URLS["redis"]}}))
    env = {**os.environ, "MESH_CONFIG": str(conf)}

    async def publish() -> list[str]:
        app = App("tail-cli", config=str(conf))
        async with app:
            return [(await app.publish(topic, {"n": i}, type=f"shop.order.{i}")).id for i in range(2)]

    ids = asyncio.run(publish())
    proc = subprocess.Popen(
        [sys.executable, "-m", "mesh.cli", "tail", topic, "--type", "shop.order.*", "--since", "10m", "-o", "json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline() for _ in ids]
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    docs = [orjson.loads(line) for line in lines]
    assert [d["id"] for d in docs] == ids
    assert docs[0]["type"] == "shop.order.0" and docs[0]["data"] == {"n": 0} and docs[0]["specversion"] == "1.0"
    assert "2 event(s) shown" in err
