"""Contract checks of the batch APIs: ``Broker.publish_many`` and batch subscriptions.

Part of :data:`mesh.testing.brokers.CONTRACT` (same signature, same ``make_broker`` and
``names``). Batch subscriptions are built above the Broker contract, so their checks run an
:class:`~mesh.App` on the broker under test (``App.use_broker``) and read how each delivery was
settled from ``mesh_delivery_outcome``.

=================================================  ==========================================
check                                              what it holds the adapter to
=================================================  ==========================================
publish_many: all arrive in order                  one ``publish_many`` of 300 events on one
                                                   key: none reported failed, all delivered,
                                                   in order
publish_many: failures by index                    an unencodable event in the middle fails
                                                   alone, by its index; the others arrive (a
                                                   broker that carries Event objects without
                                                   encoding may take it)
batch subscribe: batches fill                      a batch holds more than one event, each
                                                   event is handled once
batch subscribe: partial failure                   items named in ``BatchFailed`` are retried
                                                   then dead-lettered (or dead-lettered at
                                                   once); every other item is acked once
batch subscribe: whole batch fails                 every item comes back and is handled
=================================================  ==========================================
"""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import timedelta
from typing import Any

from mesh.app import App
from mesh.batch import BatchPolicy
from mesh.brokers.base import Broker, Delivery
from mesh.errors import BatchFailed, DeadLetter, EventError
from mesh.event import Event
from mesh.hooks import hookimpl
from mesh.testing.waiting import MakeBroker, Names, wait_for
from mesh.types import Context

__all__ = [
    "check_batch_subscribe_fills_batches",
    "check_batch_subscribe_partial_failure_settles_each_item",
    "check_batch_subscribe_whole_batch_failure_retries_every_item",
    "check_publish_many_all_arrive_in_order",
    "check_publish_many_reports_failures_by_index",
]



def _ev(i: int, **kw: Any) -> Event:
    return Event(type="test.contract", source="/contract", data={"i": i}, **kw)


class _Got:
    def __init__(self) -> None:
        self.values: list[int] = []

    async def __call__(self, delivery: Delivery) -> None:
        assert delivery.event is not None, delivery.error
        self.values.append(delivery.event.data["i"])
        await delivery.ack()


async def check_publish_many_all_arrive_in_order(make_broker: MakeBroker, names: Names) -> None:
    """300 events of one key in one ``publish_many``: none failed, all delivered in order."""
    broker = await make_broker()
    topic, got = names(), _Got()
    await broker.subscribe(topic, names("g"), got)
    failed = await broker.publish_many(topic, [_ev(i, extensions={"partitionkey": "one"}) for i in range(300)])
    assert failed == {}, failed
    await wait_for(lambda: len(got.values) >= 300, 30, "300 deliveries")
    assert got.values == list(range(300)), got.values[:20]


async def check_publish_many_reports_failures_by_index(make_broker: MakeBroker, names: Names) -> None:
    """An event that cannot be encoded fails alone, reported by its index; the others arrive."""
    broker = await make_broker()
    topic, got = names(), _Got()
    await broker.subscribe(topic, names("g"), got)
    key: dict[str, Any] = {"partitionkey": "one"}
    events = [_ev(0, extensions=key), Event("test.contract", "/contract", {"i": object()}, extensions=key),
              _ev(2, extensions=key)]
    failed = await broker.publish_many(topic, events)
    if not failed:  # a broker that carries Event objects as they are (no encoding) takes it
        await wait_for(lambda: len(got.values) >= 3, 10, "the three events")
        assert got.values[0] == 0 and got.values[2] == 2, got.values
        return
    assert list(failed) == [1], failed
    assert isinstance(failed[1], EventError), repr(failed[1])
    await wait_for(lambda: len(got.values) >= 2, 10, "the two good events")
    assert got.values == [0, 2], got.values


class _Outcomes:
    """A plugin recording how each delivery of the app was settled, by the event's ``i``."""

    def __init__(self, topic: str) -> None:
        self.topic = topic
        self.by_item: dict[int, list[str]] = defaultdict(list)

    @hookimpl
    def mesh_delivery_outcome(self, context: Context, outcome: str, error: BaseException | None) -> None:
        event = context.event
        if context.topic == self.topic and event is not None and isinstance(event.data, dict):
            self.by_item[event.data["i"]].append(outcome)


def _app(broker: Broker, names: Names, topic: str, outcomes: _Outcomes, attempts: int = 2) -> App:
    config = {
        "broker": {"type": "memory", "options": {"name": names("hub")}},
        "subscriptions": {topic: {"retry": {"attempts": attempts, "immediate": 0, "initial": 0.05,
                                            "max": 0.2, "jitter": False}}},
        "presence": {"enabled": False},
    }
    app = App(names("app"), config=config, plugins=[outcomes])
    app.use_broker(broker)
    return app


async def check_batch_subscribe_fills_batches(make_broker: MakeBroker, names: Names) -> None:
    """A batch subscription hands over more than one event at a time; each is handled once."""
    broker = await make_broker()
    topic = names()
    outcomes = _Outcomes(topic)
    app = _app(broker, names, topic, outcomes)
    sizes: list[int] = []
    seen: Counter[int] = Counter()

    @app.subscribe(topic, batch=BatchPolicy(max_size=20, max_wait=timedelta(milliseconds=300)))
    async def handle(events: list[Event]) -> None:
        sizes.append(len(events))
        seen.update(e.data["i"] for e in events)

    async with app:
        result = await app.publish_many(topic, [{"i": i} for i in range(60)], type="test.contract", key="one")
        assert result.ok, result.failed
        await wait_for(lambda: len(outcomes.by_item) >= 60, 30, "60 events handled")
    assert max(sizes) > 1, sizes
    assert max(sizes) <= 20, sizes
    assert all(n == 1 for n in seen.values()) and len(seen) == 60, seen
    assert all(o == ["handled"] for o in outcomes.by_item.values()), dict(outcomes.by_item)


async def check_batch_subscribe_partial_failure_settles_each_item(make_broker: MakeBroker, names: Names) -> None:
    """Items named by ``BatchFailed`` are retried and dead-lettered on their own; the rest are acked once."""
    broker = await make_broker()
    topic = names()
    outcomes = _Outcomes(topic)
    app = _app(broker, names, topic, outcomes, attempts=2)
    seen: Counter[int] = Counter()

    @app.subscribe(topic, batch=BatchPolicy(max_size=10, max_wait=timedelta(milliseconds=200)))
    async def handle(events: list[Event]) -> None:
        seen.update(e.data["i"] for e in events)
        failed: dict[int, BaseException] = {}
        for index, event in enumerate(events):
            if event.data["i"] == 3:
                failed[index] = ValueError("item 3 always fails")
            elif event.data["i"] == 5:
                failed[index] = DeadLetter("item 5 is bad")
        if failed:
            raise BatchFailed(failed)

    async with app:
        result = await app.publish_many(topic, [{"i": i} for i in range(10)], type="test.contract", key="one")
        assert result.ok, result.failed
        done = outcomes.by_item
        await wait_for(lambda: len(done) >= 10 and "dead_letter" in done[3] and "dead_letter" in done[5],
                    30, "every item settled, 3 and 5 dead-lettered")
    assert done[3] == ["retry", "dead_letter"], done[3]
    assert done[5] == ["dead_letter"], done[5]
    assert seen[3] == 2 and seen[5] == 1, seen
    for i in set(range(10)) - {3, 5}:
        assert done[i] == ["handled"], (i, done[i])
        assert seen[i] == 1, (i, seen[i])


async def check_batch_subscribe_whole_batch_failure_retries_every_item(make_broker: MakeBroker, names: Names) -> None:
    """A batch handler raising fails every item of the batch: each comes back and is then handled."""
    broker = await make_broker()
    topic = names()
    outcomes = _Outcomes(topic)
    app = _app(broker, names, topic, outcomes, attempts=3)
    calls: list[list[int]] = []

    @app.subscribe(topic, batch=BatchPolicy(max_size=5, max_wait=timedelta(milliseconds=200)))
    async def handle(events: list[Event]) -> None:
        calls.append([e.data["i"] for e in events])
        if len(calls) == 1:
            raise RuntimeError("the first batch fails whole")

    async with app:
        result = await app.publish_many(topic, [{"i": i} for i in range(5)], type="test.contract", key="one")
        assert result.ok, result.failed
        await wait_for(lambda: len(outcomes.by_item) >= 5
                       and all(o[-1] == "handled" for o in outcomes.by_item.values()),
                       30, "every item handled after the failed batch")
    first = calls[0]
    for i in first:
        assert outcomes.by_item[i] == ["retry", "handled"], (i, outcomes.by_item[i])
