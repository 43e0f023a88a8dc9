"""RabbitMQ adapter: topology, interop with the CloudEvents SDK, foreign and corrupt input,
connection errors, options, and a server restart under a running subscription.

The contract suite (tests/brokers/test_contract.py) covers the common behaviour; this file covers
what is particular to RabbitMQ. Foreign producers and consumers are raw aio-pika.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import pytest

aio_pika = pytest.importorskip("aio_pika")

from cloudevents.core.bindings import rabbitmq as sdk  # noqa: E402
from cloudevents.core.v1.event import CloudEvent  # noqa: E402

from mesh.brokers import Delivery, create_broker  # noqa: E402
from mesh.brokers.rabbitmq.broker import RabbitMQBroker  # noqa: E402
from mesh.brokers.rabbitmq.connection import as_text, delay_ms  # noqa: E402
from mesh.brokers.rabbitmq.consumer import ATTEMPT_HEADER, attempt_of  # noqa: E402
from mesh.codecs.binary import LEGACY_TYPE  # noqa: E402
from mesh.errors import BrokerConnectionError, ConfigError, PublishError  # noqa: E402
from mesh.event import Event  # noqa: E402
from tests.support import DEFAULT_URLS, free_port, reachable, unavailable, unique, wait_for  # noqa: E402

pytestmark = [pytest.mark.rabbitmq, pytest.mark.timeout(120)]

URL = os.environ.get("MESH_TEST_RABBITMQ_URL", DEFAULT_URLS["rabbitmq"])

Make = Callable[..., Awaitable[RabbitMQBroker]]


@pytest.fixture
def rabbit_url() -> str:
    if not reachable(URL, 5672):
        unavailable(f"rabbitmq at {URL}")
    return URL


@pytest.fixture
async def make(rabbit_url: str) -> AsyncIterator[Make]:
    """Connected RabbitMQ brokers, closed after the test."""
    made: list[RabbitMQBroker] = []
    queues: set[str] = set()
    exchanges: set[str] = set()

    async def factory(content_mode: str = "binary", **options: Any) -> RabbitMQBroker:
        broker = create_broker("rabbitmq", rabbit_url, options=options, content_mode=content_mode)
        assert isinstance(broker, RabbitMQBroker)
        await broker.connect()
        made.append(broker)
        subscribe = broker.subscribe

        async def recording(*args: Any, **kwargs: Any) -> Any:
            sub = await subscribe(*args, **kwargs)
            queues.add(sub.queue)
            exchanges.add(sub.exchange)
            return sub

        broker.subscribe = recording  # type: ignore[method-assign]
        return broker

    yield factory
    exchanges.update(name for broker in made for name in broker._topics.values())
    for broker in made:
        await broker.close()
    await _delete(rabbit_url, queues, exchanges)


async def _delete(url: str, queues: set[str], exchanges: set[str]) -> None:
    """Remove what a test declared: the queues are durable and would pile up run after run."""
    connection = await aio_pika.connect(url)
    try:
        for name in queues:
            with contextlib.suppress(Exception):
                await (await connection.channel()).queue_delete(name)
        for name in exchanges:
            with contextlib.suppress(Exception):
                await (await connection.channel()).exchange_delete(name)
    finally:
        await connection.close()


@pytest.fixture
async def raw(rabbit_url: str) -> AsyncIterator[Any]:
    """A plain aio-pika channel: the foreign producer or consumer."""
    connection = await aio_pika.connect(rabbit_url)
    channel = await connection.channel()
    yield channel
    await connection.close()


class Got:
    """A handler that records every delivery (errors too) and acks it."""

    def __init__(self) -> None:
        self.deliveries: list[Delivery] = []

    async def __call__(self, delivery: Delivery) -> None:
        self.deliveries.append(delivery)
        await delivery.ack()

    @property
    def events(self) -> list[Event]:
        return [d.event for d in self.deliveries if d.event is not None]


def ev(i: int, **extensions: Any) -> Event:
    return Event(type="t", source="/s", data={"i": i}, extensions=extensions)


async def raw_publish(channel: Any, exchange: str, body: bytes, key: str = "", **props: Any) -> None:
    ex = await channel.get_exchange(exchange)
    await ex.publish(aio_pika.Message(body, **props), routing_key=key or exchange)


# -- pure helpers ----------------------------------------------------------------------------------


def test_delay_is_rounded_up_to_significant_digits() -> None:
    assert delay_ms(0.5, 2) == 500
    assert delay_ms(1.234, 2) == 1300
    assert delay_ms(1.234, 4) == 1234
    assert delay_ms(0.0001, 2) == 1
    assert delay_ms(10**9, 2) == 2**32 - 1  # capped at the largest TTL RabbitMQ takes


def test_attempt_reads_our_header_and_the_broker_count() -> None:
    assert attempt_of({}) == 1
    assert attempt_of({ATTEMPT_HEADER: 3}) == 3
    assert attempt_of({ATTEMPT_HEADER: b"2", "x-delivery-count": 2}) == 4
    assert attempt_of({"x-delivery-count": 1}) == 2
    assert attempt_of({ATTEMPT_HEADER: "garbage"}) == 1


def test_amqp_header_values_become_canonical_text() -> None:
    when = datetime(2026, 1, 2, 3, 4, 5)
    out = as_text({"a": True, "b": 7, "c": bytearray(b"x"), "d": when, "e": "s"})
    assert out == {"a": "true", "b": "7", "c": b"x", "d": "2026-01-02T03:04:05Z", "e": "s"}


def test_options_are_validated() -> None:
    with pytest.raises(ConfigError) as err:
        RabbitMQBroker(URL, options={"prefetch": 0, "queue_type": "stream", "initial_offset": "earliest"})
    text = str(err.value)
    assert "broker.options.prefetch" in text
    assert "broker.options.queue_type" in text
    assert "broker.options.initial_offset" in text  # not applicable: RabbitMQ keeps no history


def test_example_config_is_valid() -> None:
    from pathlib import Path

    from mesh.config import load_config

    path = Path(__file__).resolve().parents[2] / "examples" / "config" / "rabbitmq.yaml"
    config = load_config(path, env={"RABBITMQ_URL": "amqp://app:secret@rabbit:5672/shop"})
    assert config.broker.type == "rabbitmq"
    assert config.broker.url == "amqp://app:secret@rabbit:5672/shop"
    broker = RabbitMQBroker(config.broker.url, options=config.broker.options)
    assert broker.settings.prefetch == 100
    assert broker.address == "rabbit:5672 (vhost shop)"


# -- topology ----------------------------------------------------------------------------------------


async def test_topology_names_and_durability(make: Make, raw: Any) -> None:
    broker = await make()
    topic, group = unique(), unique("g")
    await broker.ensure_topic(topic)
    exchange = await raw.declare_exchange(topic, aio_pika.ExchangeType.TOPIC, durable=True)  # same kind
    sub = await broker.subscribe(topic, group, Got())
    queue = await raw.declare_queue(f"{topic}.{group}", passive=True)
    assert queue.name == sub.queue == f"{topic}.{group}"  # type: ignore[attr-defined]
    await exchange.delete(if_unused=False)
    with contextlib.suppress(Exception):
        await raw.queue_delete(f"{topic}.{group}")


async def test_publish_before_any_subscriber_declares_the_exchange(make: Make, raw: Any) -> None:
    broker = await make()
    topic = unique()
    await broker.publish(topic, Event(type="t", source="/s"))  # no exchange yet: must not fail
    assert topic in broker._topics
    await raw.get_exchange(topic, ensure=True)  # passive declare: it exists now
    await broker.publish(topic, Event(type="t", source="/s"))  # cached: no re-declaration
    await (await raw.get_exchange(topic)).delete()


async def test_publish_to_an_exchange_of_another_kind_fails_clearly_and_the_broker_goes_on(
    make: Make, raw: Any
) -> None:
    broker = await make()
    topic, fine = unique(), unique()
    exchange = await raw.declare_exchange(topic, aio_pika.ExchangeType.FANOUT, durable=True)
    try:
        with pytest.raises(PublishError, match=f"{topic}.*inequivalent|inequivalent.*{topic}"):
            await broker.publish(topic, Event(type="t", source="/s"))
        assert topic not in broker._topics  # declared again on the next publish
        await broker.publish(fine, Event(type="t", source="/s"))  # the publish channel came back
        with pytest.raises(PublishError, match="inequivalent"):
            await broker.publish(topic, Event(type="t", source="/s"))
    finally:
        await exchange.delete()


async def test_many_subscriptions_start_side_by_side_and_each_gets_its_event(rabbit_url: str) -> None:
    from mesh import App

    ns = unique("ns") + "."
    config = {"broker": {"type": "rabbitmq", "url": rabbit_url, "namespace": ns}}
    app, seen, done = App("many", config=config), set(), asyncio.Event()
    topics = [f"t{i}" for i in range(40)]

    def handler_for(topic: str) -> Any:
        async def handle(event: Event) -> None:
            seen.add(topic)
            if len(seen) == len(topics):
                done.set()

        return handle

    for topic in topics:
        app.subscribe(topic)(handler_for(topic))
    assert type(app.broker).subscribe_concurrency > 1
    try:
        async with app:
            assert len(app._subscriptions) == len(topics)
            await asyncio.gather(*(app.publish(t, {}, type="x") for t in topics))
            await asyncio.wait_for(done.wait(), 30)
    finally:
        await _delete(rabbit_url, {f"{ns}{t}.many" for t in topics}, {f"{ns}{t}" for t in topics})


async def test_routing_key_is_the_partitionkey(make: Make, raw: Any) -> None:
    broker = await make()
    topic = unique()
    await broker.ensure_topic(topic)
    only_eu = await raw.declare_queue(exclusive=True)
    await only_eu.bind(topic, routing_key="eu.#")
    await broker.publish(topic, ev(1, partitionkey="eu.fr"))
    await broker.publish(topic, ev(2, partitionkey="us.ny"))
    await broker.publish(topic, ev(3))  # routing key = the topic
    await broker.publish(topic, ev(4, partitionkey="k" * 300))  # too long for a routing key
    message = await only_eu.get(timeout=5)
    assert message.routing_key == "eu.fr"
    assert message.headers["ce-partitionkey"] == "eu.fr"
    await message.ack()
    await asyncio.sleep(0.2)
    assert await only_eu.get(fail=False) is None
    await (await raw.get_exchange(topic)).delete()


async def test_quorum_queue_with_single_active_consumer(make: Make) -> None:
    first = await make(queue_type="quorum", single_active_consumer=True)
    second = await make(queue_type="quorum", single_active_consumer=True)
    topic, group = unique(), unique("g")
    a, b = Got(), Got()
    sub_a = await first.subscribe(topic, group, a)
    await second.subscribe(topic, group, b)
    for i in range(20):
        await first.publish(topic, ev(i, partitionkey="k"))
    await wait_for(lambda: len(a.events) + len(b.events) == 20, what="20 deliveries")
    assert len(a.events) == 20, "one active consumer at a time"
    assert not b.events, "one active consumer at a time"
    assert [e.data["i"] for e in a.events] == list(range(20)), "in publish order"
    await sub_a.stop()
    await first.publish(topic, Event(type="t", source="/s", data={"i": 20}))
    await wait_for(lambda: len(b.events) == 1, what="the standby consumer takes over")


async def test_quorum_queue_counts_a_return_after_a_consumer_died(make: Make) -> None:
    first = await make(queue_type="quorum")
    topic, group = unique(), unique("g")
    held: list[Delivery] = []

    async def hold(delivery: Delivery) -> None:
        held.append(delivery)

    sub = await first.subscribe(topic, group, hold)
    await first.publish(topic, Event(type="t", source="/s"))
    await wait_for(lambda: len(held) == 1, what="first delivery")
    await sub.stop(drain=False)  # never acked: the broker returns it and counts the return
    second = await make(queue_type="quorum")
    got = Got()
    await second.subscribe(topic, group, got)
    await wait_for(lambda: len(got.deliveries) == 1, what="redelivery")
    assert held[0].attempt == 1
    assert got.deliveries[0].attempt == 2


async def test_a_consumer_the_broker_cancelled_comes_back_with_its_queue(make: Make, raw: Any) -> None:
    broker = await make()
    topic, group, got = unique(), unique("g"), Got()
    sub = await broker.subscribe(topic, group, got)
    await broker.publish(topic, ev(1))
    await wait_for(lambda: len(got.events) == 1, what="the first event")
    first = sub._consumer.tag  # type: ignore[attr-defined]
    await raw.queue_delete(sub.queue)  # type: ignore[attr-defined]  # the broker cancels our consumer
    await wait_for(lambda: sub._consumer.tag not in (None, first), what="consuming again")  # type: ignore[attr-defined]
    await raw.declare_queue(sub.queue, passive=True)  # type: ignore[attr-defined]  # declared again
    await broker.publish(topic, ev(2))
    await wait_for(lambda: len(got.events) == 2, what="the event after the queue came back")
    assert [e.data["i"] for e in got.events] == [1, 2]


@pytest.mark.parametrize("queue_type", ["classic", "quorum"])
async def test_attempts_count_immediate_and_delayed_nacks(make: Make, queue_type: str) -> None:
    broker = await make(queue_type=queue_type)
    topic = unique()
    attempts: list[int] = []

    async def handler(delivery: Delivery) -> None:
        attempts.append(delivery.attempt)
        if delivery.attempt < 5:
            await delivery.nack(delay=0.1 if delivery.attempt % 2 == 0 else None)
        else:
            await delivery.ack()

    await broker.subscribe(topic, unique("g"), handler)
    await broker.publish(topic, ev(1))
    await wait_for(lambda: len(attempts) == 5, what="five attempts")
    await asyncio.sleep(0.3)
    assert attempts == [1, 2, 3, 4, 5]


async def test_existing_queue_with_other_settings_is_a_clear_error(make: Make) -> None:
    classic = await make()
    topic, group = unique(), unique("g")
    await classic.subscribe(topic, group, Got())
    quorum = await make(queue_type="quorum")
    with pytest.raises(Exception, match="exists with other settings"):
        await quorum.subscribe(topic, group, Got())


# -- delayed and immediate redelivery ------------------------------------------------------------------


async def test_delayed_nack_goes_to_this_group_only(make: Make, raw: Any) -> None:
    broker = await make()
    topic = unique()
    seen_a: list[tuple[str, int]] = []
    b = Got()

    async def nack_once(delivery: Delivery) -> None:
        assert delivery.event is not None
        seen_a.append((delivery.event.id, delivery.attempt))
        if delivery.attempt == 1:
            await delivery.nack(delay=0.3)
        else:
            await delivery.ack()

    await broker.subscribe(topic, unique("ga"), nack_once)
    await broker.subscribe(topic, unique("gb"), b)
    sent = Event(type="t", source="/s", data={"x": 1})
    await broker.publish(topic, sent)
    await wait_for(lambda: len(seen_a) == 2, what="the delayed redelivery")
    await asyncio.sleep(0.5)
    assert seen_a == [(sent.id, 1), (sent.id, 2)]
    assert [e.id for e in b.events] == [sent.id], "the other group saw it once"
    delay_queue = await raw.declare_queue("_mesh.delay.300", passive=True)
    assert delay_queue.name == "_mesh.delay.300"


async def test_repeated_delays_are_not_dropped_as_a_dead_letter_cycle(make: Make) -> None:
    broker = await make()
    topic = unique()
    attempts: list[int] = []

    async def handler(delivery: Delivery) -> None:
        attempts.append(delivery.attempt)
        if delivery.attempt < 4:
            await delivery.nack(delay=0.1)
        else:
            await delivery.ack()

    await broker.subscribe(topic, unique("g"), handler)
    await broker.publish(topic, Event(type="t", source="/s"))
    await wait_for(lambda: len(attempts) == 4, timeout=20, what="four attempts through the delay queue")
    assert attempts == [1, 2, 3, 4]


async def test_delay_queue_is_declared_again_when_it_is_gone(make: Make, raw: Any) -> None:
    broker = await make()
    topic = unique()
    attempts: list[tuple[int, int]] = []

    async def handler(delivery: Delivery) -> None:
        assert delivery.event is not None
        attempts.append((delivery.event.data["n"], delivery.attempt))
        if delivery.attempt == 1:
            await delivery.nack(delay=0.17)
        else:
            await delivery.ack()

    await broker.subscribe(topic, unique("g"), handler)
    await broker.publish(topic, Event(type="t", source="/s", data={"n": 1}))
    await wait_for(lambda: len(attempts) == 2, what="the first delayed redelivery")
    await raw.queue_delete("_mesh.delay.170")  # still cached by the broker, gone on the server
    await broker.publish(topic, Event(type="t", source="/s", data={"n": 2}))
    await wait_for(lambda: len(attempts) == 4, what="a redelivery through the re-declared queue")
    assert attempts == [(1, 1), (1, 2), (2, 1), (2, 2)]


async def test_delay_queue_declared_with_other_expiry_is_used_as_it_is(make: Make, raw: Any) -> None:
    name = "_mesh.delay.190"
    with contextlib.suppress(Exception):
        await raw.queue_delete(name)
    await raw.declare_queue(
        name,
        durable=True,
        arguments={"x-message-ttl": 190, "x-dead-letter-exchange": "", "x-expires": 123_456},
    )
    broker = await make(delay_queue_expires=60)
    topic = unique()
    attempts: list[int] = []

    async def handler(delivery: Delivery) -> None:
        attempts.append(delivery.attempt)
        if delivery.attempt == 1:
            await delivery.nack(delay=0.19)
        else:
            await delivery.ack()

    await broker.subscribe(topic, unique("g"), handler)
    await broker.publish(topic, Event(type="t", source="/s"))
    await wait_for(lambda: attempts == [1, 2], what="a redelivery through the existing delay queue")
    await broker.publish(topic, Event(type="t", source="/s"))  # the publish channel is unharmed
    await wait_for(lambda: len(attempts) == 4, what="later events still flow")
    await raw.queue_delete(name)


async def test_legacy_message_keeps_its_id_across_a_nack(make: Make, raw: Any) -> None:
    broker = await make()
    topic = unique()
    ids: list[str] = []

    async def handler(delivery: Delivery) -> None:
        assert delivery.event is not None
        ids.append(delivery.event.id)
        if len(ids) == 1:
            await delivery.nack()
        else:
            await delivery.ack()

    await broker.subscribe(topic, unique("g"), handler)
    await raw_publish(raw, topic, b'{"legacy": true}')  # aio-pika gives it no message_id
    await wait_for(lambda: len(ids) == 2, what="a redelivered legacy message")
    assert ids[0] == ids[1]


# -- interop with the CloudEvents SDK --------------------------------------------------------------------


async def test_sdk_binary_and_structured_messages_are_read(make: Make, raw: Any) -> None:
    broker = await make()
    topic, got = unique(), Got()
    await broker.subscribe(topic, unique("g"), got)
    when = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)
    binary = CloudEvent(
        {
            "type": "sdk.binary",
            "source": "/sdk",
            "id": "b-1",
            "subject": "s",
            "time": when,
            "datacontenttype": "application/json",
            "tenant": "acme",
        },
        {"a": 1},
    )
    structured = CloudEvent({"type": "sdk.structured", "source": "/sdk", "id": "s-1"}, {"b": [1, 2]})
    for wire in (sdk.to_binary_event(binary), sdk.to_structured_event(structured)):
        await raw_publish(raw, topic, wire.body, headers=wire.headers, content_type=wire.content_type)
    await wait_for(lambda: len(got.deliveries) == 2, what="two SDK events")
    first, second = got.events
    assert (first.id, first.type, first.source, first.subject) == ("b-1", "sdk.binary", "/sdk", "s")
    assert first.time == when
    assert first.data == {"a": 1}
    assert first.extensions == {"tenant": "acme"}
    assert first.datacontenttype == "application/json"
    assert (second.id, second.type, second.data) == ("s-1", "sdk.structured", {"b": [1, 2]})


@pytest.mark.parametrize("content_mode", ["binary", "structured"])
async def test_mesh_messages_are_read_by_the_sdk(make: Make, raw: Any, content_mode: str) -> None:
    broker = await make(content_mode=content_mode)
    topic = unique()
    await broker.ensure_topic(topic)
    queue = await raw.declare_queue(exclusive=True)
    await queue.bind(topic, routing_key="#")
    sent = Event(
        type="mesh.sent",
        source="/mesh",
        subject="A1",
        data={"id": "A1", "qty": 2},
        time=datetime(2026, 11, 20, 10, 0, 1, tzinfo=UTC),
        extensions={"partitionkey": "A1", "tenant": "acme"},
    )
    await broker.publish(topic, sent)
    message = await queue.get(timeout=5)
    await message.ack()
    assert message.message_id == sent.id
    assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    wire = sdk.RabbitMQMessage(headers=dict(message.headers), content_type=message.content_type, body=message.body)
    received = sdk.from_rabbitmq_event(wire)
    assert received.get_id() == sent.id
    assert received.get_type() == "mesh.sent"
    assert received.get_source() == "/mesh"
    assert received.get_subject() == "A1"
    assert received.get_time() == sent.time
    assert received.get_data() == {"id": "A1", "qty": 2}
    assert received.get_extension("tenant") == "acme"
    assert received.get_extension("partitionkey") == "A1"
    assert received.get_datacontenttype() == "application/json"


async def test_cloudevents_prefixed_headers_are_read(make: Make, raw: Any) -> None:
    broker = await make()
    topic, got = unique(), Got()
    await broker.subscribe(topic, unique("g"), got)
    for prefix in ("cloudEvents_", "cloudEvents:"):
        attributes = {"specversion": "1.0", "id": prefix, "source": "/amqp", "type": "amqp.t", "ext": "x"}
        headers = {f"{prefix}{k}": v for k, v in attributes.items()}
        await raw_publish(raw, topic, b'{"p": 1}', headers=headers, content_type="application/json")
    await wait_for(lambda: len(got.deliveries) == 2, what="two prefixed events")
    assert [e.id for e in got.events] == ["cloudEvents_", "cloudEvents:"]
    assert all(e.data == {"p": 1} and e.extensions == {"ext": "x"} for e in got.events)


async def test_legacy_messages_are_wrapped(make: Make, raw: Any) -> None:
    broker = await make()
    topic, got = unique(), Got()
    await broker.subscribe(topic, unique("g"), got)
    await raw_publish(raw, topic, b'{"order": 1}')
    await raw_publish(raw, topic, b'{"order": 2}', content_type="application/json", message_id="m-2")
    await raw_publish(raw, topic, b"\x00\x01bytes", key="some.key")
    await wait_for(lambda: len(got.deliveries) == 3, what="three legacy messages")
    assert all(d.error is None for d in got.deliveries)
    first, second, third = got.events
    assert {e.type for e in got.events} == {LEGACY_TYPE}
    assert first.data == {"order": 1}
    assert second.data == {"order": 2}
    assert second.id == "m-2"
    assert third.data == b"\x00\x01bytes"
    assert third.subject == "some.key"


class NotUtf8(str):
    """A header value that pamqp writes as a long string of bytes that are not UTF-8."""

    __slots__ = ()

    def encode(self, encoding: str = "utf-8", errors: str = "strict") -> bytes:
        return b"\xff\xfe/s"


async def test_corrupt_input_is_a_delivery_error_and_the_stream_goes_on(make: Make, raw: Any) -> None:
    broker = await make()
    topic, got = unique(), Got()
    await broker.subscribe(topic, unique("g"), got)
    ok = {"ce-specversion": "1.0", "ce-id": "1", "ce-source": "/s", "ce-type": "t"}
    json = "application/json"
    await raw_publish(raw, topic, b"{}", headers={**ok, "ce-source": NotUtf8("x")}, content_type=json)
    await raw_publish(raw, topic, b"{}", headers={**ok, "ce-type": bytearray(b"\xff")}, content_type=json)
    await raw_publish(raw, topic, b"{not json", headers=ok, content_type=json)
    await raw_publish(raw, topic, b"{not json", content_type=json)  # legacy, bad JSON
    no_id = {k: v for k, v in ok.items() if k != "ce-id"}
    await raw_publish(raw, topic, b"{}", headers=no_id, content_type=json)
    await raw_publish(raw, topic, b"{", content_type="application/cloudevents+json")
    await broker.publish(topic, Event(type="fine", source="/s", data={"ok": True}))
    await wait_for(lambda: len(got.deliveries) == 7, what="seven deliveries")
    errors = got.deliveries[:6]
    assert all(d.event is None and d.error is not None and d.raw is not None for d in errors)
    assert "UTF-8" in str(errors[0].error)
    assert "UTF-8" in str(errors[1].error)
    assert "id" in str(errors[4].error)
    assert got.deliveries[6].event is not None
    assert got.deliveries[6].event.type == "fine"


# -- connection ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "needle"),
    [
        (f"amqp://guest:guest@127.0.0.1:{free_port()}/", "refused"),
        (URL.replace("guest:guest", "guest:wrong"), "authentication"),
        ("http://127.0.0.1:5672/", "amqp://"),
    ],
)
async def test_connection_errors_are_bounded_and_clear(rabbit_url: str, url: str, needle: str) -> None:
    broker = RabbitMQBroker(url, options={"connect_timeout": 3})
    loop = asyncio.get_running_loop()
    start = loop.time()
    with pytest.raises(BrokerConnectionError) as err:
        await broker.connect()
    assert loop.time() - start < 6
    assert needle in str(err.value)
    assert "rabbitmq" in str(err.value)
    assert "wrong" not in str(err.value), "the password never shows"


def _without_credentials(url: str) -> str:
    scheme, rest = url.split("://", 1)
    return f"{scheme}://{rest.rsplit('@', 1)[-1]}"


async def test_credentials_given_as_options_override_the_url(rabbit_url: str) -> None:
    bare = _without_credentials(rabbit_url)
    assert "@" not in bare
    for url, options in [
        (bare, {"username": "guest", "password": "guest"}),
        (rabbit_url.replace("guest:guest", "guest:wrong"), {"password": "guest"}),
    ]:
        broker = RabbitMQBroker(url, options={"connect_timeout": 3, **options})
        try:
            await broker.connect()
            await broker.publish(unique(), Event(type="t", source="/s"))
        finally:
            await broker.close()
    refused = RabbitMQBroker(bare, options={"connect_timeout": 3, "username": "guest", "password": "wrong"})
    with pytest.raises(BrokerConnectionError, match="authentication") as err:
        await refused.connect()
    assert "wrong" not in str(err.value), "the password never shows"


def test_repr_masks_the_password() -> None:
    broker = RabbitMQBroker("amqp://app:s3cret@rabbit:5672/shop", options={"password": "other"})
    assert repr(broker) == "RabbitMQBroker(url='amqp://app:***@rabbit:5672/shop')"
    assert "other" not in repr(broker.settings)
    assert broker.address == "rabbit:5672 (vhost shop)"


async def test_unknown_vhost_is_a_connection_error(rabbit_url: str) -> None:
    broker = RabbitMQBroker(rabbit_url.rstrip("/") + "/no-such-vhost", options={"connect_timeout": 3})
    with pytest.raises(BrokerConnectionError, match="no-such-vhost"):
        await broker.connect()


async def test_publish_when_not_connected_is_an_error() -> None:
    broker = RabbitMQBroker(URL)
    with pytest.raises(PublishError):
        await broker.publish("t", Event(type="t", source="/s"))


async def test_close_is_idempotent_and_requeues_unacked(make: Make) -> None:
    broker = await make()
    topic, group = unique(), unique("g")
    held: list[Delivery] = []

    async def hold(delivery: Delivery) -> None:
        held.append(delivery)

    await broker.subscribe(topic, group, hold, concurrency=4)
    for i in range(10):
        await broker.publish(topic, Event(type="t", source="/s", data={"i": i}))
    await wait_for(lambda: len(held) == 10, what="ten held deliveries")
    await broker.close()
    await broker.close()
    other = await make()
    got = Got()
    await other.subscribe(topic, group, got)
    await wait_for(lambda: len(got.events) == 10, what="the held ones come back")


# -- server restart -----------------------------------------------------------------------------------------


def _rabbitmqctl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["rabbitmqctl", *args], capture_output=True, text=True, timeout=120, check=False)


async def _ctl(*args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(_rabbitmqctl, *args)


async def _wait_port() -> None:
    await wait_for(lambda: reachable(URL, 5672), timeout=60, what="RabbitMQ to accept connections again")


@pytest.mark.slow
@pytest.mark.timeout(240)
async def test_subscription_survives_a_server_restart(make: Make) -> None:
    """``rabbitmqctl stop_app`` then ``start_app`` mid-stream: the client reconnects, nothing is lost."""
    if shutil.which("rabbitmqctl") is None:
        pytest.skip("rabbitmqctl is not installed")
    if "127.0.0.1" not in URL and "localhost" not in URL:
        pytest.skip("only restarts a RabbitMQ on this machine")
    status = await _ctl("status")
    if status.returncode != 0:
        pytest.skip(f"rabbitmqctl cannot reach the local node: {status.stderr.strip()[:200]}")
    total, first_batch = 500, 300
    broker = await make(reconnect_interval=0.5)
    topic, group = unique("restart"), unique("g")
    handled: set[int] = set()

    async def slow(delivery: Delivery) -> None:
        assert delivery.event is not None
        await asyncio.sleep(0.03)  # 300 events take 9 s: stop_app comes before the first batch is done
        handled.add(delivery.event.data["i"])
        await delivery.ack()

    await broker.subscribe(topic, group, slow)

    async def publish(i: int) -> None:
        deadline = asyncio.get_running_loop().time() + 90
        while True:
            try:
                await broker.publish(topic, Event(type="restart", source="/t", data={"i": i}))
                return
            except PublishError:
                if asyncio.get_running_loop().time() > deadline:
                    raise
                await asyncio.sleep(0.2)

    for i in range(first_batch):
        await publish(i)
    await wait_for(lambda: len(handled) >= 30, timeout=30, what="some events handled")
    bystander = await make(operation_timeout=1)
    await bystander.subscribe(topic, unique("other"), Got())
    loop = asyncio.get_running_loop()
    try:
        stopped = await _ctl("stop_app")
        assert stopped.returncode == 0, stopped.stderr
        assert len(handled) < first_batch, "the restart came too late to test anything"
        start = loop.time()
        with pytest.raises(PublishError):  # while down: a bounded, clear error
            await bystander.publish(topic, Event(type="restart", source="/t", data={"i": -1}))
        await bystander.close()  # closing while down does not hang either
        assert loop.time() - start < 8, loop.time() - start
    finally:
        started = await _ctl("start_app")
        await _wait_port()
    assert started.returncode == 0, started.stderr
    for i in range(first_batch, total):
        await publish(i)
    await wait_for(lambda: len(handled) == total, timeout=120, what="every event after the restart")
    assert handled == set(range(total))


@pytest.mark.parametrize("direct", [True, False], ids=["direct-frames", "aiormq-publish"])
async def test_ephemeral_publishes_arrive_whole_on_either_path(
    make: Make, monkeypatch: pytest.MonkeyPatch, direct: bool
) -> None:
    """Requests and replies are written as frames directly on a tested aiormq, through aiormq's own
    publish on any other; both carry the same event (attributes, extensions, a body over a frame)."""
    monkeypatch.setattr("mesh.brokers.rabbitmq.broker.DIRECT_FRAMES", direct)
    broker = await make()
    got: list[Event] = []

    async def handler(delivery: Delivery) -> None:
        assert delivery.event is not None
        got.append(delivery.event)

    topic = unique("eph")
    await broker.subscribe_ephemeral(topic, handler)
    sent = [Event(source="/s", type="t.small", data={"i": 1}, extensions={"tenant": "acme"}),
            Event(source="/s", type="t.large", subject="big", data={"blob": "x" * 300_000})]
    for event in sent:
        await broker.publish_ephemeral(topic, event)
    await wait_for(lambda: len(got) == 2, what="both events")
    assert [(e.id, e.type, e.subject, e.data, e.extensions) for e in got] == [
        (e.id, e.type, e.subject, e.data, e.extensions) for e in sent]


async def test_ephemeral_publishes_made_just_before_close_go_out(make: Make) -> None:
    """publish_ephemeral does not wait for the write; closing the broker still sends what it queued
    (a last reply, a presence leave)."""
    receiver, sender = await make(), await make()
    got: list[str] = []

    async def handler(delivery: Delivery) -> None:
        assert delivery.event is not None
        got.append(delivery.event.id)

    topic = unique("eph")
    await receiver.subscribe_ephemeral(topic, handler)
    sent = [Event(source="/s", type="t", data={"i": i, "pad": "x" * 2000}) for i in range(300)]
    for event in sent:
        await sender.publish_ephemeral(topic, event)
    await sender.close()
    await wait_for(lambda: len(got) == len(sent), what="all 300 events")
    assert got == [e.id for e in sent]


async def test_a_stopped_subscription_is_not_kept_by_the_broker(make: Make) -> None:
    broker = await make()
    topic = unique("subs")

    async def handler(delivery: Delivery) -> None:
        await delivery.ack()

    for _ in range(3):
        sub = await broker.subscribe(topic, "g", handler)
        await sub.stop()
    kept = await broker.subscribe(topic, "g", handler)
    assert broker._subs == [kept]  # an app that subscribes and stops again and again keeps no garbage
