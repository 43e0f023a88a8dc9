"""The consuming half of the Kafka adapter: one subscription = one consumer in a group.

A :class:`KafkaSubscription` reads its topic and its retry topic, hands each record to a
:class:`~mesh.brokers.base.HandlerRunner` as a :class:`KafkaDelivery`, and commits by hand:
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
:class:`~mesh.brokers.kafka.connection.KafkaConnection`, never the broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from collections import deque
from collections.abc import Callable
from typing import Any

from aiokafka import ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError

from mesh.brokers.base import RESERVED_PREFIX, Delivery, DeliveryHandler, HandlerRunner, Subscription
from mesh.brokers.kafka.connection import (
    ATTEMPT_HEADER,
    CONTENT_TYPE,
    DUE_HEADER,
    ORIGIN_HEADER,
    KafkaConnection,
    quietly,
    reason,
    salvage,
    unreadable,
)
from mesh.codecs.binary import WireMessage, decode
from mesh.errors import BrokerConnectionError, BrokerError, DecodeError, PublishError
from mesh.event import Event
from mesh.logs import log_connection_lost, log_reconnected

__all__ = ["KafkaDelivery", "KafkaSubscription", "PartitionOffsets", "ensure_topics", "wait_for_peers"]

log = logging.getLogger("mesh.broker.kafka")

POLL_MS = 100
"""How long one fetch round waits when nothing arrives (bounds how late an async nack is seen)."""


class KafkaDelivery(Delivery):
    """A record handed to a handler; ack marks its offset committable.

    ``nack()`` hands it to the handler again in process; ``nack(delay)`` goes through the
    subscription's retry topic (the adapter's own delay, see the module docstring).
    """

    __slots__ = ("part", "record", "sub")

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


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    """Tells the subscription when the group takes partitions away and hands them out."""

    def __init__(self, sub: KafkaSubscription) -> None:
        self._sub = sub

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self._sub.revoked(revoked)

    async def on_partitions_assigned(self, assigned: Any) -> None:
        self._sub.assigned(assigned)


class KafkaSubscription(Subscription):
    """One consumer in ``group`` reading ``topic`` and its retry topic (see the module docstring).

    Build it once both topics exist (:func:`ensure_topics`): its consumer is made here and must
    be started and stopped. ``on_stop`` is called with the subscription once it stopped (the broker's bookkeeping).
    """

    def __init__(
        self,
        conn: KafkaConnection,
        topic: str,
        group: str,
        handler: DeliveryHandler,
        concurrency: int,
        on_stop: Callable[[KafkaSubscription], None],
    ) -> None:
        o = conn.settings
        self.topic = topic
        self.group = group
        self.name = conn.name_of(topic)
        """The Kafka topic read."""
        self.retry_topic = conn.retry_topic(topic, group)
        self._conn = conn
        self._consumer = conn.consumer(
            group_id=group,
            group_instance_id=f"{o.group_instance_id}-{topic}" if o.group_instance_id else None,
            enable_auto_commit=False,
            auto_offset_reset=o.initial_offset,
            fetch_max_wait_ms=o.fetch_max_wait_ms,
            max_poll_records=o.max_poll_records,
            session_timeout_ms=o.session_timeout_ms,
            heartbeat_interval_ms=o.heartbeat_interval_ms,
            max_poll_interval_ms=o.max_poll_interval_ms,
            rebalance_timeout_ms=o.rebalance_timeout_ms,
        )
        self._on_stop = on_stop
        self._runner = HandlerRunner(handler, concurrency, topic)
        self._parts: dict[TopicPartition, PartitionOffsets] = {}
        self._redeliver: deque[KafkaDelivery] = deque()
        self._timers: dict[TopicPartition, asyncio.TimerHandle] = {}
        self._assigned = asyncio.Event()
        self._running = True
        self._fetching = False
        self._lost = False  # a fetch failed and none has worked since
        self._task: asyncio.Task[None] | None = None
        self._commit_every = o.commit_interval_ms / 1000
        self._last_commit = 0.0

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect, join the group and return once it assigned this member its partitions, or after
        ``join_timeout`` without any (more members than partitions: it idles until a rebalance)."""
        conn, o = self._conn, self._conn.settings
        consumer = self._consumer
        try:
            async with asyncio.timeout(o.connect_timeout):
                await consumer.start()  # connects only: it is not subscribed yet
        except (KafkaError, OSError, TimeoutError) as exc:
            await quietly(consumer.stop())
            raise BrokerConnectionError("kafka", conn.address, reason(exc, o.connect_timeout)) from exc
        consumer.subscribe([self.name, self.retry_topic], listener=_Listener(self))  # joins in the background
        loop = asyncio.get_running_loop()
        self._task = loop.create_task(self._loop(), name=f"mesh-kafka:{self.name}:{self.group}")
        try:
            await asyncio.wait_for(self._assigned.wait(), o.join_timeout)
        except TimeoutError:
            if self._task.done():  # the consume loop itself ended: that is an error
                await self.stop(drain=False)
                raise BrokerError(
                    f"kafka group {self.group!r} assigned no partitions of {self.name!r} within {o.join_timeout:g}s"
                ) from None
            # more members than partitions: this one idles until a rebalance gives it some
            log.warning(
                "kafka group %s has given this member no partition of %s within %gs; it consumes once a "
                "rebalance assigns it some",
                self.group,
                self.name,
                o.join_timeout,
            )

    async def stop(self, drain: bool = True) -> None:
        if not self._running:
            return
        self._running = False
        task = self._task
        if task is not None:
            if self._fetching or not drain:
                task.cancel()  # waiting for records, or told not to wait: nothing to finish
            with contextlib.suppress(asyncio.CancelledError):
                await task  # with drain, the loop finishes the handler it is running
        if drain:
            await self._runner.drain()
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        self._redeliver.clear()
        await self._commit()
        await quietly(self._consumer.stop())  # leaves the group: uncommitted records go back
        self._on_stop(self)

    # -- the fetch loop --------------------------------------------------------------------------

    async def _loop(self) -> None:
        consumer = self._consumer
        runner = self._runner
        binding = self._conn.wire
        topic = self.topic
        retry_topic = self.retry_topic
        loop = asyncio.get_running_loop()
        redeliver = self._redeliver
        while self._running:
            if redeliver:
                await self._redeliver_now()
                continue
            self._fetching = True
            try:
                batch = await consumer.getmany(timeout_ms=POLL_MS)
            except KafkaError as exc:
                if not self._lost:  # one line per outage, then one when fetching works again
                    self._lost = True
                    log_connection_lost("kafka", self._conn.address, f"fetch for {topic} failed: {exc}")
                await asyncio.sleep(0.5)
                continue
            except Exception:  # keep consuming whatever the client throws
                log.exception("kafka fetch for %s failed unexpectedly, retrying", topic)
                await asyncio.sleep(0.5)
                continue
            finally:
                self._fetching = False
            if self._lost:
                self._lost = False
                log_reconnected("kafka", self._conn.address)
            parts = self._parts
            for tp, records in batch.items():
                part = parts.get(tp)
                if part is None:
                    continue
                is_retry = tp.topic == retry_topic
                for record in records:
                    if not part.live or not self._running:
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
                    await runner.submit(delivery)
                    if redeliver:
                        await self._redeliver_now()
            if not batch or loop.time() - self._last_commit >= self._commit_every:
                await self._commit()

    async def _redeliver_now(self) -> None:
        redeliver = self._redeliver
        while redeliver and self._running:
            d = redeliver.popleft()
            if d.part.live:
                await self._runner.submit(KafkaDelivery(self, d.part, d.record, d.event, d.raw, d.error, d.attempt + 1))

    def _defer(self, tp: TopicPartition, offset: int, due: float) -> None:
        """Hold a retry partition at a record that is not due yet; resume it when it is."""
        try:
            self._consumer.seek(tp, offset)
            self._consumer.pause(tp)
        except KafkaError:  # revoked meanwhile: the next owner defers it
            return
        old = self._timers.pop(tp, None)
        if old is not None:
            old.cancel()
        wait = max(0.0, due / 1000 - time.time())
        self._timers[tp] = asyncio.get_running_loop().call_later(wait, self._resume, tp)

    def _resume(self, tp: TopicPartition) -> None:
        self._timers.pop(tp, None)
        if self._running and tp in self._parts:
            with contextlib.suppress(KafkaError):
                self._consumer.resume(tp)

    # -- acks, nacks and commits -------------------------------------------------------------------

    def requeue(self, delivery: KafkaDelivery) -> None:
        """Hand a delivery to the handler again, in process, before later records."""
        self._redeliver.append(delivery)

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
            loop = asyncio.get_running_loop()
            loop.call_later(delay, self._redeliver.append, delivery)
            return
        delivery.part.ack(record.offset)

    async def _commit(self, only: Any = None) -> None:
        self._last_commit = asyncio.get_running_loop().time()
        offsets = {}
        for tp, part in self._parts.items():
            if part.boundary > part.committed and (only is None or tp in only):
                offsets[tp] = part.boundary
        if not offsets:
            return
        try:
            await self._consumer.commit(offsets)
        except KafkaError as exc:
            log.info("kafka commit for group %s failed (redelivered later): %s", self.group, exc)
            return
        for tp, offset in offsets.items():
            current = self._parts.get(tp)
            if current is not None:
                current.committed = max(current.committed, offset)

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
        """The group handed out partitions: track offsets in each from scratch."""
        for tp in assigned:
            if tp not in self._parts:
                self._parts[tp] = PartitionOffsets(tp)
        self._assigned.set()

    @property
    def is_assigned(self) -> asyncio.Event:
        """Set while the group has given this member its partitions (cleared during a rebalance)."""
        return self._assigned

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


async def wait_for_peers(sub: KafkaSubscription, members: weakref.WeakSet[KafkaSubscription], limit: float) -> None:
    """A new member makes the group rebalance: wait until this process's other members of the
    group have their partitions back, so a group is ready when ``subscribe`` returns. (Every
    member revoked before this one got its assignment, so none is missed.)"""
    peers = [m.is_assigned.wait() for m in members if m is not sub and m.running]
    if peers:
        try:
            await asyncio.wait_for(asyncio.gather(*peers), limit)
        except TimeoutError:
            log.warning("kafka group %s: other members got no partitions within %gs", sub.group, limit)


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
