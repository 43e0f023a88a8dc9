"""Core NATS (``type: nats``): subjects and queue groups, fast and with nothing kept.

- A topic is the subject of the same name (namespace prefix applied). A group is a NATS queue
  group: members of one group compete for each message, different groups each get every one.
- Core NATS stores nothing: a message published while a group has no member is gone, a new group
  sees no history, and nothing survives the process. :attr:`NatsBroker.features` says so.
- ``ack()`` is a no-op for the server. ``nack()`` hands the delivery to the subscription again,
  in process (``nack(delay)`` with a timer that does not hold later messages), with
  ``attempt + 1``. That is best effort: it is lost if the process dies.
- ``stop()`` unsubscribes first (the server sends new messages to the other members), then, with
  ``drain``, handles what was already received. Deliveries still unacked, and delayed nacks not
  yet due, are handed to another subscription of the same group in this process, or kept for
  the next one made here. No other process can get them back.
- Order: one subscriber of a group with ``concurrency: 1`` sees the publish order of one
  publisher; several members of a group share messages at random, so there is no order by key.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable
from types import ModuleType
from typing import Any, ClassVar

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription as NatsSubscription
from nats.errors import Error as NatsError

from mesh.brokers.base import Broker, DeliveryHandler, Features, HandlerRunner, Mailbox, Subscription
from mesh.brokers.base import Delivery as _Delivery
from mesh.brokers.capabilities import DelegatedGroupDelivery
from mesh.brokers.nats import groups as _replay
from mesh.brokers.nats.common import (
    FastClient,
    barrier,
    display_address,
    open_connection,
    read,
    read_parts,
    servers_of,
    shut,
    to_headers,
    validate_options,
)
from mesh.brokers.nats.ephemeral import CoreNatsEphemeral, NatsEphemeral
from mesh.brokers.nats.options import NatsOptions
from mesh.codecs.binary import WireMessage, encode
from mesh.codecs.bindings import NATS
from mesh.errors import BrokerError, DecodeError, PublishError
from mesh.event import Event

__all__ = ["NatsBroker", "NatsDelivery"]

log = logging.getLogger("mesh.broker.nats")

# (event, raw, error, attempt, the delivery it repeats if that may still be acked)
_Record = tuple[Event | None, WireMessage | None, DecodeError | None, int, "NatsDelivery | None"]
_Key = tuple[str, str, str]  # (servers, subject, queue group)
_Read = tuple[Event | None, WireMessage, DecodeError | None]  # a message read on arrival


class NatsDelivery(_Delivery):
    """A core NATS delivery: ack forgets it, nack hands it to the subscription again."""

    __slots__ = ("_origin", "_sub")

    def __init__(
        self,
        sub: _NatsSubscription,
        event: Event | None,
        raw: WireMessage | None,
        error: DecodeError | None,
        attempt: int,
        origin: NatsDelivery | None = None,
    ) -> None:
        super().__init__(sub.topic, sub.group, event, raw, error, attempt)
        self._sub = sub
        self._origin = origin

    async def _ack(self) -> None:
        self._sub._unacked.discard(self)

    async def _nack(self, delay: float | None) -> None:
        self._sub.again(self, delay)

    def record(self, attempt: int, origin: NatsDelivery | None = None) -> _Record:
        return (self.event, self.raw, self.error, attempt, origin)


class _Holding:
    """Live subscriptions and given-back deliveries per (servers, subject, group) in this process."""

    live: ClassVar[dict[_Key, list[_NatsSubscription]]] = {}
    parked: ClassVar[dict[_Key, list[_Record]]] = {}

    @classmethod
    def join(cls, sub: _NatsSubscription) -> list[_Record]:
        cls.live.setdefault(sub.key, []).append(sub)
        return cls.parked.pop(sub.key, [])

    @classmethod
    def leave(cls, sub: _NatsSubscription) -> None:
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


class _NatsSubscription(Subscription):
    def __init__(self, broker: NatsBroker, topic: str, group: str, handler: DeliveryHandler, concurrency: int) -> None:
        self.topic = topic
        self.group = group
        self._broker = broker
        self.subject = broker.name_of(topic)
        self.queue = "_".join(group.split()) or "_"
        self.key: _Key = (broker.address, self.subject, self.queue)
        self._runner = HandlerRunner(handler, concurrency, topic)
        self._queue: Mailbox[Msg | _Read | None] = Mailbox()
        self._limit = broker.settings.pending_limit
        self._dropped = 0
        self._again: deque[NatsDelivery] = deque()
        self._unacked: set[NatsDelivery] = set()
        self._timers: dict[NatsDelivery, asyncio.TimerHandle] = {}
        self._running = True
        self._stopped = False
        self._draining = True
        self._nsub: NatsSubscription | None = None
        self._side: NatsSubscription | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self, nc: Client) -> None:
        self._nsub = await nc.subscribe(self.subject, queue=self.queue, cb=self._receive)
        if isinstance(nc, FastClient):
            nc.deliver_directly(self._nsub, self._arrived)
        side = _replay.side_subject(self._broker, self.topic, self.queue)  # replays for this group only
        self._side = await nc.subscribe(side, queue=self.queue, cb=self._receive_side)
        await barrier(nc, self._broker.settings.connect_timeout)  # the server has it
        self.take(_Holding.join(self))
        self._task = asyncio.get_running_loop().create_task(self._loop(), name=f"mesh-nats:{self.subject}:{self.queue}")

    async def _receive(self, msg: Msg) -> None:
        """nats-py's callback: queue the message for the loop (never blocks the client)."""
        if self._has_room():
            self._queue.put_nowait(msg)

    def _arrived(self, subject: bytes, data: bytes, headers: dict[str, str] | None, checked: bool) -> None:
        """The client's direct delivery: read the message and queue it for the loop."""
        if self._has_room():
            self._queue.put_nowait(read_parts(data, headers, checked, NATS, self.topic))

    def _has_room(self) -> bool:
        """Whether the queue takes one more; else the message is dropped, as NATS drops for a slow consumer."""
        if self._queue.qsize() < self._limit:
            return True
        self._dropped += 1
        if self._dropped % 10_000 == 1:
            log.warning("nats: %s/%s is a slow consumer: %d dropped", self.subject, self.queue, self._dropped)
        return False

    async def _loop(self) -> None:
        queue, again, unacked, submit = self._queue, self._again, self._unacked, self._runner.submit
        topic = self.topic
        while True:
            if again:
                delivery = again.popleft()
                origin = delivery._origin
                if origin is not None and origin._done:
                    continue  # acked after it was given back
            else:
                if not self._running and (not self._draining or queue.empty()):
                    return
                item = await queue.get()
                if item is None:  # a wake-up
                    continue
                event, raw, error = item if isinstance(item, tuple) else read(item, NATS, topic, None)
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
        self._unacked.discard(delivery)
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
        records += [d.record(d.attempt, d._origin) for d in self._again]
        self._again.clear()
        while not self._queue.empty():
            item = self._queue.get_nowait()
            if item is not None:
                event, raw, error = item if isinstance(item, tuple) else read(item, NATS, self.topic, None)
                records.append((event, raw, error, 1, None))
        records += [d.record(d.attempt + 1, d) for d in self._unacked if not d._done]
        self._unacked.clear()
        _Holding.give(self.key, records)

    async def _receive_side(self, msg: Msg) -> None:
        """A replay sent to this group only: confirm receipt to the sender once it is queued."""
        if msg.headers and _replay.PROBE_HEADER in msg.headers:
            await msg.respond(b"")
            return
        if self._queue.qsize() >= self._limit:
            return  # no answer: the sender reports that the group did not take it
        self._queue.put_nowait(msg)
        if msg.reply:
            await msg.respond(b"")

    async def _unsubscribe(self) -> None:
        side, self._side = self._side, None
        if side is not None:
            with contextlib.suppress(NatsError):
                await side.unsubscribe()
        nsub, self._nsub = self._nsub, None
        if nsub is None:
            return
        nc = self._broker._nc
        if isinstance(nc, FastClient):
            nc.forget(nsub)  # what still arrives takes nats-py's path, which the drain below waits for
        try:
            # UNSUB, a round trip, then wait until the callback has queued what had arrived.
            await asyncio.wait_for(nsub.drain(), self._broker.settings.connect_timeout)  # type: ignore[no-untyped-call]
        except (TimeoutError, NatsError):
            with contextlib.suppress(NatsError):
                await nsub.unsubscribe()


class NatsBroker(CoreNatsEphemeral, DelegatedGroupDelivery, Broker):
    """Core NATS: subjects, queue groups, no persistence; see the module docstring."""

    _replay: ClassVar[ModuleType] = _replay  # the replay capabilities live in mesh.brokers.nats.groups

    type: ClassVar[str] = "nats"
    binding = NATS
    options_model = NatsOptions
    features: ClassVar[Features] = Features(
        name="nats",
        persistent=False,
        consumer_groups=True,
        order_by_key=False,
        history=False,
        history_by_time=False,
        native_delay=False,  # nack(delay) is an in-process timer, lost with the process
        native_request_reply=True,  # no-responders, for invocation (see _nats_ephemeral)
        headers=True,
        redelivery_count=False,  # attempts are counted in process, not by the server
        group_delivery=True,
        ephemeral=True,
    )

    def __init__(self, url: str | None = None, **kwargs: Any) -> None:
        super().__init__(url, **kwargs)
        self.settings = validate_options(NatsOptions, self.options)
        self.address = display_address(servers_of(url))
        self._ephemeral = NatsEphemeral(self, self.wire)
        self._nc: Client | None = None
        self._subs: list[_NatsSubscription] = []

    async def connect(self) -> None:
        if self._nc is not None and not self._nc.is_closed:
            return
        self._nc = await open_connection(self.type, self.url, self.settings, self.client_id, self._reconnected)

    async def _reconnected(self) -> None:
        """Subscriptions are restored by the client; nothing else to do on core NATS."""

    def _client(self, error: Callable[[str], BrokerError] = BrokerError) -> Client:
        nc = self._nc
        if nc is None or nc.is_closed:
            raise error(f"the nats broker at {self.address} is not connected: call connect() first")
        return nc

    async def close(self) -> None:
        await self._ephemeral.close()
        subs, self._subs = self._subs, []
        for sub in subs:
            await sub.stop()
        nc, self._nc = self._nc, None
        await shut(nc)

    async def publish(self, topic: str, event: Event) -> None:
        wire = encode(event, self.wire)
        nc = self._client(PublishError)
        subject, headers = self.name_of(topic), to_headers(wire)
        try:
            if not (isinstance(nc, FastClient) and nc.publish_now(subject, wire.body, headers)):
                await nc.publish(subject, wire.body, headers=headers)
        except NatsError as exc:
            raise PublishError(f"nats at {self.address} did not take the event on {topic!r}: {exc!r}") from exc

    async def subscribe(
        self, topic: str, group: str, handler: DeliveryHandler, *, concurrency: int = 1
    ) -> Subscription:
        sub = _NatsSubscription(self, topic, group, handler, concurrency)
        try:
            await sub.start(self._client())
        except NatsError as exc:
            raise BrokerError(f"nats at {self.address}: cannot subscribe to {topic!r}: {exc!r}") from exc
        self._subs.append(sub)
        return sub
