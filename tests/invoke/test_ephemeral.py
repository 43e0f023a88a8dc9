"""The Broker contract's ephemeral capability, on every broker: fan-out, groups, from the end, nothing kept."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from mesh.brokers import Broker, Delivery
from mesh.errors import NoResponders
from mesh.event import Event
from tests.support import unique, wait_for

pytestmark = pytest.mark.timeout(120)


def ev(i: int) -> Event:
    return Event(type="test.ephemeral", source="/contract", data={"i": i})


class Got:
    def __init__(self) -> None:
        self.values: list[int] = []

    async def __call__(self, delivery: Delivery) -> None:
        await delivery.ack()
        assert delivery.event is not None, delivery.error
        self.values.append(delivery.event.data["i"])


async def test_every_subscriber_without_a_group_gets_every_message_from_now_on(make_broker) -> None:
    broker: Broker = await make_broker()
    assert broker.features.ephemeral
    topic = f"_mesh.test.{unique('fan')}"
    first = Got()
    await broker.subscribe_ephemeral(topic, first)
    await broker.publish_ephemeral(topic, ev(0))
    await wait_for(lambda: first.values == [0], timeout=30, what="the first message")
    other: Broker = await make_broker()
    second = Got()
    await other.subscribe_ephemeral(topic, second)  # starts at the end: 0 is not for it
    for i in range(1, 6):
        await broker.publish_ephemeral(topic, ev(i))
    await wait_for(lambda: len(first.values) == 6 and len(second.values) == 5, timeout=30, what="fan-out")
    assert sorted(first.values) == list(range(6))
    assert sorted(second.values) == list(range(1, 6))


async def test_subscribers_of_one_group_share_the_messages(make_broker) -> None:
    a: Broker = await make_broker()
    b: Broker = await make_broker()
    topic, group = f"_mesh.test.{unique('grp')}", unique("g")
    got_a, got_b = Got(), Got()
    await a.subscribe_ephemeral(topic, got_a, group=group, concurrency=4)
    await b.subscribe_ephemeral(topic, got_b, group=group, concurrency=4)
    for i in range(40):
        await a.publish_ephemeral(topic, ev(i).with_extensions(partitionkey=f"k{i}"))
    await wait_for(lambda: len(got_a.values) + len(got_b.values) >= 40, timeout=60, what="40 messages")
    await asyncio.sleep(0.2)
    counts = Counter(got_a.values + got_b.values)
    assert set(counts) == set(range(40)) and max(counts.values()) == 1


async def test_an_exclusive_inbox_goes_with_its_subscriber(make_broker) -> None:
    broker: Broker = await make_broker()
    topic = f"_mesh.reply.{unique('inbox')}"
    got = Got()
    sub = await broker.subscribe_ephemeral(topic, got, exclusive=True)
    await broker.publish_ephemeral(topic, ev(1))
    await wait_for(lambda: got.values == [1], timeout=30, what="a message in the inbox")
    await sub.stop()
    await broker.publish_ephemeral(topic, ev(2))  # a late reply: dropped, the inbox not re-made
    again = Got()
    await broker.subscribe_ephemeral(topic, again, exclusive=True)
    await broker.publish_ephemeral(topic, ev(3))
    await wait_for(lambda: again.values == [3], timeout=30, what="only what came after")
    await asyncio.sleep(0.2)
    assert again.values == [3] and got.values == [1]


async def test_publishing_to_nobody_is_no_error(make_broker) -> None:
    broker: Broker = await make_broker()
    await broker.publish_ephemeral(f"_mesh.test.{unique('void')}", ev(1))


async def test_native_no_responders(make_broker) -> None:
    broker: Broker = await make_broker()
    topic = f"_mesh.test.{unique('req')}"
    status = await broker.publish_request(topic, ev(1))
    if not broker.features.native_request_reply:
        assert status is None
        return
    assert status is not None
    with pytest.raises(NoResponders):
        await asyncio.wait_for(status, 5)
    got = Got()
    await broker.subscribe_ephemeral(topic, got, group=unique("g"))
    status = await broker.publish_request(topic, ev(2))
    assert status is not None
    await wait_for(lambda: got.values == [2], timeout=10, what="the request")
    await asyncio.sleep(0.2)
    assert not status.done(), "someone listens: no status"
    status.cancel()


@pytest.mark.memory
async def test_the_fallback_for_adapters_without_the_capability(memory_spec) -> None:  # type: ignore[no-untyped-def]
    from mesh.brokers import create_broker

    broker = create_broker("memory", None, options=memory_spec.options, client_id="plain")
    await broker.connect()
    try:
        topic, got = f"_mesh.test.{unique('fallback')}", Got()
        sub = await Broker.subscribe_ephemeral(broker, topic, got)  # the base class: an ordinary group
        assert sub.group.startswith("_mesh.ephemeral.plain.")
        await Broker.publish_ephemeral(broker, topic, ev(1))
        assert await Broker.publish_request(broker, topic, ev(2)) is None
        await wait_for(lambda: got.values == [1, 2], what="both through the ordinary path")
    finally:
        await broker.close()
