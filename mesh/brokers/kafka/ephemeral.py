"""Ephemeral subscriptions of the Kafka adapter: a consumer without a group, reading from the end.

Used for the mesh's own short-lived traffic (invocation replies, presence). The consumer is
assigned every partition of the topic by hand (no group join, so no rebalance wait), starts at
the end, commits nothing and polls with a small ``ephemeral_fetch_max_wait_ms`` (a broker that
does not wake an idle fetch would otherwise delay replies). An exclusive topic (a reply inbox)
is deleted when its subscription stops. A gap in the offsets is held until the missing records
appear (:mod:`.gaps`: a reply is not skipped because a broker showed a later one first).
Deliveries are at most once: ``ack`` and ``nack`` do nothing. Ephemeral subscriptions with a
group are ordinary subscriptions (see :meth:`~mesh.brokers.kafka.broker.KafkaBroker.subscribe_ephemeral`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from aiokafka import TopicPartition
from aiokafka.errors import KafkaError

from mesh.brokers.base import AtMostOnceDelivery, DeliveryHandler, HandlerRunner, Subscription
from mesh.brokers.kafka.connection import KafkaConnection, quietly, read_record, reason
from mesh.brokers.kafka.gaps import GapCheck
from mesh.codecs.binary import Binding
from mesh.errors import BrokerConnectionError, BrokerError

__all__ = ["EphemeralSubscription"]

log = logging.getLogger("mesh.broker.kafka")

POLL_MS = 100


class EphemeralSubscription(Subscription):
    """A group-less consumer of every partition of one topic, from its end.

    Build it once the topic exists (the broker creates it with one partition): its consumer is
    made here and must be started and stopped. At stop an exclusive topic is deleted, then
    ``on_stop`` is called with the subscription.
    """

    def __init__(
        self,
        conn: KafkaConnection,
        topic: str,
        handler: DeliveryHandler,
        concurrency: int,
        exclusive: bool,
        on_stop: Callable[[EphemeralSubscription], None],
    ) -> None:
        o = conn.settings
        self.topic = topic
        self.group = ""
        self.name = conn.name_of(topic)
        """The Kafka topic read."""
        self.exclusive = exclusive
        self._conn = conn
        self._consumer = conn.consumer(
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="latest",
            fetch_max_wait_ms=o.ephemeral_fetch_max_wait_ms,
            max_poll_records=o.max_poll_records,
        )
        self._gaps = GapCheck.of(self._consumer, o.gap_wait_ms)
        self._on_stop = on_stop
        self._runner = HandlerRunner(handler, concurrency, topic)
        self._task: asyncio.Task[None] | None = None
        self._running = True
        self._fetching = False

    async def start(self) -> None:
        """Connect, take every partition by hand and fix the start at the current end."""
        conn = self._conn
        timeout = conn.settings.connect_timeout
        consumer = self._consumer
        try:
            async with asyncio.timeout(timeout):
                await consumer.start()
                partitions = consumer.partitions_for_topic(self.name)
                if not partitions:
                    await consumer.topics()  # a metadata refresh: the topic may be new
                    partitions = consumer.partitions_for_topic(self.name)
                if not partitions:
                    raise BrokerError(f"kafka has no partitions for {self.name!r}")
                tps = [TopicPartition(self.name, p) for p in sorted(partitions)]
                consumer.assign(tps)
                await consumer.seek_to_end(*tps)
                for tp in tps:  # resolve now: later records are not missed
                    self._gaps.expect(tp, await consumer.position(tp))
        except (KafkaError, OSError, TimeoutError) as exc:
            await quietly(consumer.stop())
            raise BrokerConnectionError("kafka", conn.address, reason(exc, timeout)) from exc
        except BaseException:
            await quietly(consumer.stop())
            raise
        self._task = asyncio.get_running_loop().create_task(self._loop(), name=f"mesh-kafka-ephemeral:{self.name}")

    async def _loop(self) -> None:
        consumer, submit, binding, topic = self._consumer, self._runner.submit, self._conn.wire, self.topic
        admit = self._gaps.admit
        while self._running:
            self._fetching = True
            try:
                batch = await consumer.getmany(timeout_ms=POLL_MS)
            except KafkaError as exc:
                log.warning("kafka ephemeral fetch of %s failed, retrying: %s", self.name, exc)
                await asyncio.sleep(0.5)
                continue
            finally:
                self._fetching = False
            for tp, records in batch.items():
                for record in admit(tp, records):
                    if not self._running:
                        return
                    await submit(self._delivery(record, binding, topic))

    def _delivery(self, record: Any, binding: Binding, topic: str) -> AtMostOnceDelivery:
        event, msg, error = read_record(
            record, binding, topic, f"{record.topic}:{record.partition}:{record.offset}", key=False
        )
        return AtMostOnceDelivery(topic, "", event, msg, error)

    async def stop(self, drain: bool = True) -> None:
        if not self._running:
            return
        self._running = False
        task = self._task
        if task is not None:
            if self._fetching or not drain:
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if drain:
            await self._runner.drain()
        await quietly(self._consumer.stop())
        if self.exclusive:
            await self._conn.drop(self.name)
        self._on_stop(self)
