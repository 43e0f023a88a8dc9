"""Ephemeral subscriptions of the RabbitMQ adapter: non-durable queues on one direct exchange.

Every ephemeral message goes through one durable **direct** exchange, ``_mesh.ephemeral``
(namespace applied), with the topic as routing key, non-persistent, without publisher
confirms, and without waiting for the frame to be written. A subscription declares a queue
bound to that exchange with its topic as key:

- without a group (replies, presence): a server-named **exclusive, auto-delete** queue, consumed
  with ``no_ack``; the broker deletes it when the connection or the consumer goes;
- with a group (invocation requests): the non-durable, **auto-delete** queue
  ``<topic>.<group>`` shared by the group's members, with manual acks, so a member that dies
  gives its unacked messages back to the others; it goes when its last member stops.

Nothing durable is left behind but the one exchange. A message nobody's queue is bound for is
dropped by the broker (it is not ``mandatory``).

===============  ============================  ==============================================
queue            delivery                      ``ack()`` / ``nack()`` / ``nack(delay)``
===============  ============================  ==============================================
exclusive        ``AtMostOnceDelivery``        end it (consumed with ``no_ack``)
group's          :class:`EphemeralDelivery`    ``basic.ack`` / back to the queue at once / back
                                               after ``delay`` held in process (unacked)
===============  ============================  ==============================================
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import aio_pika
from aio_pika.abc import AbstractRobustChannel, AbstractRobustQueue
from aiormq.abc import DeliveredMessage

from mesh.brokers.base import AtMostOnceDelivery, Delivery, DeliveryHandler, HandlerRunner, Subscription
from mesh.brokers.rabbitmq.connection import GONE, STOP_TIMEOUT, RabbitMQConnection, as_text, unreadable
from mesh.brokers.rabbitmq.consume import RawConsumer
from mesh.codecs.binary import WireMessage, decode
from mesh.errors import DecodeError
from mesh.event import Event

__all__ = ["EphemeralDelivery", "EphemeralSubscription"]

# What settling on a channel that went away raises (the broker gives the message back then).
_SETTLE_GONE = (*GONE, RuntimeError)


class EphemeralDelivery(Delivery):
    """A delivery from a group's ephemeral queue: acked on its channel, or given back to the queue."""

    __slots__ = ("_message",)

    def __init__(
        self,
        message: DeliveredMessage,
        topic: str,
        group: str,
        event: Event | None,
        raw: WireMessage,
        error: DecodeError | None,
    ) -> None:
        super().__init__(topic, group, event, raw, error)
        self._message = message

    async def _ack(self) -> None:
        message = self._message
        tag = message.delivery_tag
        if tag is not None:
            with contextlib.suppress(*_SETTLE_GONE):  # queued for the writer, not waited for
                await message.channel.basic_ack(delivery_tag=tag, wait=False)

    async def _requeue(self) -> None:
        message = self._message
        tag = message.delivery_tag
        if tag is not None:
            with contextlib.suppress(*_SETTLE_GONE):
                await message.channel.basic_nack(delivery_tag=tag, requeue=True)


class EphemeralSubscription(Subscription):
    """One ephemeral queue consumed on its own channel (see the module docstring)."""

    def __init__(
        self,
        conn: RabbitMQConnection,
        topic: str,
        group: str | None,
        handler: DeliveryHandler,
        concurrency: int,
        on_stop: Callable[[EphemeralSubscription], None],
    ) -> None:
        self.topic = topic
        self.group = group or ""
        self.shared = group is not None
        self._key = conn.name_of(topic)
        self._conn = conn
        self._wire = conn.wire
        self._on_stop = on_stop
        self._runner = HandlerRunner(handler, concurrency, topic)
        self._channel: AbstractRobustChannel | None = None
        self._queue: AbstractRobustQueue | None = None
        self._consumer: RawConsumer | None = None
        self._running = False

    async def start(self) -> None:
        """Declare the queue, bind it to the ephemeral exchange with the topic, start consuming."""
        conn = self._conn
        channel = self._channel = await conn.channel()
        await channel.set_qos(prefetch_count=max(conn.settings.prefetch, self._runner.concurrency))
        exchange = await channel.declare_exchange(conn.ephemeral_exchange, aio_pika.ExchangeType.DIRECT, durable=True)
        if self.shared:
            queue = await channel.declare_queue(f"{self._key}.{self.group}", durable=False, auto_delete=True)
        else:
            queue = await channel.declare_queue("", durable=False, exclusive=True, auto_delete=True)
        await queue.bind(exchange, routing_key=self._key)
        await self._listen(channel, queue)

    async def _listen(self, channel: AbstractRobustChannel, queue: AbstractRobustQueue) -> None:
        """Consume ``queue`` (declared and bound on ``channel``), with acks only when shared."""
        self._queue = queue
        self._running = True
        timeout = self._conn.timeout
        self._consumer = RawConsumer(
            channel, queue, self._on_message, no_ack=not self.shared, timeout=timeout, stop_timeout=STOP_TIMEOUT
        )
        await self._consumer.start()

    async def _on_message(self, message: DeliveredMessage) -> None:
        """aiormq's callback (a task per message): hand it straight to the runner."""
        if not self._running:
            return  # a group queue gets it back when the channel closes; an exclusive one drops it
        props = message.header.properties
        headers: Any = props.headers or {}
        if any(type(v) is not str and type(v) is not bytes for v in headers.values()):
            headers = as_text(headers)
        wire = WireMessage(message.body, headers, None, props.content_type)
        error = None
        try:
            event = decode(wire, self._wire, self.topic, props.message_id)
        except DecodeError as exc:
            event, error = None, exc
        except Exception as exc:  # foreign input never stops the consumer
            event, error = None, unreadable(exc, message.body)
        if self.shared:
            await self._runner.submit(EphemeralDelivery(message, self.topic, self.group, event, wire, error))
        else:
            await self._runner.submit(AtMostOnceDelivery(self.topic, self.group, event, wire, error))

    async def stop(self, drain: bool = True) -> None:
        if not self._running:
            return
        self._running = False
        channel = self._channel
        if self._consumer is not None:
            with contextlib.suppress(Exception):
                await self._consumer.stop(GONE)  # an auto-delete queue goes with its last consumer
        if drain:
            await self._runner.drain()
        self._channel = None
        if channel is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(STOP_TIMEOUT):
                    await channel.close()  # unacked messages of a group queue go back to it
        self._on_stop(self)
