"""History of the Redis Streams adapter (:class:`~mesh.brokers.capabilities.HistoryReader`).

``XRANGE`` over the topic's stream, from the first id at or after ``since`` (an entry id is the
millisecond the server took it) or just after a cursor ``{"id": "<ms>-<seq>"}``, up to the last
id when reading started (or the last millisecond of ``until``). Entries delivered to one group
only (a replay, see :mod:`.groups`) are skipped: they are copies, not part of the topic's history.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

from redis.exceptions import RedisError

from mesh.brokers.capabilities import Cursor, HistoryRecord
from mesh.brokers.redis.connection import GROUP_FIELD, RedisConnection, text
from mesh.codecs.binary import decode
from mesh.codecs.bindings import REDIS
from mesh.codecs.redis import from_fields
from mesh.errors import DecodeError

__all__ = ["RedisHistory"]

LAST_SEQ = 18446744073709551615
"""The largest sequence part of a stream id: ``<ms>-LAST_SEQ`` is the last id of a millisecond."""


class RedisHistory:
    """The topics' streams read as history (see the module docstring)."""

    def __init__(self, conn: RedisConnection) -> None:
        self._conn = conn

    async def topic_exists(self, topic: str) -> bool:
        """Whether the topic's stream exists."""
        conn = self._conn
        try:
            kind = await conn.execute("TYPE", conn.name_of(topic))
        except (RedisError, OSError) as exc:
            raise conn.error("", exc) from exc
        return text(kind) == "stream"

    async def read_history(
        self,
        topic: str,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        cursor: Cursor | None = None,
        batch: int = 500,
    ) -> AsyncIterator[list[HistoryRecord]]:
        """The stream's entries in id order (see the module docstring)."""
        conn = self._conn
        stream = conn.name_of(topic)
        try:
            last = await conn.execute("XREVRANGE", stream, "+", "-", "COUNT", 1)
            if not last:
                return
            end = text(last[0][0])
            if until is not None:
                end = min(end, f"{int(until.timestamp() * 1000)}-{LAST_SEQ}", key=_order)
            if cursor is not None:
                start = f"({cursor['id']}"
            elif since is not None:
                start = f"{max(0, int(since.timestamp() * 1000))}-0"
            else:
                start = "-"
            while True:
                entries = await conn.execute("XRANGE", stream, start, end, "COUNT", batch)
                if not entries:
                    return
                page = [
                    _record(topic, stream, entry_id, fields)
                    for entry_id, fields in entries
                    if GROUP_FIELD not in fields
                ]
                if page:
                    yield page
                if len(entries) < batch:
                    return
                start = f"({text(entries[-1][0])}"
        except (RedisError, OSError) as exc:
            raise conn.error(f"reading {stream!r} failed", exc) from exc


def _record(topic: str, stream: str, entry_id: bytes, fields: dict[bytes, bytes]) -> HistoryRecord:
    eid = entry_id.decode()
    taken = datetime.fromtimestamp(int(eid.split("-", 1)[0]) / 1000, UTC)
    cursor: Cursor = {"id": eid}
    try:
        msg = from_fields(fields)
        fallback = None if REDIS.h_specversion in msg.headers else f"{stream}:{eid}"
        return HistoryRecord(decode(msg, REDIS, topic, fallback), taken, cursor)
    except DecodeError as exc:
        return HistoryRecord(None, taken, cursor, f"entry {eid}: {exc}")


def _order(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)
