"""Poison records on Kafka (Tansu in tests), sent with a plain aiokafka producer.

Kafka header values are bytes or null, so Kafka gets the common cases plus null header values
and a non-UTF-8 ``content-type`` header. Nothing pending: the group's committed offset of each
partition is the end of what was produced to it.
"""

from __future__ import annotations

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from tests.poison.support import Message, PoisonRun, common, eventually, good, kafka_nulls
from tests.support import BrokerSpec

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(180)]


def record_headers(message: Message) -> list[tuple[str, bytes | None]]:
    """The message's headers as Kafka record headers, ``content-type`` included."""
    headers = dict(message.headers)
    if message.content_type is not None:
        headers["content-type"] = message.content_type
    return [(k, v.encode() if isinstance(v, str) else v) for k, v in headers.items()]


async def committed(url: str, group: str, topic: str, partitions: set[int]) -> dict[int, int | None]:
    """The group's committed offsets, read as a restarting member reads them (no join)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=url, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        return {p: await consumer.committed(TopicPartition(topic, p)) for p in sorted(partitions)}
    finally:
        await consumer.stop()


@pytest.mark.parametrize("broker_spec", ["kafka"], indirect=True)
async def test_no_record_stops_a_kafka_consumer(broker_spec: BrokerSpec) -> None:
    assert broker_spec.url is not None
    sent = [*common("ce_"), *kafka_nulls(), *(good("ce_", i) for i in range(5))]
    ends: dict[int, int] = {}
    async with PoisonRun(broker_spec) as run:
        producer = AIOKafkaProducer(bootstrap_servers=broker_spec.url, max_request_size=4 * 1024 * 1024)
        await producer.start()
        try:
            for message in sent:
                meta = await producer.send_and_wait(run.topic, message.body, headers=record_headers(message))
                ends[meta.partition] = max(ends.get(meta.partition, 0), meta.offset + 1)
        finally:
            await producer.stop()
        await run.settled(sent)
        await eventually(
            lambda: committed(broker_spec.url or "", run.group, run.topic, set(ends)),
            dict(ends),
            what="the group's committed offsets at the end of each partition",
        )
    run.check(sent)
