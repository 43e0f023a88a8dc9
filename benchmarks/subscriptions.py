"""Many subscriptions: one app consuming N topics, each with its own handler.

    python -m benchmarks.subscriptions [--brokers redis,nats,...] [--n 100,1000] [--timeout 300]

Per broker and size, in a fresh process: ``start`` is ``await app.start()`` of one App with N
subscriptions (topic ``t<i>``, one handler each), ``deliver`` the time from the first publish
of one event to every topic (all published at once by a second App) until every handler ran,
``stop`` is ``await app.stop()``. Every row gets its own broker namespace, removed afterwards
(Kafka runs on Tansu, started here, and keeps nothing). A row that does not finish within
``--timeout`` seconds is reported as such.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing as mp
import shutil
import subprocess
import time
import uuid
from typing import Any

from benchmarks.pubsub import BROKERS, URLS

SIZES = (100, 1000)


def _config(kind: str, url: str | None, namespace: str) -> dict[str, Any]:
    broker: dict[str, Any] = {"type": kind, "url": url, "namespace": namespace}
    if kind == "memory":
        broker = {"type": "memory", "options": {"name": namespace}}
    return {"broker": broker, "plugins": {"disable": ["tracing", "metrics"]}}


async def measure(kind: str, url: str | None, n: int, namespace: str) -> dict[str, float]:
    """Start, deliver and stop times (seconds) of one app with ``n`` subscriptions."""
    from mesh import App, Event

    config = _config(kind, url, namespace)
    consumer = App("subs-consumer", config=config)
    seen: set[int] = set()
    finished = asyncio.Event()

    def handler_for(i: int) -> Any:
        async def handle(event: Event) -> None:
            seen.add(i)
            if len(seen) == n:
                finished.set()

        return handle

    for i in range(n):
        consumer.subscribe(f"t{i}")(handler_for(i))
    started = time.monotonic()
    await consumer.start()
    start_s = time.monotonic() - started
    try:
        async with App("subs-producer", config=config) as producer:
            first = time.monotonic()
            await asyncio.gather(*(producer.publish(f"t{i}", {"i": i}, type="bench.event") for i in range(n)))
            await finished.wait()
            deliver_s = time.monotonic() - first
    finally:
        stopping = time.monotonic()
        await consumer.stop()
        stop_s = time.monotonic() - stopping
    return {"start": start_s, "deliver": deliver_s, "stop": stop_s}


def _child(kind: str, url: str | None, n: int, namespace: str, out: Any) -> None:
    try:
        out.put(asyncio.run(measure(kind, url, n, namespace)))
    except BaseException as exc:
        out.put({"error": f"{type(exc).__name__}: {exc}"})
        raise


def run_row(kind: str, url: str | None, n: int, timeout: float) -> dict[str, Any]:
    """One broker, one size, in a fresh process; the broker-side names are removed after."""
    namespace = f"subs-{uuid.uuid4().hex[:8]}-"
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    proc = ctx.Process(target=_child, args=(kind, url, n, namespace, out))
    proc.start()
    try:
        result: dict[str, Any] = out.get(timeout=timeout)
    except Exception:
        result = {"error": f"not done within {timeout:g}s"}
    finally:
        proc.join(30)
        if proc.is_alive():
            proc.kill()
            proc.join()
        cleanup(kind, url, namespace)
    return {"broker": kind, "n": n, **result}


def cleanup(kind: str, url: str | None, namespace: str) -> None:
    """Remove every name under ``namespace`` (best effort)."""
    with contextlib.suppress(Exception):
        if kind == "redis":
            import redis

            client = redis.Redis.from_url(url or URLS["redis"])
            keys = list(client.scan_iter(match=f"{namespace}*", count=1000))
            for start in range(0, len(keys), 500):
                client.delete(*keys[start : start + 500])
            client.close()
        elif kind == "jetstream":
            asyncio.run(_jetstream_cleanup(url or URLS["jetstream"], namespace))
        elif kind == "rabbitmq":
            _rabbitmq_cleanup(url or URLS["rabbitmq"], namespace)


async def _jetstream_cleanup(url: str, namespace: str) -> None:
    import nats

    from mesh.brokers.nats.messages import safe_name

    nc = await nats.connect(url, connect_timeout=2, max_reconnect_attempts=0)
    try:
        js = nc.jetstream()
        mark, names, offset = safe_name(namespace), [], 0
        while True:  # the API pages by 256
            page = await js.streams_info(offset=offset)
            names += [i.config.name for i in page if i.config.name and mark in i.config.name]
            if len(page) < 256:
                break
            offset += len(page)
        for name in names:
            with contextlib.suppress(Exception):
                await js.delete_stream(name)
    finally:
        await nc.close()


def _rabbitmq_cleanup(url: str, namespace: str) -> None:
    ctl = shutil.which("rabbitmqctl")
    if ctl is None:
        return
    found: dict[str, list[str]] = {}
    for what in ("queues", "exchanges"):
        listed = subprocess.run([ctl, "-q", f"list_{what}", "name"], capture_output=True, text=True, timeout=60)
        found[what] = [n.strip() for n in listed.stdout.splitlines() if namespace in n]

    async def delete() -> None:
        import aio_pika

        connection = await aio_pika.connect(url, timeout=5)
        async with connection:
            channel = await connection.channel()
            for name in found["queues"]:
                with contextlib.suppress(Exception):
                    await channel.queue_delete(name)
            for name in found["exchanges"]:
                with contextlib.suppress(Exception):
                    await channel.exchange_delete(name)

    asyncio.run(delete())


def run(brokers: list[str], sizes: list[int], timeout: float = 300.0) -> list[dict[str, Any]]:
    """Every row, broker by broker (Kafka on a Tansu started here)."""
    rows = []
    tansu = None
    try:
        for kind in brokers:
            url = URLS.get(kind)
            if kind == "kafka":
                from mesh.testing import Tansu

                tansu = tansu or Tansu()
                url = tansu.url
            for n in sizes:
                row = run_row(kind, url, n, timeout)
                rows.append(row)
                print(_line(row), flush=True)
    finally:
        if tansu is not None:
            tansu.stop()
    return rows


def _line(row: dict[str, Any]) -> str:
    if "error" in row:
        return f"| {row['broker']} | {row['n']:,} | {row['error']} | | |"
    return f"| {row['broker']} | {row['n']:,} | {row['start']:.2f} | {row['deliver']:.2f} | {row['stop']:.2f} |"


HEADER = "| broker | subscriptions | start s | deliver one per topic s | stop s |\n|---|---|---|---|---|"


def table(rows: list[dict[str, Any]]) -> str:
    """The rows as a Markdown table."""
    return "\n".join([HEADER, *(_line(r) for r in rows)])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="one app, N subscriptions: start and delivery times")
    parser.add_argument("--brokers", default=",".join(BROKERS))
    parser.add_argument("--n", default=",".join(str(s) for s in SIZES), help="comma-separated sizes")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per row")
    args = parser.parse_args(argv)
    print(HEADER, flush=True)
    run([b.strip() for b in args.brokers.split(",") if b.strip()], [int(s) for s in args.n.split(",")], args.timeout)


if __name__ == "__main__":
    main()
