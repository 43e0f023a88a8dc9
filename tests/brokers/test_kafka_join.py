"""A subscription reading from ``latest`` misses nothing published once ``subscribe`` returned.

With ``initial_offset: latest`` and no committed offset, aiokafka resolves a freshly assigned
partition's position lazily, and again from scratch at every rebalance. The shared group member
(mesh.brokers.kafka.reader) resolves it before a subscription counts as assigned and commits it,
so an event published right after ``subscribe`` returned, or one in flight while another
subscription joins the member, is delivered. What was acked is committed before the member's
topics change, so a joining subscription makes the others read nothing twice.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from mesh.brokers import Delivery
from mesh.brokers.kafka.broker import KafkaBroker
from mesh.event import Event
from tests.support import unique, wait_for

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(120)]

ROUNDS = 3
"""Subscriptions per test (each join costs Tansu about 5 s); the gaps were hit every time."""


class Seen:
    """Acks everything, keeps the ``i`` of each event."""

    def __init__(self) -> None:
        self.got: list[int] = []

    async def __call__(self, delivery: Delivery) -> None:
        assert delivery.event is not None
        self.got.append(delivery.event.data["i"])
        await delivery.ack()


    def has(self, expected: list[int]) -> Callable[[], bool]:
        """Whether exactly ``expected`` was seen, in order (a duplicate fails too)."""
        return lambda: self.got == expected


def event(i: int) -> Event:
    return Event(type="t", source="/s", data={"i": i})


async def test_a_new_member_reads_what_is_published_when_subscribe_returns(kafka) -> None:
    broker: KafkaBroker = await kafka(initial_offset="latest", partitions=1)
    for i in range(ROUNDS):
        topic, seen = unique(), Seen()
        await broker.ensure_topic(topic)
        await broker.publish(topic, event(-1))  # before the subscription: not read
        sub = await broker.subscribe(topic, unique("g"), seen)
        await broker.publish(topic, event(i))
        await wait_for(seen.has([i]), timeout=20, what=f"round {i}: the event published after subscribe")
        await sub.stop()


async def test_a_joining_subscription_reads_what_is_published_when_subscribe_returns(kafka) -> None:
    broker: KafkaBroker = await kafka(initial_offset="latest", partitions=1)
    group, first = unique("g"), Seen()
    first_topic = unique()
    await broker.subscribe(first_topic, group, first)  # the member runs
    for i in range(ROUNDS):
        topic, seen = unique(), Seen()
        await broker.ensure_topic(topic)
        await broker.publish(topic, event(-1))
        await broker.subscribe(topic, group, seen)  # joins the running member: a rebalance
        await broker.publish(topic, event(i))
        await broker.publish(first_topic, event(i))
        await wait_for(seen.has([i]), timeout=20, what=f"round {i}: the event published after subscribe")
        await wait_for(first.has(list(range(i + 1))), timeout=20, what=f"round {i}: the first subscription")


async def test_a_record_in_flight_while_another_subscription_joins_comes_again(kafka) -> None:
    """Nothing committed yet: the rebalance a joining subscription causes must not move the
    first one's partition to the new end, past a record its handler gave back."""
    broker: KafkaBroker = await kafka(initial_offset="latest", partitions=1)
    group, topic = unique("g"), unique()
    attempts: list[int] = []
    joined = asyncio.Event()

    async def nack_first(delivery: Delivery) -> None:
        attempts.append(delivery.attempt)
        if len(attempts) == 1:
            await joined.wait()  # the rebalance took the partition away meanwhile
            await delivery.nack()
        else:
            await delivery.ack()

    await broker.subscribe(topic, group, nack_first)
    await broker.publish(topic, event(0))
    await wait_for(lambda: len(attempts) == 1, timeout=20, what="the first delivery")
    await broker.subscribe(unique(), group, Seen())
    joined.set()
    await wait_for(lambda: len(attempts) == 2, timeout=20, what="the record given back during the rebalance")
