"""JetStream adapter: topology with options, foreign input, dedup, stop, errors, server restarts."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.js.api import DeliverPolicy, StorageType

from mesh.brokers import Delivery, broker_class
from mesh.brokers.nats.core import NatsBroker
from mesh.brokers.nats.jetstream import JetStreamBroker
from mesh.brokers.nats.messages import safe_name
from mesh.codecs.binary import LEGACY_TYPE
from mesh.codecs.structured import to_structured
from mesh.errors import BrokerConnectionError, ConfigError
from mesh.event import Event
from tests.brokers.nats_support import (
    NatsServer,
    Recorder,
    raw_publish,
    shared_url,
    undecodable_headers_do_not_stop_reading,
    works_with_the_stock_client,
)
from tests.support import brokers, free_port, unique, wait_for

pytestmark = [pytest.mark.jetstream, pytest.mark.timeout(90)]


@pytest.fixture
def url() -> str:
    return shared_url("jetstream")


@pytest.fixture
async def js(url: str) -> AsyncIterator[Any]:
    """A raw nats-py JetStream context on the shared server."""
    nc = await nats.connect(url)
    yield nc.jetstream()
    await nc.close()


@pytest.fixture
async def make(url: str) -> AsyncIterator[Callable[..., Any]]:
    """Connected JetStream brokers (streams carry ``mt-``: the session removes them)."""
    async for factory in brokers("jetstream", url):
        yield factory


def topic_name() -> str:
    return unique() + ".events"  # a dot, so the stream name differs from the subject


def ev(i: int = 0, **kw: Any) -> Event:
    return Event(type="test.js", source="/js", data={"i": i}, **kw)


def test_features_are_honest() -> None:
    f = broker_class("jetstream").features
    assert f.persistent
    assert f.consumer_groups
    assert f.history
    assert f.history_by_time
    assert f.native_delay
    assert f.redelivery_count
    assert not f.order_by_key
    assert JetStreamBroker(options={"max_ack_pending": 1}).features.order_by_key


def test_options_are_validated_with_their_path() -> None:
    with pytest.raises(ConfigError) as info:
        JetStreamBroker(options={"storage": "disk", "retention": "workqueue", "stream": "X"})
    paths = {path for path, _ in info.value.problems}
    assert paths == {"broker.options.storage", "broker.options.retention", "broker.options.stream"}


def test_safe_names() -> None:
    assert safe_name("orders.created") == "orders_created"
    assert safe_name("a.*.b >c\\d/e") == "a___b__c_d_e"


async def test_stream_and_consumer_are_created_with_options(make, js) -> None:
    options = {
        "storage": "memory",
        "max_age": 600,
        "max_msgs": 1000,
        "max_bytes": 1_000_000,
        "duplicate_window": 30,
        "ack_wait": 7,
        "max_deliver": 5,
        "max_ack_pending": 50,
    }
    broker = await make(**options)
    topic, group = topic_name(), "billing.v2 eu"
    await broker.subscribe(topic, group, Recorder())
    stream = safe_name(topic)
    info = await js.stream_info(stream)
    assert info.config.subjects == [topic]
    assert info.config.storage == StorageType.MEMORY
    assert info.config.max_age == 600
    assert info.config.max_msgs == 1000
    assert info.config.max_bytes == 1_000_000
    assert info.config.duplicate_window == 30
    consumer = await js.consumer_info(stream, "billing_v2_eu")
    assert consumer.config.durable_name == "billing_v2_eu"
    assert consumer.config.ack_wait == 7
    assert consumer.config.max_deliver == 5
    assert consumer.config.max_ack_pending == 50
    assert consumer.config.filter_subject == topic
    assert consumer.config.deliver_policy == DeliverPolicy.ALL


async def test_existing_stream_is_used_as_it_is(make, js) -> None:
    prefix = unique("ops")
    await js.add_stream(name=f"OPS_{prefix}", subjects=[f"{prefix}.>"])
    broker = await make()
    topic, got = f"{prefix}.orders", Recorder()
    await broker.publish(topic, ev(1))
    await broker.subscribe(topic, "g", got)
    await wait_for(lambda: len(got.events) == 1, what="the event from the operator's stream")
    assert (await js.consumer_info(f"OPS_{prefix}", "g")).config.filter_subject == topic
    other, got2 = f"{prefix}.refunds", Recorder()  # same group name, another subject of the stream
    await broker.subscribe(other, "g", got2)
    await broker.publish(other, ev(2))
    await wait_for(lambda: len(got2.events) == 1, what="the other subject's event")
    assert [e.data["i"] for e in got.events] == [1]
    assert (await js.consumer_info(f"OPS_{prefix}", safe_name(f"g_{other}"))).config.filter_subject == other


async def test_publish_creates_the_stream_and_a_late_group_sees_history(make, js) -> None:
    broker = await make()
    topic = topic_name()
    for i in range(3):
        await broker.publish(topic, ev(i))
    assert (await js.stream_info(safe_name(topic))).state.messages == 3
    got = Recorder()
    await broker.subscribe(topic, unique("late"), got)
    await wait_for(lambda: len(got.events) == 3, what="history")


async def test_initial_offset_latest_skips_history(make) -> None:
    broker = await make(initial_offset="latest")
    topic = topic_name()
    await broker.publish(topic, ev(0))
    got = Recorder()
    await broker.subscribe(topic, unique("g"), got)
    await broker.publish(topic, ev(1))
    await wait_for(lambda: len(got.events) >= 1, what="the new event")
    await asyncio.sleep(0.3)
    assert [e.data["i"] for e in got.events] == [1]


async def test_dedup_header_drops_a_repeat_but_not_a_replay(make, js) -> None:
    broker = await make()
    topic = topic_name()
    event = ev(5)
    await broker.publish(topic, event)
    await broker.publish(topic, event)  # a retried publish
    await broker.publish(topic, event.with_extensions(meshreplay="r1"))
    assert (await js.stream_info(safe_name(topic))).state.messages == 2
    plain = await make(dedup=False)
    await plain.publish(topic, event)
    assert (await js.stream_info(safe_name(topic))).state.messages == 3


async def test_legacy_json_and_bytes_are_wrapped_with_stable_ids(make, js) -> None:
    broker = await make()
    topic = topic_name()
    await broker.ensure_topic(topic)
    await js.publish(topic, b'{"order": 7}')
    await js.publish(topic, b"\x00\x01 raw")
    first = Recorder(ack=False)
    sub = await broker.subscribe(topic, "g", first)
    await wait_for(lambda: len(first.events) == 2, what="two wrapped messages")
    a, b = first.events
    assert a.type == LEGACY_TYPE
    assert a.data == {"order": 7}
    assert b.type == LEGACY_TYPE
    assert b.data == b"\x00\x01 raw"
    assert a.id == f"{safe_name(topic)}:1"
    assert b.id == f"{safe_name(topic)}:2"
    for d in first.deliveries:
        await d.nack()
    await wait_for(lambda: len(first.deliveries) == 4, what="redeliveries")
    assert [e.id for e in first.events[2:]] == [a.id, b.id], "the wrapped id survives redelivery"
    assert [d.attempt for d in first.deliveries[2:]] == [2, 2]
    for d in first.deliveries[2:]:
        await d.ack()
    await sub.stop()


async def test_structured_cloudevent_is_read(make, js) -> None:
    broker = await make()
    topic, got = topic_name(), Recorder()
    await broker.subscribe(topic, "g", got)
    sent = ev(3, extensions={"tenant": "acme"})
    await js.publish(topic, to_structured(sent), headers={"content-type": "application/cloudevents+json"})
    await wait_for(lambda: len(got.events) == 1, what="a structured event")
    assert got.events[0].id == sent.id
    assert got.events[0].extensions["tenant"] == "acme"


async def test_corrupt_input_arrives_as_error_and_later_events_flow(make, url: str) -> None:
    broker = await make()
    topic, got = topic_name(), Recorder()
    await broker.subscribe(topic, "g", got)
    good = [b"ce-specversion: 1.0", b"ce-source: /x", b"ce-type: t"]
    await raw_publish(url, topic, b"{}", [*good, b"ce-id: \xff\xfe\xfd"])
    await raw_publish(url, topic, b"{not json", [*good, b"ce-id: 1", b"content-type: application/json"])
    await raw_publish(url, topic, b"{}", [b"ce-specversion: 1.0", b"ce-source: /x", b"ce-type: t"])
    await broker.publish(topic, ev(9))
    await wait_for(lambda: len(got.deliveries) == 4, what="four deliveries")
    bad = got.deliveries[:3]
    assert all(d.event is None and d.error is not None and d.raw is not None for d in bad)
    assert "UTF-8" in str(bad[0].error)
    assert "JSON" in str(bad[1].error)
    assert "id" in str(bad[2].error)
    assert got.deliveries[3].event is not None
    assert got.deliveries[3].event.data == {"i": 9}


async def test_order_by_key_with_max_ack_pending_one(make) -> None:
    broker = await make(max_ack_pending=1)
    assert broker.features.order_by_key
    topic, got = topic_name(), Recorder()
    await broker.subscribe(topic, "g", got, concurrency=4)
    await broker.subscribe(topic, "g", got, concurrency=4)  # a second member changes nothing
    for i in range(60):
        await broker.publish(topic, ev(i, extensions={"partitionkey": f"k{i % 3}"}))
    await wait_for(lambda: len(got.events) == 60, what="60 deliveries")
    assert [e.data["i"] for e in got.events] == list(range(60))


async def test_stop_naks_what_it_holds_so_another_member_gets_it_at_once(make) -> None:
    first, second = await make(ack_wait=60), await make(ack_wait=60)
    topic, group = topic_name(), "g"
    holder, taker = Recorder(ack=False), Recorder()
    sub = await first.subscribe(topic, group, holder)
    for i in range(3):
        await first.publish(topic, ev(i))
    await wait_for(lambda: len(holder.events) >= 1, what="the first member holds some")
    await second.subscribe(topic, group, taker)
    await sub.stop()
    await wait_for(lambda: len(taker.events) == 3, timeout=15, what="every event, long before ack_wait")
    assert sorted(e.data["i"] for e in taker.events) == [0, 1, 2]


async def test_a_deleted_consumer_is_made_again(make, js) -> None:
    broker = await make()
    topic, got = topic_name(), Recorder()
    await broker.subscribe(topic, "g", got)
    await broker.publish(topic, ev(0))
    await wait_for(lambda: len(got.events) == 1, what="the first event")
    await js.delete_consumer(safe_name(topic), "g")  # an operator's mistake
    await broker.publish(topic, ev(1))
    await wait_for(lambda: len(got.events) >= 2, timeout=30, what="delivery through the restored consumer")
    assert got.events[-1].data["i"] == 1


async def test_connection_refused_is_bounded() -> None:
    port = free_port()
    broker = JetStreamBroker(f"nats://127.0.0.1:{port}", options={"connect_timeout": 2})
    loop = asyncio.get_running_loop()
    start = loop.time()
    with pytest.raises(BrokerConnectionError, match=f"jetstream at nats://127.0.0.1:{port}"):
        await broker.connect()
    assert loop.time() - start < 4


async def test_server_without_jetstream_is_a_connection_error(tmp_path: Path) -> None:
    server = NatsServer(tmp_path, jetstream=False)
    try:
        with pytest.raises(BrokerConnectionError, match="JetStream is not enabled"):
            await JetStreamBroker(server.url, options={"connect_timeout": 3}).connect()
    finally:
        server.stop()


async def test_bad_credentials_are_refused(tmp_path: Path) -> None:
    server = NatsServer(tmp_path / "js", user="mesh", password="right")
    try:
        broker = JetStreamBroker(server.url, options={"user": "mesh", "password": "nope", "connect_timeout": 3})
        with pytest.raises(BrokerConnectionError, match="authorization"):
            await broker.connect()
    finally:
        server.stop()


@pytest.mark.slow
@pytest.mark.timeout(180)
@pytest.mark.parametrize("kill", [False, True], ids=["sigterm", "sigkill"])
async def test_durable_consumer_survives_server_restart(tmp_path: Path, kill: bool) -> None:
    """~500 events consumed while our own server is stopped and started: nothing is lost."""
    server = NatsServer(tmp_path / "store")
    options = {"reconnect_time_wait": 0.2, "ack_wait": 3, "batch": 20}
    broker = JetStreamBroker(server.url, options=options)
    total = 500
    seen: set[int] = set()
    count = 0

    async def handler(d: Delivery) -> None:
        nonlocal count
        assert d.event is not None
        await asyncio.sleep(0.004)
        seen.add(d.event.data["i"])
        count += 1
        await d.ack()

    core = NatsBroker(server.url, options={"reconnect_time_wait": 0.2})
    core_got = Recorder()
    try:
        await broker.connect()
        await core.connect()
        await core.subscribe("restart.core", "g", core_got)
        topic = "restart.events"
        await broker.ensure_topic(topic)
        await asyncio.gather(*(broker.publish(topic, ev(i)) for i in range(total)))
        await broker.subscribe(topic, "durable", handler, concurrency=2)
        await wait_for(lambda: count >= 100, timeout=30, what="some events before the restart")
        assert count < total, "the restart came too late to test anything"
        await asyncio.to_thread(server.restart, 1.0, kill)
        await wait_for(lambda: len(seen) == total, timeout=120, what="every event after the restart")
        assert seen == set(range(total))
        assert broker.connection.nc is not None
        assert broker.connection.nc.is_connected
        for i in range(200):  # core NATS on the same server reconnected too and gets new messages
            await core.publish("restart.core", ev(i))
            if core_got.events:
                break
            await asyncio.sleep(0.1)
        await wait_for(lambda: len(core_got.events) >= 1, what="a core NATS message after the restart")
        late = Recorder()
        await broker.subscribe(topic, "after", late)  # the stream kept everything on disk
        await wait_for(lambda: len(late.events) == total, timeout=60, what="history after the restart")
    finally:
        await broker.close()
        await core.close()
        server.stop()


async def test_an_untested_nats_py_falls_back_to_its_stock_client(
    make, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    await works_with_the_stock_client(make, monkeypatch, caplog)


@pytest.mark.parametrize("fast", [True, False], ids=["fast-client", "stock-client"])
async def test_a_header_block_that_is_not_utf8_arrives_undecodable_and_reading_goes_on(
    make, url: str, fast: bool
) -> None:
    await undecodable_headers_do_not_stop_reading(make, url, fast_client=fast)


class BatchRoute(Recorder):
    inline = True  # what a batch route says of itself (mesh.pipeline.route)


async def test_a_batch_larger_than_max_ack_pending_is_warned(make, caplog) -> None:
    broker = await make(max_ack_pending=10)
    with caplog.at_level("WARNING", logger="mesh.broker.nats"):
        await broker.subscribe(topic_name(), "g", BatchRoute(), concurrency=10)
        await broker.subscribe(topic_name(), "g", Recorder(), concurrency=500)  # no batch: capped, on purpose
        assert not caplog.records
        await broker.subscribe(topic_name(), "g", BatchRoute(), concurrency=500)  # a batch of 500
    assert "max_ack_pending is 10" in caplog.text
