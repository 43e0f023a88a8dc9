"""Ephemeral subscriptions of the RabbitMQ adapter: non-durable queues on one direct exchange.

Every ephemeral message goes through one durable **direct** exchange, ``_mesh.ephemeral``
(namespace applied), with the topic as routing key, non-persistent and without publisher
confirms. A subscription declares a queue bound to that exchange with its topic as key:

- without a group (replies, presence): a server-named **exclusive, auto-delete** queue, consumed
  with ``no_ack``; the broker deletes it when the connection or the consumer goes;
- with a group (invocation requests): the non-durable, **auto-delete** queue
  ``<topic>.<group>`` shared by the group's members, with manual acks, so a member that dies
  gives its unacked messages back to the others; it goes when its last member stops.

Nothing durable is left behind but the one exchange. A message nobody's queue is bound for is
dropped by the broker (it is not ``mandatory``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any

import aio_pika
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustChannel, AbstractRobustQueue
from aio_pika.exceptions import ChannelInvalidStateError

from mesh.brokers.base import Delivery, DeliveryHandler, HandlerRunner, Subscription
from mesh.codecs.binary import WireMessage, decode
from mesh.errors import DecodeError

if TYPE_CHECKING:
    from mesh.brokers.rabbitmq.broker import RabbitMQBroker

__all__ = ["EphemeralSubscription", "ack_queued"]

log = logging.getLogger("mesh.broker.rabbitmq")

_STOP_TIMEOUT = 5.0


async def ack_queued(message: AbstractIncomingMessage) -> None:
    """Ack ``message``: the frame is queued for the connection's writer, not waited for.

    aio-pika's ``ack()`` waits until the frame is written, one loop turn per message; without
    the wait the loop takes the next message at once and the writer sends a burst's acks
    together. An ack lost with the connection is a redelivery either way.
    """
    tag = message.delivery_tag
    if tag is not None:  # None: consumed with no_ack, nothing to settle
        await message.channel.basic_ack(delivery_tag=tag, wait=False)


class _Delivery(Delivery):
    """Acked on its channel when the queue needs acks (a group's); a no-op otherwise."""

    __slots__ = ("_acks", "_message")

    def __init__(self, sub: EphemeralSubscription, message: AbstractIncomingMessage, *args: Any) -> None:
        super().__init__(sub.topic, sub.group, *args)
        self._message = message
        self._acks = sub.shared

    async def _ack(self) -> None:
        if self._acks:
            with contextlib.suppress(ChannelInvalidStateError, ConnectionError, RuntimeError):
                await ack_queued(self._message)

    async def _nack(self, delay: float | None) -> None:
        if self._acks:  # back to the group's queue at once (an ephemeral queue has no delays)
            with contextlib.suppress(ChannelInvalidStateError, ConnectionError, RuntimeError):
                await self._message.nack(requeue=True)


class EphemeralSubscription(Subscription):
    """One ephemeral queue consumed on its own channel (see the module docstring)."""

    def __init__(
        self,
        broker: RabbitMQBroker,
        topic: str,
        group: str | None,
        handler: DeliveryHandler,
        concurrency: int,
    ) -> None:
        self.topic = topic
        self.group = group or ""
        self.shared = group is not None
        self._key = broker.name_of(topic)
        self._broker = broker
        self._runner = HandlerRunner(handler, concurrency, topic)
        self._channel: AbstractRobustChannel | None = None
        self._queue: AbstractRobustQueue | None = None
        self._tag: str | None = None
        self._running = False

    async def start(self, connection: aio_pika.RobustConnection, exchange_name: str, prefetch: int) -> None:
        channel = self._channel = await connection.channel(publisher_confirms=False)
        await channel.set_qos(prefetch_count=max(prefetch, self._runner.concurrency))
        exchange = await channel.declare_exchange(exchange_name, aio_pika.ExchangeType.DIRECT, durable=True)
        if self.shared:
            queue = await channel.declare_queue(f"{self._key}.{self.group}", durable=False, auto_delete=True)
        else:
            queue = await channel.declare_queue("", durable=False, exclusive=True, auto_delete=True)
        self._queue = queue
        await queue.bind(exchange, routing_key=self._key)
        self._running = True
        self._tag = await queue.consume(self._on_message, no_ack=not self.shared)

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        """aio-pika's callback (a task per message): hand it straight to the runner."""
        if not self._running:
            return  # a group queue gets it back when the channel closes; an exclusive one drops it
        headers: Any = message.headers or {}
        if any(type(v) is not str and type(v) is not bytes for v in headers.values()):
            headers = {k: v if isinstance(v, str | bytes) else str(v) for k, v in headers.items()}
        wire = WireMessage(message.body, headers, None, message.content_type)
        try:
            delivery = _Delivery(self, message, decode(wire, self._broker.wire, self.topic, message.message_id), wire)
        except DecodeError as exc:
            delivery = _Delivery(self, message, None, wire, exc)
        except Exception as exc:  # foreign input never stops the consumer
            error = DecodeError(f"unreadable message: {type(exc).__name__}: {exc}", bytes(message.body))
            delivery = _Delivery(self, message, None, wire, error)
        await self._runner.submit(delivery)

    async def stop(self, drain: bool = True) -> None:
        if not self._running:
            return
        self._running = False
        queue, tag, channel = self._queue, self._tag, self._channel
        if queue is not None and tag is not None and channel is not None and not channel.is_closed:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(_STOP_TIMEOUT):
                    await queue.cancel(tag)  # an auto-delete queue goes with its last consumer
        if drain:
            await self._runner.drain()
        self._channel = None
        if channel is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(_STOP_TIMEOUT):
                    await channel.close()  # unacked messages of a group queue go back to it
        self._broker.forget_ephemeral(self)
