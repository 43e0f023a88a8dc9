"""The Broker contract, run against every broker (memory always; the real ones on their servers).

Tests that need a capability a broker lacks are skipped by its ``Features`` record.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime

import pytest

from mesh.brokers import Broker, Delivery
from mesh.event import Event
from tests.support import unique, wait_for

pytestmark = pytest.mark.timeout(90)


def ev(i: int = 0, **kw: object) -> Event:
    return Event(type="test.contract", source="/contract", data={"i": i}, **kw)  # type: ignore[arg-type]


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
        return [e.data["i"] for e in self.events]


async def test_publish_subscribe_round_trip(make_broker) -> None:
    broker: Broker = await make_broker()
    topic, got = unique(), Collector()
    await broker.subscribe(topic, unique("g"), got)
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


async def test_text_and_bytes_data_round_trip(make_broker) -> None:
    broker: Broker = await make_broker()
    topic, got = unique(), Collector()
    await broker.subscribe(topic, unique("g"), got)
    key = {"partitionkey": "one"}
    await broker.publish(topic, Event(type="t", source="/s", data="héllo", extensions=key))
    await broker.publish(topic, Event(type="t", source="/s", data=b"\x00\xffraw", extensions=key))
    await wait_for(lambda: len(got.events) == 2, what="two deliveries")
    assert [e.data for e in got.events] == ["héllo", b"\x00\xffraw"]


async def test_many_events_all_arrive_in_order_for_one_consumer(make_broker) -> None:
    broker: Broker = await make_broker()
    topic, got = unique(), Collector()
    await broker.subscribe(topic, unique("g"), got)
    for i in range(200):
        await broker.publish(topic, ev(i, extensions={"partitionkey": "one"}))
    await wait_for(lambda: len(got.events) == 200, what="200 deliveries")
    assert sorted(got.values()) == list(range(200))


async def test_nack_redelivers(make_broker) -> None:
    broker: Broker = await make_broker()
    topic = unique()
    seen: list[int] = []

    async def handler(delivery: Delivery) -> None:
        assert delivery.event is not None
        seen.append(delivery.event.data["i"])
        if seen.count(delivery.event.data["i"]) == 1:
            await delivery.nack()
        else:
            await delivery.ack()

    await broker.subscribe(topic, unique("g"), handler)
    await broker.publish(topic, ev(7))
    await wait_for(lambda: len(seen) >= 2, what="a redelivery after nack")
    assert seen[:2] == [7, 7]


async def test_nack_with_delay_redelivers_later(make_broker) -> None:
    broker: Broker = await make_broker()
    topic = unique()
    times: list[float] = []
    loop = asyncio.get_running_loop()

    async def handler(delivery: Delivery) -> None:
        times.append(loop.time())
        if len(times) == 1:
            await delivery.nack(delay=0.5)
        else:
            await delivery.ack()

    await broker.subscribe(topic, unique("g"), handler)
    await broker.publish(topic, ev(1))
    await wait_for(lambda: len(times) >= 2, timeout=30, what="a delayed redelivery")
    assert times[1] - times[0] >= 0.4


async def test_unacked_message_is_held_then_redelivered_to_next_consumer(make_broker) -> None:
    broker: Broker = await make_broker()
    topic, group = unique(), unique("g")
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


async def test_close_while_consuming_drains_in_flight_handler(make_broker) -> None:
    broker: Broker = await make_broker()
    topic = unique()
    started, finished = asyncio.Event(), []

    async def slow(delivery: Delivery) -> None:
        started.set()
        await asyncio.sleep(0.3)
        finished.append(delivery.event)
        await delivery.ack()

    await broker.subscribe(topic, unique("g"), slow)
    await broker.publish(topic, ev(1))
    await asyncio.wait_for(started.wait(), 30)
    await broker.close()
    assert len(finished) == 1


async def test_consumer_group_splits_work(make_broker) -> None:
    broker_a: Broker = await make_broker()
    if not broker_a.features.consumer_groups:
        pytest.skip(f"{broker_a.features.name} has no consumer groups")
    broker_b: Broker = await make_broker()
    topic, group = unique(), unique("g")
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


async def test_groups_fan_out(make_broker) -> None:
    broker: Broker = await make_broker()
    topic = unique()
    a, b = Collector(), Collector()
    await broker.subscribe(topic, unique("ga"), a)
    await broker.subscribe(topic, unique("gb"), b)
    for i in range(10):
        await broker.publish(topic, ev(i))
    await wait_for(lambda: len(a.events) == 10 and len(b.events) == 10, what="every group gets every event")
    assert sorted(a.values()) == sorted(b.values()) == list(range(10))


async def test_order_by_key(make_broker) -> None:
    broker: Broker = await make_broker()
    if not broker.features.order_by_key:
        pytest.skip(f"{broker.features.name} does not keep order by key")
    topic, got = unique(), Collector()
    await broker.subscribe(topic, unique("g"), got)
    for i in range(100):
        await broker.publish(topic, ev(i, extensions={"partitionkey": f"k{i % 3}"}))
    await wait_for(lambda: len(got.events) == 100, what="100 deliveries")
    for key in ("k0", "k1", "k2"):
        per_key = [e.data["i"] for e in got.events if str(e.extensions["partitionkey"]) == key]
        assert per_key == sorted(per_key)


async def test_new_group_sees_history(make_broker) -> None:
    broker: Broker = await make_broker()
    if not broker.features.history:
        pytest.skip(f"{broker.features.name} keeps no history")
    topic = unique()
    await broker.ensure_topic(topic)
    for i in range(5):
        await broker.publish(topic, ev(i))
    got = Collector()
    await broker.subscribe(topic, unique("late"), got)
    await wait_for(lambda: len(got.events) == 5, timeout=30, what="history for a new group")
    assert sorted(got.values()) == list(range(5))


async def test_concurrency_runs_handlers_in_parallel(make_broker) -> None:
    broker: Broker = await make_broker()
    topic = unique()
    active, peak, done = 0, 0, []

    async def handler(delivery: Delivery) -> None:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        await asyncio.sleep(0.1)
        active -= 1
        done.append(1)
        await delivery.ack()

    await broker.subscribe(topic, unique("g"), handler, concurrency=4)
    for i in range(8):
        await broker.publish(topic, ev(i))
    await wait_for(lambda: len(done) == 8, timeout=30, what="8 handled")
    assert 2 <= peak <= 4


async def test_delayed_nack_does_not_block_later_events(make_broker) -> None:
    broker: Broker = await make_broker()
    topic = unique()
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

    await broker.subscribe(topic, unique("g"), handler)
    start = loop.time()
    for i in range(5):
        await broker.publish(topic, ev(i, extensions={"partitionkey": "same"}))
    await wait_for(lambda: all(i in handled for i in range(1, 5)), timeout=30, what="events after a delayed one")
    await wait_for(lambda: 0 in handled, timeout=30, what="the delayed redelivery")
    assert max(handled[i] for i in range(1, 5)) < handled[0], "later events flowed while one waited"
    assert handled[0] - start >= 1.5
    assert attempts[0] == [1, 2], "the redelivery says it is the second attempt"


async def test_attempt_counts_immediate_nacks(make_broker) -> None:
    broker: Broker = await make_broker()
    topic = unique()
    seen: list[int] = []

    async def handler(delivery: Delivery) -> None:
        seen.append(delivery.attempt)
        if len(seen) < 3:
            await delivery.nack()
        else:
            await delivery.ack()

    await broker.subscribe(topic, unique("g"), handler)
    await broker.publish(topic, ev(1))
    await wait_for(lambda: len(seen) >= 3, timeout=30, what="three attempts")
    assert seen[:3] == [1, 2, 3]
