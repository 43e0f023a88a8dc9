"""2,000 webhook requests while the broker goes down and comes back: nothing is lost.

A private redis-server (own port and folder, append-only) is stopped and started mid-run; each
request is either confirmed (202, the event is in the stream) or answered 503 and retried by
the client. At the end every id is in the stream.
"""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import redis.asyncio as aioredis

from mesh import App
from mesh.bindings.http import HttpIn
from tests.support import free_port, reachable, unique, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.redis]

REQUESTS = 2000


class RedisServer:
    """A redis-server of this test alone."""

    def __init__(self, folder: Path) -> None:
        self.port = free_port()
        self.folder = folder
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        args = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--appendonly", "yes"]
        args += ["--dir", str(self.folder), "--save", "", "--appendfsync", "always"]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()  # a clean shutdown: the append-only file is complete
            self.proc.wait(10)
            self.proc = None


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


async def test_webhook_load_loses_nothing_when_the_broker_is_briefly_down(private_redis: RedisServer) -> None:
    await wait_for(lambda: reachable(private_redis.url, private_redis.port), what="the private redis")
    topic = unique("load")
    hook = {"type": "http-in", "path": "/in", "topic": topic, "port": 0, "publish_timeout": 1}
    config: dict[str, Any] = {
        "broker": {"type": "redis", "url": private_redis.url},
        "bindings": {"hook": hook},
        "presence": {"enabled": False},
    }
    app = App(unique("app"), config=config)
    confirmed: set[str] = set()
    refused = 0
    async with app:
        binding = app.bindings.bindings["hook"]
        assert isinstance(binding, HttpIn)
        url = binding.url
        limit = asyncio.Semaphore(32)

        async def send(http: aiohttp.ClientSession, i: int) -> None:
            nonlocal refused
            body = orjson.dumps({"specversion": "1.0", "id": f"e{i}", "source": "/load", "type": "t", "data": {"i": i}})
            async with limit:
                while True:
                    try:
                        async with http.post(
                            url, data=body, headers={"content-type": "application/cloudevents+json"}
                        ) as r:
                            if r.status == 202:
                                confirmed.add(f"e{i}")
                                return
                            assert r.status == 503, await r.text()
                            refused += 1
                    except aiohttp.ClientError:
                        refused += 1
                    await asyncio.sleep(0.05)

        async def outage() -> None:
            await wait_for(lambda: len(confirmed) >= REQUESTS // 4, timeout=30, what="a quarter confirmed")
            private_redis.stop()
            await wait_for(lambda: refused > 0, timeout=10, what="a 503")
            await asyncio.sleep(0.3)
            private_redis.start()

        async with aiohttp.ClientSession() as http:
            await asyncio.gather(outage(), *(send(http, i) for i in range(REQUESTS)))
    assert len(confirmed) == REQUESTS and refused > 0
    client = aioredis.from_url(private_redis.url)
    try:
        entries = await client.xrange(topic)
    finally:
        await client.aclose()
    in_stream = {fields[b"ce_id"].decode() for _, fields in entries}
    assert confirmed <= in_stream  # duplicates allowed (a timed-out publish may land later): none lost
