"""What both NATS brokers are made of: a connection, ephemeral destinations on core NATS, their subscriptions.

:class:`NatsFamilyBroker` composes the parts every NATS broker has and leaves publishing,
subscribing and the replay parts to :class:`~mesh.brokers.nats.core.NatsBroker` and
:class:`~mesh.brokers.nats.jetstream.JetStreamBroker`.

==========================  =====================================================================
member                      composed from
==========================  =====================================================================
``connection``              :class:`~mesh.brokers.nats.connection.NatsConnection` (the client)
``ephemeral``               :class:`~mesh.brokers.nats.ephemeral.NatsEphemeral` (requests,
                            replies, presence: core NATS on both types)
``close()``                 ephemeral subscriptions, then the broker's own, then the connection
``repr()``                  the URL with credentials masked (:func:`mesh.urls.mask_url`)
==========================  =====================================================================
"""

from __future__ import annotations

import asyncio
from typing import Any

from mesh.brokers.base import Broker, DeliveryHandler, Subscription
from mesh.brokers.nats.connection import NatsConnection
from mesh.brokers.nats.ephemeral import NatsEphemeral
from mesh.event import Event
from mesh.urls import mask_url

__all__ = ["NatsFamilyBroker"]


class NatsFamilyBroker(Broker):
    """The parts both NATS brokers share (see the module docstring)."""

    tls_supported = True
    auth_fields = frozenset({"username", "password", "token", "nkey_seed", "creds_file"})

    def __init__(self, url: str | None = None, **kwargs: Any) -> None:
        super().__init__(url, **kwargs)
        self.connection = NatsConnection(
            self.type,
            url,
            self.settings,
            self.wire,
            namespace=self.namespace,
            client_id=self.client_id,
            on_reconnect=self._reconnected,
            tls=self.tls,
            auth=self.auth,
        )
        self.address = self.connection.address
        """The servers for messages, credentials masked."""
        self.ephemeral = NatsEphemeral(self.connection)
        self._subs: list[Subscription] = []

    async def _reconnected(self) -> None:
        """Called once the client reconnected (it restored its subscriptions itself)."""

    async def close(self) -> None:
        await self.ephemeral.close()
        subs, self._subs = self._subs, []
        for sub in subs:
            await sub.stop()
        await self.connection.close()

    async def subscribe_ephemeral(
        self,
        topic: str,
        handler: DeliveryHandler,
        *,
        group: str | None = None,
        exclusive: bool = False,
        concurrency: int = 1,
    ) -> Subscription:
        """A non-durable subscription on core NATS (see :meth:`mesh.brokers.base.Broker.subscribe_ephemeral`)."""
        return await self.ephemeral.subscribe(topic, handler, group, concurrency)

    async def publish_ephemeral(self, topic: str, event: Event) -> None:
        """Publish on core NATS to an ephemeral destination."""
        await self.ephemeral.publish(topic, event)

    async def publish_request(self, topic: str, event: Event) -> asyncio.Future[None] | None:
        """Publish a request; the future fails with NoResponders when nobody listens."""
        return await self.ephemeral.request(topic, event)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(url={mask_url(self.url) if self.url is not None else None!r})"
