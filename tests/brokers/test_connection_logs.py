"""A lost broker connection is one INFO line in the mesh's words, and so is the reconnection."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from mesh import App, Event
from tests.bindings.test_webhook_load import RedisServer
from tests.support import unique, wait_for

pytestmark = [pytest.mark.redis, pytest.mark.slow]


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


async def test_redis_outage_is_one_line_lost_and_one_line_back(
    private_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="mesh.connection")
    topic = unique("orders")
    app = App(unique("svc"), config={"broker": {"type": "redis", "url": private_redis.url}})
    seen: list[Event] = []

    @app.subscribe(topic)
    async def handle(event: Event) -> None:
        seen.append(event)

    async with app:
        await app.publish(topic, {"n": 1}, type="t")
        await wait_for(lambda: len(seen) == 1, what="the first event")
        private_redis.stop()
        await wait_for(lambda: "lost connection to redis" in caplog.text, timeout=15, what="the lost line")
        await asyncio.sleep(2)  # the consumer keeps trying meanwhile: no line per try
        private_redis.start()
        await wait_for(lambda: "reconnected to redis" in caplog.text, timeout=20, what="the reconnected line")
        await app.publish(topic, {"n": 2}, type="t")
        await wait_for(lambda: len(seen) == 2, timeout=20, what="the event after the outage")
    lines = [r.getMessage() for r in caplog.records if r.name == "mesh.connection"]
    assert sum("lost connection to redis" in line for line in lines) == 1, lines
    assert sum("reconnected to redis" in line for line in lines) == 1, lines
