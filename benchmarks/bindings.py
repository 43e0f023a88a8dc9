"""Webhook throughput into the broker: the ``http-in`` binding next to a bare aiohttp handler.

    python -m benchmarks.bindings [--brokers redis,jetstream] [--requests 3000] [--concurrency 32]

- **bare**: an aiohttp handler that reads the JSON body and publishes it with the raw client
  (Redis ``XADD``; JetStream ``js.publish``, which waits for the stream's ack), then answers 202.
  No CloudEvent, no checks: the floor a webhook receiver can get to.
- **mesh**: the ``http-in`` binding on the same machine: reads and checks the body, wraps it in a
  CloudEvent, publishes through the app's publish path (plugins, tracing) and answers 202 once
  the broker confirmed.

Both are driven by one aiohttp client in the same process (``--concurrency`` requests in flight,
``--requests`` in all); the ratio is mesh / bare from this run. Brokers at the loopback addresses
the tests use; a broker that is not reachable is skipped.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web

from mesh import App
from mesh.bindings.http import HttpIn
from mesh.testing import reachable

URLS = {"redis": ("redis://127.0.0.1:6379/0", 6379), "jetstream": ("nats://127.0.0.1:4222", 4222)}
BODY = b'{"action": "opened", "number": 42, "repository": {"full_name": "acme/shop"}}'


@dataclass
class Row:
    """One broker's result."""

    broker: str
    bare: float
    mesh: float


async def drive(url: str, requests: int, concurrency: int) -> float:
    """Requests per second posting ``BODY`` to ``url`` (every answer must be 202)."""
    limit = asyncio.Semaphore(concurrency)
    headers = {"content-type": "application/json"}
    async with aiohttp.ClientSession() as http:

        async def one() -> None:
            async with limit, http.post(url, data=BODY, headers=headers) as r:
                await r.read()
                if r.status != 202:
                    raise RuntimeError(f"{url} answered {r.status}")

        await asyncio.gather(*(one() for _ in range(min(50, requests))))  # warm-up
        start = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(requests)))
        return requests / (time.perf_counter() - start)


async def raw_publisher(
    broker: str, topic: str
) -> tuple[Callable[[bytes], Awaitable[Any]], Callable[[], Awaitable[None]]]:
    """``publish(body)`` and ``close()`` with the broker's own client."""
    url = URLS[broker][0]
    if broker == "redis":
        import redis.asyncio as aioredis

        client = aioredis.from_url(url)

        async def close_redis() -> None:
            await client.delete(topic)
            await client.aclose()

        return (lambda body: client.xadd(topic, {"data": body})), close_redis
    import nats

    nc = await nats.connect(url)
    js = nc.jetstream()
    await js.add_stream(name=topic.replace(".", "_"), subjects=[topic])

    async def close_nats() -> None:
        await js.delete_stream(topic.replace(".", "_"))
        await nc.close()

    return (lambda body: js.publish(topic, body)), close_nats


async def bare(broker: str, requests: int, concurrency: int) -> float:
    """The bare aiohttp handler's rate."""
    topic = f"bench-bare-{uuid.uuid4().hex[:8]}"
    publish, close = await raw_publisher(broker, topic)

    async def handle(request: web.Request) -> web.Response:
        await publish(await request.read())
        return web.Response(status=202)

    app = web.Application()
    app.router.add_post("/in", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        return await drive(f"http://127.0.0.1:{port}/in", requests, concurrency)
    finally:
        await runner.cleanup()
        await close()


async def mesh(broker: str, requests: int, concurrency: int) -> float:
    """The ``http-in`` binding's rate."""
    topic = f"bench-mesh-{uuid.uuid4().hex[:8]}"
    config: dict[str, Any] = {
        "broker": {"type": broker, "url": URLS[broker][0]},
        "presence": {"enabled": False},
        "bindings": {"hook": {"type": "http-in", "path": "/in", "topic": topic, "port": 0}},
    }
    app = App("bench-bindings", config=config)
    async with app:
        binding = app.bindings.bindings["hook"]
        assert isinstance(binding, HttpIn)
        rate = await drive(binding.url, requests, concurrency)
    if broker == "redis":
        import redis.asyncio as aioredis

        client = aioredis.from_url(URLS[broker][0])
        await client.delete(topic)
        await client.aclose()
    else:
        import nats

        nc = await nats.connect(URLS[broker][0])
        js = nc.jetstream()
        try:
            await js.delete_stream(await js.find_stream_name_by_subject(topic))
        finally:
            await nc.close()
    return rate


async def run(brokers: list[str], requests: int, concurrency: int) -> list[Row]:
    """Both rows for each reachable broker."""
    rows = []
    for broker in brokers:
        url, port = URLS[broker]
        if not reachable(url, port):
            print(f"{broker}: not reachable at {url}, skipped")
            continue
        rows.append(Row(broker, await bare(broker, requests, concurrency), await mesh(broker, requests, concurrency)))
    return rows


def table(rows: list[Row], concurrency: int) -> str:
    """The results as a Markdown table."""
    lines = [
        f"webhook requests/s into the broker ({concurrency} in flight)",
        "",
        "| broker | bare aiohttp + raw client | mesh http-in | mesh / bare |",
        "|---|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r.broker} | {r.bare:,.0f} | {r.mesh:,.0f} | {r.mesh / r.bare:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[Row]:
    """Run the benchmark and print its table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--brokers", default="redis,jetstream", help="comma-separated: redis, jetstream")
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args(argv)
    brokers = [b.strip() for b in args.brokers.split(",") if b.strip()]
    unknown = set(brokers) - set(URLS)
    if unknown:
        parser.error(f"unknown brokers: {', '.join(sorted(unknown))}")
    rows = asyncio.run(run(brokers, args.requests, args.concurrency))
    print(table(rows, args.concurrency))
    return rows


if __name__ == "__main__":
    main()
