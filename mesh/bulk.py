"""Publishing many events at once through the plugins' publish layers, pipelined at the broker.

Every event still passes every publish layer on its own (tracing makes its ``send`` span,
signing seals it, metrics counts it), so plugins see a ``publish_many`` exactly as that many
``publish`` calls. What differs is the bottom of the chain: instead of one broker round trip
per event, each event's chain ends at a :class:`Collector`, and once every event arrived there
(or left its chain early, refused by a layer) the collector hands them all to
:meth:`Broker.publish_many` at once, in input order, and wakes each chain with its own outcome.

=================================  ========================================================
what happened to event *i*         in the :class:`~mesh.batch.PublishResult`
=================================  ========================================================
over ``max_event_bytes``           failed (``EncodeError``), never sent
a publish layer raised             failed with that error (the other events go on)
the broker refused it              failed with the broker's ``PublishError``
taken                              not in ``failed``
=================================  ========================================================
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from contextvars import ContextVar
from typing import TYPE_CHECKING

from mesh.batch import FailedEntry, PublishResult
from mesh.brokers.base import failures_of
from mesh.event import Event
from mesh.types import PUBLISH_BATCH, PublishBatch

if TYPE_CHECKING:
    from mesh.brokers.base import Broker
    from mesh.types import Publish

log = logging.getLogger("mesh.publish")

__all__ = ["Collector", "collecting", "publish_many", "result_of"]

_COLLECTOR: ContextVar[tuple[Collector, int] | None] = ContextVar("mesh_publish_many", default=None)
"""The collector of the ``publish_many`` an event's chain belongs to, and the event's index."""


class Collector:
    """Where the publish chains of one batch end: holds each event until all arrived."""

    __slots__ = ("_reached", "_ready", "_settled", "expected", "flushed", "items")

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.items: list[tuple[int, str, Event, asyncio.Future[None]]] = []
        self._reached: set[int] = set()
        self._settled = 0
        self.flushed = False
        self._ready = asyncio.get_running_loop().create_future()

    async def put(self, broker: Broker, index: int, topic: str, event: Event) -> None:
        """An event reached the bottom of its chain: wait for the broker's word on it."""
        if self.flushed:  # a layer sent its event again after the batch went: on its own
            await broker.publish(topic, event)
            return
        future = asyncio.get_running_loop().create_future()
        self.items.append((index, topic, event, future))
        if index not in self._reached:
            self._reached.add(index)
            self._count()
        await future

    def left(self, index: int) -> None:
        """An event's chain ended without reaching the collector (a layer refused or dropped it)."""
        if index not in self._reached:
            self._reached.add(index)
            self._count()

    def _count(self) -> None:
        self._settled += 1
        if self._settled >= self.expected and not self._ready.done():
            self._ready.set_result(None)

    async def ready(self) -> None:
        """Wait until every chain arrived or left."""
        await self._ready

    async def flush(self, broker: Broker) -> None:
        """Publish what arrived, in input order, one ``publish_many`` per run of one topic."""
        self.flushed = True
        items = sorted(self.items, key=lambda item: item[0])
        start = 0
        while start < len(items):
            topic = items[start][1]
            end = start
            while end < len(items) and items[end][1] == topic:
                end += 1
            run = items[start:end]
            try:
                failed = await broker.publish_many(topic, [event for _, _, event, _ in run])
            except Exception as exc:  # the whole run failed: every event of it did
                failed = dict.fromkeys(range(len(run)), exc)
            for position, (_, _, _, future) in enumerate(run):
                if future.done():
                    continue
                error = failed.get(position)
                if error is None:
                    future.set_result(None)
                else:
                    future.set_exception(error)
            start = end


def collecting(broker: Broker) -> Publish:
    """The bottom of the batch publish chain: into the batch's collector (outside one, publish)."""

    async def collect(topic: str, event: Event) -> None:
        current = _COLLECTOR.get()
        if current is None:
            await broker.publish(topic, event)
            return
        collector, index = current
        await collector.put(broker, index, topic, event)

    return collect


async def publish_many(
    broker: Broker, chain: Publish | None, topic: str, events: Sequence[Event]
) -> dict[int, Exception]:
    """Publish ``events`` through ``chain`` (the layers around :func:`collecting`), or straight
    to the broker when no plugin has a publish layer; returns the failures by index."""
    if chain is None:
        return await broker.publish_many(topic, events)
    batch = PublishBatch(topic, len(events))
    token = PUBLISH_BATCH.set(batch)
    try:
        return await _through_layers(broker, chain, topic, events)
    finally:
        PUBLISH_BATCH.reset(token)
        for error in batch.finish():
            log.error("a plugin's publish_many callback failed: %r", error)


async def _through_layers(broker: Broker, chain: Publish, topic: str, events: Sequence[Event]) -> dict[int, Exception]:
    collector = Collector(len(events))
    loop = asyncio.get_running_loop()
    tasks: list[asyncio.Task[None]] = []
    for index, event in enumerate(events):
        token = _COLLECTOR.set((collector, index))
        try:  # the task copies the context as it is now: its own index
            tasks.append(loop.create_task(_one(collector, index, chain, topic, event)))
        finally:
            _COLLECTOR.reset(token)
    try:
        await collector.ready()
        await collector.flush(broker)
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    except BaseException:
        for task in tasks:
            task.cancel()
        raise
    return failures_of(outcomes)


async def _one(collector: Collector, index: int, chain: Publish, topic: str, event: Event) -> None:
    try:
        await chain(topic, event)
    finally:
        collector.left(index)


def result_of(events: list[Event], failed: dict[int, Exception]) -> PublishResult:
    """The :class:`PublishResult` of ``events`` given the failures by index."""
    return PublishResult(events, [FailedEntry(i, events[i], failed[i]) for i in sorted(failed)])
