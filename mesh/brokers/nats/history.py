"""Replay parts of the JetStream adapter (:mod:`mesh.brokers.capabilities`): history, one group.

History (:class:`JetStreamHistory`): an ephemeral pull consumer (no acks, in memory, gone when
idle) on the stream covering the topic's subject, filtered on it, starting at the first message
stored at or after ``since`` or at the stream sequence of a cursor ``{"seq": n}``, up to the last
message when reading started.

One group only (:class:`JetStreamGroups`): the event is published on the topic's subject with the header ``_mesh.group``
naming the group (and, as every replay, ``meshreplay`` in its ``Nats-Msg-Id``, so deduplication
does not drop it as the original). The members of other groups ack it without handing it to a
handler; the group's members handle it like any message. History reads skip these messages.
Stream subjects and consumer filters stay as they are, which works on every server version.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import datetime

from nats.errors import Error as NatsError
from nats.errors import TimeoutError as NatsTimeout
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from mesh.brokers.capabilities import GROUP_MARK, Cursor, HistoryRecord
from mesh.brokers.nats.connection import NatsConnection
from mesh.brokers.nats.messages import read_parts, to_headers
from mesh.brokers.nats.streams import Streams, msg_id, refusal
from mesh.codecs.binary import encode
from mesh.codecs.bindings import NATS
from mesh.errors import BrokerError, PublishError
from mesh.event import Event

__all__ = ["JetStreamGroups", "JetStreamHistory"]

FETCH_TIMEOUT = 1.0
IDLE_CONSUMER = 30.0
"""Seconds after which the server removes a history reader that went away."""


class JetStreamGroups:
    """Delivery to one group of a JetStream connection (a :class:`~mesh.brokers.capabilities.GroupPublisher`)."""

    def __init__(self, conn: NatsConnection, streams: Streams) -> None:
        self.conn = conn
        self.streams = streams

    async def has_group(self, topic: str, group: str) -> bool:
        """Whether the group's durable consumer of the topic exists (named as ``subscribe`` names it)."""
        return await self.streams.has_consumer(self.conn.name_of(topic), group)

    async def publish_to_group(self, topic: str, group: str, event: Event) -> None:
        """Store the event on the topic's stream marked for ``group`` only (see the module docstring)."""
        conn, streams = self.conn, self.streams
        subject = conn.name_of(topic)
        wire = encode(event, conn.wire)
        headers = to_headers(wire)
        headers[GROUP_MARK] = group
        if streams.settings.dedup:
            headers["Nats-Msg-Id"] = msg_id(event, group)
        try:
            data = await streams.store(conn.client(PublishError), subject, wire.body, headers)
        except NatsError as exc:
            raise PublishError(f"jetstream at {conn.address} did not store the event on {topic!r}: {exc!r}") from exc
        description = refusal(data)
        if description is not None:
            raise PublishError(f"jetstream at {conn.address} refused the event on {topic!r}: {description}")


class JetStreamHistory:
    """The streams of a JetStream connection read as history (a :class:`~mesh.brokers.capabilities.HistoryReader`)."""

    def __init__(self, conn: NatsConnection, streams: Streams) -> None:
        self.conn = conn
        self.streams = streams

    async def topic_exists(self, topic: str) -> bool:
        """Whether a stream covers the topic's subject."""
        return await self.streams.find(self.conn.name_of(topic)) is not None

    async def read_history(
        self,
        topic: str,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        cursor: Cursor | None = None,
        batch: int = 500,
    ) -> AsyncIterator[list[HistoryRecord]]:
        """The stream's messages on the subject, in sequence order (see the module docstring)."""
        conn = self.conn
        subject = conn.name_of(topic)
        stream = await self.streams.find(subject)
        if stream is None:
            return
        js = conn.jetstream()
        try:
            last = (await js.stream_info(stream)).state.last_seq
            if cursor is not None:
                config = ConsumerConfig(
                    deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=max(1, int(cursor["seq"]))
                )
            elif since is not None:
                config = ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_TIME, opt_start_time=since)
            else:
                config = ConsumerConfig(deliver_policy=DeliverPolicy.ALL)
            config.ack_policy = AckPolicy.NONE
            config.mem_storage = True
            config.inactive_threshold = IDLE_CONSUMER
            sub = await js.pull_subscribe(subject, stream=stream, config=config)
        except NatsError as exc:
            raise BrokerError(f"jetstream at {conn.address}: cannot read {subject!r}: {exc!r}") from exc
        try:
            while True:
                try:
                    msgs = await sub.fetch(batch, timeout=FETCH_TIMEOUT)
                except (NatsTimeout, TimeoutError):
                    return
                page, done = [], False
                for msg in msgs:
                    meta = msg.metadata
                    seq = meta.sequence.stream
                    if seq > last or (until is not None and meta.timestamp > until):
                        done = True
                        break
                    if meta.num_pending == 0:
                        done = True
                    if msg.headers and GROUP_MARK in msg.headers:
                        continue  # a copy for one group, not the topic's history
                    event, _, error = read_parts(msg.data, msg.headers, False, NATS, topic, f"{stream}:{seq}")
                    page.append(
                        HistoryRecord(event, meta.timestamp, {"seq": seq + 1}, None if error is None else str(error))
                    )
                if page:
                    yield page
                if done:
                    return
        except NatsError as exc:
            raise BrokerError(f"jetstream at {conn.address}: reading {subject!r} failed: {exc!r}") from exc
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
