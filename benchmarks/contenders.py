"""The three contenders of the pub/sub benchmark, per broker: the mesh, the raw client, FastStream.

Each contender has ``consume(kind, url, topic, group, n, ready, done)`` (runs in the consumer
process: subscribe, set ``ready``, handle ``n`` messages with ack-after-handling, then put the
monotonic time of the last one on ``done``) and ``produce(kind, url, topic, n)`` (publishes ``n``
small JSON messages, each confirmed by the broker where the broker confirms, ``WINDOW`` at a
time). Every row therefore does the same work: JSON in, JSON out, ack after handling.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

WINDOW = 500
"""Publishes in flight at once (each awaits the broker's confirmation)."""
WINDOWS = {"redis": 50}
"""Smaller windows where a client's connection pool caps concurrency (redis-py's, FastStream's)."""
PAYLOAD = {"id": "A1", "customer": "ada", "sku": "espresso", "qty": 2}


def _body(i: int) -> dict[str, Any]:
    return {**PAYLOAD, "i": i}


on_first_publish: Callable[[], None] | None = None
"""Called once a producer is connected and about to publish (the benchmark's clock starts there,
so no contender's connection or start-up time counts)."""


async def _windowed(n: int, publish: Callable[[int], Awaitable[Any]], kind: str = "") -> None:
    window = WINDOWS.get(kind, WINDOW)
    if on_first_publish is not None:
        on_first_publish()
    for start in range(0, n, window):
        await asyncio.gather(*(publish(i) for i in range(start, min(n, start + window))))


class _Counter:
    def __init__(self, n: int, done: Any) -> None:
        self.n, self.seen, self.done, self.finished = n, 0, done, asyncio.Event()

    def hit(self) -> None:
        self.seen += 1
        if self.seen == self.n:
            self.done.put(time.monotonic())
            self.finished.set()


# -- the mesh ---------------------------------------------------------------------------------


def _mesh_config(kind: str, url: str | None) -> dict[str, Any]:
    options: dict[str, Any] = {}
    if kind == "rabbitmq":
        options = {"prefetch": 200}
    return {"broker": {"type": kind, "url": url, "options": options}, "plugins": {"disable": ["tracing", "metrics"]}}


async def mesh_consume(kind: str, url: str | None, topic: str, group: str, n: int, ready: Any, done: Any) -> None:
    from mesh import App, Event

    app = App(group, config=_mesh_config(kind, url))
    counter = _Counter(n, done)

    @app.subscribe(topic)
    async def handle(event: Event) -> None:
        counter.hit()

    async with app:
        ready.set()
        await counter.finished.wait()


async def mesh_produce(kind: str, url: str | None, topic: str, n: int) -> None:
    from mesh import App

    async with App("bench-producer", config=_mesh_config(kind, url)) as app:
        await _windowed(n, lambda i: app.publish(topic, _body(i), type="bench.event"), kind)


# -- the raw clients --------------------------------------------------------------------------


async def raw_consume(kind: str, url: str, topic: str, group: str, n: int, ready: Any, done: Any) -> None:
    counter = _Counter(n, done)
    if kind == "kafka":
        from aiokafka import AIOKafkaConsumer

        consumer = AIOKafkaConsumer(
            topic, bootstrap_servers=url, group_id=group, auto_offset_reset="earliest", fetch_max_wait_ms=50
        )
        await consumer.start()
        while not consumer.assignment():
            await consumer.getmany(timeout_ms=100)
        ready.set()
        while not counter.finished.is_set():
            for records in (await consumer.getmany(timeout_ms=100, max_records=500)).values():
                for record in records:
                    orjson.loads(record.value)
                    counter.hit()
        await consumer.stop()
    elif kind == "rabbitmq":
        import aio_pika

        connection = await aio_pika.connect_robust(url)
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=200)
        exchange = await channel.declare_exchange(topic, aio_pika.ExchangeType.TOPIC, durable=True)
        queue = await channel.declare_queue(f"{topic}.{group}", durable=True)
        await queue.bind(exchange, "#")

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            orjson.loads(message.body)
            await message.ack()
            counter.hit()

        await queue.consume(on_message)
        ready.set()
        await counter.finished.wait()
        await connection.close()
    elif kind == "nats":
        import nats

        nc = await nats.connect(url)

        async def on_msg(msg: Any) -> None:
            orjson.loads(msg.data)
            counter.hit()

        await nc.subscribe(topic, queue=group, cb=on_msg)
        await nc.flush()
        await nc.flush()
        ready.set()
        await counter.finished.wait()
        await nc.close()
    elif kind == "jetstream":
        import nats
        from nats.js.api import ConsumerConfig

        nc = await nats.connect(url)
        js = nc.jetstream()
        stream = topic.replace(".", "_")
        await js.add_stream(name=stream, subjects=[topic])
        sub = await js.pull_subscribe(topic, durable=group, stream=stream, config=ConsumerConfig(ack_wait=30))
        ready.set()
        while not counter.finished.is_set():
            try:
                msgs = await sub.fetch(batch=200, timeout=1)
            except TimeoutError:
                continue
            for msg in msgs:
                orjson.loads(msg.data)
                await msg.ack()
                counter.hit()
        await nc.close()
    elif kind == "redis":
        import redis.asyncio as redis

        client = redis.Redis.from_url(url)
        await client.xgroup_create(topic, group, id="0", mkstream=True)
        ready.set()
        while not counter.finished.is_set():
            reply = await client.xreadgroup(group, "raw", {topic: ">"}, count=200, block=100)
            for _, entries in reply or []:
                ids = []
                for entry_id, fields in entries:
                    orjson.loads(fields[b"data"])
                    ids.append(entry_id)
                    counter.hit()
                await client.xack(topic, group, *ids)
        await client.aclose()
    else:
        raise ValueError(kind)


async def raw_produce(kind: str, url: str, topic: str, n: int) -> None:
    if kind == "kafka":
        from aiokafka import AIOKafkaProducer

        producer = AIOKafkaProducer(bootstrap_servers=url)
        await producer.start()

        async def send(i: int) -> None:
            await (await producer.send(topic, orjson.dumps(_body(i))))

        await _windowed(n, send, kind)
        await producer.stop()
    elif kind == "rabbitmq":
        import aio_pika

        connection = await aio_pika.connect_robust(url)
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.declare_exchange(topic, aio_pika.ExchangeType.TOPIC, durable=True)

        async def send(i: int) -> None:
            message = aio_pika.Message(
                orjson.dumps(_body(i)), delivery_mode=aio_pika.DeliveryMode.PERSISTENT, content_type="application/json"
            )
            await exchange.publish(message, routing_key=topic)

        await _windowed(n, send, kind)
        await connection.close()
    elif kind == "nats":
        import nats

        nc = await nats.connect(url)

        async def send(i: int) -> None:
            await nc.publish(topic, orjson.dumps(_body(i)))

        await _windowed(n, send, kind)
        await nc.flush()
        await nc.close()
    elif kind == "jetstream":
        import nats

        nc = await nats.connect(url)
        js = nc.jetstream()

        async def send(i: int) -> None:
            await js.publish(topic, orjson.dumps(_body(i)))

        await _windowed(n, send, kind)
        await nc.close()
    elif kind == "redis":
        import redis.asyncio as redis

        client = redis.Redis.from_url(url)

        async def send(i: int) -> None:
            await client.xadd(topic, {"data": orjson.dumps(_body(i))})

        await _windowed(n, send, kind)
        await client.aclose()
    else:
        raise ValueError(kind)


# -- FastStream ---------------------------------------------------------------------------------


def _faststream_logger() -> dict[str, Any]:
    """FastStream's default logger costs it about half its throughput: off unless MESH_BENCH_LOG is set."""
    return {} if os.environ.get("MESH_BENCH_LOG") else {"logger": None}


def _faststream_broker(kind: str, url: str) -> Any:
    if kind == "kafka":
        from faststream.kafka import KafkaBroker

        return KafkaBroker(url, **_faststream_logger())
    if kind == "rabbitmq":
        from faststream.rabbit import RabbitBroker

        return RabbitBroker(url, **_faststream_logger())
    if kind in ("nats", "jetstream"):
        from faststream.nats import NatsBroker

        return NatsBroker(url, **_faststream_logger())
    if kind == "redis":
        from faststream.redis import RedisBroker

        return RedisBroker(url, **_faststream_logger())
    raise ValueError(kind)


async def faststream_consume(kind: str, url: str, topic: str, group: str, n: int, ready: Any, done: Any) -> None:
    from faststream import AckPolicy

    broker = _faststream_broker(kind, url)
    counter = _Counter(n, done)

    async def handle(body: dict[str, Any]) -> None:
        counter.hit()

    if kind == "kafka":
        broker.subscriber(
            topic, group_id=group, auto_offset_reset="earliest", fetch_max_wait_ms=50, ack_policy=AckPolicy.ACK
        )(handle)
    elif kind == "rabbitmq":
        from faststream.rabbit import ExchangeType, RabbitExchange, RabbitQueue

        exchange = RabbitExchange(topic, type=ExchangeType.TOPIC, durable=True)
        queue = RabbitQueue(f"{topic}.{group}", durable=True, routing_key="#")
        broker.subscriber(queue, exchange, ack_policy=AckPolicy.ACK)(handle)
    elif kind == "nats":
        broker.subscriber(topic, queue=group)(handle)
    elif kind == "jetstream":
        from faststream.nats import JStream, PullSub

        stream = JStream(topic.replace(".", "_"), subjects=[topic])
        broker.subscriber(
            topic, stream=stream, durable=group, pull_sub=PullSub(batch_size=200), ack_policy=AckPolicy.ACK
        )(handle)
    elif kind == "redis":
        from faststream.redis import StreamSub

        broker.subscriber(stream=StreamSub(topic, group=group, consumer="fs", last_id="0"), ack_policy=AckPolicy.ACK)(
            handle
        )
    await broker.start()
    ready.set()
    await counter.finished.wait()
    await broker.stop()


async def faststream_produce(kind: str, url: str, topic: str, n: int) -> None:
    broker = _faststream_broker(kind, url)
    await broker.connect()
    if kind == "rabbitmq":
        from faststream.rabbit import ExchangeType, RabbitExchange

        exchange = RabbitExchange(topic, type=ExchangeType.TOPIC, durable=True)
        await _windowed(n, lambda i: broker.publish(_body(i), routing_key=topic, exchange=exchange, persist=True), kind)
    elif kind == "jetstream":
        await _windowed(n, lambda i: broker.publish(_body(i), topic, stream=topic.replace(".", "_")), kind)
    elif kind == "redis":
        await _windowed(n, lambda i: broker.publish(_body(i), stream=topic), kind)
    else:
        await _windowed(n, lambda i: broker.publish(_body(i), topic), kind)
    if kind == "nats":
        await broker._connection.flush()
    await broker.stop()


CONSUMERS = {"mesh": mesh_consume, "raw": raw_consume, "faststream": faststream_consume}
PRODUCERS = {"mesh": mesh_produce, "raw": raw_produce, "faststream": faststream_produce}
