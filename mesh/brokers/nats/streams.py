"""JetStream objects on the server: the stream covering a subject, a group's durable consumer, storing.

================  ==============================================================================
name              on the server
================  ==============================================================================
topic             the subject of the same name; its events are kept by the stream covering it,
                  else one named ``safe_name(subject)`` is created with the configured limits
                  (a stream an operator made, say ``ORDERS`` on ``orders.>``, is used as it is)
group             the durable consumer ``safe_name(group)`` filtered on the subject, or
                  ``safe_name(group_subject)`` when a shared stream has the first for another one
storing           a request to the subject; the stream's ack (or its refusal) is the answer
================  ==============================================================================
"""

from __future__ import annotations

import dataclasses

import orjson
from nats.aio.client import Client
from nats.errors import Error as NatsError
from nats.errors import NoRespondersError
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import NotFoundError

from mesh.brokers.nats.connection import NatsConnection
from mesh.brokers.nats.fastclient import FastClient
from mesh.brokers.nats.messages import safe_name
from mesh.brokers.nats.options import JetStreamOptions
from mesh.codecs.data import canonical
from mesh.errors import BrokerError
from mesh.event import Event

__all__ = ["Streams", "msg_id", "refusal"]


def msg_id(event: Event, group: str | None = None) -> str:
    """The ``Nats-Msg-Id`` of an event: ``<source> <id>`` (+ the group, + the replay's name)."""
    value = f"{event.source} {event.id}" if group is None else f"{event.source} {event.id} {group}"
    replay = event.extensions.get("meshreplay")
    return value if replay is None else f"{value} {canonical(replay)}"


def refusal(data: bytes) -> str | None:
    """Why the stream refused a message (its ack holds ``"error"``), or ``None`` when it stored it."""
    if b'"error"' not in data:
        return None
    try:
        return str(orjson.loads(data)["error"].get("description", data.decode(errors="replace")))
    except (orjson.JSONDecodeError, AttributeError, KeyError, TypeError):
        return data.decode(errors="replace")


class Streams:
    """The streams and durable consumers of one JetStream connection (see the module docstring)."""

    api_prefix = "$JS.API"
    """Subject prefix of the JetStream API (pull requests go to ``<prefix>.CONSUMER.MSG.NEXT...``)."""

    def __init__(self, conn: NatsConnection, settings: JetStreamOptions) -> None:
        self.conn = conn
        self.settings = settings
        self._known: dict[str, str] = {}  # subject -> stream that covers it

    def forget(self, subject: str) -> None:
        """Drop what is known about the subject's stream (it may have gone)."""
        self._known.pop(subject, None)

    async def find(self, subject: str) -> str | None:
        """The stream covering the subject, or ``None``; asks the server every time."""
        try:
            return str(await self.conn.jetstream().find_stream_name_by_subject(subject))
        except NotFoundError:
            return None
        except NatsError as exc:
            raise BrokerError(f"jetstream at {self.conn.address}: no answer about {subject!r}: {exc!r}") from exc

    async def stream_for(self, subject: str, fresh: bool = False) -> str:
        """The stream covering the subject, created when there is none."""
        if not fresh:
            known = self._known.get(subject)
            if known is not None:
                return known
        js = self.conn.jetstream()
        try:
            try:
                name = await js.find_stream_name_by_subject(subject)
            except NotFoundError:
                name = await self._create_stream(js, subject)
        except NatsError as exc:
            raise BrokerError(f"jetstream at {self.conn.address}: no stream for {subject!r}: {exc!r}") from exc
        self._known[subject] = name
        return name

    async def _create_stream(self, js: JetStreamContext, subject: str) -> str:
        s = self.settings
        name = safe_name(subject)
        config = StreamConfig(
            name=name,
            subjects=[subject],
            storage=StorageType(s.storage),
            retention=RetentionPolicy(s.retention),
            max_age=s.max_age,
            max_msgs=s.max_msgs,
            max_bytes=s.max_bytes,
            num_replicas=s.replicas,
            duplicate_window=min(s.duplicate_window, s.max_age) if s.max_age else s.duplicate_window,
        )
        try:
            await js.add_stream(config)
        except NatsError:
            # Taken by a stream with other subjects (a topic with the same safe name): share it.
            info = await js.stream_info(name)
            subjects = list(info.config.subjects or [])
            if subject not in subjects:
                await js.update_stream(dataclasses.replace(info.config, subjects=[*subjects, subject]))
        return name

    async def consumer_for(self, stream: str, subject: str, group: str, name: str | None = None) -> str:
        """The group's durable consumer on the stream, created when there is none."""
        js = self.conn.jetstream()
        candidates = [name] if name else [safe_name(group), safe_name(f"{group}_{subject}")]
        for durable in candidates:
            try:
                info = await js.consumer_info(stream, durable)
            except NotFoundError:
                break
            if info.config.filter_subject in (subject, None, "", ">"):
                return durable
        else:
            raise BrokerError(f"jetstream: stream {stream!r} has consumers {candidates} for other subjects")
        s = self.settings
        config = ConsumerConfig(
            durable_name=durable,
            deliver_policy=DeliverPolicy.ALL if s.initial_offset == "earliest" else DeliverPolicy.NEW,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=s.ack_wait,
            max_deliver=s.max_deliver,
            max_ack_pending=s.max_ack_pending,
            filter_subject=subject,
        )
        await js.add_consumer(stream, config)
        return durable

    async def has_consumer(self, subject: str, group: str) -> bool:
        """Whether the group's durable consumer of the subject exists (named as :meth:`consumer_for` names it)."""
        stream = await self.find(subject)
        if stream is None:
            return False
        js = self.conn.jetstream()
        for durable in (safe_name(group), safe_name(f"{group}_{subject}")):
            try:
                info = await js.consumer_info(stream, durable)
            except NotFoundError:
                return False
            except NatsError as exc:
                raise BrokerError(f"jetstream at {self.conn.address}: cannot look up {durable!r}: {exc!r}") from exc
            if info.config.filter_subject in (subject, None, "", ">"):
                return True
        return False

    async def store(self, nc: Client, subject: str, body: bytes, headers: dict[str, str]) -> bytes:
        """Publish to the stream and return its ack (the fast request where the client is ours).

        Raises nats-py's ``NoRespondersError`` when no stream covers the subject.
        """
        timeout = self.settings.publish_timeout
        if isinstance(nc, FastClient):
            data, status = await nc.ask(subject, body, headers, timeout)
            if not data and status is not None and status.get("Status") == "503":
                raise NoRespondersError
            return data
        reply = await nc.request(subject, body, timeout=timeout, headers=headers)
        return reply.data
