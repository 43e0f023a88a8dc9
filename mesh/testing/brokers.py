"""The Broker contract as plain async functions, so an adapter outside this repository proves itself.

Each ``check_*`` takes ``make_broker`` (an async factory returning a *connected* broker; the
caller closes them after the check) and ``names`` (a factory of fresh topic and group names),
and raises ``AssertionError`` when the adapter breaks the contract, or :class:`FeatureMissing`
when the check needs a capability its ``Features`` record says it lacks. :data:`CONTRACT` lists
them with the feature flag each needs, as Watermill exports its universal Pub/Sub tests:

=====================================================  ========================
check                                                  needs ``Features.<flag>``
=====================================================  ========================
round trip, text and bytes, many in order, nack,       (nothing)
delayed nack, held then redelivered, drain on close,
fan-out, concurrency, delayed nack not blocking,
attempt counting
consumer group splits work                             ``consumer_groups``
order by key                                           ``order_by_key``
new group sees history                                 ``history``
publish_many in order, failures by index; batch        (nothing)
subscribe fills, partial and whole-batch failure
(:mod:`mesh.testing.batches`)
=====================================================  ========================

In pytest (with pytest-asyncio)::

    from mesh.testing.brokers import CONTRACT, FeatureMissing

    @pytest.mark.parametrize("check", CONTRACT, ids=str)
    async def test_contract(check, make_broker):
        try:
            await check.run(make_broker)
        except FeatureMissing as exc:
            pytest.skip(str(exc))
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from mesh.brokers.base import Delivery, Features
from mesh.event import Event, ExtensionValue
from mesh.testing.batches import (
    check_batch_subscribe_fills_batches,
    check_batch_subscribe_partial_failure_settles_each_item,
    check_batch_subscribe_whole_batch_failure_retries_every_item,
    check_publish_many_all_arrive_in_order,
    check_publish_many_reports_failures_by_index,
)
from mesh.testing.waiting import MakeBroker, Names, wait_for

__all__ = [
    "CONTRACT",
    "Collector",
    "ContractCheck",
    "FeatureMissing",
    "MakeBroker",
    "Names",
    "unique",
    "wait_for",
]



class FeatureMissing(Exception):
    """The broker's ``Features`` say it lacks what a check needs: skip, not fail."""


def unique(prefix: str = "t") -> str:
    """A fresh topic or group name (``mesh-contract-<prefix>-<random>``)."""
    return f"mesh-contract-{prefix}-{uuid.uuid4().hex[:10]}"


def ev(i: int = 0, **kw: Any) -> Event:
    """A small test event whose data is ``{"i": i}``."""
    return Event(type="test.contract", source="/contract", data={"i": i}, **kw)


class Collector:
    """A handler that records what it got and acks (or holds, or nacks) each delivery."""

    def __init__(self, mode: str = "ack") -> None:
        self.mode = mode
        self.events: list[Event] = []
        self.deliveries: list[Delivery] = []

    async def __call__(self, delivery: Delivery) -> None:
        assert delivery.event is not None, delivery.error
        self.deliveries.append(delivery)
        self.events.append(delivery.event)
        if self.mode == "ack":
            await delivery.ack()

    def values(self) -> list[int]:
        """The ``i`` of every event received, in arrival order."""
        return [e.data["i"] for e in self.events]


async def check_publish_subscribe_round_trip(make_broker: MakeBroker, names: Names = unique) -> None:
    """Every attribute, the data and extensions survive publish and delivery."""
    broker = await make_broker()
    topic, got = names(), Collector()
    await broker.subscribe(topic, names("g"), got)
    sent = Event(
        type="shop.order.created",
        source="/orders",
        subject="A1",
        data={"id": "A1", "qty": 2, "tags": ["x"], "price": 9.5},
        time=datetime(2026, 11, 20, 10, 0, 1, tzinfo=UTC),
        extensions={"partitionkey": "A1", "tenant": "acme"},
    )
    await broker.publish(topic, sent)
    await wait_for(lambda: len(got.events) == 1, what="one delivery")
    received = got.events[0]
    assert received.id == sent.id
    assert received.type == sent.type and received.source == sent.source
    assert received.subject == "A1"
    assert received.time == sent.time
    assert received.data == sent.data
    assert received.extensions["tenant"] == "acme"
    assert str(received.extensions["partitionkey"]) == "A1"
    assert received.datacontenttype == "application/json"


async def check_text_and_bytes_data_round_trip(make_broker: MakeBroker, names: Names = unique) -> None:
    """Text data stays text and bytes stay bytes."""
    broker = await make_broker()
    topic, got = names(), Collector()
    await broker.subscribe(topic, names("g"), got)
    key: dict[str, ExtensionValue] = {"partitionkey": "one"}
    await broker.publish(topic, Event(type="t", source="/s", data="héllo", extensions=key))
    await broker.publish(topic, Event(type="t", source="/s", data=b"\x00\xffraw", extensions=key))
    await wait_for(lambda: len(got.events) == 2, what="two deliveries")
    assert [e.data for e in got.events] == ["héllo", b"\x00\xffraw"]


async def check_many_events_all_arrive_in_order_for_one_consumer(
    make_broker: MakeBroker, names: Names = unique
) -> None:
    """200 events on one key all arrive at one consumer."""
    broker = await make_broker()
    topic, got = names(), Collector()
    await broker.subscribe(topic, names("g"), got)
    for i in range(200):
        await broker.publish(topic, ev(i, extensions={"partitionkey": "one"}))
    await wait_for(lambda: len(got.events) == 200, what="200 deliveries")
    assert sorted(got.values()) == list(range(200))


async def check_nack_redelivers(make_broker: MakeBroker, names: Names = unique) -> None:
    """A nacked delivery comes again."""
    broker = await make_broker()
    topic = names()
    seen: list[int] = []

    async def handler(delivery: Delivery) -> None:
        assert delivery.event is not None
        seen.append(delivery.event.data["i"])
        if seen.count(delivery.event.data["i"]) == 1:
            await delivery.nack()
        else:
            await delivery.ack()

    await broker.subscribe(topic, names("g"), handler)
    await broker.publish(topic, ev(7))
    await wait_for(lambda: len(seen) >= 2, what="a redelivery after nack")
    assert seen[:2] == [7, 7]


async def check_nack_with_delay_redelivers_later(make_broker: MakeBroker, names: Names = unique) -> None:
    """``nack(delay=0.5)`` redelivers no sooner than about half a second."""
    broker = await make_broker()
    topic = names()
    times: list[float] = []
    loop = asyncio.get_running_loop()

    async def handler(delivery: Delivery) -> None:
        times.append(loop.time())
        if len(times) == 1:
            await delivery.nack(delay=0.5)
        else:
            await delivery.ack()

    await broker.subscribe(topic, names("g"), handler)
    await broker.publish(topic, ev(1))
    await wait_for(lambda: len(times) >= 2, timeout=30, what="a delayed redelivery")
    assert times[1] - times[0] >= 0.4


async def check_unacked_message_is_held_then_redelivered_to_next_consumer(
    make_broker: MakeBroker, names: Names = unique
) -> None:
    """A delivery never ended is held, then given to the next member of the group."""
    broker = await make_broker()
    topic, group = names(), names("g")
    holder = Collector(mode="hold")
    sub = await broker.subscribe(topic, group, holder)
    await broker.publish(topic, ev(1))
    await wait_for(lambda: len(holder.events) == 1, what="first delivery")
    await asyncio.sleep(0.3)
    assert len(holder.events) == 1, "an unacked message must not be redelivered while held"
    await sub.stop(drain=False)

    other = await make_broker()
    taker = Collector()
    await other.subscribe(topic, group, taker)
    await wait_for(lambda: len(taker.events) == 1, timeout=60, what="redelivery to the next consumer")
    assert taker.events[0].id == holder.events[0].id


async def check_close_while_consuming_drains_in_flight_handler(make_broker: MakeBroker, names: Names = unique) -> None:
    """``close()`` waits for a handler in flight."""
    broker = await make_broker()
    topic = names()
    started, finished = asyncio.Event(), []

    async def slow(delivery: Delivery) -> None:
        started.set()
        await asyncio.sleep(0.3)
        finished.append(delivery.event)
        await delivery.ack()

    await broker.subscribe(topic, names("g"), slow)
    await broker.publish(topic, ev(1))
    await asyncio.wait_for(started.wait(), 30)
    await broker.close()
    assert len(finished) == 1


async def check_consumer_group_splits_work(make_broker: MakeBroker, names: Names = unique) -> None:
    """Two members of one group share the events, each handled once."""
    broker_a = await make_broker()
    if not broker_a.features.consumer_groups:
        raise FeatureMissing(f"{broker_a.features.name} has no consumer groups")
    broker_b = await make_broker()
    topic, group = names(), names("g")
    a, b = Collector(), Collector()
    await broker_a.subscribe(topic, group, a)
    await broker_b.subscribe(topic, group, b)
    for i in range(60):
        await broker_a.publish(topic, ev(i, extensions={"partitionkey": f"k{i}"}))
    await wait_for(lambda: len(a.events) + len(b.events) >= 60, timeout=60, what="60 deliveries")
    await asyncio.sleep(0.3)
    counts = Counter(a.values() + b.values())
    assert set(counts) == set(range(60))
    assert max(counts.values()) == 1, "each event is handled once within a group"
    assert a.events and b.events, "both members of the group got work"


async def check_groups_fan_out(make_broker: MakeBroker, names: Names = unique) -> None:
    """Two groups each get every event."""
    broker = await make_broker()
    topic = names()
    a, b = Collector(), Collector()
    await broker.subscribe(topic, names("ga"), a)
    await broker.subscribe(topic, names("gb"), b)
    for i in range(10):
        await broker.publish(topic, ev(i))
    await wait_for(lambda: len(a.events) == 10 and len(b.events) == 10, what="every group gets every event")
    assert sorted(a.values()) == sorted(b.values()) == list(range(10))


async def check_order_by_key(make_broker: MakeBroker, names: Names = unique) -> None:
    """Events of one ``partitionkey`` arrive in publish order."""
    broker = await make_broker()
    if not broker.features.order_by_key:
        raise FeatureMissing(f"{broker.features.name} does not keep order by key")
    topic, got = names(), Collector()
    await broker.subscribe(topic, names("g"), got)
    for i in range(100):
        await broker.publish(topic, ev(i, extensions={"partitionkey": f"k{i % 3}"}))
    await wait_for(lambda: len(got.events) == 100, what="100 deliveries")
    for key in ("k0", "k1", "k2"):
        per_key = [e.data["i"] for e in got.events if str(e.extensions["partitionkey"]) == key]
        assert per_key == sorted(per_key)


async def check_new_group_sees_history(make_broker: MakeBroker, names: Names = unique) -> None:
    """A group made after publishing still reads the earlier events."""
    broker = await make_broker()
    if not broker.features.history:
        raise FeatureMissing(f"{broker.features.name} keeps no history")
    topic = names()
    await broker.ensure_topic(topic)
    for i in range(5):
        await broker.publish(topic, ev(i))
    got = Collector()
    await broker.subscribe(topic, names("late"), got)
    await wait_for(lambda: len(got.events) == 5, timeout=30, what="history for a new group")
    assert sorted(got.values()) == list(range(5))


async def check_concurrency_runs_handlers_in_parallel(make_broker: MakeBroker, names: Names = unique) -> None:
    """``concurrency=4`` runs between two and four handlers at once."""
    broker = await make_broker()
    topic = names()
    active, peak, done = 0, 0, []

    async def handler(delivery: Delivery) -> None:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        await asyncio.sleep(0.1)
        active -= 1
        done.append(1)
        await delivery.ack()

    await broker.subscribe(topic, names("g"), handler, concurrency=4)
    for i in range(8):
        await broker.publish(topic, ev(i))
    await wait_for(lambda: len(done) == 8, timeout=30, what="8 handled")
    assert 2 <= peak <= 4


async def check_delayed_nack_does_not_block_later_events(make_broker: MakeBroker, names: Names = unique) -> None:
    """Later events flow while one waits for its delayed redelivery."""
    broker = await make_broker()
    topic = names()
    loop = asyncio.get_running_loop()
    handled: dict[int, float] = {}
    attempts: dict[int, list[int]] = {}

    async def handler(delivery: Delivery) -> None:
        assert delivery.event is not None
        i = delivery.event.data["i"]
        attempts.setdefault(i, []).append(delivery.attempt)
        if i == 0 and len(attempts[0]) == 1:
            await delivery.nack(delay=2.0)
            return
        handled[i] = loop.time()
        await delivery.ack()

    await broker.subscribe(topic, names("g"), handler)
    start = loop.time()
    for i in range(5):
        await broker.publish(topic, ev(i, extensions={"partitionkey": "same"}))
    await wait_for(lambda: all(i in handled for i in range(1, 5)), timeout=30, what="events after a delayed one")
    await wait_for(lambda: 0 in handled, timeout=30, what="the delayed redelivery")
    assert max(handled[i] for i in range(1, 5)) < handled[0], "later events flowed while one waited"
    assert handled[0] - start >= 1.5
    assert attempts[0] == [1, 2], "the redelivery says it is the second attempt"


async def check_attempt_counts_immediate_nacks(make_broker: MakeBroker, names: Names = unique) -> None:
    """``Delivery.attempt`` counts 1, 2, 3 over immediate nacks."""
    broker = await make_broker()
    topic = names()
    seen: list[int] = []

    async def handler(delivery: Delivery) -> None:
        seen.append(delivery.attempt)
        if len(seen) < 3:
            await delivery.nack()
        else:
            await delivery.ack()

    await broker.subscribe(topic, names("g"), handler)
    await broker.publish(topic, ev(1))
    await wait_for(lambda: len(seen) >= 3, timeout=30, what="three attempts")
    assert seen[:3] == [1, 2, 3]


@dataclass(frozen=True)
class ContractCheck:
    """One contract check and the ``Features`` flags it needs (empty: every broker)."""

    check: Callable[[MakeBroker, Names], Awaitable[None]]
    needs: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        """The check's name without its ``check_`` prefix."""
        return self.check.__name__.removeprefix("check_")

    def applies(self, features: Features) -> bool:
        """Whether a broker with these features must pass it."""
        return all(getattr(features, flag) for flag in self.needs)

    async def run(self, make_broker: MakeBroker, names: Names = unique) -> None:
        """Run the check (raises ``AssertionError`` on a broken contract, :class:`FeatureMissing` to skip)."""
        await self.check(make_broker, names)

    def __str__(self) -> str:
        return self.name


CONTRACT: tuple[ContractCheck, ...] = (
    ContractCheck(check_publish_subscribe_round_trip),
    ContractCheck(check_text_and_bytes_data_round_trip),
    ContractCheck(check_many_events_all_arrive_in_order_for_one_consumer),
    ContractCheck(check_nack_redelivers),
    ContractCheck(check_nack_with_delay_redelivers_later),
    ContractCheck(check_unacked_message_is_held_then_redelivered_to_next_consumer),
    ContractCheck(check_close_while_consuming_drains_in_flight_handler),
    ContractCheck(check_consumer_group_splits_work, ("consumer_groups",)),
    ContractCheck(check_groups_fan_out),
    ContractCheck(check_order_by_key, ("order_by_key",)),
    ContractCheck(check_new_group_sees_history, ("history",)),
    ContractCheck(check_concurrency_runs_handlers_in_parallel),
    ContractCheck(check_delayed_nack_does_not_block_later_events),
    ContractCheck(check_attempt_counts_immediate_nacks),
    ContractCheck(check_publish_many_all_arrive_in_order),
    ContractCheck(check_publish_many_reports_failures_by_index),
    ContractCheck(check_batch_subscribe_fills_batches),
    ContractCheck(check_batch_subscribe_partial_failure_settles_each_item),
    ContractCheck(check_batch_subscribe_whole_batch_failure_retries_every_item),
)
"""Every check of the Broker contract, in the order the suite runs them."""
