"""Replay capabilities of the JetStream adapter (:mod:`mesh.brokers.capabilities`).

History: an ephemeral pull consumer (no acks, in memory, gone when idle) on the stream covering
the topic's subject, filtered on it, starting at the first message stored at or after ``since``
or at the stream sequence of a cursor ``{"seq": n}``, up to the last message when reading
started.

One group only: the event is published on the topic's subject with the header ``_mesh.group``
naming the group (and, as every replay, ``meshreplay`` in its ``Nats-Msg-Id``, so deduplication
does not drop it as the original). The members of other groups ack it without handing it to a
handler; the group's members handle it like any message. History reads skip these messages.
Stream subjects and consumer filters stay as they are, which works on every server version.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import datetime
from typing import TYPE_CHECKING

import orjson
from nats.errors import Error as NatsError
from nats.errors import TimeoutError as NatsTimeout
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from mesh.brokers.capabilities import GROUP_MARK, Cursor, HistoryRecord
from mesh.brokers.nats.common import read, safe_name, to_headers
from mesh.codecs.binary import encode
from mesh.codecs.bindings import NATS
from mesh.codecs.data import canonical
from mesh.errors import BrokerError, PublishError
from mesh.event import Event

if TYPE_CHECKING:
    from mesh.brokers.nats.jetstream import JetStreamBroker

__all__ = ["has_group", "publish_to_group", "read_history", "topic_exists"]

FETCH_TIMEOUT = 1.0
IDLE_CONSUMER = 30.0
"""Seconds after which the server removes a history reader that went away."""


async def _stream(broker: JetStreamBroker, subject: str) -> str | None:
    try:
        return str(await broker._context().find_stream_name_by_subject(subject))
    except NotFoundError:
        return None
    except NatsError as exc:
        raise BrokerError(f"jetstream at {broker.address}: no answer about {subject!r}: {exc!r}") from exc


async def topic_exists(broker: JetStreamBroker, topic: str) -> bool:
    """Whether a stream covers the topic's subject."""
    return await _stream(broker, broker.name_of(topic)) is not None


async def has_group(broker: JetStreamBroker, topic: str, group: str) -> bool:
    """Whether the group's durable consumer of the topic exists (named as ``subscribe`` names it)."""
    subject = broker.name_of(topic)
    stream = await _stream(broker, subject)
    if stream is None:
        return False
    js = broker._context()
    for durable in (safe_name(group), safe_name(f"{group}_{subject}")):
        try:
            info = await js.consumer_info(stream, durable)
        except NotFoundError:
            return False
        except NatsError as exc:
            raise BrokerError(f"jetstream at {broker.address}: cannot look up {durable!r}: {exc!r}") from exc
        if info.config.filter_subject in (subject, None, "", ">"):
            return True
    return False


async def publish_to_group(broker: JetStreamBroker, topic: str, group: str, event: Event) -> None:
    """Store the event on the topic's stream marked for ``group`` only (see the module docstring)."""
    subject = broker.name_of(topic)
    wire = encode(event, broker.wire)
    headers = to_headers(wire)
    headers[GROUP_MARK] = group
    if broker.settings.dedup:
        replay = event.extensions.get("meshreplay")
        msg_id = f"{event.source} {event.id} {group}"
        headers["Nats-Msg-Id"] = msg_id if replay is None else f"{msg_id} {canonical(replay)}"
    try:
        reply = await broker._client(PublishError).request(
            subject, wire.body, timeout=broker.settings.publish_timeout, headers=headers
        )
    except NatsError as exc:
        raise PublishError(f"jetstream at {broker.address} did not store the event on {topic!r}: {exc!r}") from exc
    if b'"error"' in reply.data:
        try:
            description = str(orjson.loads(reply.data)["error"].get("description"))
        except (orjson.JSONDecodeError, AttributeError, KeyError, TypeError):
            description = reply.data.decode(errors="replace")
        raise PublishError(f"jetstream at {broker.address} refused the event on {topic!r}: {description}")


async def read_history(
    broker: JetStreamBroker,
    topic: str,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    cursor: Cursor | None = None,
    batch: int = 500,
) -> AsyncIterator[list[HistoryRecord]]:
    """The stream's messages on the subject, in sequence order (see the module docstring)."""
    subject = broker.name_of(topic)
    stream = await _stream(broker, subject)
    if stream is None:
        return
    js = broker._context()
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
        raise BrokerError(f"jetstream at {broker.address}: cannot read {subject!r}: {exc!r}") from exc
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
                event, _, error = read(msg, NATS, topic, f"{stream}:{seq}")
                page.append(
                    HistoryRecord(event, meta.timestamp, {"seq": seq + 1}, None if error is None else str(error))
                )
            if page:
                yield page
            if done:
                return
    except NatsError as exc:
        raise BrokerError(f"jetstream at {broker.address}: reading {subject!r} failed: {exc!r}") from exc
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()
