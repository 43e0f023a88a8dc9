"""Replay capability of the RabbitMQ adapter: delivering to one group only (``broker.groups``).

A group is the durable queue ``<topic>.<group>``; a replayed event is published straight to it
through the default exchange (routing key = queue name), confirmed and mandatory, so it reaches
that group's members and nobody else. Replays read the archive, or for topics logged in a stream
queue (``stream_topics``) the broker's history (:mod:`.history`).

==========================  ===================================================================
call                        what happens
==========================  ===================================================================
``has_group``               a passive declare of the queue on a channel of its own: True if it
                            exists, False if not, ``BrokerError`` for anything else
``publish_to_group``        the event (binary or structured, as configured) to the queue;
                            ``PublishError`` if the broker refuses it (no such queue)
==========================  ===================================================================
"""

from __future__ import annotations

from pamqp.commands import Basic

from mesh.brokers.rabbitmq.connection import RabbitMQConnection
from mesh.codecs.binary import encode
from mesh.errors import BrokerError, PublishError
from mesh.event import Event

__all__ = ["RabbitMQGroups"]


class RabbitMQGroups:
    """Delivery to one group's queue (a :class:`~mesh.brokers.capabilities.GroupPublisher`)."""

    def __init__(self, conn: RabbitMQConnection) -> None:
        self._conn = conn

    async def has_group(self, topic: str, group: str) -> bool:
        """Whether the group's queue exists."""
        conn = self._conn
        try:
            return await conn.queue_exists(conn.queue_of(topic, group))
        except Exception as exc:  # one clear error for the rest
            raise BrokerError(f"rabbitmq at {conn.address}: cannot look up group {group!r}: {exc}") from exc

    async def publish_to_group(self, topic: str, group: str, event: Event) -> None:
        """Publish to the group's queue through the default exchange (confirmed; refused if there is none)."""
        conn = self._conn
        msg = encode(event, conn.wire)
        props = Basic.Properties(
            content_type=msg.content_type,
            headers=msg.headers or None,  # type: ignore[arg-type]
            delivery_mode=conn.delivery_mode,
            message_id=event.id,
        )
        queue = conn.queue_of(topic, group)
        try:
            await conn.publish_control(msg.body, "", queue, props)
        except PublishError:
            raise
        except Exception as exc:
            raise PublishError(f"rabbitmq did not take event {event.id} for queue {queue!r}: {exc}") from exc
