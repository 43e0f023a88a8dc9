"""Group consumers of the RabbitMQ adapter: one durable queue per group, consumed on its own channel.

A subscription of group ``g`` to topic ``t`` declares the topic exchange ``t`` and the durable
queue ``t.g`` bound to it with ``#``, then consumes it with manual acks, ``prefetch`` ahead.
Messages flow through one ordered loop into the :class:`~mesh.brokers.base.HandlerRunner`.

==================  ==========================================================================
outcome             what the broker sees
==================  ==========================================================================
``ack()``           ``basic.ack`` queued for the connection's writer (not waited for)
``nack()``          a copy with ``mesh-attempt`` = attempt + 1 published to ``t.g`` through the
                    default exchange (confirmed, mandatory), then the original acked
``nack(delay)``     the same copy through ``_mesh.delay.<ms>``: its TTL runs out and the broker
                    dead-letters it back to ``t.g`` (native delay, the consumer is not held)
copy refused        the original is nacked with ``requeue`` (its attempt is then not counted)
channel gone        nothing: the broker gives unacked messages back to the group
==================  ==========================================================================

Attempts are our header (copies) plus the broker's ``x-delivery-count`` (quorum queues count
returns, e.g. after a consumer died).

The queue, its binding and the prefetch are declared through aio-pika's robust channel, which
declares them again after a reconnection; the consumer is aiormq's (:mod:`.consume`), without
aio-pika's ``IncomingMessage`` and extra task per message.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Callable, Mapping
from typing import Any

import aio_pika
from aio_pika.abc import AbstractRobustChannel, AbstractRobustQueue
from aiormq.abc import DeliveredMessage

from mesh.brokers.base import Delivery, DeliveryHandler, HandlerRunner, Mailbox, Subscription
from mesh.brokers.rabbitmq.connection import (
    GONE,
    STOP_TIMEOUT,
    RabbitMQConnection,
    as_text,
    unreadable,
)
from mesh.brokers.rabbitmq.consume import RawConsumer
from mesh.codecs.binary import WireMessage, decode
from mesh.errors import DecodeError
from mesh.event import Event

__all__ = ["ATTEMPT_HEADER", "RabbitMQConsumer", "RabbitMQDelivery", "attempt_of"]

log = logging.getLogger("mesh.broker.rabbitmq")

ATTEMPT_HEADER = "mesh-attempt"
"""Header of a copy the adapter re-published on nack: the attempt it is."""

# Headers the broker writes; dropped from copies (a copied x-death would make RabbitMQ see a
# dead-letter cycle and drop the message).
_BROKER_HEADERS = ("x-death", "x-first-death-", "x-last-death-", "x-delivery-count", "x-acquired-count")


class RabbitMQDelivery(Delivery):
    """A delivery from a group queue; acked on the channel that delivered it."""

    __slots__ = ("_consumer", "_message")

    def __init__(
        self,
        consumer: RabbitMQConsumer,
        message: DeliveredMessage,
        event: Event | None,
        raw: WireMessage,
        error: DecodeError | None,
        attempt: int,
    ) -> None:
        super().__init__(consumer.topic, consumer.group, event, raw, error, attempt)
        self._consumer = consumer
        self._message = message

    async def _ack(self) -> None:
        # A gone channel is fine: the broker gives the message back to the group. Not waited
        # for: the frame is queued for the connection's writer, which sends a burst's acks together.
        message = self._message
        tag = message.delivery_tag
        if tag is not None:
            with contextlib.suppress(*GONE):
                await message.channel.basic_ack(delivery_tag=tag, wait=False)

    async def _requeue(self) -> None:
        await self._nack(None)

    async def _nack(self, delay: float | None) -> None:
        # Native delay: the copy waits in a delay queue, not in this process.
        if await self._consumer.republish(self._message, self.attempt + 1, self.event, delay):
            await self._ack()


class RabbitMQConsumer(Subscription):
    """One group queue consumed on its own channel; messages flow through one ordered loop."""

    def __init__(
        self,
        conn: RabbitMQConnection,
        topic: str,
        group: str,
        handler: DeliveryHandler,
        concurrency: int,
        on_stop: Callable[[RabbitMQConsumer], None] | None = None,
    ) -> None:
        self._on_stop = on_stop
        self.topic = topic
        self.group = group
        self.exchange = conn.name_of(topic)
        self.queue = conn.queue_of(topic, group)
        self._conn = conn
        self._binding = conn.wire
        self._runner = HandlerRunner(handler, concurrency, topic)
        self._buffer: Mailbox[DeliveredMessage | None] = Mailbox()
        self._channel: AbstractRobustChannel | None = None
        self._amqp_queue: AbstractRobustQueue | None = None
        self._consumer: RawConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self._running = False

    async def start(self) -> None:
        """Declare the exchange and the group queue, bind them, and start consuming."""
        options = self._conn.settings
        arguments: dict[str, Any] = {"x-queue-type": options.queue_type}
        if options.single_active_consumer:
            arguments["x-single-active-consumer"] = True
        channel = self._channel = await self._conn.channel()
        await channel.set_qos(prefetch_count=max(options.prefetch, self._runner.concurrency))
        exchange = await channel.declare_exchange(self.exchange, aio_pika.ExchangeType.TOPIC, durable=True)
        queue = self._amqp_queue = await channel.declare_queue(self.queue, durable=True, arguments=arguments)
        await queue.bind(exchange, routing_key="#")
        self._running = True
        self._task = asyncio.get_running_loop().create_task(
            self._loop(), name=f"mesh-rabbitmq:{self.topic}:{self.group}"
        )
        consumer = self._consumer = RawConsumer(
            channel, queue, self._on_message, timeout=self._conn.timeout, stop_timeout=STOP_TIMEOUT
        )
        await consumer.start()

    async def _on_message(self, message: DeliveredMessage) -> None:
        self._buffer.put_nowait(message)

    async def _loop(self) -> None:
        get = self._buffer.get
        submit = self._runner.submit
        make = self._delivery
        while True:
            message = await get()
            if message is None or not self._running:
                return
            if message.channel.is_closed:
                continue  # delivered before a reconnection: the broker sends it again
            await submit(make(message))

    def _delivery(self, message: DeliveredMessage) -> RabbitMQDelivery:
        props = message.header.properties
        headers: Any = props.headers or {}
        attempt = 1
        wire = WireMessage(message.body, {}, None, None)
        try:
            if headers:
                if ATTEMPT_HEADER in headers or "x-delivery-count" in headers:
                    attempt = attempt_of(headers)
                for value in headers.values():
                    if type(value) is not str and type(value) is not bytes:
                        headers = as_text(headers)
                        break
            rk = message.routing_key
            key = rk if message.exchange and rk != self.exchange else None
            wire = WireMessage(message.body, headers, key, props.content_type)
            fallback = None if "ce-specversion" in headers else self._fallback_id(message)
            event = decode(wire, self._binding, self.topic, fallback)
        except DecodeError as exc:
            return RabbitMQDelivery(self, message, None, wire, exc, attempt)
        except Exception as exc:  # foreign input must never stop the loop
            return RabbitMQDelivery(self, message, None, wire, unreadable(exc, message.body), attempt)
        return RabbitMQDelivery(self, message, event, wire, None, attempt)

    def _fallback_id(self, message: DeliveredMessage) -> str:
        """A stable id for a message that is not a CloudEvent: its message_id, else its content."""
        props = message.header.properties
        if props.message_id:
            return props.message_id
        digest = hashlib.blake2b(message.body, digest_size=16)
        if props.timestamp is not None:
            digest.update(str(props.timestamp).encode())
        return f"{self.exchange}:{digest.hexdigest()}"

    async def republish(
        self, message: DeliveredMessage, attempt: int, event: Event | None, delay: float | None
    ) -> bool:
        """Give ``message`` back to this group only, as a copy that is ``attempt``, now or after ``delay``.

        True once the broker confirmed the copy (the caller then acks the original); False when
        it could not be published and the original was requeued instead (nothing is lost).
        """
        props = message.header.properties
        headers: dict[str, Any] = {
            # pamqp encodes no ``bytes`` (a non-UTF-8 string arrives as bytes): send a byte array
            k: bytearray(v) if type(v) is bytes else v
            for k, v in (props.headers or {}).items()
            if not k.startswith(_BROKER_HEADERS)
        }
        headers[ATTEMPT_HEADER] = attempt
        props.headers = headers
        props.expiration = None
        props.user_id = None  # RabbitMQ refuses a user_id that is not the connection's user
        if not props.message_id and event is not None:
            props.message_id = event.id  # keeps a wrapped legacy message's id stable
        try:
            await self._conn.publish_copy(message.body, props, self.queue, delay)
        except Exception:  # fall back to a plain requeue rather than lose it
            log.warning("could not re-publish a nacked message on %s; requeued it", self.queue, exc_info=True)
            tag = message.delivery_tag
            if tag is not None:
                with contextlib.suppress(*GONE):
                    await message.channel.basic_nack(delivery_tag=tag, requeue=True)
            return False
        return True

    async def stop(self, drain: bool = True) -> None:
        if not self._running:
            return
        self._running = False
        if self._consumer is not None:
            await self._consumer.stop(GONE)
        self._buffer.put_nowait(None)
        task = self._task
        if task is not None:
            if not drain:
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task  # with drain, the loop finishes the handler it is running, then exits
        if drain:
            await self._runner.drain()
        await self._close_channel()
        if self._on_stop is not None:
            self._on_stop(self)

    async def abort(self) -> None:
        """Undo a :meth:`start` that failed half-way: stop without draining, close the channel."""
        await self.stop(drain=False)
        await self._close_channel()

    async def _close_channel(self) -> None:
        channel, self._channel = self._channel, None
        if channel is not None:
            with contextlib.suppress(TimeoutError, RuntimeError, *GONE):
                async with asyncio.timeout(STOP_TIMEOUT):
                    await channel.close()  # unacked deliveries go back to the queue


def attempt_of(headers: Mapping[str, Any]) -> int:
    """The attempt a delivery is: our header (copies) plus the broker's count of returns."""
    attempt = 1
    try:
        value = headers.get(ATTEMPT_HEADER)
        if value is not None:
            attempt = max(1, int(value.decode() if isinstance(value, bytes) else str(value)))
        returned = headers.get("x-delivery-count")
        if returned is not None:
            attempt += max(0, int(str(returned)))
    except (TypeError, ValueError, UnicodeDecodeError):
        pass
    return attempt
