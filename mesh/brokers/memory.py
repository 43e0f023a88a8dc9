"""The in-process broker: a real log per topic with offsets, consumer groups and redelivery.

It is a product backend for development, demos and users' tests, not a test double: every
:class:`MemoryBroker` with the same ``name`` in one process shares one hub, so several apps
configured with ``broker: {type: memory}`` really publish to and consume from each other.
Events are passed as objects, not bytes; JSON data goes through JSON once on publish so that
subscribers see exactly what a network broker would give them (a pydantic model arrives as a dict).

Each topic keeps the last ``retention`` events (default 10,000) so a group created later sees
history and replay can read it. Within a group, consumers compete for events; across groups,
every group gets every event. A nacked event is redelivered (after ``delay`` on a timer); an
event a stopped consumer never acked goes back to its group.

>>> import asyncio
>>> from mesh.event import Event
>>> async def demo():
...     broker = MemoryBroker(options={"name": "doctest"})
...     await broker.connect()
...     await broker.publish("greetings", Event(type="hello", source="/doc"))
...     return [e.type for e in broker.messages("greetings")]
>>> asyncio.run(demo())
['hello']
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
from collections import deque
from collections.abc import AsyncIterator, Iterator, Sequence
from datetime import datetime
from typing import Any, ClassVar, Literal

import orjson
from pydantic import Field

from mesh.brokers.base import (
    RESERVED_PREFIX,
    Broker,
    BrokerOptions,
    Delivery,
    DeliveryHandler,
    Features,
    HandlerRunner,
    Subscription,
)
from mesh.brokers.capabilities import Cursor, HistoryRecord
from mesh.codecs.binary import WireMessage, decode
from mesh.codecs.bindings import KAFKA
from mesh.codecs.data import encode_data, is_json
from mesh.errors import BrokerError, DecodeError, MeshError
from mesh.event import Event, now

__all__ = ["MemoryBroker", "MemoryOptions"]

DEFAULT_RETENTION = 10_000
EPHEMERAL_KEEP = 256
"""An ephemeral topic (replies, presence) forgets events every group is done with beyond this many."""
_ephemeral_ids = itertools.count()

Item = Event | WireMessage


class MemoryOptions(BrokerOptions):
    """``broker: {type: memory, options: {...}}``."""

    name: str = "default"
    """Apps in one process with the same name share one broker."""
    retention: int = Field(10_000, ge=1)
    """Events kept per topic, for late groups and replay."""
    initial_offset: Literal["earliest", "latest"] = "earliest"
    """Where a group seen for the first time starts reading."""


class _Group:
    __slots__ = ("attempts", "consumers", "next", "private", "private_next", "redeliver", "unacked", "waiters")

    def __init__(self, start: int) -> None:
        self.next = start
        self.redeliver: deque[int] = deque()
        self.unacked: dict[int, Item] = {}  # offset -> item, handed out and not yet acked
        self.attempts: dict[int, int] = {}
        self.waiters: set[asyncio.Event] = set()
        self.consumers = 0
        self.private: dict[int, Item] = {}  # negative offset -> item for this group only (a replay)
        self.private_next = -1

    def wake(self) -> None:
        for waiter in self.waiters:
            waiter.set()


class _Topic:
    __slots__ = ("base", "groups", "items", "retention", "times")

    def __init__(self, retention: int) -> None:
        self.base = 0
        self.items: deque[Item] = deque()
        self.times: deque[datetime] = deque()
        self.groups: dict[str, _Group] = {}
        self.retention = retention

    @property
    def end(self) -> int:
        return self.base + len(self.items)

    def append(self, item: Item) -> int:
        offset = self.end
        self.items.append(item)
        self.times.append(now())
        if len(self.items) > self.retention:
            self.items.popleft()
            self.times.popleft()
            self.base += 1
        for group in self.groups.values():
            group.wake()
        return offset

    def get(self, group: _Group, offset: int) -> Item | None:
        held = group.unacked.get(offset)
        if held is not None:
            return held
        if offset < 0:
            return group.private.get(offset)
        if offset < self.base:
            return None
        return self.items[offset - self.base]


class _Hub:
    """The shared state of one named in-process broker."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.topics: dict[str, _Topic] = {}

    def topic(self, name: str, retention: int) -> _Topic:
        t = self.topics.get(name)
        if t is None:
            t = self.topics[name] = _Topic(retention)
        return t


class MemoryDelivery(Delivery):
    __slots__ = ("_consumer", "_offset")
    taskless_ack = True

    def __init__(
        self,
        consumer: _Consumer,
        offset: int,
        event: Event | None,
        raw: WireMessage | None,
        error: DecodeError | None,
        attempt: int,
    ) -> None:
        super().__init__(consumer.topic, consumer.group, event, raw, error, attempt)
        self._consumer = consumer
        self._offset = offset

    async def _ack(self) -> None:
        self._consumer.settle(self._offset)

    async def _nack(self, delay: float | None) -> None:
        self._consumer.give_back(self._offset, delay)


class _Consumer(Subscription):
    def __init__(
        self, topic: str, group: str, log: _Topic, state: _Group, handler: DeliveryHandler, concurrency: int
    ) -> None:
        self.topic = topic
        self.group = group
        self._log = log
        self._state = state
        self._runner = HandlerRunner(handler, concurrency, topic)
        self._mine: set[int] = set()
        self._wakeup = asyncio.Event()
        self._running = True
        self._timers: set[asyncio.TimerHandle] = set()
        state.waiters.add(self._wakeup)
        state.consumers += 1
        self._task = asyncio.get_running_loop().create_task(self._loop(), name=f"mesh-memory:{topic}:{group}")

    def _take(self) -> int | None:
        state = self._state
        if state.redeliver:
            return state.redeliver.popleft()
        if state.next < self._log.base:
            state.next = self._log.base  # fell behind retention, like a log broker
        if state.next < self._log.end:
            offset = state.next
            state.next += 1
            return offset
        return None

    async def _loop(self) -> None:
        state = self._state
        while self._running:
            offset = self._take()
            if offset is None:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            item = self._log.get(state, offset)
            if item is None:
                continue
            state.unacked[offset] = item
            self._mine.add(offset)
            attempt = state.attempts.get(offset, 0) + 1
            state.attempts[offset] = attempt
            if isinstance(item, Event):
                delivery = MemoryDelivery(self, offset, item, None, None, attempt)
            else:
                try:
                    event = decode(item, KAFKA, self.topic, f"{self.topic}:{offset}")
                    delivery = MemoryDelivery(self, offset, event, item, None, attempt)
                except DecodeError as exc:
                    delivery = MemoryDelivery(self, offset, None, item, exc, attempt)
            await self._runner.submit(delivery)
            if state.consumers > 1:
                await asyncio.sleep(0)  # competing consumers take turns

    def settle(self, offset: int) -> None:
        self._mine.discard(offset)
        self._state.unacked.pop(offset, None)
        self._state.attempts.pop(offset, None)
        if offset < 0:
            self._state.private.pop(offset, None)

    def give_back(self, offset: int, delay: float | None) -> None:
        self._mine.discard(offset)
        if delay:
            handle = asyncio.get_running_loop().call_later(delay, self._requeue, offset)
            self._timers.add(handle)
        else:
            self._requeue(offset)

    def _requeue(self, offset: int) -> None:
        self._state.redeliver.append(offset)
        self._state.wake()

    async def stop(self, drain: bool = True) -> None:
        if not self._running:
            return
        self._running = False
        self._wakeup.set()
        if not drain:
            self._task.cancel()
        try:
            await self._task  # with drain, the loop finishes the handler it is running, then exits
        except asyncio.CancelledError:
            pass
        if drain:
            await self._runner.drain()
        for timer in self._timers:  # delayed redeliveries become immediate for the group
            if not timer.cancelled():
                timer.cancel()
        self._timers.clear()
        state = self._state
        state.waiters.discard(self._wakeup)
        state.consumers -= 1
        for offset in sorted(self._mine):  # unacked deliveries go back to the group
            state.redeliver.append(offset)
        self._mine.clear()
        state.wake()

    @property
    def pending(self) -> int:
        state = self._state
        return (
            max(0, self._log.end - state.next)
            + len(state.redeliver)
            + len(state.unacked)
            + len([t for t in self._timers if not t.cancelled() and t.when() > asyncio.get_running_loop().time()])
        )


class _EphemeralConsumer(_Consumer):
    """A consumer whose group (and then topic) is removed when it stops, if nobody else uses it."""

    def __init__(self, hub: _Hub, name: str, *args: Any) -> None:
        super().__init__(*args)
        self._hub = hub
        self._name = name

    def settle(self, offset: int) -> None:
        super().settle(offset)
        log = self._log
        if len(log.items) > EPHEMERAL_KEEP:  # nobody replays an ephemeral topic: drop what all groups are done with
            done = min(min([g.next, *g.unacked, *g.redeliver]) for g in log.groups.values())
            while log.base < done and len(log.items) > EPHEMERAL_KEEP // 2:
                log.items.popleft()
                log.times.popleft()
                log.base += 1

    async def stop(self, drain: bool = True) -> None:
        await super().stop(drain)
        log = self._log
        if self._state.consumers == 0 and log.groups.get(self.group) is self._state:
            del log.groups[self.group]
        if not log.groups and self._hub.topics.get(self._name) is log:
            del self._hub.topics[self._name]


class MemoryBroker(Broker):
    """In-process broker shared by name; see the module docstring.

    Options: ``name`` (hub name, default ``"default"``), ``retention`` (events kept per topic),
    ``initial_offset`` (``earliest`` or ``latest``: where a new group starts).
    """

    type: ClassVar[str] = "memory"
    binding = KAFKA  # how raw messages published into a hub (publish_raw) are read
    options_model = MemoryOptions
    features: ClassVar[Features] = Features(
        name="memory",
        persistent=False,
        consumer_groups=True,
        order_by_key=True,
        history=True,
        history_by_time=True,
        native_delay=True,
        native_request_reply=False,
        headers=True,
        redelivery_count=True,
        group_delivery=True,
        ephemeral=True,
    )
    _hubs: ClassVar[dict[str, _Hub]] = {}

    def __init__(self, url: str | None = None, **kwargs: Any) -> None:
        super().__init__(url, **kwargs)
        name = self.options.get("name") or (url or "memory://default").removeprefix("memory://") or "default"
        self.hub_name = str(name)
        self.retention = int(self.options.get("retention", DEFAULT_RETENTION))
        self.initial_offset = str(self.options.get("initial_offset", "earliest"))
        self._hub = self._hubs.setdefault(self.hub_name, _Hub(self.hub_name))
        self._subs: list[_Consumer] = []
        self._next_group_id = itertools.count()
        self.history = self.groups = self  # the hub's log is the history; a group's private queue its delivery

    @classmethod
    def reset(cls, name: str | None = None) -> None:
        """Forget a hub's topics (all hubs when ``name`` is None); for tests and demos."""
        if name is None:
            cls._hubs.clear()
        else:
            cls._hubs.pop(name, None)

    async def connect(self) -> None:
        self._hub = self._hubs.setdefault(self.hub_name, self._hub)

    async def close(self) -> None:
        subs, self._subs = self._subs, []
        for sub in subs:
            await sub.stop()

    async def publish(self, topic: str, event: Event) -> None:
        self._hub.topic(self.name_of(topic), self.retention).append(_as_delivered(event))

    async def publish_many(self, topic: str, events: Sequence[Event]) -> dict[int, Exception]:
        """Append every event to the topic's log at once (one whose data is not JSON fails alone)."""
        log = self._hub.topic(self.name_of(topic), self.retention)
        failed: dict[int, Exception] = {}
        for index, event in enumerate(events):
            try:
                log.append(_as_delivered(event))
            except MeshError as exc:
                failed[index] = exc
        return failed

    async def publish_raw(self, topic: str, message: WireMessage) -> None:
        """Put raw bytes on a topic, as a foreign producer would (decoded on delivery)."""
        self._hub.topic(self.name_of(topic), self.retention).append(message)

    async def subscribe(
        self, topic: str, group: str, handler: DeliveryHandler, *, concurrency: int = 1
    ) -> Subscription:
        log = self._hub.topic(self.name_of(topic), self.retention)
        state = log.groups.get(group)
        if state is None:
            state = log.groups[group] = _Group(log.base if self.initial_offset == "earliest" else log.end)
        sub = _Consumer(topic, group, log, state, handler, concurrency)
        self._subs.append(sub)
        return sub

    # -- ephemeral destinations ------------------------------------------------------------------

    async def subscribe_ephemeral(
        self,
        topic: str,
        handler: DeliveryHandler,
        *,
        group: str | None = None,
        exclusive: bool = False,
        concurrency: int = 1,
    ) -> Subscription:
        """A group that starts at the end of the topic and is forgotten with its last member;
        the topic goes with its last group (see :meth:`Broker.subscribe_ephemeral`)."""
        name = self.name_of(topic)
        log = self._hub.topic(name, self.retention)
        key = group if group is not None else f"{RESERVED_PREFIX}ephemeral.{next(_ephemeral_ids)}"
        state = log.groups.get(key)
        if state is None:
            state = log.groups[key] = _Group(log.end)
        sub = _EphemeralConsumer(self._hub, name, topic, key, log, state, handler, concurrency)
        self._subs.append(sub)
        return sub

    async def publish_ephemeral(self, topic: str, event: Event) -> None:
        log = self._hub.topics.get(self.name_of(topic))
        if log is not None and log.groups:  # nobody listens: dropped, as on a network broker
            log.append(_as_delivered(event))

    # -- replay capabilities (mesh.brokers.capabilities) ---------------------------------------

    async def topic_exists(self, topic: str) -> bool:
        """Whether the hub has a log for the topic."""
        return self.name_of(topic) in self._hub.topics

    async def read_history(
        self,
        topic: str,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        cursor: Cursor | None = None,
        batch: int = 500,
    ) -> AsyncIterator[list[HistoryRecord]]:
        """The retained log, from ``cursor`` (``{"offset": n}``) or the first event at/after ``since``."""
        log = self._hub.topics.get(self.name_of(topic))
        if log is None:
            return
        end = log.end
        if cursor is not None:
            offset = int(cursor["offset"])
        elif since is not None:
            offset = log.base + bisect.bisect_left(log.times, since)
        else:
            offset = log.base
        while offset < end:
            out: list[HistoryRecord] = []
            while offset < end and len(out) < batch:
                offset = max(offset, log.base)  # retention may have moved on meanwhile
                if offset >= end:
                    break
                item, taken = log.items[offset - log.base], log.times[offset - log.base]
                if until is not None and taken > until:
                    end = offset
                    break
                offset += 1
                if isinstance(item, Event):
                    out.append(HistoryRecord(item, taken, {"offset": offset}))
                else:
                    try:
                        event = decode(item, KAFKA, topic, f"{topic}:{offset - 1}")
                        out.append(HistoryRecord(event, taken, {"offset": offset}))
                    except DecodeError as exc:
                        out.append(HistoryRecord(None, taken, {"offset": offset}, str(exc)))
            if out:
                yield out
            await asyncio.sleep(0)

    async def has_group(self, topic: str, group: str) -> bool:
        """Whether the group ever subscribed to the topic on this hub."""
        log = self._hub.topics.get(self.name_of(topic))
        return log is not None and group in log.groups

    async def publish_to_group(self, topic: str, group: str, event: Event) -> None:
        """Queue the event for ``group`` alone (ahead of the log), as a replay to one group."""
        log = self._hub.topics.get(self.name_of(topic))
        state = None if log is None else log.groups.get(group)
        if state is None:
            raise BrokerError(f"memory broker {self.hub_name!r}: no group {group!r} subscribes to {topic!r}")
        offset = state.private_next
        state.private_next -= 1
        state.private[offset] = _as_delivered(event)
        state.redeliver.append(offset)
        state.wake()

    # -- helpers for tests and demos ---------------------------------------------------------

    def messages(self, topic: str) -> list[Event]:
        """The events retained on a topic, oldest first (raw messages are decoded or skipped)."""
        log = self._hub.topics.get(self.name_of(topic))
        return list(_events(log.items)) if log else []

    def dead_letters(self, topic: str, suffix: str = ".dlq") -> list[Event]:
        """The events on a topic's dead-letter destination."""
        return self.messages(topic + suffix)

    def topics(self) -> list[str]:
        """Every topic the hub knows."""
        return sorted(self._hub.topics)

    def pending(self) -> int:
        """Events not yet acked by some group that has a consumer here."""
        return sum(sub.pending for sub in self._subs if sub._running)

    async def join(self, timeout: float = 10.0, settle: float = 0.0) -> None:
        """Wait until every subscription of this broker has handled everything (or time out)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        quiet_since: float | None = None
        while True:
            if self.pending() == 0:
                quiet_since = quiet_since or loop.time()
                if loop.time() - quiet_since >= settle:
                    return
            else:
                quiet_since = None
            if loop.time() > deadline:
                raise TimeoutError(f"memory broker {self.hub_name!r} still has {self.pending()} pending")
            await asyncio.sleep(0.002)


def _as_delivered(event: Event) -> Event:
    """Subscribers get JSON data as every other broker gives it (a model arrives as a dict)."""
    data = event.data
    if data is not None and not isinstance(data, str | bytes) and is_json(event.datacontenttype):
        return event.replace(data=orjson.loads(encode_data(event)))
    return event


def _events(items: deque[Item]) -> Iterator[Event]:
    for i, item in enumerate(items):
        if isinstance(item, Event):
            yield item
        else:
            try:
                yield decode(item, KAFKA, "", str(i))
            except DecodeError:
                continue
