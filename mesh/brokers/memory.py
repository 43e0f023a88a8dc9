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
import itertools
from collections import deque
from collections.abc import Iterator
from datetime import datetime
from typing import Any, ClassVar

import orjson

from mesh.brokers.base import Broker, Delivery, DeliveryHandler, Features, HandlerRunner, Subscription
from mesh.codecs.binary import WireMessage, decode
from mesh.codecs.bindings import KAFKA
from mesh.codecs.data import encode_data, is_json
from mesh.errors import DecodeError
from mesh.event import Event, now

__all__ = ["MemoryBroker"]

DEFAULT_RETENTION = 10_000

Item = Event | WireMessage


class _Group:
    __slots__ = ("attempts", "consumers", "next", "redeliver", "unacked", "waiters")

    def __init__(self, start: int) -> None:
        self.next = start
        self.redeliver: deque[int] = deque()
        self.unacked: dict[int, Item] = {}  # offset -> item, handed out and not yet acked
        self.attempts: dict[int, int] = {}
        self.waiters: set[asyncio.Event] = set()
        self.consumers = 0

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


class MemoryBroker(Broker):
    """In-process broker shared by name; see the module docstring.

    Options: ``name`` (hub name, default ``"default"``), ``retention`` (events kept per topic),
    ``initial_offset`` (``earliest`` or ``latest``: where a new group starts).
    """

    type: ClassVar[str] = "memory"
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
        data = event.data
        if data is not None and not isinstance(data, str | bytes) and is_json(event.datacontenttype):
            # subscribers get JSON data as every other broker gives it (a model arrives as a dict)
            event = event.replace(data=orjson.loads(encode_data(event)))
        self._hub.topic(self.name_of(topic), self.retention).append(event)

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


def _events(items: deque[Item]) -> Iterator[Event]:
    for i, item in enumerate(items):
        if isinstance(item, Event):
            yield item
        else:
            try:
                yield decode(item, KAFKA, "", str(i))
            except DecodeError:
                continue
