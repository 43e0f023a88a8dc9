"""The subscriptions of the Kafka adapter: a topic and its retry topic, read by the group's member.

A :class:`KafkaSubscription` gets the records of its topic and its retry topic from the one
consumer its group shares in this broker (:mod:`.reader`), hands each to a
:class:`~mesh.brokers.base.HandlerRunner` as a :class:`KafkaDelivery` from its own worker, and
has them committed by hand:
per partition, :class:`PartitionOffsets` tracks the offsets handed out and commits only below
the lowest one not yet acked (handlers running with ``concurrency > 1`` finish out of order),
every ``commit_interval_ms``, when idle, on stop and when a rebalance revokes partitions.

``nack()`` hands the same record to the handler again, in process, before later records.
``nack(delay)`` writes a copy to the retry topic with the due time and next attempt in internal
headers, then acks the original; a retry partition whose head record is not due yet is paused
at that record until it is, so nothing else waits.

A record that cannot be turned into a delivery, whatever raises (a null header the codec trips
on, say), is logged once and handed on as undecodable (``event`` None, a ``DecodeError``): the
loop never dies on one record. The subscription takes the broker's
:class:`~mesh.brokers.kafka.connection.KafkaConnection` and its reader, never the broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

from aiokafka import TopicPartition
from aiokafka.errors import KafkaError

from mesh.brokers.base import RESERVED_PREFIX, Delivery, DeliveryHandler, HandlerRunner, Mailbox, Subscription
from mesh.brokers.kafka.connection import (
    ATTEMPT_HEADER,
    CONTENT_TYPE,
    DUE_HEADER,
    ORIGIN_HEADER,
    KafkaConnection,
    salvage,
    unreadable,
)
from mesh.codecs.binary import WireMessage, decode
from mesh.errors import DecodeError, PublishError
from mesh.event import Event

__all__ = ["POLL_MS", "KafkaDelivery", "KafkaSubscription", "PartitionOffsets", "ensure_topics"]

log = logging.getLogger("mesh.broker.kafka")

POLL_MS = 100
"""How long one fetch round waits when nothing arrives (bounds how late an async nack is seen)."""


class KafkaDelivery(Delivery):
    """A record handed to a handler; ack marks its offset committable.

    ``nack()`` hands it to the handler again in process; ``nack(delay)`` goes through the
    subscription's retry topic (the adapter's own delay, see the module docstring).
    """

    __slots__ = ("part", "record", "sub")
    taskless_ack = True

    def __init__(
        self,
        sub: KafkaSubscription,
        part: PartitionOffsets,
        record: Any,
        event: Event | None,
        raw: WireMessage | None,
        error: DecodeError | None,
        attempt: int,
    ) -> None:
        super().__init__(sub.topic, sub.group, event, raw, error, attempt)
        self.sub = sub
        """The subscription that fetched the record."""
        self.part = part
        """The offsets of the record's partition."""
        self.record = record
        """The record as aiokafka fetched it."""

    async def _ack(self) -> None:
        self.part.ack(self.record.offset)

    async def _requeue(self) -> None:
        self.sub.requeue(self)

    async def _nack(self, delay: float | None) -> None:
        if not delay or delay <= 0:
            self.sub.requeue(self)
        else:
            await self.sub.retry_later(self, delay)


class PartitionOffsets:
    """Offsets in flight in one assigned partition and the boundary safe to commit."""

    __slots__ = ("acked", "boundary", "committed", "inflight", "live", "tp")

    def __init__(self, tp: TopicPartition) -> None:
        self.tp = tp
        self.inflight: deque[int] = deque()  # offsets handed out, in fetch (= offset) order
        self.acked: set[int] = set()  # acked offsets above the lowest unacked one
        self.boundary = -1  # next offset to commit: everything below it was acked
        self.committed = -1
        self.live = True

    def ack(self, offset: int) -> None:
        """Mark one offset done; move the boundary past every done offset at the front."""
        inflight = self.inflight
        if not inflight:
            return
        if inflight[0] != offset:
            self.acked.add(offset)
            return
        inflight.popleft()
        acked = self.acked
        while inflight and inflight[0] in acked:
            offset = inflight.popleft()
            acked.discard(offset)
        self.boundary = inflight[0] if inflight else offset + 1


class Reader(Protocol):
    """What a subscription needs of the group member that fetches for it (:mod:`.reader`)."""

    def pause(self, tps: Iterable[TopicPartition]) -> None: ...

    def resume(self, tps: Iterable[TopicPartition]) -> None: ...

    def seek(self, tp: TopicPartition, offset: int) -> None: ...

    async def commit(self, offsets: dict[TopicPartition, int]) -> bool: ...

    async def remove(self, sub: KafkaSubscription) -> None: ...


class KafkaSubscription(Subscription):
    """One subscription: its topic and retry topic, read by a shared group member (see the module docstring).

    Build it once both topics exist (:func:`ensure_topics`) and hand it to its reader. The
    reader hands it records (:meth:`take`); its own worker runs the handler, so a busy handler
    holds up no other subscription of the member. ``on_stop`` is called with the subscription
    once it stopped (the broker's bookkeeping).
    """

    def __init__(
        self,
        conn: KafkaConnection,
        reader: Reader,
        topic: str,
        group: str,
        handler: DeliveryHandler,
        concurrency: int,
        on_stop: Callable[[KafkaSubscription], None],
    ) -> None:
        self.topic = topic
        self.group = group
        self.name = conn.name_of(topic)
        """The Kafka topic read."""
        self.retry_topic = conn.retry_topic(topic, group)
        self.topics = (self.name, self.retry_topic)
        """Every Kafka topic the subscription reads."""
        self._conn = conn
        self._reader = reader
        self._on_stop = on_stop
        self._runner = HandlerRunner(handler, concurrency, topic)
        self._mailbox: Mailbox[KafkaDelivery | None] = Mailbox()
        self._high = max(conn.settings.max_poll_records, concurrency)
        self._parts: dict[TopicPartition, PartitionOffsets] = {}
        self._redeliver: deque[KafkaDelivery] = deque()
        self._timers: dict[TopicPartition, asyncio.TimerHandle] = {}
        self._assigned = asyncio.Event()
        self._running = True
        self._idle = False  # the worker waits for records (nothing to finish)
        self._throttled = False  # its partitions are paused until the worker catches up
        self._worker = asyncio.get_running_loop().create_task(self._work(), name=f"mesh-kafka:{self.name}:{group}")

    # -- lifecycle -------------------------------------------------------------------------------

    async def wait_assigned(self, timeout: float) -> bool:
        """Wait until the group assigned the member this subscription's topics (False after ``timeout``)."""
        try:
            await asyncio.wait_for(self._assigned.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def stop(self, drain: bool = True) -> None:
        if not self._running:
            return
        self._running = False
        self._reader.pause(list(self._parts))  # nothing more is fetched for it
        worker = self._worker
        if self._idle or not drain:
            worker.cancel()  # waiting for records, or told not to wait: nothing to finish
        else:
            self._mailbox.put_nowait(None)  # with drain, the worker finishes its handler, then exits
        with contextlib.suppress(asyncio.CancelledError):
            await worker
        if drain:
            await self._runner.drain()
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        self._redeliver.clear()
        await self._commit()
        await self._reader.remove(self)  # its topics leave the member: uncommitted records go back
        self._on_stop(self)

    # -- records from the reader -----------------------------------------------------------------

    def take(self, tp: TopicPartition, records: Sequence[Any]) -> None:
        """Queue fetched records of one partition for the worker (a retry not yet due holds its
        partition at that record); a full queue pauses the subscription's partitions."""
        part = self._parts.get(tp)
        if part is None or not self._running:
            return
        binding = self._conn.wire
        topic = self.topic
        is_retry = tp.topic == self.retry_topic
        put = self._mailbox.put_nowait
        for record in records:
            if not part.live:
                break
            attempt = 1
            origin = None
            if is_retry:
                due, attempt, origin = _retry_headers(record.headers)
                if due > time.time() * 1000:
                    self._defer(tp, record.offset, due)
                    break
            part.inflight.append(record.offset)
            # inline, not connection.read_record: the hot path (same steps, no tuple per record)
            try:
                headers = dict(record.headers)  # values stay bytes: the codec decodes lazily
                ctype = headers.get(CONTENT_TYPE)
                if ctype is not None:  # a null content-type is absent
                    ctype = ctype.decode()
                key = record.key
                if key is not None:
                    key = key.decode("utf-8", "replace")
                msg = WireMessage(record.value or b"", headers, key, ctype)
                fallback = origin or f"{record.topic}:{record.partition}:{record.offset}"
                try:
                    delivery = KafkaDelivery(
                        self, part, record, decode(msg, binding, topic, fallback), msg, None, attempt
                    )
                except DecodeError as exc:
                    delivery = KafkaDelivery(self, part, record, None, msg, exc, attempt)
            except UnicodeDecodeError:
                raw, error = salvage(record, "content-type header is not UTF-8")
                delivery = KafkaDelivery(self, part, record, None, raw, error, attempt)
            except Exception as exc:  # one record never stops the loop: handed on as undecodable
                raw, error = unreadable(record, exc)
                delivery = KafkaDelivery(self, part, record, None, raw, error, attempt)
            put(delivery)
        if not self._throttled and self._mailbox.qsize() >= self._high:
            self._throttled = True
            self._reader.pause(list(self._parts))

    # -- the worker ------------------------------------------------------------------------------

    async def _work(self) -> None:
        mailbox = self._mailbox
        submit = self._runner.submit
        while self._running:
            if self._redeliver:
                await self._redeliver_now()
                continue
            if mailbox.empty():
                if self._throttled:
                    self._throttled = False
                    self._reader.resume([tp for tp in self._parts if tp not in self._timers])
                self._idle = True
                try:
                    delivery = await mailbox.get()
                finally:
                    self._idle = False
            else:
                delivery = mailbox.get_nowait()
            if delivery is None or not self._running or not delivery.part.live:
                continue  # a wake-up; stopping; or its partition went to another member
            await submit(delivery)

    async def _redeliver_now(self) -> None:
        redeliver = self._redeliver
        while redeliver and self._running:
            d = redeliver.popleft()
            if d.part.live:
                await self._runner.submit(KafkaDelivery(self, d.part, d.record, d.event, d.raw, d.error, d.attempt + 1))

    def _defer(self, tp: TopicPartition, offset: int, due: float) -> None:
        """Hold a retry partition at a record that is not due yet; resume it when it is."""
        try:
            self._reader.seek(tp, offset)
        except (KafkaError, AssertionError):  # revoked meanwhile: the next owner defers it
            return
        self._reader.pause([tp])
        old = self._timers.pop(tp, None)
        if old is not None:
            old.cancel()
        wait = max(0.0, due / 1000 - time.time())
        self._timers[tp] = asyncio.get_running_loop().call_later(wait, self._resume, tp)

    def _resume(self, tp: TopicPartition) -> None:
        self._timers.pop(tp, None)
        if self._running and tp in self._parts and not self._throttled:
            self._reader.resume([tp])

    # -- acks, nacks and commits -------------------------------------------------------------------

    def requeue(self, delivery: KafkaDelivery) -> None:
        """Hand a delivery to the handler again, in process, before later records."""
        self._redeliver.append(delivery)
        self._mailbox.put_nowait(None)  # wakes the worker

    async def retry_later(self, delivery: KafkaDelivery, delay: float) -> None:
        """Write a copy to the retry topic, due in ``delay`` seconds, then ack the original."""
        record = delivery.record
        headers = [(k, v) for k, v in record.headers if not k.startswith(RESERVED_PREFIX)]
        origin = _header(record.headers, ORIGIN_HEADER)
        headers.append((ORIGIN_HEADER, origin or f"{record.topic}:{record.partition}:{record.offset}".encode()))
        headers.append((DUE_HEADER, str(int((time.time() + delay) * 1000)).encode()))
        headers.append((ATTEMPT_HEADER, str(delivery.attempt + 1).encode()))
        try:
            await self._conn.send(self.retry_topic, record.value, record.key, headers)
        except PublishError as exc:  # keep it unacked and retry in process instead
            log.warning("cannot write a retry for %s, redelivering in process: %s", self.topic, exc)
            asyncio.get_running_loop().call_later(delay, self.requeue, delivery)
            return
        delivery.part.ack(record.offset)

    def committable(self, only: Any = None) -> dict[TopicPartition, int]:
        """The offsets to commit: every partition acked past its last commit (``only`` these)."""
        return {
            tp: part.boundary
            for tp, part in self._parts.items()
            if part.boundary > part.committed and (only is None or tp in only)
        }

    def committed(self, offsets: dict[TopicPartition, int]) -> None:
        """Kafka took ``offsets``: remember them."""
        for tp, offset in offsets.items():
            current = self._parts.get(tp)
            if current is not None:
                current.committed = max(current.committed, offset)

    async def _commit(self, only: Any = None) -> None:
        offsets = self.committable(only)
        if offsets and await self._reader.commit(offsets):
            self.committed(offsets)

    async def revoked(self, revoked: Any) -> None:
        """A rebalance takes partitions away: commit what was acked in them, then forget them."""
        self._assigned.clear()
        await self._commit(revoked)
        for tp in revoked:
            part = self._parts.pop(tp, None)
            if part is not None:
                part.live = False
            timer = self._timers.pop(tp, None)
            if timer is not None:
                timer.cancel()

    def assigned(self, assigned: Any) -> None:
        """The group handed out partitions (maybe none of this topic's): track offsets in each from scratch."""
        for tp in assigned:
            if tp not in self._parts:
                self._parts[tp] = PartitionOffsets(tp)
        if self._throttled:
            self._reader.pause(assigned)
        self._assigned.set()

    @property
    def running(self) -> bool:
        """Whether the subscription still consumes."""
        return self._running


async def ensure_topics(conn: KafkaConnection, topic: str, group: str) -> None:
    """Create a subscription's topic and its group's retry topic (before its consumer exists)."""
    o = conn.settings
    await conn.ensure(conn.name_of(topic), o.partitions)
    retry_config = {} if o.retry_retention_ms is None else {"retention.ms": str(o.retry_retention_ms)}
    await conn.ensure(conn.retry_topic(topic, group), o.retry_partitions or o.partitions, retry_config)


def _header(headers: Any, name: str) -> bytes | None:
    """The value of a header; a null value is absent."""
    for k, v in headers:
        if k == name:
            return v if isinstance(v, bytes) else None
    return None


def _retry_headers(headers: Any) -> tuple[float, int, str | None]:
    """Due time (epoch ms), attempt and origin id of a retry copy; lenient with foreign input
    (a null or unreadable value is absent)."""
    due, attempt, origin = 0.0, 2, None
    for k, v in headers:
        if v is None:
            continue
        try:
            if k == DUE_HEADER:
                due = float(v)
            elif k == ATTEMPT_HEADER:
                attempt = int(v)
            elif k == ORIGIN_HEADER:
                origin = v.decode()
        except (ValueError, TypeError, AttributeError, UnicodeDecodeError):
            continue
    return due, attempt, origin
