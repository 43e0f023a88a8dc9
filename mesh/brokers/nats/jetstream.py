"""NATS JetStream (``type: jetstream``): a stream per topic, a durable pull consumer per group.

Names on the server (``safe_name``: ``.``, ``*``, ``>``, path separators and whitespace become
``_``, because stream and consumer names cannot hold them):

- topic ``orders.created`` is the subject ``orders.created`` (namespace prefix applied); its
  events are kept by the stream that covers that subject. When no stream does, the mesh creates
  ``orders_created`` covering exactly that subject, with the ``storage``, ``retention``,
  ``max_age``, ``max_msgs``, ``max_bytes``, ``replicas`` and ``duplicate_window`` options. A
  stream an operator made (say ``ORDERS`` on ``orders.>``) is used as it is. Two topics that map
  to one name (``a.b`` and ``a_b``) share the stream; consumers filter by subject.
- group ``billing`` is the durable consumer ``billing`` of that stream (filtered on the subject;
  explicit ack, ``ack_wait``, ``max_deliver``, ``max_ack_pending``), starting at the first
  retained message (``initial_offset: earliest``) or at new ones (``latest``). If the name is
  taken in a shared stream by a consumer of another subject, it is ``billing_<subject>``.

Delivery: every member of a group pulls from the group's consumer in batches, so members
compete and groups fan out; the server redelivers what is not acked within ``ack_wait``
(a consumer that died), ``nack()`` is ``-NAK`` (now) and ``nack(delay)`` is ``-NAK`` with a
delay, both done by the server; ``attempt`` is the server's delivery count. ``stop()`` stops
pulling, lets running handlers finish, then naks whatever it still holds, so other members get it
at once. ``publish`` returns when the stream stored the event; with ``dedup`` it carries
``Nats-Msg-Id: <source> <id>`` and the server drops a copy sent again within
``duplicate_window``.

Composed of parts (:mod:`mesh.brokers.nats.broker`): the connection, ``streams``
(:mod:`~mesh.brokers.nats.streams`), the pull consumer (:mod:`~mesh.brokers.nats.pull`),
ephemeral destinations on core NATS, and for replays ``history`` and ``groups``
(:mod:`~mesh.brokers.nats.history`).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from typing import Any, ClassVar

from nats.errors import Error as NatsError
from nats.errors import NoRespondersError

from mesh.brokers.base import DeliveryHandler, Features, Subscription, publish_windowed
from mesh.brokers.nats.broker import NatsFamilyBroker
from mesh.brokers.nats.history import JetStreamGroups, JetStreamHistory
from mesh.brokers.nats.messages import to_headers
from mesh.brokers.nats.options import JetStreamOptions
from mesh.brokers.nats.pull import JetStreamDelivery, JetStreamSubscription
from mesh.brokers.nats.streams import Streams, msg_id, refusal
from mesh.codecs.binary import encode
from mesh.codecs.bindings import NATS
from mesh.errors import BrokerConnectionError, BrokerError, PublishError
from mesh.event import Event

__all__ = ["JetStreamBroker", "JetStreamDelivery"]

log = logging.getLogger("mesh.broker.nats")


class JetStreamBroker(NatsFamilyBroker):
    """JetStream: persistent streams, durable pull consumers; see the module docstring."""

    type: ClassVar[str] = "jetstream"
    binding = NATS
    options_model = JetStreamOptions
    features: ClassVar[Features] = Features(
        name="jetstream",
        persistent=True,
        consumer_groups=True,
        order_by_key=False,  # True on instances with max_ack_pending: 1
        history=True,
        history_by_time=True,
        native_delay=True,
        native_request_reply=True,  # no-responders, for invocation (see mesh.brokers.nats.ephemeral)
        headers=True,
        redelivery_count=True,
        group_delivery=True,
        ephemeral=True,
    )

    settings: JetStreamOptions

    def __init__(self, url: str | None = None, **kwargs: Any) -> None:
        super().__init__(url, **kwargs)
        if self.settings.max_ack_pending == 1:
            # One unacked message per group: the group handles the stream in order.
            self.features = dataclasses.replace(type(self).features, order_by_key=True)  # type: ignore[misc]
        self.streams = Streams(self.connection, self.settings)
        self.history = JetStreamHistory(self.connection, self.streams)
        self.groups = JetStreamGroups(self.connection, self.streams)

    async def connect(self) -> None:
        conn = self.connection
        if conn.connected:
            return
        await conn.open()
        try:
            await conn.jetstream().account_info()
        except Exception as exc:
            await conn.close()
            reason = "JetStream is not enabled for this account or server (start nats-server with -js)"
            if not isinstance(exc, NoRespondersError):
                reason = f"{reason}: {exc!r}"
            raise BrokerConnectionError(self.type, self.address, reason) from exc

    async def _reconnected(self) -> None:
        for sub in self._subs:
            if isinstance(sub, JetStreamSubscription):
                sub.reconnected()

    async def ensure_topic(self, topic: str) -> None:
        """Make sure a stream keeps the topic's subject (creating ``safe_name(subject)``)."""
        await self.streams.stream_for(self.name_of(topic))

    async def publish(self, topic: str, event: Event) -> None:
        subject = self.name_of(topic)
        wire = encode(event, self.wire)
        headers = to_headers(wire)
        if self.settings.dedup:
            headers["Nats-Msg-Id"] = msg_id(event)
        conn, streams = self.connection, self.streams
        nc = conn.nc
        if nc is None or nc.is_closed:
            raise conn.not_connected(PublishError)
        try:
            try:
                data = await streams.store(nc, subject, wire.body, headers)
            except NoRespondersError:
                # No stream covers the subject (yet, or any more): make one and try again once.
                streams.forget(subject)
                await streams.stream_for(subject, fresh=True)
                data = await streams.store(nc, subject, wire.body, headers)
        except (NatsError, BrokerError) as exc:
            raise PublishError(f"jetstream at {self.address} did not store the event on {topic!r}: {exc!r}") from exc
        if b'"error"' in data:
            raise PublishError(f"jetstream at {self.address} refused the event on {topic!r}: {refusal(data)}")

    async def publish_many(self, topic: str, events: Sequence[Event]) -> dict[int, Exception]:
        """Publish asynchronously: up to ``PUBLISH_WINDOW`` stream acks awaited at once, in order."""
        return await publish_windowed(self.publish, topic, events)

    async def subscribe(
        self, topic: str, group: str, handler: DeliveryHandler, *, concurrency: int = 1
    ) -> Subscription:
        subject = self.name_of(topic)
        streams = self.streams
        cap = self.settings.max_ack_pending
        if concurrency > cap and getattr(handler, "inline", False) is True:  # a batch route: max_size x batches
            log.warning("jetstream: %s (group %s) asks for %d deliveries in flight but max_ack_pending is %d: "
                        "at most %d are handed over at once (a batch never holds more; raise "
                        "broker.options.max_ack_pending)", topic, group, concurrency, cap, cap)
        try:
            stream = await streams.stream_for(subject)
            consumer = await streams.consumer_for(stream, subject, group)
            sub = JetStreamSubscription(self.connection, streams, topic, group, handler, concurrency, stream, consumer)
            await sub.start()
        except NatsError as exc:
            raise BrokerError(f"jetstream at {self.address}: cannot subscribe to {topic!r}: {exc!r}") from exc
        self._subs.append(sub)
        return sub
