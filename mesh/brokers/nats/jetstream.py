"""NATS JetStream (``type: jetstream``): a stream per topic, a durable pull consumer per group.

Names on the server (``safe_name``: ``.``, ``*``, ``>``, path separators and whitespace become
``_``, because stream and consumer names cannot hold them):

- topic ``orders.created`` is the subject ``orders.created`` (namespace prefix applied); its
  events are kept by the stream that covers that subject. When no stream does, the mesh creates
  ``orders_created`` covering exactly that subject, with the ``storage``, ``retention``,
  ``max_age``, ``max_msgs``, ``max_bytes``, ``replicas`` and ``duplicate_window`` options. A
  stream an operator made (say ``ORDERS`` on ``orders.>``) is used as it is. Two topics that map
  to one name (``a.b`` and ``a_b``) share the stream; consumers filter by subject.
- group ``billing`` is the durable consumer ``billing`` of that stream (filtered on the subject;
  explicit ack, ``ack_wait``, ``max_deliver``, ``max_ack_pending``), starting at the first
  retained message (``initial_offset: earliest``) or at new ones (``latest``). If the name is
  taken in a shared stream by a consumer of another subject, it is ``billing_<subject>``.

Delivery: every member of a group pulls from the group's consumer in batches, so members
compete and groups fan out; the server redelivers what is not acked within ``ack_wait``
(a consumer that died), ``nack()`` is ``-NAK`` (now) and ``nack(delay)`` is ``-NAK`` with a
delay, both done by the server; ``attempt`` is the server's delivery count. ``stop()`` stops
pulling, lets running handlers finish, then naks whatever it still holds, so other members get it
at once. ``publish`` returns when the stream stored the event; with ``dedup`` it carries
``Nats-Msg-Id: <source> <id>`` and the server drops a copy sent again within
``duplicate_window``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Callable
from types import ModuleType
from typing import Any, ClassVar

import orjson
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription as NatsSubscription
from nats.errors import Error as NatsError
from nats.errors import NoRespondersError
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import NotFoundError

from mesh.brokers.base import Broker, DeliveryHandler, Features, HandlerRunner, Mailbox, Subscription
from mesh.brokers.base import Delivery as _Delivery
from mesh.brokers.capabilities import GROUP_MARK, DelegatedHistory
from mesh.brokers.nats import history as _replay
from mesh.brokers.nats.common import (
    FastClient,
    barrier,
    display_address,
    open_connection,
    read,
    safe_name,
    servers_of,
    shut,
    to_headers,
    validate_options,
)
from mesh.brokers.nats.ephemeral import CoreNatsEphemeral, NatsEphemeral
from mesh.brokers.nats.options import JetStreamOptions
from mesh.codecs.binary import WireMessage, encode
from mesh.codecs.bindings import NATS
from mesh.codecs.data import canonical
from mesh.errors import BrokerConnectionError, BrokerError, DecodeError, PublishError
from mesh.event import Event

__all__ = ["JetStreamBroker", "JetStreamDelivery"]

log = logging.getLogger("mesh.broker.jetstream")

_ACK = b"+ACK"
_NAK = b"-NAK"


class JetStreamDelivery(_Delivery):
    """A JetStream delivery: ack and nack go to the server on the message's reply subject."""

    __slots__ = ("_reply", "_sub")

    def __init__(
        self,
        sub: _JetStreamSubscription,
        reply: str,
        event: Event | None,
        raw: WireMessage | None,
        error: DecodeError | None,
        attempt: int,
    ) -> None:
        super().__init__(sub.topic, sub.group, event, raw, error, attempt)
        self._sub = sub
        self._reply = reply

    async def _ack(self) -> None:
        self._sub._unacked.discard(self)
        await self._sub.reply(self._reply, _ACK)

    async def _nack(self, delay: float | None) -> None:
        self._sub._unacked.discard(self)
        if delay and delay > 0:
            await self._sub.reply(self._reply, b'-NAK {"delay": %d}' % int(delay * 1_000_000_000))
        else:
            await self._sub.reply(self._reply, _NAK)


class _JetStreamSubscription(Subscription):
    """One member of a group: keeps up to ``batch`` messages asked for, hands them to the runner.

    Credits: ``_credit`` counts messages asked for and not yet received. A pull request asks for
    what is missing to ``batch`` once the credit and the queue fall to half of it; the server
    answers an expired request with ``408`` and the count it did not fill, which is given back.
    """

    def __init__(
        self,
        broker: JetStreamBroker,
        topic: str,
        group: str,
        handler: DeliveryHandler,
        concurrency: int,
        stream: str,
        consumer: str,
    ) -> None:
        self.topic = topic
        self.group = group
        self.stream = stream
        self.consumer = consumer
        self.subject = broker.name_of(topic)
        self._broker = broker
        self._nc = broker._client()
        settings = broker.settings
        self._runner = HandlerRunner(handler, concurrency, topic)
        self._batch = max(settings.batch, concurrency)
        self._low = self._batch // 2
        self._expires = settings.pull_expires
        self._expires_ns = int(settings.pull_expires * 1_000_000_000)
        self._next = f"{broker.api_prefix}.CONSUMER.MSG.NEXT.{stream}.{consumer}"
        self._inbox = ""
        self._credit = 0
        self._last_pull = 0.0
        self._pull_after = 0.0
        self._repair = False
        self._queue: Mailbox[Msg | None] = Mailbox()
        self._unacked: set[JetStreamDelivery] = set()
        self._running = True
        self._stopped = False
        self._nsub: NatsSubscription | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        nc = self._nc
        self._inbox = nc.new_inbox()
        self._nsub = await nc.subscribe(self._inbox, cb=self._receive)
        await self._refill()
        await barrier(nc, self._broker.settings.connect_timeout)
        self._task = asyncio.get_running_loop().create_task(
            self._loop(), name=f"mesh-jetstream:{self.stream}:{self.consumer}"
        )

    # -- receiving -----------------------------------------------------------------------------

    async def _receive(self, msg: Msg) -> None:
        """nats-py's callback for the pull inbox: queue messages, account for status replies."""
        if msg.reply:  # a stream message ($JS.ACK.<stream>.<consumer>.<delivered>.<seq>...)
            self._credit -= 1
            self._queue.put_nowait(msg)
            return
        headers = msg.headers or {}
        status = headers.get("Status")
        if status == "100":  # idle heartbeat
            return
        pending = headers.get("Nats-Pending-Messages")
        if pending is not None and pending.isdigit():
            self._credit = max(0, self._credit - int(pending))
        else:
            self._credit = 0
        if status in ("409", "503"):
            # 409: the server refused the request (too many waiting, consumer deleted, ...);
            # 503: nobody serves the consumer (deleted, or JetStream restarting). Back off.
            description = headers.get("Description", "")
            log.debug("jetstream %s/%s: pull answered %s %s", self.stream, self.consumer, status, description)
            self._pull_after = asyncio.get_running_loop().time() + 1.0
            if status == "503" or "deleted" in description.lower():
                self._repair = True
        self._queue.put_nowait(None)  # wake the loop to ask again

    async def _loop(self) -> None:
        queue, unacked, submit = self._queue, self._unacked, self._runner.submit
        topic, stream = self.topic, self.stream
        while self._running:
            if queue.empty():
                await self._refill()
                try:
                    async with asyncio.timeout(self._expires):
                        msg = await queue.get()
                except TimeoutError:
                    continue
            else:
                msg = queue.get_nowait()
            if msg is None:
                continue
            reply = msg.reply
            marked = msg.headers.get(GROUP_MARK) if msg.headers else None
            if marked is not None and marked != self.group:  # a replay for another group: ack it unseen
                await self.reply(reply, _ACK)
                continue
            tokens = reply.split(".")
            try:
                if len(tokens) == 9:  # $JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>
                    attempt, seq = int(tokens[4]), tokens[5]
                else:  # $JS.ACK.<domain>.<account hash>.<stream>.<consumer>.<delivered>.<sseq>...
                    attempt, seq = int(tokens[6]), tokens[7]
            except (IndexError, ValueError):  # not a JetStream reply subject: deliver it anyway
                attempt, seq = 1, reply
            event, raw, error = read(msg, NATS, topic, f"{stream}:{seq}")
            delivery = JetStreamDelivery(self, reply, event, raw, error, attempt)
            unacked.add(delivery)
            try:
                await submit(delivery)
            except Exception:  # the runner guards handlers; this keeps the loop alive regardless
                log.exception("jetstream %s/%s: delivery failed", stream, self.consumer)
            if self._credit + queue.qsize() <= self._low:
                await self._refill()

    async def _refill(self) -> None:
        """Ask the server for what is missing to ``batch`` (one pull request)."""
        nc = self._nc
        if not self._running or not nc.is_connected:
            return
        now = asyncio.get_running_loop().time()
        if now < self._pull_after:
            return
        if self._repair and not await self._rebuild():
            self._pull_after = now + 1.0
            return
        if now > self._last_pull + self._expires + 1.0:
            self._credit = 0  # every request sent so far has expired, answered or not
        have = self._credit + self._queue.qsize()
        if have > self._low:
            return
        want = self._batch - have
        self._credit += want
        self._last_pull = now
        try:
            await nc.publish(self._next, b'{"batch":%d,"expires":%d}' % (want, self._expires_ns), reply=self._inbox)
        except NatsError as exc:
            self._credit -= want
            log.debug("jetstream %s/%s: pull failed: %r", self.stream, self.consumer, exc)

    async def _rebuild(self) -> bool:
        """The consumer (or its stream) went away: make them again, as subscribe would."""
        try:
            broker = self._broker
            stream = await broker._stream_for(self.subject, fresh=True)
            if stream != self.stream:
                return False
            await broker._consumer_for(stream, self.subject, self.group, self.consumer)
        except (NatsError, BrokerError) as exc:
            log.warning("jetstream %s/%s: cannot restore the consumer: %s", self.stream, self.consumer, exc)
            return False
        self._repair = False
        self._credit = 0
        return True

    def reconnected(self) -> None:
        """Pull requests do not survive a reconnect: ask again."""
        self._credit = 0
        self._pull_after = 0.0
        self._queue.put_nowait(None)

    async def reply(self, subject: str, payload: bytes) -> None:
        """Send an ack or nak; a lost one only means the server redelivers after ``ack_wait``."""
        try:
            await self._nc.publish(subject, payload)
        except NatsError as exc:
            log.warning(
                "jetstream %s/%s: ack not sent (%r); redelivered after ack_wait",
                self.stream,
                self.consumer,
                exc,
            )

    # -- stopping ------------------------------------------------------------------------------

    async def stop(self, drain: bool = True) -> None:
        if self._stopped:
            return
        self._stopped = True
        self._running = False
        nsub, self._nsub = self._nsub, None
        if nsub is not None:
            try:
                # UNSUB (the server drops our waiting pulls), then queue what had arrived.
                await asyncio.wait_for(nsub.drain(), self._broker.settings.connect_timeout)  # type: ignore[no-untyped-call]
            except (TimeoutError, NatsError):
                with contextlib.suppress(NatsError):
                    await nsub.unsubscribe()
        self._queue.put_nowait(None)
        task = self._task
        if task is not None:
            if not drain:
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if drain:
            await self._runner.drain()
        held = [msg.reply for msg in _drain_queue(self._queue)]
        held += [d._reply for d in self._unacked if not d._done]
        self._unacked.clear()
        if self._nc.is_closed:
            return  # the server redelivers them after ack_wait
        for reply in held:  # give back at once rather than after ack_wait
            await self.reply(reply, _NAK)


async def _stored(nc: Client, subject: str, body: bytes, headers: dict[str, str], timeout: float) -> bytes:
    """Publish to the stream and return its ack (the fast request of our client where it is ours)."""
    if isinstance(nc, FastClient):
        data, status = await nc.ask(subject, body, headers, timeout)
        if not data and status is not None and status.get("Status") == "503":
            raise NoRespondersError
        return data
    reply = await nc.request(subject, body, timeout=timeout, headers=headers)
    return reply.data


def _drain_queue(queue: Mailbox[Msg | None]) -> list[Msg]:
    out = []
    while not queue.empty():
        msg = queue.get_nowait()
        if msg is not None:
            out.append(msg)
    return out


class JetStreamBroker(CoreNatsEphemeral, DelegatedHistory, Broker):
    """JetStream: persistent streams, durable pull consumers; see the module docstring."""

    _replay: ClassVar[ModuleType] = _replay  # the replay capabilities live in mesh.brokers.nats.history

    type: ClassVar[str] = "jetstream"
    binding = NATS
    options_model = JetStreamOptions
    features: ClassVar[Features] = Features(
        name="jetstream",
        persistent=True,
        consumer_groups=True,
        order_by_key=False,  # True on instances with max_ack_pending: 1
        history=True,
        history_by_time=True,
        native_delay=True,
        native_request_reply=True,  # no-responders, for invocation (see _nats_ephemeral)
        headers=True,
        redelivery_count=True,
        group_delivery=True,
        ephemeral=True,
    )
    api_prefix: ClassVar[str] = "$JS.API"

    def __init__(self, url: str | None = None, **kwargs: Any) -> None:
        super().__init__(url, **kwargs)
        self.settings = validate_options(JetStreamOptions, self.options)
        if self.settings.max_ack_pending == 1:
            # One unacked message per group: the group handles the stream in order.
            self.features = dataclasses.replace(type(self).features, order_by_key=True)  # type: ignore[misc]
        self.address = display_address(servers_of(url))
        self._ephemeral = NatsEphemeral(self, self.wire)
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._streams: dict[str, str] = {}  # subject -> stream that covers it
        self._subs: list[_JetStreamSubscription] = []

    # -- connection ----------------------------------------------------------------------------

    async def connect(self) -> None:
        if self._nc is not None and not self._nc.is_closed:
            return
        nc = await open_connection(self.type, self.url, self.settings, self.client_id, self._reconnected)
        js = nc.jetstream(timeout=self.settings.publish_timeout)
        try:
            await js.account_info()
        except Exception as exc:
            await shut(nc)
            reason = "JetStream is not enabled for this account or server (start nats-server with -js)"
            if not isinstance(exc, NoRespondersError):
                reason = f"{reason}: {exc!r}"
            raise BrokerConnectionError(self.type, self.address, reason) from exc
        self._nc, self._js = nc, js

    async def _reconnected(self) -> None:
        for sub in self._subs:
            sub.reconnected()

    def _client(self, error: Callable[[str], BrokerError] = BrokerError) -> Client:
        nc = self._nc
        if nc is None or nc.is_closed:
            raise error(f"the jetstream broker at {self.address} is not connected: call connect() first")
        return nc

    def _context(self) -> JetStreamContext:
        self._client()
        assert self._js is not None
        return self._js

    async def close(self) -> None:
        await self._ephemeral.close()
        subs, self._subs = self._subs, []
        for sub in subs:
            await sub.stop()
        nc, self._nc, self._js = self._nc, None, None
        await shut(nc)

    # -- topology ------------------------------------------------------------------------------

    async def ensure_topic(self, topic: str) -> None:
        """Make sure a stream keeps the topic's subject (creating ``safe_name(subject)``)."""
        await self._stream_for(self.name_of(topic))

    async def _stream_for(self, subject: str, fresh: bool = False) -> str:
        if not fresh:
            known = self._streams.get(subject)
            if known is not None:
                return known
        js = self._context()
        try:
            try:
                name = await js.find_stream_name_by_subject(subject)
            except NotFoundError:
                name = await self._create_stream(js, subject)
        except NatsError as exc:
            raise BrokerError(f"jetstream at {self.address}: no stream for {subject!r}: {exc!r}") from exc
        self._streams[subject] = name
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

    async def _consumer_for(self, stream: str, subject: str, group: str, name: str | None = None) -> str:
        js = self._context()
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

    # -- publish and subscribe -----------------------------------------------------------------

    async def publish(self, topic: str, event: Event) -> None:
        subject = self.name_of(topic)
        wire = encode(event, self.wire)
        headers = to_headers(wire)
        if self.settings.dedup:
            replay = event.extensions.get("meshreplay")
            msg_id = f"{event.source} {event.id}"
            headers["Nats-Msg-Id"] = msg_id if replay is None else f"{msg_id} {canonical(replay)}"
        nc = self._client(PublishError)
        timeout = self.settings.publish_timeout
        try:
            try:
                data = await _stored(nc, subject, wire.body, headers, timeout)
            except NoRespondersError:
                # No stream covers the subject (yet, or any more): make one and try again once.
                self._streams.pop(subject, None)
                await self._stream_for(subject, fresh=True)
                data = await _stored(nc, subject, wire.body, headers, timeout)
        except (NatsError, BrokerError) as exc:
            raise PublishError(f"jetstream at {self.address} did not store the event on {topic!r}: {exc!r}") from exc
        if b'"error"' in data:
            try:
                description = orjson.loads(data)["error"].get("description", data.decode(errors="replace"))
            except (orjson.JSONDecodeError, AttributeError, KeyError, TypeError):
                description = data.decode(errors="replace")
            raise PublishError(f"jetstream at {self.address} refused the event on {topic!r}: {description}")

    async def subscribe(
        self, topic: str, group: str, handler: DeliveryHandler, *, concurrency: int = 1
    ) -> Subscription:
        subject = self.name_of(topic)
        try:
            stream = await self._stream_for(subject)
            consumer = await self._consumer_for(stream, subject, group)
            sub = _JetStreamSubscription(self, topic, group, handler, concurrency, stream, consumer)
            await sub.start()
        except NatsError as exc:
            raise BrokerError(f"jetstream at {self.address}: cannot subscribe to {topic!r}: {exc!r}") from exc
        self._subs.append(sub)
        return sub
