"""Core NATS (``type: nats``): subjects and queue groups, fast and with nothing kept.

- A topic is the subject of the same name (namespace prefix applied). A group is a NATS queue
  group: members of one group compete for each message, different groups each get every one.
- Core NATS stores nothing: a message published while a group has no member is gone, a new group
  sees no history, and nothing survives the process. :attr:`NatsBroker.features` says so.
- ``ack()`` is a no-op for the server. ``nack()`` hands the delivery to the subscription again,
  in process (``nack(delay)`` with a timer that does not hold later messages), with
  ``attempt + 1``. That is best effort: it is lost if the process dies.
- ``stop()`` unsubscribes first (the server sends new messages to the other members), then, with
  ``drain``, handles what was already received. Deliveries still unacked, and delayed nacks not
  yet due, are handed to another subscription of the same group in this process, or kept for
  the next one made here. No other process can get them back.
- Order: one subscriber of a group with ``concurrency: 1`` sees the publish order of one
  publisher; several members of a group share messages at random, so there is no order by key.

Composed of parts (:mod:`mesh.brokers.nats.broker`): the connection, the consumer
(:mod:`~mesh.brokers.nats.consumer`), ephemeral destinations and ``groups``
(:class:`~mesh.brokers.nats.groups.NatsGroups`, one-group delivery for replays); no history.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from nats.errors import Error as NatsError

from mesh.brokers.base import DeliveryHandler, Features, Subscription
from mesh.brokers.nats.broker import NatsFamilyBroker
from mesh.brokers.nats.consumer import NatsDelivery, NatsGroupSubscription
from mesh.brokers.nats.fastclient import FastClient
from mesh.brokers.nats.groups import NatsGroups
from mesh.brokers.nats.messages import to_headers
from mesh.brokers.nats.options import NatsOptions
from mesh.codecs.binary import encode
from mesh.codecs.bindings import NATS
from mesh.errors import BrokerError, MeshError, PublishError
from mesh.event import Event

__all__ = ["NatsBroker", "NatsDelivery"]


class NatsBroker(NatsFamilyBroker):
    """Core NATS: subjects, queue groups, no persistence; see the module docstring."""

    type: ClassVar[str] = "nats"
    binding = NATS
    options_model = NatsOptions
    features: ClassVar[Features] = Features(
        name="nats",
        persistent=False,
        consumer_groups=True,
        order_by_key=False,
        history=False,
        history_by_time=False,
        native_delay=False,  # nack(delay) is an in-process timer, lost with the process
        native_request_reply=True,  # no-responders, for invocation (see mesh.brokers.nats.ephemeral)
        headers=True,
        redelivery_count=False,  # attempts are counted in process, not by the server
        group_delivery=True,
        ephemeral=True,
    )

    settings: NatsOptions

    def __init__(self, url: str | None = None, **kwargs: Any) -> None:
        super().__init__(url, **kwargs)
        self.groups = NatsGroups(self.connection)

    async def connect(self) -> None:
        await self.connection.open()

    async def publish(self, topic: str, event: Event) -> None:
        wire = encode(event, self.wire)
        conn = self.connection
        nc = conn.nc
        if nc is None or nc.is_closed:
            raise conn.not_connected(PublishError)
        subject, headers = self.name_of(topic), to_headers(wire)
        try:
            if not (isinstance(nc, FastClient) and nc.publish_now(subject, wire.body, headers)):
                await nc.publish(subject, wire.body, headers=headers)
        except NatsError as exc:
            raise PublishError(f"nats at {self.address} did not take the event on {topic!r}: {exc!r}") from exc

    async def publish_many(self, topic: str, events: Sequence[Event]) -> dict[int, Exception]:
        """Queue every message for the client's flusher, then one flush (a PING/PONG round trip:
        the server has them all)."""
        conn = self.connection
        nc = conn.nc
        if nc is None or nc.is_closed:
            raise conn.not_connected(PublishError)
        subject = self.name_of(topic)
        fast = nc.publish_now if isinstance(nc, FastClient) else None
        failed: dict[int, Exception] = {}
        for index, event in enumerate(events):
            try:
                wire = encode(event, self.wire)
                headers = to_headers(wire)
                if fast is None or not fast(subject, wire.body, headers):
                    await nc.publish(subject, wire.body, headers=headers)
            except MeshError as exc:
                failed[index] = exc
            except NatsError as exc:
                failed[index] = PublishError(f"nats at {self.address} did not take the event on {topic!r}: {exc!r}")
                failed[index].__cause__ = exc
        try:
            await nc.flush(timeout=max(1, round(self.settings.connect_timeout)))
        except (NatsError, TimeoutError) as exc:
            error = PublishError(f"nats at {self.address} did not confirm the events on {topic!r}: {exc!r}")
            error.__cause__ = exc
            return dict.fromkeys(range(len(events)), error)
        return failed

    async def subscribe(
        self, topic: str, group: str, handler: DeliveryHandler, *, concurrency: int = 1
    ) -> Subscription:
        sub = NatsGroupSubscription(self.connection, topic, group, handler, concurrency)
        try:
            await sub.start()
        except NatsError as exc:
            raise BrokerError(f"nats at {self.address}: cannot subscribe to {topic!r}: {exc!r}") from exc
        self._subs.append(sub)
        return sub
