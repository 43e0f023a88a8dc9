"""Remove what test runs leave on the shared servers: every name the suite makes contains ``mt-``.

Run at the start and the end of a session (tests/conftest.py), so durable queues, streams and
JetStream streams from this run, or from a run that was killed, do not pile up on the machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess

MARK = "mt-"


def _rabbitmq() -> None:
    ctl = shutil.which("rabbitmqctl")
    if ctl is None:
        return
    found: dict[str, list[str]] = {}
    for kind in ("queues", "exchanges"):
        try:
            out = subprocess.run(
                [ctl, "-q", f"list_{kind}", "name"], capture_output=True, text=True, timeout=30, check=False
            ).stdout
        except (OSError, subprocess.SubprocessError):
            return
        found[kind] = [n.strip() for n in out.splitlines() if MARK in n.lower()]
    if found["queues"] or found["exchanges"]:
        asyncio.run(_delete_rabbitmq(found["queues"], found["exchanges"]))


async def _delete_rabbitmq(queues: list[str], exchanges: list[str]) -> None:
    import aio_pika

    with contextlib.suppress(Exception):
        connection = await aio_pika.connect("amqp://guest:guest@127.0.0.1:5672/", timeout=5)
        async with connection:
            channel = await connection.channel()
            for name in queues:
                with contextlib.suppress(Exception):
                    await channel.queue_delete(name)
            for name in exchanges:
                with contextlib.suppress(Exception):
                    await channel.exchange_delete(name)


def _redis() -> None:
    with contextlib.suppress(Exception):
        import redis

        client = redis.Redis.from_url("redis://127.0.0.1:6379/0", socket_connect_timeout=2)
        keys = list(client.scan_iter(match=f"*{MARK}*", count=1000))
        for start in range(0, len(keys), 500):
            client.delete(*keys[start : start + 500])
        client.close()


async def _jetstream() -> None:
    with contextlib.suppress(Exception):
        import nats

        nc = await nats.connect("nats://127.0.0.1:4222", connect_timeout=2, max_reconnect_attempts=0)
        try:
            js = nc.jetstream()
            doomed: list[str] = []
            offset = 0
            while True:  # the API pages by 256
                page = await js.streams_info(offset=offset)
                doomed += [i.config.name for i in page if i.config.name and MARK in i.config.name.lower()]
                if len(page) < 256:
                    break
                offset += len(page)
            for name in doomed:
                with contextlib.suppress(Exception):
                    await js.delete_stream(name)
        finally:
            await nc.close()


def purge() -> None:
    """Delete every test-made queue, exchange, stream and key on the loopback servers (best effort)."""
    _rabbitmq()
    _redis()
    asyncio.run(_jetstream())
