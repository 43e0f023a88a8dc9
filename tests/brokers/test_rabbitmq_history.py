"""RabbitMQ history (mesh.brokers.rabbitmq.history): topics matching ``stream_topics`` are logged in a
stream queue and read by time and offset, up to the end as of the read; other topics, and servers
without streams, are refused with the archive as the way out."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

aio_pika = pytest.importorskip("aio_pika")

from mesh.brokers import Delivery, create_broker  # noqa: E402
from mesh.brokers.capabilities import HistoryRecord, history_reader, keeps_history  # noqa: E402
from mesh.brokers.rabbitmq.broker import RabbitMQBroker  # noqa: E402
from mesh.brokers.rabbitmq.connection import RabbitMQConnection, parse_version  # noqa: E402
from mesh.errors import FeatureNotSupported  # noqa: E402
from mesh.event import Event  # noqa: E402
from tests.support import DEFAULT_URLS, reachable, unavailable, unique, wait_for  # noqa: E402

pytestmark = [pytest.mark.rabbitmq, pytest.mark.timeout(60)]

URL = os.environ.get("MESH_TEST_RABBITMQ_URL", DEFAULT_URLS["rabbitmq"])

Make = Callable[..., Awaitable[RabbitMQBroker]]


@pytest.fixture
async def make() -> AsyncIterator[Make]:
    """Connected RabbitMQ brokers; their exchanges, group queues and stream queues removed after."""
    if not reachable(URL, 5672):
        unavailable(f"rabbitmq at {URL}")
    made: list[RabbitMQBroker] = []
    queues: set[str] = set()

    async def factory(**options: Any) -> RabbitMQBroker:
        broker = create_broker("rabbitmq", URL, options=options)
        assert isinstance(broker, RabbitMQBroker)
        await broker.connect()
        made.append(broker)
        subscribe = broker.subscribe

        async def recording(*args: Any, **kwargs: Any) -> Any:
            sub = await subscribe(*args, **kwargs)
            queues.add(sub.queue)
            return sub

        broker.subscribe = recording  # type: ignore[method-assign]
        return broker

    yield factory
    exchanges = {name for broker in made for name in broker._topics.values()}
    queues.update(broker.connection.stream_of(t) for broker in made for t in broker._topics)
    for broker in made:
        await broker.close()
    connection = await aio_pika.connect(URL)
    try:
        channel = await connection.channel()
        for name in queues:
            with contextlib.suppress(Exception):
                await channel.queue_delete(name)
                channel = await connection.channel()
        for name in exchanges:
            with contextlib.suppress(Exception):
                await channel.exchange_delete(name)
    finally:
        await connection.close()


def ev(i: int) -> Event:
    return Event("test.history", "/tests", data={"i": i})


async def read_all(broker: RabbitMQBroker, topic: str, **kwargs: Any) -> list[HistoryRecord]:
    out: list[HistoryRecord] = []
    async for page in history_reader(broker, topic).read_history(topic, **kwargs):
        out += page
    return out


def values(records: list[HistoryRecord]) -> list[int]:
    return [r.event.data["i"] for r in records if r.event is not None]


def test_server_versions_are_parsed() -> None:
    assert parse_version(b"3.10.8") == (3, 10, 8)
    assert parse_version("3.13.0-rc.1") == (3, 13, 0)
    assert parse_version(None) is None and parse_version("x") is None


async def test_a_dlq_topic_is_logged_and_read_by_offset_oldest_first(make: Make) -> None:
    broker = await make()
    topic = unique("orders") + ".dlq"
    got: list[Event] = []

    async def handler(delivery: Delivery) -> None:
        assert delivery.event is not None
        got.append(delivery.event)
        await delivery.ack()

    await broker.subscribe(topic, unique("ops"), handler)
    assert keeps_history(broker, topic)
    for i in range(5):
        await broker.publish(topic, ev(i))
    await wait_for(lambda: len(got) == 5, what="an ordinary group of the dlq topic still gets every event")
    reader = history_reader(broker, topic)
    assert await reader.topic_exists(topic)
    records = await read_all(broker, topic, batch=2)
    assert values(records) == [0, 1, 2, 3, 4]
    assert [r.cursor["offset"] for r in records] == sorted(r.cursor["offset"] for r in records)
    assert [r.event.id for r in records if r.event is not None] == [e.id for e in got]
    start = datetime.now(UTC) - timedelta(minutes=1)
    assert all(start <= r.time <= datetime.now(UTC) for r in records), "times are when the broker took them"
    assert values(await read_all(broker, topic, cursor=records[1].cursor)) == [2, 3, 4], "resumes after a cursor"
    assert values(await read_all(broker, topic, since=start)) == [0, 1, 2, 3, 4]
    assert await read_all(broker, topic, since=datetime.now(UTC) + timedelta(minutes=1)) == []
    assert values(await read_all(broker, topic, until=start)) == []
    assert len(got) == 5, "reading the history delivers nothing to the groups"


async def test_a_read_stops_at_the_end_as_of_the_call(make: Make) -> None:
    broker = await make()
    topic = unique("pay") + ".dlq"
    for i in range(4):
        await broker.publish(topic, ev(i))
    pages: list[list[int]] = []
    async for page in history_reader(broker, topic).read_history(topic, batch=2):
        pages.append(values(page))
        if len(pages) == 1:
            for i in range(4, 6):
                await broker.publish(topic, ev(i))
    assert pages == [[0, 1], [2, 3]]
    assert values(await read_all(broker, topic)) == [0, 1, 2, 3, 4, 5], "the next read sees the later ones"


async def test_other_topics_are_refused_naming_the_archive(make: Make) -> None:
    broker = await make()
    topic = unique("orders")
    await broker.publish(topic, ev(0))
    assert not keeps_history(broker, topic)
    with pytest.raises(FeatureNotSupported, match=r"stream_topics \(\*\.dlq\).*archive"):
        history_reader(broker, topic)
    custom = await make(stream_topics=["mt-*.audit"])
    audit = unique("x") + ".audit"
    await custom.publish(audit, ev(1))
    assert keeps_history(custom, audit) and not keeps_history(custom, unique("y") + ".dlq")
    assert values(await read_all(custom, audit)) == [1]


async def test_a_server_without_streams_still_dead_letters_and_names_version_and_archive(
    make: Make, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # The server here has streams: what an older one announces is all that changes.
    monkeypatch.setattr(RabbitMQConnection, "server_version", property(lambda self: (3, 8, 9)))
    broker = await make()
    topic = unique("pay") + ".dlq"
    await broker.publish(topic, ev(0))
    assert "RabbitMQ 3.8.9" in caplog.text and "archive" in caplog.text
    assert not await broker.connection.queue_exists(broker.connection.stream_of(topic)), "no stream declared"
    with pytest.raises(FeatureNotSupported, match=r"RabbitMQ 3\.8\.9 .* no stream queues .*archive"):
        history_reader(broker, topic)
