"""History of the RabbitMQ adapter: readable topics logged in stream queues (RabbitMQ 3.9+).

A RabbitMQ queue is consumed destructively, so a topic keeps no history of its own. A topic
matching the option ``stream_topics`` (``*.dlq`` by default) also gets, when it is first
published to or ensured, a **stream queue** ``_mesh.stream.<topic>`` bound to its exchange with
``#``: an append-only log, read by offset without removing anything, trimmed by the retention
options (``stream_max_age``, ``stream_max_bytes``). Group queues stay as they are, so ordinary
consumers of the topic still work; copies for one group or one delay never pass the exchange
and so are not logged.

=====================  ======================================================================
call                   what happens
=====================  ======================================================================
``history_gap``        ``None`` for a topic logged in a stream, else why it is not (no match
                       in ``stream_topics``; a server older than 3.9)
``topic_exists``       a passive declare of the stream queue
``read_history``       a consumer on a channel of its own (``basic.qos`` = batch,
                       ``x-stream-offset`` = the cursor's offset, else ``since`` as a
                       timestamp, else ``first``); once it is consuming, an end marker (header
                       ``_mesh.end``, a token of this read) is appended to the stream, and the
                       reader yields oldest first up to that marker: the end as of the call.
                       Other readers' markers are skipped.
=====================  ======================================================================

Over AMQP 0-9-1 a stream tells neither its last offset nor when it took a message, hence the
marker; the time of a record is the header ``timestamp_in_ms`` the adapter writes when it
publishes to a logged topic (the name RabbitMQ's message-timestamp plugin uses), else the
``timestamp`` property, else the event's ``time``. A stream read from a timestamp starts at a
whole chunk, so it may begin a little early (readers apply their window exactly).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from fnmatch import fnmatchcase
from typing import Any

from aio_pika.abc import AbstractIncomingMessage
from pamqp.commands import Basic

from mesh.brokers.capabilities import Cursor, HistoryRecord
from mesh.brokers.rabbitmq.connection import GONE, RabbitMQConnection, ack_queued, as_text, reason, unreadable
from mesh.codecs.binary import WireMessage, decode
from mesh.errors import BrokerError, DecodeError, FeatureNotSupported
from mesh.event import Event
from mesh.extensions import RESERVED_PREFIX

__all__ = ["END_HEADER", "TIME_HEADER", "RabbitMQHistory"]

END_HEADER = RESERVED_PREFIX + "end"
"""Header of an end marker appended to a stream by a reader (not an event; skipped by readers)."""
TIME_HEADER = "timestamp_in_ms"
"""Header with the millisecond a logged topic's message was published."""
OFFSET_HEADER = "x-stream-offset"


class RabbitMQHistory:
    """The stream queues of readable topics, read as history (see the module docstring)."""

    def __init__(self, conn: RabbitMQConnection) -> None:
        self._conn = conn
        self._patterns = tuple(conn.settings.stream_topics)

    def logs(self, topic: str) -> bool:
        """Whether the topic matches ``stream_topics`` (so a stream is declared with its exchange)."""
        return any(fnmatchcase(topic, pattern) for pattern in self._patterns)

    def history_gap(self, topic: str) -> str | None:
        """``None`` when the topic is logged in a stream queue, else why the broker keeps no log of it."""
        if not self.logs(topic):
            shown = ", ".join(self._patterns) or "none"
            return f"only topics matching the option stream_topics ({shown}) are kept in a stream queue"
        return self._conn.streams_missing()

    def _check(self, topic: str) -> None:
        gap = self.history_gap(topic)
        if gap is not None:
            raise FeatureNotSupported(
                "rabbitmq",
                f"reading the history of {topic!r} ({gap})",
                "record events with the archive plugin and read them from the archive (--from archive)",
            )

    async def topic_exists(self, topic: str) -> bool:
        """Whether the topic's stream queue exists."""
        self._check(topic)
        conn = self._conn
        try:
            return await conn.queue_exists(conn.stream_of(topic))
        except Exception as exc:
            raise BrokerError(f"rabbitmq at {conn.address}: cannot look up the stream of {topic!r}: {exc}") from exc

    async def read_history(
        self,
        topic: str,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        cursor: Cursor | None = None,
        batch: int = 500,
    ) -> AsyncIterator[list[HistoryRecord]]:
        """The stream's messages in offset order, up to its end when called (see the module docstring)."""
        if not await self.topic_exists(topic):
            return
        conn = self._conn
        stream = conn.stream_of(topic)
        if cursor is not None:
            start: Any = max(0, int(cursor["offset"]))
        elif since is not None:
            start = since.astimezone(UTC).replace(microsecond=0)  # an AMQP timestamp: whole seconds
        else:
            start = "first"
        token = uuid.uuid4().hex
        inbox: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
        async with conn.scratch() as channel:
            try:
                async with asyncio.timeout(conn.timeout):
                    await channel.set_qos(prefetch_count=max(1, min(batch, 65_535)))
                    queue = await channel.get_queue(stream, ensure=False)
                    await queue.consume(inbox.put, arguments={OFFSET_HEADER: start})
                    # After consume-ok the start is fixed (a timestamp in the future means the
                    # end), so the marker lands after it whatever the start was.
                    await conn.publish_control(
                        b"", "", stream, Basic.Properties(headers={END_HEADER: token}, delivery_mode=2)
                    )
            except Exception as exc:
                raise BrokerError(
                    f"rabbitmq at {conn.address}: cannot read {stream!r}: {reason(exc, conn.timeout)}"
                ) from exc
            page: list[HistoryRecord] = []
            while True:
                try:
                    async with asyncio.timeout(conn.timeout):
                        message = await inbox.get()
                except TimeoutError as exc:
                    raise BrokerError(
                        f"rabbitmq at {conn.address}: reading {stream!r} stalled (no message within {conn.timeout:g}s)"
                    ) from exc
                with contextlib.suppress(*GONE):
                    await ack_queued(message)  # a stream keeps it either way; the ack lets more come
                headers = message.headers or {}
                marker = headers.get(END_HEADER)
                if marker is not None:
                    if _text(marker) == token:
                        break
                    continue  # another reader's end
                record = _record(conn, topic, stream, message)
                if until is not None and record.time > until:
                    break
                page.append(record)
                if len(page) >= batch:
                    yield page
                    page = []
            if page:
                yield page


def _record(conn: RabbitMQConnection, topic: str, stream: str, message: AbstractIncomingMessage) -> HistoryRecord:
    """One stream message as a :class:`HistoryRecord` (its cursor is the next offset)."""
    headers: Any = message.headers or {}
    offset = int(headers.get(OFFSET_HEADER, 0))
    cursor: Cursor = {"offset": offset + 1}
    if any(type(v) is not str and type(v) is not bytes for v in headers.values()):
        headers = as_text(headers)
    headers = {k: v for k, v in headers.items() if k != OFFSET_HEADER and k != TIME_HEADER}
    wire = WireMessage(message.body, headers, None, message.content_type)
    event: Event | None = None
    error: str | None = None
    try:
        event = decode(wire, conn.wire, topic, message.message_id or f"{stream}:{offset}")
    except DecodeError as exc:
        error = f"offset {offset}: {exc}"
    except Exception as exc:  # foreign input never stops a reader
        error = f"offset {offset}: {unreadable(exc, message.body)}"
    return HistoryRecord(event, _taken(message, event), cursor, error)


def _taken(message: AbstractIncomingMessage, event: Event | None) -> datetime:
    """When the message was published (see the module docstring)."""
    ms = (message.headers or {}).get(TIME_HEADER)
    if isinstance(ms, int) and not isinstance(ms, bool):
        return datetime.fromtimestamp(ms / 1000, UTC)
    stamp = message.timestamp
    if stamp is not None:
        return stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)
    if event is not None and event.time is not None:
        return event.time
    return datetime.now(UTC)


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes | bytearray) else str(value)
