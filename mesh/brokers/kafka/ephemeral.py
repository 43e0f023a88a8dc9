"""Ephemeral subscriptions of the Kafka adapter: a consumer without a group, reading from the end.

Used for the mesh's own short-lived traffic (invocation replies, presence). The consumer is
assigned every partition of the topic by hand (no group join, so no rebalance wait), starts at
the end, commits nothing and polls with a small ``ephemeral_fetch_max_wait_ms`` (a broker that
does not wake an idle fetch would otherwise delay replies). An exclusive topic (a reply inbox)
is deleted when its subscription stops. Deliveries are at most once: ``ack`` and ``nack`` do
nothing. Ephemeral subscriptions with a group are ordinary subscriptions (see
:meth:`KafkaBroker.subscribe_ephemeral`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from mesh.brokers.base import Delivery, DeliveryHandler, HandlerRunner, Subscription
from mesh.brokers.kafka.consumer import CONTENT_TYPE, quietly, reason
from mesh.codecs.binary import WireMessage, decode
from mesh.errors import BrokerConnectionError, BrokerError, DecodeError
from mesh.event import Event

if TYPE_CHECKING:
    from mesh.brokers.kafka.broker import KafkaBroker

__all__ = ["EphemeralSubscription"]

log = logging.getLogger("mesh.broker.kafka")

POLL_MS = 100


class _Delivery(Delivery):
    """At most once: there is nothing to commit and nothing to redeliver from."""

    __slots__ = ()

    async def _ack(self) -> None:
        pass

    async def _nack(self, delay: float | None) -> None:
        pass


class EphemeralSubscription(Subscription):
    """A group-less consumer of every partition of one topic, from its end."""

    def __init__(
        self,
        broker: KafkaBroker,
        topic: str,
        name: str,
        consumer: AIOKafkaConsumer,
        handler: DeliveryHandler,
        concurrency: int,
        exclusive: bool,
    ) -> None:
        self.topic = topic
        self.group = ""
        self.name = name
        self.exclusive = exclusive
        self._broker = broker
        self._consumer = consumer
        self._runner = HandlerRunner(handler, concurrency, topic)
        self._task: asyncio.Task[None] | None = None
        self._running = True
        self._fetching = False

    async def start(self, connect_timeout: float) -> None:
        """Connect, take every partition by hand and fix the start at the current end."""
        consumer = self._consumer
        try:
            async with asyncio.timeout(connect_timeout):
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
                for tp in tps:
                    await consumer.position(tp)  # resolve now: later records are not missed
        except (KafkaError, OSError, TimeoutError) as exc:
            await quietly(consumer.stop())
            raise BrokerConnectionError("kafka", self._broker.address, reason(exc, connect_timeout)) from exc
        except BaseException:
            await quietly(consumer.stop())
            raise
        self._task = asyncio.get_running_loop().create_task(self._loop(), name=f"mesh-kafka-ephemeral:{self.name}")

    async def _loop(self) -> None:
        consumer, submit, binding, topic = self._consumer, self._runner.submit, self._broker.wire, self.topic
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
            for records in batch.values():
                for record in records:
                    if not self._running:
                        return
                    await submit(self._delivery(record, binding, topic))

    def _delivery(self, record: Any, binding: Any, topic: str) -> _Delivery:
        headers = dict(record.headers)
        ctype = headers.get(CONTENT_TYPE)
        msg = WireMessage(record.value or b"", headers, None, None)
        try:
            msg = WireMessage(record.value or b"", headers, None, ctype.decode() if ctype is not None else None)
            event: Event = decode(msg, binding, topic, f"{record.topic}:{record.partition}:{record.offset}")
        except (DecodeError, UnicodeDecodeError) as exc:
            error = exc if isinstance(exc, DecodeError) else DecodeError(str(exc), record.value or b"")
            return _Delivery(topic, "", None, msg, error)
        return _Delivery(topic, "", event, msg)

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
        await self._broker.forget_ephemeral(self)
