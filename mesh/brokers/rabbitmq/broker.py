"""The RabbitMQ adapter (AMQP 0-9-1 over aio-pika), with a connection that reconnects on its own.

Topology (DESIGN §3), every object durable:

- a topic is a **topic exchange** named after the topic; an event is published with routing key
  = its ``partitionkey`` (or the topic name when it has none);
- a group is a **queue** named ``<topic>.<group>`` bound to that exchange with ``#``, so every
  group gets every event and the members of one group compete for them;
- a delayed redelivery goes through ``_mesh.delay.<ms>``: a fanout exchange and a queue with
  ``x-message-ttl`` and ``x-dead-letter-exchange: ""``. The copy is published with the group
  queue's name as routing key, so when its TTL runs out the broker dead-letters it through the
  default exchange straight back to that one group queue.

A topic exchange (rather than fanout) costs nothing for the mesh's own ``#`` bindings and lets a
consumer outside the mesh bind a queue to a subset of keys (``eu.#``).

Attempts: a nack (immediate or delayed) re-publishes a copy carrying ``mesh-attempt`` and acks
the original once the copy is confirmed, so the count is exact on every RabbitMQ version and
queue type. Where the broker counts returns itself (``x-delivery-count`` on quorum queues, e.g.
after a consumer died) that count is added.

Events are written in binary mode: attributes as ``ce-<attr>`` headers, ``datacontenttype`` in
the ``content_type`` property, the event id as ``message_id`` (the binding the CloudEvents SDK
implements); ``cloudEvents_``/``cloudEvents:`` headers, structured events and plain messages are
read too.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import logging
import math
from collections.abc import Mapping
from datetime import UTC, datetime
from types import ModuleType
from typing import Any, ClassVar
from urllib.parse import unquote, urlsplit

import aio_pika
import aiormq
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustChannel, AbstractRobustQueue
from aio_pika.exceptions import (
    AMQPError,
    AuthenticationError,
    ChannelInvalidStateError,
    ChannelNotFoundEntity,
    ChannelPreconditionFailed,
    ProbableAuthenticationError,
)
from aiormq.abc import AbstractChannel
from aiormq.exceptions import ChannelAccessRefused
from pamqp.commands import Basic
from pydantic import ValidationError

from mesh.brokers.base import (
    RESERVED_PREFIX,
    Broker,
    Delivery,
    DeliveryHandler,
    Features,
    HandlerRunner,
    Mailbox,
    Subscription,
)
from mesh.brokers.capabilities import DelegatedGroupDelivery
from mesh.brokers.rabbitmq import groups as _replay
from mesh.brokers.rabbitmq.ephemeral import EphemeralSubscription, ack_queued
from mesh.brokers.rabbitmq.options import RabbitMQOptions
from mesh.codecs.binary import WireMessage, decode, encode
from mesh.codecs.bindings import AMQP
from mesh.codecs.data import format_time
from mesh.errors import BrokerConnectionError, BrokerError, ConfigError, DecodeError, PublishError
from mesh.event import Event

__all__ = ["ATTEMPT_HEADER", "RabbitMQBroker"]

log = logging.getLogger("mesh.broker.rabbitmq")

ATTEMPT_HEADER = "mesh-attempt"
"""Header of a copy the adapter re-published on nack: the attempt it is."""

DEFAULT_URL = "amqp://guest:guest@127.0.0.1:5672/"
EPHEMERAL_EXCHANGE = RESERVED_PREFIX + "ephemeral"
"""The direct exchange of the mesh's short-lived traffic (see :mod:`._rabbitmq_ephemeral`)."""
MAX_TTL_MS = 2**32 - 1
# Headers the broker writes; dropped from copies (a copied x-death would make RabbitMQ see a
# dead-letter cycle and drop the message).
_BROKER_HEADERS = ("x-death", "x-first-death-", "x-last-death-", "x-delivery-count", "x-acquired-count")
_STOP_TIMEOUT = 5.0
# What a call on a channel or connection that went away raises.
_GONE = (ChannelInvalidStateError, AMQPError, ConnectionError)


class RabbitMQDelivery(Delivery):
    """A delivery from a group queue; acked on the channel that delivered it."""

    __slots__ = ("_consumer", "_message")

    def __init__(
        self,
        consumer: _Consumer,
        message: AbstractIncomingMessage,
        event: Event | None,
        raw: WireMessage,
        error: DecodeError | None,
        attempt: int,
    ) -> None:
        super().__init__(consumer.topic, consumer.group, event, raw, error, attempt)
        self._consumer = consumer
        self._message = message

    async def _ack(self) -> None:
        # A gone channel is fine: the broker gives the message back to the group.
        with contextlib.suppress(*_GONE):
            await ack_queued(self._message)

    async def _nack(self, delay: float | None) -> None:
        await self._consumer.redeliver(self, delay)


class _Consumer(Subscription):
    """One group queue consumed on its own channel; messages flow through one ordered loop."""

    def __init__(
        self,
        broker: RabbitMQBroker,
        topic: str,
        group: str,
        handler: DeliveryHandler,
        concurrency: int,
    ) -> None:
        self.topic = topic
        self.group = group
        self.exchange = broker.name_of(topic)
        self.queue = f"{self.exchange}.{group}"
        self._broker = broker
        self._binding = broker.wire
        self._runner = HandlerRunner(handler, concurrency, topic)
        self._buffer: Mailbox[AbstractIncomingMessage | None] = Mailbox()
        self._channel: AbstractRobustChannel | None = None
        self._amqp_queue: AbstractRobustQueue | None = None
        self._tag: str | None = None
        self._task: asyncio.Task[None] | None = None
        self._running = False

    async def start(self, connection: aio_pika.RobustConnection, options: RabbitMQOptions) -> None:
        arguments: dict[str, Any] = {"x-queue-type": options.queue_type}
        if options.single_active_consumer:
            arguments["x-single-active-consumer"] = True
        channel = self._channel = await connection.channel(publisher_confirms=False)
        await channel.set_qos(prefetch_count=max(options.prefetch, self._runner.concurrency))
        exchange = await channel.declare_exchange(self.exchange, aio_pika.ExchangeType.TOPIC, durable=True)
        queue = self._amqp_queue = await channel.declare_queue(self.queue, durable=True, arguments=arguments)
        await queue.bind(exchange, routing_key="#")
        self._running = True
        self._task = asyncio.get_running_loop().create_task(
            self._loop(), name=f"mesh-rabbitmq:{self.topic}:{self.group}"
        )
        self._tag = await queue.consume(self._on_message)

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        self._buffer.put_nowait(message)

    async def _loop(self) -> None:
        get = self._buffer.get
        submit = self._runner.submit
        make = self._delivery
        while True:
            message = await get()
            if message is None or not self._running:
                return
            try:
                message.channel  # noqa: B018 - raises once the channel that delivered it is gone
            except ChannelInvalidStateError:
                continue  # delivered before a reconnection: the broker sends it again
            await submit(make(message))

    def _delivery(self, message: AbstractIncomingMessage) -> RabbitMQDelivery:
        headers: Any = message.headers
        attempt = 1
        wire = WireMessage(message.body, {}, None, None)
        try:
            if headers:
                if ATTEMPT_HEADER in headers or "x-delivery-count" in headers:
                    attempt = _attempt(headers)
                for value in headers.values():
                    if type(value) is not str and type(value) is not bytes:
                        headers = _as_text(headers)
                        break
            rk = message.routing_key
            key = rk if message.exchange and rk != self.exchange else None
            wire = WireMessage(message.body, headers, key, message.content_type)
            fallback = None if "ce-specversion" in headers else self._fallback_id(message)
            event = decode(wire, self._binding, self.topic, fallback)
        except DecodeError as exc:
            return RabbitMQDelivery(self, message, None, wire, exc, attempt)
        except Exception as exc:  # foreign input must never stop the loop
            error = DecodeError(f"unreadable message: {type(exc).__name__}: {exc}", bytes(message.body))
            return RabbitMQDelivery(self, message, None, wire, error, attempt)
        return RabbitMQDelivery(self, message, event, wire, None, attempt)

    def _fallback_id(self, message: AbstractIncomingMessage) -> str:
        """A stable id for a message that is not a CloudEvent: its message_id, else its content."""
        if message.message_id:
            return message.message_id
        digest = hashlib.blake2b(message.body, digest_size=16)
        if message.timestamp is not None:
            digest.update(str(message.timestamp).encode())
        return f"{self.exchange}:{digest.hexdigest()}"

    async def redeliver(self, delivery: RabbitMQDelivery, delay: float | None) -> None:
        """Give a delivery back to this group only, as a copy one attempt further on."""
        message = delivery._message
        headers: dict[str, Any] = {
            # pamqp encodes no ``bytes`` (a non-UTF-8 string arrives as bytes): send a byte array
            k: bytearray(v) if type(v) is bytes else v
            for k, v in (message.headers or {}).items()
            if not k.startswith(_BROKER_HEADERS)
        }
        headers[ATTEMPT_HEADER] = delivery.attempt + 1
        props = message.properties
        props.headers = headers
        props.expiration = None
        props.user_id = None  # RabbitMQ refuses a user_id that is not the connection's user
        if not props.message_id and delivery.event is not None:
            props.message_id = delivery.event.id  # keeps a wrapped legacy message's id stable
        try:
            await self._broker._publish_copy(message.body, props, self.queue, delay)
        except Exception:  # fall back to a plain requeue rather than lose it
            log.warning("could not re-publish a nacked message on %s; requeued it", self.queue, exc_info=True)
            with contextlib.suppress(*_GONE):
                await message.nack(requeue=True)
            return
        await delivery._ack()

    async def stop(self, drain: bool = True) -> None:
        if not self._running:
            return
        self._running = False
        queue, tag, channel = self._amqp_queue, self._tag, self._channel
        if queue is not None and tag is not None and channel is not None and not channel.is_closed:
            # Bounded: while the connection is down the client would wait for it to come back.
            with contextlib.suppress(TimeoutError, *_GONE):
                async with asyncio.timeout(_STOP_TIMEOUT):
                    await queue.cancel(tag)
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

    async def _close_channel(self) -> None:
        channel, self._channel = self._channel, None
        if channel is not None:
            with contextlib.suppress(TimeoutError, RuntimeError, *_GONE):
                async with asyncio.timeout(_STOP_TIMEOUT):
                    await channel.close()  # unacked deliveries go back to the queue


class RabbitMQBroker(DelegatedGroupDelivery, Broker):
    """RabbitMQ over aio-pika; see the module docstring for the topology and delivery rules."""

    _replay: ClassVar[ModuleType] = _replay  # the replay capabilities live in mesh.brokers.rabbitmq.groups

    type: ClassVar[str] = "rabbitmq"
    binding = AMQP
    options_model = RabbitMQOptions
    features: ClassVar[Features] = Features(
        name="rabbitmq",
        persistent=True,
        consumer_groups=True,
        order_by_key=False,  # only with single_active_consumer and concurrency 1 (see the docs)
        history=False,
        history_by_time=False,
        native_delay=True,
        native_request_reply=False,
        headers=True,
        redelivery_count=False,  # classic queues do not count returns after a consumer died
        group_delivery=True,
        ephemeral=True,
    )

    def __init__(self, url: str | None = None, **kwargs: Any) -> None:
        super().__init__(url, **kwargs)
        try:
            self.settings = RabbitMQOptions.model_validate(self.options)
        except ValidationError as exc:
            problems = [("broker.options." + ".".join(str(p) for p in err["loc"]), err["msg"]) for err in exc.errors()]
            raise ConfigError(problems) from exc
        self._conn: aio_pika.RobustConnection | None = None
        self._pub: AbstractRobustChannel | None = None
        self._pub_raw: AbstractChannel | None = None
        self._ctl: AbstractRobustChannel | None = None
        self._topics: dict[str, str] = {}
        self._declaring: dict[str, asyncio.Future[str]] = {}
        self._delays: dict[int, float] = {}
        self._subs: list[_Consumer] = []
        self._ephemeral: list[EphemeralSubscription] = []
        self._eph: AbstractRobustChannel | None = None
        self._eph_raw: AbstractChannel | None = None
        self._mode = 2 if self.settings.persistent else 1
        self._timeout = self.settings.operation_timeout

    @property
    def address(self) -> str:
        """Where the broker is, without credentials."""
        parts = urlsplit(self.url or DEFAULT_URL)
        vhost = unquote(parts.path[1:]) if len(parts.path) > 1 else "/"
        return f"{parts.hostname or '127.0.0.1'}:{parts.port or 5672} (vhost {vhost})"

    # -- connection ------------------------------------------------------------------------------

    async def connect(self) -> None:
        if self._conn is not None and not self._conn.is_closed:
            return
        opts = self.settings
        url = self.url or DEFAULT_URL
        if urlsplit(url).scheme not in ("amqp", "amqps"):
            reason = f"the URL must start with amqp:// or amqps://: {url.split('@')[-1]!r}"
            raise BrokerConnectionError("rabbitmq", self.address, reason)
        query = {"heartbeat": opts.heartbeat, "reconnect_interval": opts.reconnect_interval}
        target = aio_pika.connection.make_url(url)
        target = target.update_query({k: v for k, v in query.items() if k not in target.query})
        conn = aio_pika.RobustConnection(target, client_properties={"connection_name": self.client_id})
        try:
            async with asyncio.timeout(opts.connect_timeout + 1.0):
                await conn.connect(timeout=opts.connect_timeout)
                self._pub = await conn.channel(publisher_confirms=opts.publisher_confirms)
                self._ctl = await conn.channel(publisher_confirms=True, on_return_raises=True)
        except Exception as exc:  # every failure is one clear error
            await _quietly(conn.close())
            raise BrokerConnectionError("rabbitmq", self.address, _reason(exc, opts.connect_timeout)) from exc
        self._conn = conn
        self._pub_raw = None

    async def close(self) -> None:
        ephemeral, self._ephemeral = self._ephemeral, []
        for eph in ephemeral:
            await eph.stop()
        subs, self._subs = self._subs, []
        for sub in subs:
            await sub.stop()
        self._eph = self._eph_raw = None
        conn, self._conn = self._conn, None
        self._pub = self._ctl = self._pub_raw = None
        self._topics.clear()
        self._delays.clear()
        if conn is not None:
            await _quietly(conn.close())

    def _connection(self) -> aio_pika.RobustConnection:
        if self._conn is None:
            raise BrokerError("the rabbitmq broker is not connected: call connect() first")
        return self._conn

    # -- publishing ------------------------------------------------------------------------------

    async def ensure_topic(self, topic: str) -> None:
        if topic not in self._topics:
            await self._declare_topic(topic)

    async def _declare_topic(self, topic: str) -> str:
        """Declare a topic's exchange once (concurrent first publishes share one declaration)."""
        pending = self._declaring.get(topic)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._declaring[topic] = future
        name = self.name_of(topic)
        try:
            channel = self._pub
            if channel is None:
                raise BrokerError("the rabbitmq broker is not connected: call connect() first")
            async with asyncio.timeout(self._timeout):
                await channel.declare_exchange(name, aio_pika.ExchangeType.TOPIC, durable=True)
        except Exception as exc:
            reason = _reason(exc, self._timeout)
            error = PublishError(f"cannot declare the exchange {name!r} on rabbitmq: {reason}")
            error.__cause__ = exc
            future.set_exception(error)
            future.exception()  # retrieved: a failure with no other waiter is not "never retrieved"
            raise error from exc
        finally:
            del self._declaring[topic]
        self._topics[topic] = name
        future.set_result(name)
        return name

    async def publish(self, topic: str, event: Event) -> None:
        exchange = self._topics.get(topic)
        if exchange is None:
            exchange = await self._declare_topic(topic)
        msg = encode(event, self.wire)
        key = msg.key
        if key is None or (len(key) > 63 and len(key.encode()) > 255):
            key = exchange  # no key, or longer than an AMQP routing key may be
        props = Basic.Properties(
            content_type=msg.content_type,
            headers=msg.headers or None,  # type: ignore[arg-type]
            delivery_mode=self._mode,
            message_id=event.id,
        )
        channel = self._pub_raw
        try:
            if channel is None or channel.is_closed:
                channel = self._pub_raw = await self._underlay(self._pub)
            await channel.basic_publish(
                msg.body, exchange=exchange, routing_key=key, properties=props, timeout=self._timeout
            )
        except PublishError:
            raise
        except Exception as exc:  # translated at the seam, cause kept
            raise PublishError(
                f"rabbitmq did not take event {event.id} for {topic!r}: {_reason(exc, self._timeout)}"
            ) from exc

    async def _underlay(self, channel: AbstractRobustChannel | None) -> AbstractChannel:
        """The live AMQP channel under a robust one, waiting (bounded) for a reconnection."""
        if channel is None:
            raise PublishError("the rabbitmq broker is not connected: call connect() first")
        try:
            async with asyncio.timeout(self._timeout):
                await channel.ready()
                return await channel.get_underlay_channel()
        except TimeoutError as exc:
            raise PublishError(f"rabbitmq at {self.address} is unreachable (reconnecting)") from exc

    async def _publish_copy(self, body: bytes, props: Basic.Properties, queue: str, delay: float | None) -> None:
        """Publish a copy for one group queue (confirmed, mandatory), now or after ``delay``."""
        if not delay or delay <= 0:
            await self._publish_control(body, "", queue, props)
            return
        ms = delay_ms(delay, self.settings.delay_precision)
        exchange = await self._delay_exchange(ms)
        try:
            await self._publish_control(body, exchange, queue, props)
        except (aiormq.exceptions.PublishError, ChannelNotFoundEntity):
            self._delays.pop(ms, None)  # the delay queue expired or was deleted: declare it again
            exchange = await self._delay_exchange(ms)
            await self._publish_control(body, exchange, queue, props)

    async def _publish_control(self, body: bytes, exchange: str, key: str, props: Basic.Properties) -> None:
        channel = await self._underlay(self._ctl)
        await channel.basic_publish(
            body, exchange=exchange, routing_key=key, properties=props, mandatory=True, timeout=self._timeout
        )

    async def _delay_exchange(self, ms: int) -> str:
        """Declare ``_mesh.delay.<ms>`` (exchange + TTL queue) unless declared recently enough."""
        name = self.name_of(f"{RESERVED_PREFIX}delay.{ms}")
        loop = asyncio.get_running_loop()
        expires = self.settings.delay_queue_expires
        declared = self._delays.get(ms)
        # Re-declaring keeps a queue in use from expiring (publishing to it does not count).
        if declared is not None and (expires is None or loop.time() - declared < expires / 2):
            return name
        arguments: dict[str, Any] = {"x-message-ttl": ms, "x-dead-letter-exchange": ""}
        if expires is not None:
            arguments["x-expires"] = int(expires * 1000) + ms
        connection = self._connection()
        async with asyncio.timeout(self._timeout):
            await connection.ready()
            try:
                await _declare_delay_queue(connection, name, arguments)
            except ChannelPreconditionFailed:
                # Declared by an app with another delay_queue_expires: use it as it is.
                await _declare_delay_queue(connection, name, None)
        self._delays[ms] = loop.time()
        return name

    # -- consuming -------------------------------------------------------------------------------

    async def subscribe(
        self, topic: str, group: str, handler: DeliveryHandler, *, concurrency: int = 1
    ) -> Subscription:
        connection = self._connection()
        sub = _Consumer(self, topic, group, handler, concurrency)
        try:
            async with asyncio.timeout(self._timeout):
                await sub.start(connection, self.settings)
        except Exception as exc:
            await sub.stop(drain=False)
            await sub._close_channel()
            if isinstance(exc, ChannelPreconditionFailed):
                raise BrokerError(
                    f"rabbitmq refused the queue {sub.queue!r} or exchange {sub.exchange!r}: it exists "
                    f"with other settings ({exc}); delete it or match queue_type/single_active_consumer"
                ) from exc
            if isinstance(exc, ChannelAccessRefused):
                raise BrokerError(f"rabbitmq refused access to {sub.queue!r}: {exc}") from exc
            reason = _reason(exc, self._timeout)
            raise BrokerError(f"cannot subscribe to {topic!r} on rabbitmq: {reason}") from exc
        self._topics.setdefault(topic, sub.exchange)
        self._subs.append(sub)
        return sub

    # -- ephemeral destinations (invocation requests and replies, presence) --------------------

    async def subscribe_ephemeral(
        self,
        topic: str,
        handler: DeliveryHandler,
        *,
        group: str | None = None,
        exclusive: bool = False,
        concurrency: int = 1,
    ) -> Subscription:
        """A non-durable queue on the ephemeral exchange: exclusive without a group, shared by
        the group with one (see :mod:`._rabbitmq_ephemeral`); removed by the broker at stop."""
        sub = EphemeralSubscription(self, topic, group, handler, concurrency)
        try:
            async with asyncio.timeout(self._timeout):
                await sub.start(self._connection(), self.name_of(EPHEMERAL_EXCHANGE), self.settings.prefetch)
        except Exception as exc:
            await sub.stop(drain=False)
            raise BrokerError(f"cannot subscribe to {topic!r} on rabbitmq: {_reason(exc, self._timeout)}") from exc
        self._ephemeral.append(sub)
        return sub

    def forget_ephemeral(self, sub: EphemeralSubscription) -> None:
        """Called by a stopped ephemeral subscription."""
        if sub in self._ephemeral:
            self._ephemeral.remove(sub)

    async def publish_ephemeral(self, topic: str, event: Event) -> None:
        """Through the ephemeral exchange, routing key = topic, not persistent, not confirmed:
        dropped by the broker when no queue is bound for it."""
        msg = encode(event, self.wire)
        props = Basic.Properties(
            content_type=msg.content_type,
            headers=msg.headers or None,  # type: ignore[arg-type]
            delivery_mode=1,
            message_id=event.id,
        )
        try:
            channel = self._eph_raw
            if channel is None or channel.is_closed:
                channel = self._eph_raw = await self._ephemeral_channel()
            await channel.basic_publish(
                msg.body,
                exchange=self.name_of(EPHEMERAL_EXCHANGE),
                routing_key=self.name_of(topic),
                properties=props,
                timeout=self._timeout,
            )
        except PublishError:
            raise
        except Exception as exc:
            reason = _reason(exc, self._timeout)
            raise PublishError(f"rabbitmq did not take {event.type} for {topic!r}: {reason}") from exc

    async def _ephemeral_channel(self) -> AbstractChannel:
        """The unconfirmed channel for ephemeral publishing, with the exchange declared on it."""
        if self._eph is None:
            channel = await self._connection().channel(publisher_confirms=False)
            async with asyncio.timeout(self._timeout):
                await channel.declare_exchange(
                    self.name_of(EPHEMERAL_EXCHANGE), aio_pika.ExchangeType.DIRECT, durable=True
                )
            self._eph = channel
        return await self._underlay(self._eph)


async def _declare_delay_queue(
    connection: aio_pika.RobustConnection, name: str, arguments: dict[str, Any] | None
) -> None:
    """Declare a delay exchange and queue (passively when ``arguments`` is None), bound.

    A short-lived channel of its own: a refused declaration closes only it. The declaration is
    not restored after a reconnection; a copy that finds no queue is returned (mandatory) and
    the queue declared again.
    """
    channel = aio_pika.Channel(connection, publisher_confirms=False)
    await channel.initialize()
    try:
        exchange = await channel.declare_exchange(name, aio_pika.ExchangeType.FANOUT, durable=True)
        queue = await channel.declare_queue(name, durable=True, arguments=arguments, passive=arguments is None)
        await queue.bind(exchange, routing_key="")
    finally:
        await _quietly(channel.close())


def delay_ms(delay: float, precision: int) -> int:
    """A delay in whole milliseconds, rounded up to ``precision`` significant digits.

    >>> delay_ms(0.5, 2), delay_ms(1.234, 2), delay_ms(0.0001, 2)
    (500, 1300, 1)
    """
    ms: int = max(1, math.ceil(delay * 1000))
    step: int = 10 ** max(0, len(str(ms)) - precision)
    return min(MAX_TTL_MS, -(-ms // step) * step)


def _attempt(headers: Mapping[str, Any]) -> int:
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


def _as_text(headers: Mapping[str, Any]) -> dict[str, str | bytes]:
    """AMQP header values (ints, booleans, timestamps, tables) as the strings the codec reads."""
    out: dict[str, str | bytes] = {}
    for name, value in headers.items():
        if isinstance(value, str | bytes):
            out[name] = value
        elif isinstance(value, bool):
            out[name] = "true" if value else "false"
        elif isinstance(value, bytearray | memoryview):
            out[name] = bytes(value)
        elif isinstance(value, datetime):
            out[name] = format_time(value if value.tzinfo else value.replace(tzinfo=UTC))
        else:
            out[name] = str(value)
    return out


def _reason(exc: BaseException, timeout: float) -> str:
    """A one-line reason for a client error."""
    if isinstance(exc, ProbableAuthenticationError | AuthenticationError):
        return "authentication failed: check the user name and password"
    if isinstance(exc, aiormq.exceptions.ConnectionNotAllowed):
        return f"access refused (does the virtual host exist and may this user use it?): {exc}"
    if isinstance(exc, TimeoutError):
        return f"no answer within {timeout:g}s"
    if isinstance(exc, ConnectionRefusedError) or (exc.args and exc.args[0] == errno.ECONNREFUSED):
        return "connection refused (is RabbitMQ running on that port?)"
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if text != type(exc).__name__ else text


async def _quietly(awaitable: Any) -> None:
    with contextlib.suppress(Exception):  # closing what is already broken
        await awaitable
