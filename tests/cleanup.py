"""Remove what test runs leave on the shared servers: every name the suite makes contains ``mt-<run>-``.

``<run>`` is the run's start in minutes (hex). At the end of a session its own names are removed;
at the start, names of runs that began more than two hours ago (killed runs). A run going on
beside this one is never touched.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import subprocess
import time
from collections.abc import Callable

MARK = "mt-"
_RUN = re.compile(r"mt-(([0-9a-f]+)r[0-9a-f]+)-")
STALE_MINUTES = 120


def doomed_by(run: str | None) -> Callable[[str], bool]:
    """A test for names to remove: this run's (``run``), or stale runs' (``None``)."""
    now = int(time.time()) // 60

    def doomed(name: str) -> bool:
        m = _RUN.search(name.lower())
        if m is None:
            return False
        return m.group(1) == run if run is not None else now - int(m.group(2), 16) > STALE_MINUTES

    return doomed


def _rabbitmq(doomed: Callable[[str], bool]) -> None:
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
        found[kind] = [n.strip() for n in out.splitlines() if doomed(n.strip())]
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


def _redis(doomed: Callable[[str], bool]) -> None:
    with contextlib.suppress(Exception):
        import redis

        client = redis.Redis.from_url("redis://127.0.0.1:6379/0", socket_connect_timeout=2)
        keys = [k for k in client.scan_iter(match=f"*{MARK}*", count=1000) if doomed(k.decode("utf-8", "replace"))]
        for start in range(0, len(keys), 500):
            client.delete(*keys[start : start + 500])
        client.close()


async def _jetstream(doomed: Callable[[str], bool]) -> None:
    with contextlib.suppress(Exception):
        import nats

        nc = await nats.connect("nats://127.0.0.1:4222", connect_timeout=2, max_reconnect_attempts=0)
        try:
            js = nc.jetstream()
            names: list[str] = []
            offset = 0
            while True:  # the API pages by 256
                page = await js.streams_info(offset=offset)
                names += [i.config.name for i in page if i.config.name and doomed(i.config.name)]
                if len(page) < 256:
                    break
                offset += len(page)
            for name in names:
                with contextlib.suppress(Exception):
                    await js.delete_stream(name)
        finally:
            await nc.close()


def purge(run: str | None) -> None:
    """Delete the queues, exchanges, streams and keys of one run (or of stale runs), best effort."""
    doomed = doomed_by(run)
    _rabbitmq(doomed)
    _redis(doomed)
    asyncio.run(_jetstream(doomed))
