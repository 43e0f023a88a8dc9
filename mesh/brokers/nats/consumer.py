"""The consumer of the core NATS adapter: a queue subscription per group member, in-process redelivery.

============================  ==================================================================
moment                        behaviour
============================  ==================================================================
a message arrives             read at once (straight off the socket where the client is a
                              :class:`~mesh.brokers.nats.fastclient.FastClient`) and queued in a
                              :class:`~mesh.brokers.nats.messages.Backlog` capped by
                              ``pending_limit`` and ``pending_bytes_limit``: beyond, the newest
                              is dropped (a slow consumer, as NATS itself does)
``ack()``                     forgets it (the server keeps nothing)
``nack()`` / ``nack(delay)``  hands it to the subscription again, now or after a timer the
                              subscription owns (so ``stop()`` can pass it on), ``attempt + 1``
``stop()``                    unsubscribes, then with ``drain`` handles what had arrived; unacked
                              deliveries and delayed nacks not yet due go to another member of
                              the group in this process, or wait for the next one made here
a replay to the group         arrives on the group's side subject (:mod:`~mesh.brokers.nats.groups`)
                              and is confirmed once queued; a probe is answered and dropped
============================  ==================================================================
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from typing import ClassVar

from nats.aio.msg import Msg
from nats.aio.subscription import Subscription as NatsSubscription
from nats.errors import Error as NatsError

from mesh.brokers.base import Delivery, DeliveryHandler, HandlerRunner, Mailbox, Subscription
from mesh.brokers.nats.connection import NatsConnection
from mesh.brokers.nats.groups import PROBE_HEADER, side_subject
from mesh.brokers.nats.messages import Backlog, Read, queue_group, read_parts
from mesh.codecs.binary import WireMessage
from mesh.codecs.bindings import NATS
from mesh.errors import DecodeError
from mesh.event import Event

__all__ = ["NatsDelivery", "NatsGroupSubscription"]

log = logging.getLogger("mesh.broker.nats")

# (event, raw, error, attempt, the delivery it repeats if that may still be acked)
_Record = tuple[Event | None, WireMessage | None, DecodeError | None, int, "NatsDelivery | None"]
_Key = tuple[str, str, str]  # (servers, subject, queue group)


class NatsDelivery(Delivery):
    """A core NATS delivery: ack forgets it, nack hands it to the subscription again."""

    __slots__ = ("origin", "sub")
    taskless_ack = True

    def __init__(
        self,
        sub: NatsGroupSubscription,
        event: Event | None,
        raw: WireMessage | None,
        error: DecodeError | None,
        attempt: int,
        origin: NatsDelivery | None = None,
    ) -> None:
        super().__init__(sub.topic, sub.group, event, raw, error, attempt)
        self.sub = sub
        self.origin = origin
        """The delivery this one repeats while that one may still be acked (a hand-over)."""

    async def _ack(self) -> None:
        self.sub.unacked.discard(self)

    async def _requeue(self) -> None:
        self.sub.again(self, None)

    async def _nack(self, delay: float | None) -> None:
        # Not the base's in-process wait: core NATS keeps nothing, so the subscription owns the
        # timer and hands a delayed nack to another member at stop().
        self.sub.again(self, delay)

    def record(self, attempt: int, origin: NatsDelivery | None = None) -> _Record:
        """What is handed to another subscription to deliver again."""
        return (self.event, self.raw, self.error, attempt, origin)


class _Holding:
    """Live subscriptions and given-back deliveries per (servers, subject, group) in this process."""

    live: ClassVar[dict[_Key, list[NatsGroupSubscription]]] = {}
    parked: ClassVar[dict[_Key, list[_Record]]] = {}

    @classmethod
    def join(cls, sub: NatsGroupSubscription) -> list[_Record]:
        cls.live.setdefault(sub.key, []).append(sub)
        return cls.parked.pop(sub.key, [])

    @classmethod
    def leave(cls, sub: NatsGroupSubscription) -> None:
        members = cls.live.get(sub.key)
        if members and sub in members:
            members.remove(sub)
            if not members:
                del cls.live[sub.key]

    @classmethod
    def give(cls, key: _Key, records: list[_Record]) -> None:
        if not records:
            return
        members = cls.live.get(key)
        if members:
            members[0].take(records)
        else:
            cls.parked.setdefault(key, []).extend(records)


class NatsGroupSubscription(Subscription):
    """One member of a group: a queue subscription, plus the group's side subject for replays."""

    def __init__(
        self, conn: NatsConnection, topic: str, group: str, handler: DeliveryHandler, concurrency: int
    ) -> None:
        self.topic = topic
        self.group = group
        self.subject = conn.name_of(topic)
        self.queue = queue_group(group)
        self.key: _Key = (conn.address, self.subject, self.queue)
        self.unacked: set[NatsDelivery] = set()
        """Deliveries handed to the handler and not yet ended."""
        self._conn = conn
        self._runner = HandlerRunner(handler, concurrency, topic)
        self._queue: Mailbox[Msg | Read | None] = Mailbox()
        settings = conn.settings
        self._backlog = Backlog(f"{self.subject}/{self.queue}", settings.pending_limit, settings.pending_bytes_limit)
        self._again: deque[NatsDelivery] = deque()
        self._timers: dict[NatsDelivery, asyncio.TimerHandle] = {}
        self._running = True
        self._stopped = False
        self._draining = True
        self._nsub: NatsSubscription | None = None
        self._side: NatsSubscription | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def buffered_bytes(self) -> int:
        """Payload bytes received and not yet handed to the handler."""
        return self._backlog.bytes

    async def start(self) -> None:
        """Subscribe (queue group and side subject), take what was handed back, start the loop."""
        conn = self._conn
        nc = conn.client()
        self._nsub = await nc.subscribe(self.subject, queue=self.queue, cb=self._receive)
        fast = conn.fast()
        if fast is not None:
            fast.deliver_directly(self._nsub, self._arrived)
        side = side_subject(conn, self.topic, self.queue)  # replays for this group only
        self._side = await nc.subscribe(side, queue=self.queue, cb=self._receive_side)
        await conn.barrier()  # the server has it
        self.take(_Holding.join(self))
        self._task = asyncio.get_running_loop().create_task(self._loop(), name=f"mesh-nats:{self.subject}:{self.queue}")

    async def _receive(self, msg: Msg) -> None:
        """nats-py's callback: queue the message for the loop (never blocks the client)."""
        queue = self._queue
        if self._backlog.room(queue.qsize(), len(msg.data)):
            queue.put_nowait(msg)

    def _arrived(self, subject: bytes, data: bytes, headers: dict[str, str] | None, checked: bool) -> None:
        """The client's direct delivery: read the message and queue it for the loop."""
        queue = self._queue
        if self._backlog.room(queue.qsize(), len(data)):
            queue.put_nowait(read_parts(data, headers, checked, NATS, self.topic))

    async def _loop(self) -> None:
        queue, again, unacked, submit = self._queue, self._again, self.unacked, self._runner.submit
        topic, backlog = self.topic, self._backlog
        while True:
            if again:
                delivery = again.popleft()
                origin = delivery.origin
                if origin is not None and origin.done:
                    continue  # acked after it was given back
            else:
                if not self._running and (not self._draining or queue.empty()):
                    return
                item = await queue.get()
                if item is None:  # a wake-up
                    continue
                if isinstance(item, tuple):
                    event, raw, error = item
                else:
                    event, raw, error = read_parts(item.data, item.headers, False, NATS, topic)
                backlog.bytes -= len(raw.body)
                delivery = NatsDelivery(self, event, raw, error, 1)
            unacked.add(delivery)
            try:
                await submit(delivery)
            except Exception:  # the runner guards handlers; this keeps the loop alive regardless
                log.exception("nats %s/%s: delivery failed", self.subject, self.queue)

    def take(self, records: list[_Record]) -> None:
        """Deliver given-back records again through this subscription."""
        for event, raw, error, attempt, origin in records:
            self._again.append(NatsDelivery(self, event, raw, error, attempt, origin))
        if records:
            self._queue.put_nowait(None)

    def again(self, delivery: NatsDelivery, delay: float | None) -> None:
        """A nack: hand the delivery back, now or after ``delay`` seconds, with attempt + 1."""
        self.unacked.discard(delivery)
        if not self._running:
            _Holding.give(self.key, [delivery.record(delivery.attempt + 1)])
            return
        repeat = NatsDelivery(self, delivery.event, delivery.raw, delivery.error, delivery.attempt + 1)
        if delay and delay > 0:
            self._timers[repeat] = asyncio.get_running_loop().call_later(delay, self._due, repeat)
        else:
            self._again.append(repeat)
            self._queue.put_nowait(None)

    def _due(self, delivery: NatsDelivery) -> None:
        self._timers.pop(delivery, None)
        if self._running:
            self._again.append(delivery)
            self._queue.put_nowait(None)
        else:
            _Holding.give(self.key, [delivery.record(delivery.attempt)])

    async def stop(self, drain: bool = True) -> None:
        if self._stopped:
            return
        self._stopped = True
        self._running = False
        _Holding.leave(self)
        await self._unsubscribe()
        self._draining = drain
        self._queue.put_nowait(None)
        task = self._task
        if task is not None:
            if not drain:
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if drain:
            await self._runner.drain()
        records: list[_Record] = []
        for delivery, timer in self._timers.items():  # delayed nacks become immediate
            timer.cancel()
            records.append(delivery.record(delivery.attempt))
        self._timers.clear()
        records += [d.record(d.attempt, d.origin) for d in self._again]
        self._again.clear()
        while not self._queue.empty():
            item = self._queue.get_nowait()
            if isinstance(item, tuple):
                records.append((*item, 1, None))
            elif item is not None:
                records.append((*read_parts(item.data, item.headers, False, NATS, self.topic), 1, None))
        self._backlog.bytes = 0
        records += [d.record(d.attempt + 1, d) for d in self.unacked if not d.done]
        self.unacked.clear()
        _Holding.give(self.key, records)

    async def _receive_side(self, msg: Msg) -> None:
        """A replay sent to this group only: confirm receipt to the sender once it is queued."""
        if msg.headers and PROBE_HEADER in msg.headers:
            await msg.respond(b"")
            return
        queue = self._queue
        if not self._backlog.room(queue.qsize(), len(msg.data)):
            return  # no answer: the sender reports that the group did not take it
        queue.put_nowait(msg)
        if msg.reply:
            await msg.respond(b"")

    async def _unsubscribe(self) -> None:
        side, self._side = self._side, None
        if side is not None:
            with contextlib.suppress(NatsError):
                await side.unsubscribe()
        nsub, self._nsub = self._nsub, None
        if nsub is not None:  # UNSUB, a round trip, then wait until the callback queued what had arrived
            await self._conn.unsubscribe(nsub)
