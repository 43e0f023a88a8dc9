"""Replay capabilities of the Redis Streams adapter (:mod:`mesh.brokers.capabilities`).

History: ``XRANGE`` over the topic's stream, from the first id at or after ``since`` (an entry id
is the millisecond the server took it) or just after a cursor ``{"id": "<ms>-<seq>"}``, up to the
last id when reading started.

One group only: the event is added to the stream with the extra field ``_mesh.group`` naming the
group. Consumers of other groups read it and ack it without handing it to a handler; consumers of
that group handle it like any entry (claims, retries and delays included). History reads skip
these entries: they are replay copies, not part of the topic's history.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from redis.exceptions import RedisError, ResponseError

from mesh.brokers.capabilities import GROUP_MARK, Cursor, HistoryRecord
from mesh.codecs.binary import decode, encode
from mesh.codecs.bindings import REDIS
from mesh.codecs.redis import from_fields, to_fields
from mesh.errors import BrokerError, DecodeError, PublishError
from mesh.event import Event

if TYPE_CHECKING:
    from mesh.brokers.redis.broker import RedisBroker

__all__ = ["GROUP_FIELD", "has_group", "publish_to_group", "read_history", "topic_exists"]

GROUP_FIELD = GROUP_MARK.encode()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def topic_exists(broker: RedisBroker, topic: str) -> bool:
    """Whether the topic's stream exists."""
    try:
        kind = await broker.execute("TYPE", broker.name_of(topic))
    except (RedisError, OSError) as exc:
        raise BrokerError(f"redis at {broker.address}: {exc}") from exc
    return _text(kind) == "stream"


async def has_group(broker: RedisBroker, topic: str, group: str) -> bool:
    """Whether the stream has a consumer group of that name."""
    try:
        groups = await broker.execute("XINFO", "GROUPS", broker.name_of(topic))
    except ResponseError:  # no such stream
        return False
    except (RedisError, OSError) as exc:
        raise BrokerError(f"redis at {broker.address}: {exc}") from exc
    for info in groups or []:
        name = info.get("name", info.get(b"name")) if isinstance(info, dict) else None
        if name is not None and _text(name) == group:
            return True
    return False


async def publish_to_group(broker: RedisBroker, topic: str, group: str, event: Event) -> None:
    """XADD the event with ``_mesh.group`` = group (see the module docstring)."""
    stream = broker.name_of(topic)
    fields = to_fields(encode(event, broker.wire))
    try:
        await broker.execute("XADD", stream, *broker._trim, "*", GROUP_MARK, group, *fields)
    except (RedisError, OSError) as exc:
        raise PublishError(f"redis at {broker.address} did not take the event for {stream!r}: {exc}") from exc


def _record(broker: RedisBroker, topic: str, stream: str, entry_id: bytes, fields: dict[bytes, bytes]) -> HistoryRecord:
    eid = entry_id.decode()
    taken = datetime.fromtimestamp(int(eid.split("-", 1)[0]) / 1000, UTC)
    cursor: Cursor = {"id": eid}
    try:
        msg = from_fields(fields)
        fallback = None if REDIS.h_specversion in msg.headers else f"{stream}:{eid}"
        return HistoryRecord(decode(msg, REDIS, topic, fallback), taken, cursor)
    except DecodeError as exc:
        return HistoryRecord(None, taken, cursor, f"entry {eid}: {exc}")


async def read_history(
    broker: RedisBroker,
    topic: str,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    cursor: Cursor | None = None,
    batch: int = 500,
) -> AsyncIterator[list[HistoryRecord]]:
    """The stream's entries in id order (see the module docstring)."""
    stream = broker.name_of(topic)
    try:
        last = await broker.execute("XREVRANGE", stream, "+", "-", "COUNT", 1)
        if not last:
            return
        end = _text(last[0][0])
        if until is not None:
            end = min(end, f"{int(until.timestamp() * 1000)}-18446744073709551615", key=_order)
        if cursor is not None:
            start = f"({cursor['id']}"
        elif since is not None:
            start = f"{max(0, int(since.timestamp() * 1000))}-0"
        else:
            start = "-"
        while True:
            entries = await broker.execute("XRANGE", stream, start, end, "COUNT", batch)
            if not entries:
                return
            page = [
                _record(broker, topic, stream, entry_id, fields)
                for entry_id, fields in entries
                if GROUP_FIELD not in fields
            ]
            if page:
                yield page
            if len(entries) < batch:
                return
            start = f"({_text(entries[-1][0])}"
    except (RedisError, OSError) as exc:
        raise BrokerError(f"redis at {broker.address}: reading {stream!r} failed: {exc}") from exc


def _order(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)
