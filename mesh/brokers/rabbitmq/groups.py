"""Replay capability of the RabbitMQ adapter: delivering to one group only.

A group is the durable queue ``<topic>.<group>``; a replayed event is published straight to it
through the default exchange (routing key = queue name), confirmed and mandatory, so it reaches
that group's members and nobody else. RabbitMQ keeps no history: replays read the archive.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

import aio_pika
from aio_pika.exceptions import ChannelClosed, ChannelNotFoundEntity
from pamqp.commands import Basic

from mesh.codecs.binary import encode
from mesh.errors import BrokerError, PublishError
from mesh.event import Event

if TYPE_CHECKING:
    from mesh.brokers.rabbitmq.broker import RabbitMQBroker

__all__ = ["group_queue", "has_group", "publish_to_group"]


def group_queue(broker: RabbitMQBroker, topic: str, group: str) -> str:
    """The queue of one group's subscription to a topic."""
    return f"{broker.name_of(topic)}.{group}"


async def has_group(broker: RabbitMQBroker, topic: str, group: str) -> bool:
    """Whether the group's queue exists (a passive declare on a channel of its own)."""
    connection = broker._connection()
    channel = aio_pika.Channel(connection, publisher_confirms=False)
    try:
        async with asyncio.timeout(broker.settings.operation_timeout):
            await connection.ready()
            await channel.initialize()
            await channel.declare_queue(group_queue(broker, topic, group), passive=True)
    except (ChannelNotFoundEntity, ChannelClosed):
        return False
    except Exception as exc:  # one clear error for the rest
        raise BrokerError(f"rabbitmq at {broker.address}: cannot look up group {group!r}: {exc}") from exc
    finally:
        with contextlib.suppress(Exception):
            await channel.close()
    return True


async def publish_to_group(broker: RabbitMQBroker, topic: str, group: str, event: Event) -> None:
    """Publish to the group's queue through the default exchange (confirmed; refused if there is none)."""
    msg = encode(event, broker.wire)
    props = Basic.Properties(
        content_type=msg.content_type,
        headers=msg.headers or None,  # type: ignore[arg-type]
        delivery_mode=broker._mode,
        message_id=event.id,
    )
    queue = group_queue(broker, topic, group)
    try:
        await broker._publish_control(msg.body, "", queue, props)
    except PublishError:
        raise
    except Exception as exc:
        raise PublishError(f"rabbitmq did not take event {event.id} for queue {queue!r}: {exc}") from exc
