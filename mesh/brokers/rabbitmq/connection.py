"""The connection of a RabbitMQ broker: what its parts (consumers, ephemeral queues, groups) share.

One :class:`RabbitMQConnection` per broker owns the aio-pika robust connection and the channels
everyone publishes on, and carries what the parts need besides (settings, names, the binding,
the client id). The parts take it instead of the broker.

=================  =========================================  ===================================
channel            publishes                                   confirms
=================  =========================================  ===================================
publish            events on topic exchanges (``publish``)     ``publisher_confirms`` (default on)
control            nack copies, delayed copies, one-group     always, ``mandatory`` (a copy that
                   replays, through the default exchange or   finds no queue comes back as an
                   a ``_mesh.delay.<ms>`` exchange            error instead of vanishing)
ephemeral          replies, presence, invocation requests     never, nor waited for (at most once)
scratch            delay-queue and stream declarations,       a channel of its own that a refused
                   passive look-ups, history reads            declaration may close
=================  =========================================  ===================================

Credentials: ``broker.auth`` username/password override the ``username``/``password`` options,
which override the URL's; ``auth: {mechanism: EXTERNAL}`` logs in as the client certificate
(the broker needs the ``rabbitmq_auth_mechanism_ssl`` plugin). ``broker.tls`` makes the
connection ``amqps`` (default port 5671) with the context of :func:`mesh.brokers.tls.ssl_context`.
Every address shown (errors, ``repr``) is :func:`~mesh.urls.mask_url`-ed or has no credentials at all (:attr:`address`).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import math
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime
from typing import Any, cast
from urllib.parse import unquote, urlsplit

import aio_pika
import aiormq
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustChannel
from aio_pika.exceptions import (
    AMQPError,
    AuthenticationError,
    ChannelClosed,
    ChannelInvalidStateError,
    ChannelNotFoundEntity,
    ChannelPreconditionFailed,
    ProbableAuthenticationError,
)
from aiormq.abc import AbstractChannel
from pamqp.commands import Basic
from yarl import URL

from mesh.brokers.base import RESERVED_PREFIX
from mesh.brokers.rabbitmq.options import RabbitMQOptions
from mesh.brokers.tls import AuthOptions, TlsOptions, ssl_context, tls_hint
from mesh.codecs.binary import Binding
from mesh.codecs.data import format_time
from mesh.errors import BrokerConnectionError, BrokerError, DecodeError, PublishError
from mesh.logs import log_connection_lost, log_reconnected
from mesh.urls import mask_url

__all__ = [
    "DEFAULT_URL",
    "EPHEMERAL_EXCHANGE",
    "GONE",
    "STOP_TIMEOUT",
    "STREAMS_SINCE",
    "STREAM_PREFIX",
    "RabbitMQConnection",
    "ack_queued",
    "as_text",
    "delay_ms",
    "quietly",
    "parse_version",
    "reason",
    "unreadable",
]

DEFAULT_URL = "amqp://guest:guest@127.0.0.1:5672/"
EPHEMERAL_EXCHANGE = RESERVED_PREFIX + "ephemeral"
STREAM_PREFIX = RESERVED_PREFIX + "stream."
"""Stream queues logging readable topics (see :mod:`mesh.brokers.rabbitmq.history`)."""
STREAMS_SINCE = (3, 9)
"""The first RabbitMQ version with stream queues."""
"""The direct exchange of the mesh's short-lived traffic (see :mod:`mesh.brokers.rabbitmq.ephemeral`)."""
MAX_TTL_MS = 2**32 - 1
STOP_TIMEOUT = 5.0
"""Seconds a consumer's cancel or channel close may take (bounded while the broker is away)."""
GONE = (ChannelInvalidStateError, AMQPError, ConnectionError)
"""What a call on a channel or connection that went away raises."""


class RabbitMQConnection:
    """One broker's AMQP connection, its shared channels, and what its parts need to know."""

    def __init__(
        self,
        url: str | None,
        settings: RabbitMQOptions,
        wire: Binding,
        *,
        namespace: str = "",
        client_id: str = "mesh",
        tls: TlsOptions | None = None,
        auth: AuthOptions | None = None,
    ) -> None:
        self.url = url or DEFAULT_URL
        self.tls = tls
        self.context = None if tls is None else ssl_context(tls, "rabbitmq")
        self.auth = auth
        if tls is not None and urlsplit(self.url).scheme == "amqp":
            self.url = "amqps" + self.url[4:]
        self.settings = settings
        self.wire = wire
        """The binding in the configured content mode."""
        self.namespace = namespace
        self.client_id = client_id
        self.timeout: float = settings.operation_timeout
        self.delivery_mode = 2 if settings.persistent else 1
        self.address = _address(self.url)
        """Where the broker is, without credentials: ``host:port (vhost v)``."""
        self.ephemeral_exchange = self.name_of(EPHEMERAL_EXCHANGE)
        self._amqp: aio_pika.RobustConnection | None = None
        self._pub: AbstractRobustChannel | None = None
        self._ctl: AbstractRobustChannel | None = None
        self._eph: AbstractRobustChannel | None = None
        self._delays: dict[int, float] = {}

    def name_of(self, topic: str) -> str:
        """The broker-side name of a topic (the namespace prefix applied)."""
        return self.namespace + topic if self.namespace else topic

    def stream_of(self, topic: str) -> str:
        """The stream queue logging a readable topic: ``_mesh.stream.<topic>``."""
        return self.name_of(f"{STREAM_PREFIX}{topic}")

    def queue_of(self, topic: str, group: str) -> str:
        """The durable queue of one group's subscription to a topic: ``<topic>.<group>``."""
        return f"{self.name_of(topic)}.{group}"

    def amqp(self) -> aio_pika.RobustConnection:
        """The live aio-pika connection, or BrokerError when :meth:`connect` was not called."""
        if self._amqp is None:
            raise BrokerError("the rabbitmq broker is not connected: call connect() first")
        return self._amqp

    # -- lifecycle -------------------------------------------------------------------------------

    async def connect(self) -> None:
        """Connect within ``connect_timeout`` (and open the shared channels) or raise BrokerConnectionError."""
        if self._amqp is not None and not self._amqp.is_closed:
            return
        opts = self.settings
        if urlsplit(self.url).scheme not in ("amqp", "amqps"):
            why = f"the URL must start with amqp:// or amqps://: {mask_url(self.url)!r}"
            raise BrokerConnectionError("rabbitmq", self.address, why)
        query = {"heartbeat": opts.heartbeat, "reconnect_interval": opts.reconnect_interval}
        target = aio_pika.connection.make_url(self.url)
        target = target.update_query({k: v for k, v in query.items() if k not in target.query})
        if opts.username is not None:
            target = target.with_user(opts.username)
        if opts.password is not None:
            target = target.with_password(opts.password.get_secret_value())
        target = self._authenticate(target)
        conn = aio_pika.RobustConnection(
            target, ssl_context=self.context, client_properties={"connection_name": self.client_id}
        )
        try:
            async with asyncio.timeout(opts.connect_timeout + 1.0):
                await conn.connect(timeout=opts.connect_timeout)
                self._pub = await conn.channel(publisher_confirms=opts.publisher_confirms)
                self._ctl = await conn.channel(publisher_confirms=True, on_return_raises=True)
        except Exception as exc:  # every failure is one clear error
            await quietly(conn.close())
            why = reason(exc, opts.connect_timeout)
            raise BrokerConnectionError("rabbitmq", self.address, why + tls_hint(self.tls, why)) from exc
        self._amqp = conn
        conn.close_callbacks.add(self._lost)
        conn.reconnect_callbacks.add(self._back)

    def _lost(self, _conn: Any, exc: BaseException | None = None) -> None:
        if self._amqp is not None:  # not our own close()
            log_connection_lost("rabbitmq", self.address, str(exc) if exc else "")

    def _back(self, *_: Any) -> None:
        log_reconnected("rabbitmq", self.address)

    def _authenticate(self, target: URL) -> URL:
        """``target`` with the credentials and SASL mechanism of ``broker.auth``."""
        auth = self.auth
        if auth is None:
            return target
        if auth.username is not None:
            target = target.with_user(auth.username)
        if auth.password is not None:
            target = target.with_password(auth.password.get_secret_value())
        if auth.mechanism is not None:
            target = target.update_query(auth=auth.mechanism.lower())
        return target

    async def close(self) -> None:
        """Close the connection (and with it every channel); idempotent. The ephemeral channel is
        closed first: its Channel.Close follows the frames queued by ``publish_ephemeral`` (not
        awaited) and its CloseOk comes after them, so a last reply or presence leave goes out."""
        conn, self._amqp = self._amqp, None
        eph = self._eph
        self._pub = self._ctl = self._eph = None
        if eph is not None and conn is not None:
            await quietly(asyncio.wait_for(eph.close(), self.timeout))
        self._delays.clear()
        if conn is not None:
            await quietly(conn.close())

    @property
    def server_version(self) -> tuple[int, ...] | None:
        """The RabbitMQ version the server announced (``(3, 10, 8)``), ``None`` before connecting."""
        conn = self._amqp
        if conn is None or conn.transport is None:
            return None
        return parse_version(conn.transport.connection.server_properties.get("version"))

    def streams_missing(self) -> str | None:
        """Why this server has no stream queues (``None`` when it has them or is not known yet)."""
        version = self.server_version
        if version is None or version >= STREAMS_SINCE:
            return None
        shown = ".".join(map(str, version))
        return f"RabbitMQ {shown} at {self.address} has no stream queues (they came with 3.9)"

    async def channel(self) -> AbstractRobustChannel:
        """A new robust channel without confirms (a consumer's own)."""
        return await self.amqp().channel(publisher_confirms=False)

    # -- publishing channels -----------------------------------------------------------------------

    async def publish_channel(self) -> AbstractChannel:
        """The live channel under the publish channel (callers cache it while it is open)."""
        return await self._underlay(self._pub)

    async def ephemeral_channel(self) -> aiormq.Channel:
        """The live unconfirmed channel for ephemeral publishing, with the exchange declared on it
        (aiormq's own channel, whose ``basic_publish`` can skip waiting for the write)."""
        if self._eph is None:
            channel = await self.amqp().channel(publisher_confirms=False)
            async with asyncio.timeout(self.timeout):
                await channel.declare_exchange(self.ephemeral_exchange, aio_pika.ExchangeType.DIRECT, durable=True)
            self._eph = channel
        return cast(aiormq.Channel, await self._underlay(self._eph))  # what aio-pika's channels wrap

    async def declare_topic(self, name: str) -> None:
        """Declare a topic's durable topic exchange on the publish channel (bounded)."""
        channel = self._pub
        if channel is None:
            raise BrokerError("the rabbitmq broker is not connected: call connect() first")
        async with asyncio.timeout(self.timeout):
            await channel.declare_exchange(name, aio_pika.ExchangeType.TOPIC, durable=True)

    async def _underlay(self, channel: AbstractRobustChannel | None) -> AbstractChannel:
        """The live AMQP channel under a robust one, waiting (bounded) for a reconnection."""
        if channel is None:
            raise PublishError("the rabbitmq broker is not connected: call connect() first")
        try:
            async with asyncio.timeout(self.timeout):
                await channel.ready()
                return await channel.get_underlay_channel()
        except TimeoutError as exc:
            raise PublishError(f"rabbitmq at {self.address} is unreachable (reconnecting)") from exc

    # -- control: copies for one queue, delayed or not -------------------------------------------

    async def publish_control(self, body: bytes, exchange: str, key: str, props: Basic.Properties) -> None:
        """Publish on the control channel: confirmed and mandatory (no queue for ``key`` is an error)."""
        channel = await self._underlay(self._ctl)
        await channel.basic_publish(
            body, exchange=exchange, routing_key=key, properties=props, mandatory=True, timeout=self.timeout
        )

    async def publish_copy(self, body: bytes, props: Basic.Properties, queue: str, delay: float | None) -> None:
        """Publish a copy for one queue (confirmed, mandatory), now or after ``delay`` seconds."""
        if not delay or delay <= 0:
            await self.publish_control(body, "", queue, props)
            return
        ms = delay_ms(delay, self.settings.delay_precision)
        exchange = await self._delay_exchange(ms)
        try:
            await self.publish_control(body, exchange, queue, props)
        except (aiormq.exceptions.PublishError, ChannelNotFoundEntity):
            self._delays.pop(ms, None)  # the delay queue expired or was deleted: declare it again
            exchange = await self._delay_exchange(ms)
            await self.publish_control(body, exchange, queue, props)

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
        connection = self.amqp()
        async with asyncio.timeout(self.timeout):
            await connection.ready()
            try:
                await self._declare_delay_queue(name, arguments)
            except ChannelPreconditionFailed:
                # Declared by an app with another delay_queue_expires: use it as it is.
                await self._declare_delay_queue(name, None)
        self._delays[ms] = loop.time()
        return name

    async def _declare_delay_queue(self, name: str, arguments: dict[str, Any] | None) -> None:
        """Declare a delay exchange and queue (passively when ``arguments`` is None), bound.

        The declaration is not restored after a reconnection; a copy that finds no queue is
        returned (mandatory) and the queue declared again.
        """
        async with self.scratch() as channel:
            exchange = await channel.declare_exchange(name, aio_pika.ExchangeType.FANOUT, durable=True)
            queue = await channel.declare_queue(name, durable=True, arguments=arguments, passive=arguments is None)
            await queue.bind(exchange, routing_key="")

    async def declare_stream(self, name: str, exchange: str) -> None:
        """Declare the stream queue ``name`` with the retention options, bound to ``exchange`` with ``#``.

        A stream that exists with other retention arguments is used as it is (the first app to
        declare it, or a policy, decides).
        """
        opts = self.settings
        arguments: dict[str, Any] = {
            "x-queue-type": "stream",
            "x-stream-max-segment-size-bytes": opts.stream_segment_bytes,
        }
        if opts.stream_max_age is not None:
            arguments["x-max-age"] = f"{max(1, math.ceil(opts.stream_max_age))}s"
        if opts.stream_max_bytes is not None:
            arguments["x-max-length-bytes"] = opts.stream_max_bytes
        async with asyncio.timeout(self.timeout):
            await self.amqp().ready()
            try:
                async with self.scratch() as channel:
                    queue = await channel.declare_queue(name, durable=True, arguments=arguments)
                    await queue.bind(exchange, routing_key="#")
            except ChannelPreconditionFailed:
                async with self.scratch() as channel:
                    queue = await channel.declare_queue(name, passive=True)
                    await queue.bind(exchange, routing_key="#")

    async def queue_exists(self, name: str) -> bool:
        """Whether a queue exists (a passive declare, bounded); other failures raise as they are."""
        try:
            async with asyncio.timeout(self.timeout):
                await self.amqp().ready()
                async with self.scratch() as channel:
                    await channel.declare_queue(name, passive=True)
        except (ChannelNotFoundEntity, ChannelClosed):
            return False
        return True

    @contextlib.asynccontextmanager
    async def scratch(self) -> AsyncIterator[aio_pika.Channel]:
        """A short-lived channel of its own: a refused declaration closes only it."""
        channel = aio_pika.Channel(self.amqp(), publisher_confirms=False)
        try:
            await channel.initialize()
            yield channel
        finally:
            await quietly(channel.close())


def parse_version(text: Any) -> tuple[int, ...] | None:
    """``"3.10.8"`` (str or bytes) as ``(3, 10, 8)``; ``None`` when there is no leading number.

    >>> parse_version(b"3.8.9"), parse_version("3.13.0-rc.1"), parse_version(None)
    ((3, 8, 9), (3, 13, 0), None)
    """
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    if not isinstance(text, str):
        return None
    numbers: list[int] = []
    for part in text.split("."):
        digits = ""
        for char in part:
            if not char.isdigit():
                break
            digits += char
        if not digits:
            break
        numbers.append(int(digits))
        if len(digits) < len(part):
            break
    return tuple(numbers) or None


def _address(url: str) -> str:
    """``host:port (vhost v)`` of an AMQP URL: no credentials."""
    parts = urlsplit(url)
    vhost = unquote(parts.path[1:]) if len(parts.path) > 1 else "/"
    port = parts.port or (5671 if parts.scheme == "amqps" else 5672)
    return f"{parts.hostname or '127.0.0.1'}:{port} (vhost {vhost})"


async def ack_queued(message: AbstractIncomingMessage) -> None:
    """Ack ``message``: the frame is queued for the connection's writer, not waited for.

    aio-pika's ``ack()`` waits until the frame is written, one loop turn per message; without
    the wait the loop takes the next message at once and the writer sends a burst's acks
    together. An ack lost with the connection is a redelivery either way.
    """
    tag = message.delivery_tag
    if tag is not None:  # None: consumed with no_ack, nothing to settle
        await message.channel.basic_ack(delivery_tag=tag, wait=False)


def delay_ms(delay: float, precision: int) -> int:
    """A delay in whole milliseconds, rounded up to ``precision`` significant digits.

    >>> delay_ms(0.5, 2), delay_ms(1.234, 2), delay_ms(0.0001, 2)
    (500, 1300, 1)
    """
    ms: int = max(1, math.ceil(delay * 1000))
    step: int = 10 ** max(0, len(str(ms)) - precision)
    return min(MAX_TTL_MS, -(-ms // step) * step)


def as_text(headers: Mapping[str, Any]) -> dict[str, str | bytes]:
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


def unreadable(exc: Exception, body: bytes) -> DecodeError:
    """The decode error of a message the codec choked on (foreign input never stops a consumer)."""
    return DecodeError(f"unreadable message: {type(exc).__name__}: {exc}", bytes(body))


def reason(exc: BaseException, timeout: float) -> str:
    """A one-line reason for a client error, credentials masked."""
    if isinstance(exc, ProbableAuthenticationError | AuthenticationError):
        return "authentication failed: check the user name and password"
    if isinstance(exc, aiormq.exceptions.ConnectionNotAllowed):
        return f"access refused (does the virtual host exist and may this user use it?): {mask_url(exc)}"
    if isinstance(exc, TimeoutError):
        return f"no answer within {timeout:g}s"
    if isinstance(exc, ConnectionRefusedError) or (exc.args and exc.args[0] == errno.ECONNREFUSED):
        return "connection refused (is RabbitMQ running on that port?)"
    text = mask_url(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if text != type(exc).__name__ else text


async def quietly(awaitable: Any) -> None:
    """Await ``awaitable`` and ignore its failure (closing what is already broken)."""
    with contextlib.suppress(Exception):
        await awaitable
