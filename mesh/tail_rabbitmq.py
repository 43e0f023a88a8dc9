"""The RabbitMQ tap of ``mesh tail``: an exclusive auto-delete queue on the topic's exchange.

RabbitMQ's ephemeral subscriptions listen on the mesh's own ephemeral exchange, which ordinary
publishes never reach; a tap binds a server-named, exclusive, auto-delete queue to the topic's
durable topic exchange (``#``), consumed without acks. The broker deletes it when the tap stops
or its connection goes. It reuses the adapter's ephemeral subscription, changing only the
exchange it binds to (so it needs no client import of its own).
"""

from __future__ import annotations

from typing import Any

from mesh.brokers.base import Broker, DeliveryHandler, Subscription
from mesh.brokers.rabbitmq.ephemeral import EphemeralSubscription

__all__ = ["subscribe_rabbitmq_tap"]


class _Tap(EphemeralSubscription):
    """An exclusive queue bound to a topic's exchange with ``#``."""

    async def start(self) -> None:
        """Declare the queue, bind it to the topic's exchange, start consuming without acks."""
        conn: Any = self._conn
        await conn.declare_topic(self._key)  # what publish would declare: harmless if it exists
        channel = self._channel = await conn.channel()
        exchange = await channel.get_exchange(self._key, ensure=False)
        queue = await channel.declare_queue("", durable=False, exclusive=True, auto_delete=True)
        await queue.bind(exchange, routing_key="#")
        await self._listen(channel, queue)  # not shared: consumed without acks


async def subscribe_rabbitmq_tap(broker: Broker, topic: str, handler: DeliveryHandler) -> Subscription:
    """Tap ``topic`` on a RabbitMQ broker (see the module docstring)."""
    adapter: Any = broker
    tap = _Tap(adapter.connection, topic, None, handler, 1, lambda sub: None)
    await tap.start()
    return tap
