"""Replay capabilities of the Kafka adapter (:mod:`mesh.brokers.capabilities`).

History: a consumer without a group reads the topic's partitions one after the other (so events
with one key, which share a partition, stay in order), each from the first offset at or after
``since`` (``offsets_for_times``) or from a cursor ``{"partition": p, "offset": o}``, up to the end
it had when reading started. A partition is finished when a fetch returns nothing and the
position reached that end, or after two empty fetches whatever the end said: the end offset is
only a hint (a broker may report it wrong, DESIGN §11), an empty fetch is the proof.

One group only: the record goes to the group's retry topic ``_mesh.retry.<group>.<topic>`` with a
due time of now. Every member of the group already consumes that topic (delayed retries live
there) and nobody else does. It exists once the group subscribed, which is also how the mesh
knows the group exists.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from mesh.brokers.capabilities import Cursor, HistoryRecord
from mesh.brokers.kafka.consumer import ATTEMPT_HEADER, CONTENT_TYPE, DUE_HEADER, quietly, reason
from mesh.codecs.binary import WireMessage, decode, encode
from mesh.errors import BrokerError, DecodeError
from mesh.event import Event

if TYPE_CHECKING:
    from mesh.brokers.kafka.broker import KafkaBroker

__all__ = ["has_group", "publish_to_group", "read_history", "topic_exists"]

FETCH_MS = 500
EMPTY_FETCHES = 2


async def _topics(broker: KafkaBroker) -> list[str]:
    admin = broker._admin
    if admin is None:
        raise BrokerError("the kafka broker is not connected: call connect() first")
    try:
        return list(await admin.list_topics())
    except KafkaError as exc:
        raise BrokerError(f"kafka at {broker.address}: cannot list topics: {reason(exc)}") from exc


async def topic_exists(broker: KafkaBroker, topic: str) -> bool:
    """Whether the cluster has the topic."""
    return broker.name_of(topic) in await _topics(broker)


async def has_group(broker: KafkaBroker, topic: str, group: str) -> bool:
    """Whether the group subscribed to the topic (its retry topic exists)."""
    return broker.retry_topic(topic, group) in await _topics(broker)


async def publish_to_group(broker: KafkaBroker, topic: str, group: str, event: Event) -> None:
    """Write the event to the group's retry topic, due now (keyed like a publish, so in order per key)."""
    msg = encode(event, broker.wire)
    headers = [(k, v.encode() if type(v) is str else v) for k, v in msg.headers.items()]
    if msg.content_type is not None:
        headers.append((CONTENT_TYPE, msg.content_type.encode()))
    headers.append((DUE_HEADER, str(int(time.time() * 1000)).encode()))
    headers.append((ATTEMPT_HEADER, b"1"))
    key = None if msg.key is None else msg.key.encode()
    await broker.send(broker.retry_topic(topic, group), msg.body, key, headers)


def _record(record: Any, broker: KafkaBroker, topic: str, partition: int) -> HistoryRecord:
    offset: int = record.offset
    taken = datetime.fromtimestamp(record.timestamp / 1000, UTC)
    cursor: Cursor = {"partition": partition, "offset": offset + 1}
    headers = dict(record.headers)
    ctype = headers.get(CONTENT_TYPE)
    key = None if record.key is None else record.key.decode("utf-8", "replace")
    try:
        content_type = None if ctype is None else ctype.decode()
        msg = WireMessage(record.value or b"", headers, key, content_type)
        event = decode(msg, broker.wire, topic, f"{record.topic}:{partition}:{offset}")
    except (DecodeError, UnicodeDecodeError) as exc:
        return HistoryRecord(None, taken, cursor, f"partition {partition} offset {offset}: {exc}")
    return HistoryRecord(event, taken, cursor)


async def read_history(
    broker: KafkaBroker,
    topic: str,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    cursor: Cursor | None = None,
    batch: int = 500,
) -> AsyncIterator[list[HistoryRecord]]:
    """The topic's records, partition after partition (see the module docstring)."""
    name = broker.name_of(topic)
    if name not in await _topics(broker):
        return
    consumer = AIOKafkaConsumer(
        **broker._client_config(),
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=batch,
        fetch_max_wait_ms=FETCH_MS,
    )
    try:
        await consumer.start()
    except (KafkaError, OSError) as exc:
        await quietly(consumer.stop())
        raise BrokerError(f"kafka at {broker.address}: cannot read {name!r}: {reason(exc)}") from exc
    try:
        await consumer.topics()  # load the metadata
        partitions = sorted(consumer.partitions_for_topic(name) or ())
        first = int(cursor["partition"]) if cursor is not None else None
        for partition in partitions:
            if first is not None and partition < first:
                continue
            tp = TopicPartition(name, partition)
            consumer.assign([tp])
            end = (await consumer.end_offsets([tp]))[tp]
            if cursor is not None and partition == first:
                start = int(cursor["offset"])
            elif since is not None:
                found = (await consumer.offsets_for_times({tp: int(since.timestamp() * 1000)}))[tp]
                start = end if found is None else found.offset
            else:
                start = (await consumer.beginning_offsets([tp]))[tp]
            consumer.seek(tp, start)
            empty = 0
            while True:
                records = (await consumer.getmany(tp, timeout_ms=FETCH_MS, max_records=batch)).get(tp, [])
                if not records:
                    empty += 1
                    if empty >= EMPTY_FETCHES or await consumer.position(tp) >= end:
                        break
                    continue
                empty = 0
                page = []
                past = False
                for record in records:
                    item = _record(record, broker, topic, partition)
                    if until is not None and item.time > until:
                        past = True
                        break
                    page.append(item)
                if page:
                    yield page
                if past:
                    break
    except KafkaError as exc:
        raise BrokerError(f"kafka at {broker.address}: reading {name!r} failed: {reason(exc)}") from exc
    finally:
        await quietly(consumer.stop())
