"""The RabbitMQ adapter (AMQP 0-9-1 over aio-pika), with a connection that reconnects on its own.

Topology (names are the mesh's own, so a non-mesh client can join by name), every object durable:

- a topic is a **topic exchange** named after the topic; an event is published with routing key
  = its ``partitionkey`` (or the topic name when it has none);
- a group is a **queue** named ``<topic>.<group>`` bound to that exchange with ``#``, so every
  group gets every event and the members of one group compete for them;
- a delayed redelivery goes through ``_mesh.delay.<ms>``: a fanout exchange and a queue with
  ``x-message-ttl`` and ``x-dead-letter-exchange: ""``. The copy is published with the group
  queue's name as routing key, so when its TTL runs out the broker dead-letters it through the
  default exchange straight back to that one group queue.

- a topic matching ``stream_topics`` (``*.dlq`` by default) is also logged in a **stream
  queue** ``_mesh.stream.<topic>`` bound to its exchange (RabbitMQ 3.9+), so it can be read
  again: ``broker.history`` (:mod:`.history`) serves ``mesh dlq`` and ``mesh replay --from
  broker`` for those topics. Events published to them carry ``timestamp_in_ms``.

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

The broker composes its parts around one :class:`~.connection.RabbitMQConnection`:

===================  ========================================================================
part                 module
===================  ========================================================================
the connection       :mod:`.connection` (channels, delayed copies, names, settings)
group consumers      :mod:`.consumer` (``subscribe``; ack, nack with copies and delays)
ephemeral queues     :mod:`.ephemeral` (``subscribe_ephemeral``)
one-group delivery   :mod:`.groups` (``broker.groups``, for replays)
readable topics      :mod:`.history` (``broker.history``: stream queues of ``stream_topics``)
publishing           here: ``publish`` and ``publish_ephemeral`` are the hot paths
ephemeral frames     :mod:`.frames` (the bytes of ``publish_ephemeral``'s unconfirmed publish)
===================  ========================================================================
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import logging
import time
from collections.abc import Sequence
from typing import Any, ClassVar

import aiormq
from aio_pika.exceptions import ChannelPreconditionFailed
from aiormq.abc import AbstractChannel, ChannelFrame
from aiormq.exceptions import ChannelAccessRefused, ChannelClosed, ChannelInvalidStateError
from pamqp.commands import Basic

from mesh.brokers.base import Broker, DeliveryHandler, Features, Subscription, publish_windowed
from mesh.brokers.rabbitmq.connection import RabbitMQConnection, reason
from mesh.brokers.rabbitmq.consumer import ATTEMPT_HEADER, RabbitMQConsumer
from mesh.brokers.rabbitmq.ephemeral import EphemeralSubscription
from mesh.brokers.rabbitmq.frames import publish_frames
from mesh.brokers.rabbitmq.groups import RabbitMQGroups
from mesh.brokers.rabbitmq.history import TIME_HEADER, RabbitMQHistory
from mesh.brokers.rabbitmq.options import RabbitMQOptions
from mesh.codecs.binary import encode
from mesh.codecs.bindings import AMQP
from mesh.errors import BrokerError, ConfigError, PublishError
from mesh.event import Event
from mesh.urls import mask_url

__all__ = ["ATTEMPT_HEADER", "RabbitMQBroker"]

TESTED_AIORMQ = ("7.",)
"""aiormq versions whose channel internals (``write_queue``, ``max_content_size``, ``ChannelFrame``)
ephemeral publishes write to directly; with any other, they go through ``basic_publish``."""
DIRECT_FRAMES = importlib.metadata.version("aiormq").startswith(TESTED_AIORMQ)

log = logging.getLogger("mesh.broker.rabbitmq")


class RabbitMQBroker(Broker):
    """RabbitMQ over aio-pika; see the module docstring for the topology and delivery rules."""

    type: ClassVar[str] = "rabbitmq"
    binding = AMQP
    options_model = RabbitMQOptions
    features: ClassVar[Features] = Features(
        name="rabbitmq",
        persistent=True,
        consumer_groups=True,
        order_by_key=False,  # only with single_active_consumer and concurrency 1 (see the docs)
        history=False,  # a new group sees nothing earlier; stream_topics are readable (broker.history)
        history_by_time=False,
        native_delay=True,
        native_request_reply=False,
        headers=True,
        redelivery_count=False,  # classic queues do not count returns after a consumer died
        group_delivery=True,
        ephemeral=True,
    )

    settings: RabbitMQOptions
    tls_supported = True
    subscribe_concurrency = 64  # six round trips per subscription: 1,000 start ~3-4x faster side by side
    auth_fields = frozenset({"mechanism", "username", "password"})

    def __init__(self, url: str | None = None, **kwargs: Any) -> None:
        super().__init__(url, **kwargs)
        auth = self.auth
        if auth is not None and auth.mechanism not in (None, "PLAIN", "EXTERNAL"):
            raise ConfigError([("broker.auth.mechanism", "rabbitmq takes PLAIN or EXTERNAL")])
        if auth is not None and auth.mechanism == "EXTERNAL" and (self.tls is None or self.tls.cert is None):
            raise ConfigError([("broker.auth.mechanism", "EXTERNAL needs a client certificate (broker.tls.cert, key)")])
        conn = self.connection = RabbitMQConnection(
            url,
            self.settings,
            self.wire,
            namespace=self.namespace,
            client_id=self.client_id,
            tls=self.tls,
            auth=auth,
        )
        self.groups = RabbitMQGroups(conn)
        self.history = RabbitMQHistory(conn)
        self._topics: dict[str, str] = {}
        self._stamped: set[str] = set()
        """Topics logged in a stream queue: their events carry ``timestamp_in_ms``."""
        self._warned = False
        self._declaring: dict[str, asyncio.Future[str]] = {}
        self._subs: list[RabbitMQConsumer] = []
        self._ephemeral: list[EphemeralSubscription] = []
        # The live channels under the connection's publish and ephemeral channels, cached here
        # for the hot paths (re-fetched when closed, e.g. after a reconnection).
        self._pub_raw: AbstractChannel | None = None
        self._dead: AbstractChannel | None = None  # the publish channel a failed publish used
        self._eph_raw: aiormq.Channel | None = None
        self._eph_exchange = conn.ephemeral_exchange
        self._mode = conn.delivery_mode
        self._timeout = conn.timeout

    @property
    def address(self) -> str:
        """Where the broker is, without credentials."""
        return self.connection.address

    def __repr__(self) -> str:
        url = None if self.url is None else mask_url(self.url)
        return f"{type(self).__name__}(url={url!r})"

    # -- connection ------------------------------------------------------------------------------

    async def connect(self) -> None:
        await self.connection.connect()
        self._pub_raw = self._eph_raw = None

    async def close(self) -> None:
        ephemeral, self._ephemeral = self._ephemeral, []
        for eph in ephemeral:
            await eph.stop()
        subs, self._subs = self._subs, []
        for sub in subs:
            await sub.stop()
        self._pub_raw = self._eph_raw = None
        self._topics.clear()
        self._stamped.clear()
        await self.connection.close()

    # -- publishing ------------------------------------------------------------------------------

    async def ensure_topic(self, topic: str) -> None:
        if topic not in self._topics:
            await self._declare_topic(topic, wait=True)

    async def _declare_topic(self, topic: str, wait: bool = False) -> str:
        """Declare a topic's exchange once, and its stream queue if it is logged (concurrent first
        publishes share one declaration); ``wait``: until the broker has it."""
        pending = self._declaring.get(topic)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._declaring[topic] = future
        name = self.name_of(topic)
        what, hint = f"the exchange {name!r}", ""
        try:
            if wait or self.history.logs(topic):
                await self.connection.declare_topic(name)
                if self.history.logs(topic):
                    what = f"the stream queue {self.connection.stream_of(topic)!r} logging {name!r}"
                    hint = " (the topic matches stream_topics; set stream_topics: [] to log no topic)"
                    await self._declare_stream(topic, name)
            else:
                # No round trip: the channel handles frames in order, so the publish that follows
                # on it finds the exchange; a refusal closes the channel and fails that publish,
                # which forgets the topic (declared again next time).
                channel = self._pub_raw
                if channel is None or channel.is_closed:
                    channel = await self._publish_channel()
                await channel.exchange_declare(name, exchange_type="topic", durable=True, nowait=True)
        except Exception as exc:
            error = PublishError(f"cannot declare {what} on rabbitmq: {reason(exc, self._timeout)}{hint}")
            error.__cause__ = exc
            future.set_exception(error)
            future.exception()  # retrieved: a failure with no other waiter is not "never retrieved"
            raise error from exc
        finally:
            del self._declaring[topic]
        self._topics[topic] = name
        future.set_result(name)
        return name

    async def _declare_stream(self, topic: str, exchange: str) -> None:
        """Declare the stream queue logging ``topic``; on a server without streams, warn once and go on."""
        conn = self.connection
        missing = conn.streams_missing()
        if missing is not None:
            if not self._warned:
                self._warned = True
                log.warning(
                    "%s: topic %r is not kept readable; record it with the archive plugin instead "
                    "(or set stream_topics: [] to silence this)",
                    missing,
                    topic,
                )
            return
        await conn.declare_stream(conn.stream_of(topic), exchange)
        self._stamped.add(topic)

    async def publish(self, topic: str, event: Event) -> None:
        exchange = self._topics.get(topic)
        if exchange is None:
            exchange = await self._declare_topic(topic)
        msg = encode(event, self.wire)
        key = msg.key
        if key is None or (len(key) > 63 and len(key.encode()) > 255):
            key = exchange  # no key, or longer than an AMQP routing key may be
        headers: Any = msg.headers
        if topic in self._stamped:  # logged: the stream cannot tell when it took the message
            headers = {**headers, TIME_HEADER: int(time.time() * 1000)}
        props = Basic.Properties(
            content_type=msg.content_type,
            headers=headers or None,
            delivery_mode=self._mode,
            message_id=event.id,
        )
        channel = self._pub_raw
        try:
            if channel is None or channel.is_closed:
                channel = await self._publish_channel()
            await channel.basic_publish(
                msg.body, exchange=exchange, routing_key=key, properties=props, timeout=self._timeout
            )
        except PublishError as exc:
            self._forget(topic, exc.__cause__)
            raise
        except Exception as exc:  # translated at the seam, cause kept
            self._forget(topic, exc)
            raise PublishError(
                f"rabbitmq did not take event {event.id} for {topic!r}: {reason(exc, self._timeout)}"
            ) from exc

    def _forget(self, topic: str, cause: BaseException | None) -> None:
        """After a failed publish: declare the topic again next time (a refused declaration shows
        up here); when the broker closed the publish channel, never use that one again."""
        self._topics.pop(topic, None)
        if isinstance(cause, ChannelClosed | ChannelInvalidStateError) and self._pub_raw is not None:
            self._dead, self._pub_raw = self._pub_raw, None

    async def _publish_channel(self) -> AbstractChannel:
        """The live publish channel, never the one a failed publish left behind: the broker may
        have closed it, and the robust channel notices that (and opens another) a moment later."""
        channel = await self.connection.publish_channel()
        dead = self._dead
        if channel is dead and dead is not None:
            try:
                async with asyncio.timeout(self._timeout):
                    while channel is dead:
                        await asyncio.sleep(0.005)
                        channel = await self.connection.publish_channel()
            except TimeoutError:
                pass  # still the same one: use it, and let its error say what is wrong
        self._dead = None
        self._pub_raw = channel
        return channel

    # -- consuming -------------------------------------------------------------------------------

    async def publish_many(self, topic: str, events: Sequence[Event]) -> dict[int, Exception]:
        """Publisher confirms windowed: up to ``PUBLISH_WINDOW`` messages out before their
        confirms are awaited together (the first one alone: it may declare the exchange)."""
        return await publish_windowed(self.publish, topic, events)

    async def subscribe(
        self, topic: str, group: str, handler: DeliveryHandler, *, concurrency: int = 1
    ) -> Subscription:
        sub = RabbitMQConsumer(self.connection, topic, group, handler, concurrency, self._forget_sub)
        try:
            async with asyncio.timeout(self._timeout):
                await sub.start()
        except Exception as exc:
            await sub.abort()
            if isinstance(exc, ChannelPreconditionFailed):
                raise BrokerError(
                    f"rabbitmq refused the queue {sub.queue!r} or exchange {sub.exchange!r}: it exists "
                    f"with other settings ({exc}); delete it or match queue_type/single_active_consumer"
                ) from exc
            if isinstance(exc, ChannelAccessRefused):
                raise BrokerError(f"rabbitmq refused access to {sub.queue!r}: {exc}") from exc
            if isinstance(exc, BrokerError):
                raise
            raise BrokerError(f"cannot subscribe to {topic!r} on rabbitmq: {reason(exc, self._timeout)}") from exc
        if not self.history.logs(topic):  # a logged topic's first publish declares its stream
            self._topics.setdefault(topic, sub.exchange)
        self._subs.append(sub)
        return sub

    def _forget_sub(self, sub: RabbitMQConsumer) -> None:
        """Called by a stopped subscription (a broker whose app subscribes and stops keeps none)."""
        if sub in self._subs:
            self._subs.remove(sub)

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
        the group with one (see :mod:`mesh.brokers.rabbitmq.ephemeral`); removed by the broker at stop."""
        sub = EphemeralSubscription(self.connection, topic, group, handler, concurrency, self._forget_ephemeral)
        try:
            async with asyncio.timeout(self._timeout):
                await sub.start()
        except Exception as exc:
            await sub.stop(drain=False)
            if isinstance(exc, BrokerError):
                raise
            raise BrokerError(f"cannot subscribe to {topic!r} on rabbitmq: {reason(exc, self._timeout)}") from exc
        self._ephemeral.append(sub)
        return sub

    def _forget_ephemeral(self, sub: EphemeralSubscription) -> None:
        """Called by a stopped ephemeral subscription."""
        if sub in self._ephemeral:
            self._ephemeral.remove(sub)

    async def publish_ephemeral(self, topic: str, event: Event) -> None:
        """Through the ephemeral exchange, routing key = topic, not persistent, not confirmed:
        dropped by the broker when no queue is bound for it.

        The frames (:mod:`.frames`) are queued for the connection's writer, not waited for (at
        most once: a frame lost with the connection is a call that times out either way).
        aiormq's ``basic_publish`` held the channel's lock until the writer had sent the frame,
        so the calls in flight published one after another, a few loop turns each."""
        msg = encode(event, self.wire)
        try:
            channel = self._eph_raw
            if channel is None or channel.is_closed:
                channel = self._eph_raw = await self.connection.ephemeral_channel()
            if not DIRECT_FRAMES:  # an aiormq this was not tested with: its own publish, not awaited
                props = Basic.Properties(content_type=msg.content_type, headers=msg.headers or None,  # type: ignore[arg-type]
                                         delivery_mode=1, message_id=event.id)
                await channel.basic_publish(msg.body, exchange=self._eph_exchange, routing_key=self.name_of(topic),
                                            properties=props, timeout=self._timeout, wait=False)
                return
            frame = ChannelFrame(
                publish_frames(
                    channel.number,
                    self._eph_exchange,
                    self.name_of(topic),
                    msg.body,
                    content_type=msg.content_type,
                    headers=msg.headers,
                    delivery_mode=1,
                    message_id=event.id,
                    max_body=channel.max_content_size,
                ),
                should_close=False,
            )
            try:
                channel.write_queue.put_nowait(frame)
            except asyncio.QueueFull:  # the writer is behind: wait for room, bounded
                async with asyncio.timeout(self._timeout):
                    await channel.write_queue.put(frame)
        except PublishError:
            raise
        except Exception as exc:
            raise PublishError(
                f"rabbitmq did not take {event.type} for {topic!r}: {reason(exc, self._timeout)}"
            ) from exc
