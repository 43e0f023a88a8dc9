"""Replay capabilities of the Kafka adapter (:mod:`mesh.brokers.capabilities`).

History: a consumer without a group reads the topic's partitions one after the other (so events
with one key, which share a partition, stay in order), each from the first offset at or after
``since`` (``offsets_for_times``) or from a cursor ``{"partition": p, "offset": o}``, up to the end
it had when reading started. A partition is finished when a fetch returns nothing and the
position reached that end, or after two empty fetches whatever the end said: the end offset is
only a hint (a Kafka-protocol broker may report it wrong: Tansu does after a multi-record
batch), an empty fetch is the proof.

One group only: the record goes to the group's retry topic ``_mesh.retry.<group>.<topic>`` with a
due time of now. Every member of the group already consumes that topic (delayed retries live
there) and nobody else does. It exists once the group subscribed, which is also how the mesh
knows the group exists.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

from aiokafka import TopicPartition
from aiokafka.errors import KafkaError

from mesh.brokers.capabilities import Cursor, HistoryRecord
from mesh.brokers.kafka.connection import (
    ATTEMPT_HEADER,
    DUE_HEADER,
    KafkaConnection,
    quietly,
    read_record,
    reason,
    record_of,
)
from mesh.brokers.kafka.gaps import GapCheck
from mesh.errors import BrokerError
from mesh.event import Event

__all__ = ["KafkaGroups", "KafkaHistory"]

FETCH_MS = 500
EMPTY_FETCHES = 2


class KafkaGroups:
    """Delivery to one group through its retry topic (:class:`~mesh.brokers.capabilities.GroupPublisher`)."""

    def __init__(self, conn: KafkaConnection) -> None:
        self._conn = conn

    async def has_group(self, topic: str, group: str) -> bool:
        """Whether the group subscribed to the topic (its retry topic exists)."""
        return self._conn.retry_topic(topic, group) in await self._conn.topics()

    async def publish_to_group(self, topic: str, group: str, event: Event) -> None:
        """Write the event to the group's retry topic, due now (keyed like a publish, so in order per key)."""
        conn = self._conn
        value, key, headers = record_of(event, conn.wire)
        headers.append((DUE_HEADER, str(int(time.time() * 1000)).encode()))
        headers.append((ATTEMPT_HEADER, b"1"))
        await conn.send(conn.retry_topic(topic, group), value, key, headers)


class KafkaHistory:
    """The topic's log read by offsets and times (:class:`~mesh.brokers.capabilities.HistoryReader`)."""

    def __init__(self, conn: KafkaConnection) -> None:
        self._conn = conn

    async def topic_exists(self, topic: str) -> bool:
        """Whether the cluster has the topic."""
        return self._conn.name_of(topic) in await self._conn.topics()

    async def read_history(
        self,
        topic: str,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        cursor: Cursor | None = None,
        batch: int = 500,
    ) -> AsyncIterator[list[HistoryRecord]]:
        """The topic's records, partition after partition (see the module docstring)."""
        conn = self._conn
        name = conn.name_of(topic)
        if name not in await conn.topics():
            return
        consumer = conn.consumer(
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
            raise BrokerError(f"kafka at {conn.address}: cannot read {name!r}: {reason(exc)}") from exc
        gaps = GapCheck.of(consumer, conn.settings.gap_wait_ms)
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
                gaps.expect(tp, start)
                empty = 0
                while True:
                    fetched = (await consumer.getmany(tp, timeout_ms=FETCH_MS, max_records=batch)).get(tp, [])
                    records = gaps.admit(tp, fetched)
                    if fetched and not records:
                        continue  # held at a gap (see .gaps): fetched again from it
                    if not records:
                        empty += 1
                        if empty >= EMPTY_FETCHES or await consumer.position(tp) >= end:
                            break
                        continue
                    empty = 0
                    page = []
                    past = False
                    for record in records:
                        item = self._record(record, topic, partition)
                        if until is not None and item.time > until:
                            past = True
                            break
                        page.append(item)
                    if page:
                        yield page
                    if past:
                        break
        except KafkaError as exc:
            raise BrokerError(f"kafka at {conn.address}: reading {name!r} failed: {reason(exc)}") from exc
        finally:
            await quietly(consumer.stop())

    def _record(self, record: Any, topic: str, partition: int) -> HistoryRecord:
        offset: int = record.offset
        taken = datetime.fromtimestamp(record.timestamp / 1000, UTC)
        cursor: Cursor = {"partition": partition, "offset": offset + 1}
        event, _, error = read_record(record, self._conn.wire, topic, f"{record.topic}:{partition}:{offset}")
        if error is not None or event is None:
            return HistoryRecord(None, taken, cursor, f"partition {partition} offset {offset}: {error}")
        return HistoryRecord(event, taken, cursor)
