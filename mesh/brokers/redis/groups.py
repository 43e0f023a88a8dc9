"""Delivery to one group of the Redis Streams adapter (:class:`~mesh.brokers.capabilities.GroupPublisher`).

The event is added to the topic's stream with the extra field ``_mesh.group`` naming the group.
Consumers of other groups read it and ack it without handing it to a handler; consumers of that
group handle it like any entry (claims, retries and delays included). History reads skip these
entries (:mod:`.history`).
"""

from __future__ import annotations

from redis.exceptions import RedisError, ResponseError

from mesh.brokers.capabilities import GROUP_MARK
from mesh.brokers.redis.connection import RedisConnection, text
from mesh.codecs.binary import encode
from mesh.codecs.redis import to_fields
from mesh.event import Event

__all__ = ["RedisGroups"]


class RedisGroups:
    """Replays to one consumer group of a topic's stream (see the module docstring)."""

    def __init__(self, conn: RedisConnection) -> None:
        self._conn = conn

    async def has_group(self, topic: str, group: str) -> bool:
        """Whether the stream has a consumer group of that name."""
        conn = self._conn
        try:
            groups = await conn.execute("XINFO", "GROUPS", conn.name_of(topic))
        except ResponseError:  # no such stream
            return False
        except (RedisError, OSError) as exc:
            raise conn.error("", exc) from exc
        for info in groups or []:
            name = info.get("name", info.get(b"name")) if isinstance(info, dict) else None
            if name is not None and text(name) == group:
                return True
        return False

    async def publish_to_group(self, topic: str, group: str, event: Event) -> None:
        """XADD the event with ``_mesh.group`` = group (see the module docstring)."""
        conn = self._conn
        stream = conn.name_of(topic)
        fields = to_fields(encode(event, conn.wire))
        try:
            await conn.execute("XADD", stream, *conn.trim, "*", GROUP_MARK, group, *fields)
        except (RedisError, OSError) as exc:
            raise conn.publish_error(stream, exc) from exc
