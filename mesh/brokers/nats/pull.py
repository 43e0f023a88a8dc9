"""The consumer of the JetStream adapter: every member of a group pulls from the group's durable consumer.

==================  ==============================================================================
moment              behaviour
==================  ==============================================================================
pulling             up to ``batch`` messages asked for ahead of the handler; a new pull request
                    once what is asked for and queued falls to half of it
``ack()``           ``+ACK`` on the message's reply subject
``nack()``          ``-NAK`` (now); ``nack(delay)`` is ``-NAK {"delay": ns}``, done by the server
``attempt``         the server's delivery count
a replay            marked ``_mesh.group`` for another group: acked unseen
consumer gone       made again (stream and consumer) as ``subscribe`` would, then pulling goes on
reconnected         pull requests do not survive it: asked again
``stop()``          stops pulling, lets running handlers finish, then naks what it still holds,
                    so other members get it at once
==================  ==============================================================================
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from nats.aio.msg import Msg
from nats.aio.subscription import Subscription as NatsSubscription
from nats.errors import Error as NatsError

from mesh.brokers.base import Delivery, DeliveryHandler, HandlerRunner, Mailbox, Subscription
from mesh.brokers.capabilities import GROUP_MARK
from mesh.brokers.nats.connection import NatsConnection
from mesh.brokers.nats.messages import read_parts
from mesh.brokers.nats.streams import Streams
from mesh.codecs.binary import WireMessage
from mesh.codecs.bindings import NATS
from mesh.errors import BrokerError, DecodeError
from mesh.event import Event

__all__ = ["JetStreamDelivery", "JetStreamSubscription"]

log = logging.getLogger("mesh.broker.jetstream")

_ACK = b"+ACK"
_NAK = b"-NAK"


class JetStreamDelivery(Delivery):
    """A JetStream delivery: ack and nack go to the server on the message's reply subject."""

    __slots__ = ("ack_subject", "sub")

    def __init__(
        self,
        sub: JetStreamSubscription,
        reply: str,
        event: Event | None,
        raw: WireMessage | None,
        error: DecodeError | None,
        attempt: int,
    ) -> None:
        super().__init__(sub.topic, sub.group, event, raw, error, attempt)
        self.sub = sub
        self.ack_subject = reply
        """The message's reply subject: acks and naks go there."""

    async def _ack(self) -> None:
        self.sub.unacked.discard(self)
        await self.sub.reply(self.ack_subject, _ACK)

    async def _requeue(self) -> None:
        self.sub.unacked.discard(self)
        await self.sub.reply(self.ack_subject, _NAK)

    async def _nack(self, delay: float | None) -> None:  # the server delays it (native_delay)
        self.sub.unacked.discard(self)
        if delay and delay > 0:
            await self.sub.reply(self.ack_subject, b'-NAK {"delay": %d}' % int(delay * 1_000_000_000))
        else:
            await self.sub.reply(self.ack_subject, _NAK)


class JetStreamSubscription(Subscription):
    """One member of a group: keeps up to ``batch`` messages asked for, hands them to the runner.

    Credits: ``_credit`` counts messages asked for and not yet received. A pull request asks for
    what is missing to ``batch`` once the credit and the queue fall to half of it; the server
    answers an expired request with ``408`` and the count it did not fill, which is given back.
    """

    def __init__(
        self,
        conn: NatsConnection,
        streams: Streams,
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
        self.subject = conn.name_of(topic)
        self.unacked: set[JetStreamDelivery] = set()
        """Deliveries handed to the handler and not yet ended."""
        self._conn = conn
        self._streams = streams
        self._nc = conn.client()
        settings = streams.settings
        self._runner = HandlerRunner(handler, concurrency, topic)
        self._batch = max(settings.batch, concurrency)
        self._low = self._batch // 2
        self._expires = settings.pull_expires
        self._expires_ns = int(settings.pull_expires * 1_000_000_000)
        self._next = f"{streams.api_prefix}.CONSUMER.MSG.NEXT.{stream}.{consumer}"
        self._inbox = ""
        self._credit = 0
        self._last_pull = 0.0
        self._pull_after = 0.0
        self._repair = False
        self._queue: Mailbox[Msg | None] = Mailbox()
        self._running = True
        self._stopped = False
        self._nsub: NatsSubscription | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Subscribe the pull inbox, ask for the first batch, start the loop."""
        nc = self._nc
        self._inbox = nc.new_inbox()
        self._nsub = await nc.subscribe(self._inbox, cb=self._receive)
        await self._refill()
        await self._conn.barrier()
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
        queue, unacked, submit = self._queue, self.unacked, self._runner.submit
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
            event, raw, error = read_parts(msg.data, msg.headers, False, NATS, topic, f"{stream}:{seq}")
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
            streams = self._streams
            stream = await streams.stream_for(self.subject, fresh=True)
            if stream != self.stream:
                return False
            await streams.consumer_for(stream, self.subject, self.group, self.consumer)
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
        """Stop pulling, finish or cancel handlers, give back what is held."""
        if self._stopped:
            return
        self._stopped = True
        self._running = False
        nsub, self._nsub = self._nsub, None
        if nsub is not None:  # UNSUB (the server drops our waiting pulls), then queue what had arrived
            await self._conn.unsubscribe(nsub)
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
        held += [d.ack_subject for d in self.unacked if not d.done]
        self.unacked.clear()
        if self._nc.is_closed:
            return  # the server redelivers them after ack_wait
        for reply in held:  # give back at once rather than after ack_wait
            await self.reply(reply, _NAK)


def _drain_queue(queue: Mailbox[Msg | None]) -> list[Msg]:
    out = []
    while not queue.empty():
        msg = queue.get_nowait()
        if msg is not None:
            out.append(msg)
    return out
