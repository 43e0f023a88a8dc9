"""Redis Streams adapter: the binding on real entries, corrupt input, recovery, delays, trimming.

The contract suite and the crash test cover the common behaviour; these tests cover what is
Redis's own: entry fields as written by other producers (raw redis-py, the CloudEvents SDK),
XAUTOCLAIM take-over, the delay set, consumer clean-up and stream trimming.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis

from mesh.brokers import Delivery
from mesh.brokers.redis.broker import RedisBroker
from mesh.codecs.binary import LEGACY_TYPE
from mesh.codecs.structured import to_structured
from mesh.errors import BrokerConnectionError, BrokerError, ConfigError, DecodeError, PublishError
from mesh.event import Event
from tests.support import DEFAULT_URLS, connected, reachable, unavailable, unique, wait_for

pytestmark = [pytest.mark.redis, pytest.mark.timeout(60)]

URL = os.environ.get("MESH_TEST_REDIS_URL", DEFAULT_URLS["redis"])
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
async def raw() -> AsyncIterator[aioredis.Redis]:
    """A plain redis-py client, as a producer or consumer outside the mesh would use."""
    if not reachable(URL, 6379):
        unavailable(f"redis at {URL}")
    client = aioredis.from_url(URL)
    yield client
    await client.aclose()


@pytest.fixture
async def streams(raw: aioredis.Redis) -> AsyncIterator[Callable[[str], str]]:
    """Fresh stream names; the streams and their delay sets are deleted after the test."""
    made: list[str] = []

    def new(prefix: str = "rt") -> str:
        name = unique(prefix)
        made.append(name)
        return name

    yield new
    for name in made:
        keys = [k async for k in raw.scan_iter(match=f"*_mesh.delay:{{*{name}}}:*")]
        await raw.delete(name, *keys)


@pytest.fixture
async def make(raw: aioredis.Redis, streams: Callable[[str], str]) -> AsyncIterator[Callable[..., Any]]:
    """Connected RedisBrokers with the given options; closed after the test, before its streams
    are deleted (a running consumer would create a deleted stream again)."""

    def build(**options: Any) -> RedisBroker:
        kwargs = {k: options.pop(k) for k in ("content_mode", "namespace", "client_id") if k in options}
        return RedisBroker(URL, options=options, **kwargs)

    async for factory in connected(build):
        yield factory


class Got:
    """Records deliveries and acks them."""

    def __init__(self, ack: bool = True) -> None:
        self.ack = ack
        self.items: list[Delivery] = []

    async def __call__(self, delivery: Delivery) -> None:
        self.items.append(delivery)
        if self.ack:
            await delivery.ack()

    @property
    def events(self) -> list[Event]:
        return [d.event for d in self.items if d.event is not None]


def crash(broker: RedisBroker) -> None:
    """Kill every subscription of a broker as a SIGKILL would: no ack, no give-back."""
    for reader in list(broker._readers):
        reader.kill()
    for sub in list(broker._subs):
        sub.running = False
        sub._worker.cancel()
        sub._stopped = True
    broker._subs.clear()
    broker._readers.clear()


# -- the binding ----------------------------------------------------------------------------


async def test_publish_writes_binary_fields(make, raw, streams) -> None:
    broker = await make()
    topic = streams()
    ev = Event(type="t.created", source="/s", data={"a": 1}, extensions={"tenant": "acme", "n": 3})
    await broker.publish(topic, ev)
    [(_, fields)] = await raw.xrange(topic)
    assert fields[b"ce_specversion"] == b"1.0"
    assert fields[b"ce_id"] == ev.id.encode()
    assert fields[b"ce_type"] == b"t.created"
    assert fields[b"ce_tenant"] == b"acme"
    assert fields[b"ce_n"] == b"3"
    assert fields[b"content-type"] == b"application/json"
    assert orjson.loads(fields[b"data"]) == {"a": 1}
    assert b"event" not in fields


async def test_publish_structured_writes_one_event_field(make, raw, streams) -> None:
    broker = await make(content_mode="structured")
    topic = streams()
    ev = Event(type="t", source="/s", data={"a": 1})
    await broker.publish(topic, ev)
    [(_, fields)] = await raw.xrange(topic)
    assert list(fields) == [b"event"]
    doc = orjson.loads(fields[b"event"])
    assert doc["id"] == ev.id
    assert doc["data"] == {"a": 1}
    assert doc["specversion"] == "1.0"
    got = Got()
    await broker.subscribe(topic, unique("g"), got)
    await wait_for(lambda: len(got.items) == 1)
    assert got.events[0].id == ev.id
    assert got.events[0].data == {"a": 1}


async def test_event_without_data_has_no_data_field(make, raw, streams) -> None:
    broker = await make()
    topic = streams()
    await broker.publish(topic, Event(type="t", source="/s"))
    [(_, fields)] = await raw.xrange(topic)
    assert b"data" not in fields
    assert b"content-type" not in fields
    got = Got()
    await broker.subscribe(topic, unique("g"), got)
    await wait_for(lambda: len(got.items) == 1)
    assert got.events[0].data is None


async def test_legacy_entries_are_wrapped(make, raw, streams) -> None:
    broker = await make()
    topic = streams()
    plain = await raw.xadd(topic, {"user": "bob", "action": "login"})
    await raw.xadd(topic, {"data": orjson.dumps({"order": 7}), "origin": "legacy-app"})
    await raw.xadd(topic, {"data": b"hello", "content-type": "text/plain"})
    await raw.xadd(topic, {"data": b"\x00\xffbin"})
    got = Got()
    await broker.subscribe(topic, unique("g"), got)
    await wait_for(lambda: len(got.items) == 4)
    assert all(d.error is None for d in got.items)
    assert {e.type for e in got.events} == {LEGACY_TYPE}
    fields, with_data, text, binary = got.events
    assert fields.data == {"user": "bob", "action": "login"}
    assert fields.datacontenttype == "application/json"
    assert fields.id == f"{topic}:{plain.decode()}", "a stable id: the same entry keeps it on redelivery"
    assert fields.source == f"/mesh/legacy/{topic}"
    assert with_data.data == {"order": 7}
    assert got.items[1].raw is not None
    assert got.items[1].raw.headers["origin"] == b"legacy-app"
    assert text.data == "hello"
    assert binary.data == b"\x00\xffbin"


async def test_structured_event_field_from_a_foreign_producer(make, raw, streams) -> None:
    broker = await make()
    topic = streams()
    ev = Event(type="t.s", source="/foreign", subject="x", data={"k": [1, 2]}, extensions={"tenant": "a"})
    await raw.xadd(topic, {"event": to_structured(ev)})
    got = Got()
    await broker.subscribe(topic, unique("g"), got)
    await wait_for(lambda: len(got.items) == 1)
    received = got.events[0]
    assert (received.id, received.type, received.subject, received.data) == (ev.id, "t.s", "x", {"k": [1, 2]})
    assert received.extensions["tenant"] == "a"


async def test_cloudevents_sdk_json_and_binary_are_read(make, raw, streams) -> None:
    from cloudevents.core.bindings import kafka as sdk_kafka
    from cloudevents.core.formats.json import JSONFormat
    from cloudevents.core.v1.event import CloudEvent

    broker = await make()
    topic = streams()
    structured = CloudEvent({"type": "sdk.json", "source": "/sdk", "id": "j1"}, {"n": 1})
    await raw.xadd(topic, {"event": JSONFormat().write(structured)})
    binary = CloudEvent(
        {"type": "sdk.bin", "source": "/sdk", "id": "b1", "datacontenttype": "application/json", "ext": "v"},
        {"n": 2},
    )
    msg = sdk_kafka.to_binary(binary, JSONFormat())
    await raw.xadd(topic, {**msg.headers, "data": msg.value})
    got = Got()
    await broker.subscribe(topic, unique("g"), got)
    await wait_for(lambda: len(got.items) == 2)
    assert [d.error for d in got.items] == [None, None]
    first, second = got.events
    assert (first.id, first.type, first.data) == ("j1", "sdk.json", {"n": 1})
    assert first.time is not None
    assert (second.id, second.type, second.data, second.extensions["ext"]) == ("b1", "sdk.bin", {"n": 2}, "v")


async def test_what_the_mesh_writes_the_sdk_reads(make, raw, streams) -> None:
    from cloudevents.core.bindings import kafka as sdk_kafka
    from cloudevents.core.formats.json import JSONFormat

    topic = streams()
    ev = Event(type="mesh.out", source="/mesh", data={"z": 1}, extensions={"tenant": "acme"})
    await (await make()).publish(topic, ev)
    await (await make(content_mode="structured")).publish(topic, ev)
    (_, binary), (_, structured) = await raw.xrange(topic)
    headers = {k.decode(): v for k, v in binary.items() if k != b"data"}
    read = sdk_kafka.from_binary(sdk_kafka.KafkaMessage(headers, None, binary[b"data"]), JSONFormat())
    assert (read.get_id(), read.get_type(), read.get_data()) == (ev.id, "mesh.out", {"z": 1})
    assert read.get_extension("tenant") == "acme"
    parsed = JSONFormat().read(None, structured[b"event"])
    assert (parsed.get_id(), parsed.get_data()) == (ev.id, {"z": 1})


async def test_corrupt_entries_arrive_as_errors_and_later_events_flow(make, raw, streams) -> None:
    broker = await make()
    topic, group = streams(), unique("g")
    ce = {"ce_specversion": "1.0", "ce_id": "x", "ce_source": "/s", "ce_type": "t"}
    bad = [
        {**ce, b"\xff\xfename": b"v"},  # field name not UTF-8
        {**ce, "ce_type": b"\xff\xfe"},  # attribute value not UTF-8
        {**ce, "content-type": "application/json", "data": b"{not json"},
        {"ce_specversion": "1.0", "ce_source": "/s", "ce_type": "t"},  # no ce_id
        {"event": b"{broken"},
        {"data": b"{bad", "content-type": "application/json"},
        {"content-type": b"\xff", "data": b"x"},
    ]
    for fields in bad:
        await raw.xadd(topic, fields)
    got = Got()
    await broker.subscribe(topic, group, got)
    good = Event(type="after", source="/s", data={"ok": True})
    await broker.publish(topic, good)
    await wait_for(lambda: len(got.items) == len(bad) + 1)
    errors, last = got.items[:-1], got.items[-1]
    assert all(d.event is None and isinstance(d.error, DecodeError) for d in errors)
    assert all(d.raw is not None for d in errors)
    assert errors[2].raw is not None
    assert errors[2].raw.body == b"{not json"
    assert last.event is not None
    assert last.event.id == good.id
    await asyncio.sleep(0.3)  # acks are flushed before the next read
    assert (await raw.xpending(topic, group))["pending"] == 0


# -- connecting -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "needle"),
    [
        ("redis://127.0.0.1:1/0", "127.0.0.1:1/0"),
        ("redis://nobody:pw@127.0.0.1:6379/0", "127.0.0.1:6379/0"),
        ("redis://no-such-host.invalid:6379/0", "no-such-host.invalid:6379/0"),
        ("http://127.0.0.1:6379/0", "127.0.0.1:6379/0"),
    ],
)
async def test_connection_errors_are_bounded_and_named(raw, url: str, needle: str) -> None:
    broker = RedisBroker(url, options={"connect_timeout": 2.0})
    loop = asyncio.get_running_loop()
    start = loop.time()
    with pytest.raises(BrokerConnectionError) as info:
        await broker.connect()
    assert loop.time() - start < 4.0
    text = str(info.value)
    assert "redis" in text
    assert needle in text
    assert "wrong-password" not in text
    assert info.value.__cause__ is not None


async def test_bad_password_is_a_connection_error(raw) -> None:
    user = unique("mesh-test-user")
    await raw.execute_command("ACL", "SETUSER", user, "on", ">right-password", "~*", "+@all")
    try:
        good = RedisBroker(URL.replace("redis://", f"redis://{user}:right-password@"))
        await good.connect()
        await good.close()
        bad = RedisBroker(URL.replace("redis://", f"redis://{user}:wrong-password@"))
        with pytest.raises(BrokerConnectionError) as info:
            await bad.connect()
        assert "127.0.0.1:6379/0" in str(info.value)
        assert "wrong-password" not in str(info.value)
        with pytest.raises(BrokerConnectionError):
            await RedisBroker(URL, options={"username": user, "password": "nope"}).connect()
    finally:
        await raw.execute_command("ACL", "DELUSER", user)


async def test_unknown_option_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as info:
        RedisBroker(URL, options={"maxlenn": 3})
    assert "broker.options.maxlenn" in str(info.value)


async def test_publish_before_connect_fails_clearly() -> None:
    with pytest.raises(BrokerError, match="not connected"):
        await RedisBroker(URL).publish("x", Event(type="t", source="/s"))


# -- topology -------------------------------------------------------------------------------


async def test_ensure_topic_makes_an_empty_stream_without_groups(make, raw, streams) -> None:
    broker = await make()
    topic = streams()
    await broker.ensure_topic(topic)
    await broker.ensure_topic(topic)  # idempotent
    assert await raw.type(topic) == b"stream"
    assert await raw.xlen(topic) == 0
    assert await raw.xinfo_groups(topic) == []
    other = streams()
    await raw.set(other, "not a stream")
    with pytest.raises(BrokerError, match="not a stream"):
        await broker.ensure_topic(other)


async def test_namespace_prefixes_the_stream_key(make, raw, streams) -> None:
    stream = streams("ns")  # deleted afterwards: "<ns>" + "." + topic
    namespace, topic = stream[:6], stream[6:]
    broker = await make(namespace=namespace)
    await broker.publish(topic, Event(type="t", source="/s"))
    assert await raw.xlen(stream) == 1
    assert await raw.exists(topic) == 0


async def test_initial_offset_latest_skips_history(make, raw, streams) -> None:
    broker = await make(initial_offset="latest")
    topic = streams()
    await broker.publish(topic, Event(type="old", source="/s"))
    got = Got()
    await broker.subscribe(topic, unique("g"), got)
    await broker.publish(topic, Event(type="new", source="/s"))
    await wait_for(lambda: len(got.items) == 1)
    await asyncio.sleep(0.2)
    assert [e.type for e in got.events] == ["new"]


@pytest.mark.parametrize(
    ("options", "expected"), [({"maxlen": 10, "approximate_trim": False}, 10), ({"maxlen": None}, 300)]
)
async def test_trimming(make, raw, streams, options: dict[str, Any], expected: int) -> None:
    broker = await make(**options)
    topic = streams()
    for i in range(300):
        await broker.publish(topic, Event(type="t", source="/s", data={"i": i}))
    assert await raw.xlen(topic) == expected


async def test_approximate_trimming_keeps_about_maxlen(make, raw, streams) -> None:
    broker = await make(maxlen=10)
    topic = streams()
    for i in range(500):
        await broker.publish(topic, Event(type="t", source="/s", data={"i": i}))
    assert 10 <= await raw.xlen(topic) < 500


# -- delivery -------------------------------------------------------------------------------


async def test_nack_redelivers_to_its_group_only(make, raw, streams) -> None:
    broker = await make()
    topic = streams()
    a_attempts: list[int] = []
    b = Got()

    async def nacker(delivery: Delivery) -> None:
        a_attempts.append(delivery.attempt)
        if len(a_attempts) < 3:
            await delivery.nack()
        else:
            await delivery.ack()

    await broker.subscribe(topic, unique("ga"), nacker)
    await broker.subscribe(topic, unique("gb"), b)
    await broker.publish(topic, Event(type="t", source="/s"))
    await wait_for(lambda: len(a_attempts) == 3 and len(b.items) == 1)
    await asyncio.sleep(0.3)
    assert a_attempts == [1, 2, 3]
    assert len(b.items) == 1
    assert b.items[0].attempt == 1


async def test_delayed_nack_is_durable_in_the_delay_set(make, raw, streams) -> None:
    first = await make()
    topic, group = streams(), unique("g")
    held = Got(ack=False)
    sub = await first.subscribe(topic, group, held)
    await first.publish(topic, Event(type="t", source="/s", data={"i": 1}))
    await wait_for(lambda: len(held.items) == 1)
    entry = held.items[0]
    await entry.nack(delay=1.0)
    delay_key = f"_mesh.delay:{{{topic}}}:{group}"
    assert await raw.zcard(delay_key) == 1
    await sub.stop()  # the consumer that delayed it is gone; the group still has it
    assert (await raw.xpending(topic, group))["pending"] == 1

    second = await make()
    got = Got()
    loop = asyncio.get_running_loop()
    start = loop.time()
    await second.subscribe(topic, group, got)
    await wait_for(lambda: len(got.items) == 1, timeout=10)
    assert loop.time() - start >= 0.5, "not before it is due"
    assert got.items[0].attempt == 2
    assert got.events[0].id == entry.event.id  # type: ignore[union-attr]
    assert await raw.zcard(delay_key) == 0


async def test_dead_consumer_entries_are_claimed_after_claim_idle(make, raw, streams) -> None:
    topic, group = streams(), unique("g")
    await raw.xgroup_create(topic, group, "0", mkstream=True)
    for i in range(5):
        await raw.xadd(topic, {"data": orjson.dumps({"i": i})})
    # a consumer outside the mesh took them and died
    taken = await raw.xreadgroup(group, "dead-consumer", {topic: ">"}, count=5)
    assert len(taken[0][1]) == 5
    broker = await make(claim_idle_ms=500, claim_interval_ms=100)
    got = Got()
    loop = asyncio.get_running_loop()
    start = loop.time()
    await broker.subscribe(topic, group, got)
    await wait_for(lambda: len(got.items) == 5, timeout=10, what="take-over of the dead consumer's entries")
    assert loop.time() - start >= 0.3
    assert sorted(e.data["i"] for e in got.events) == list(range(5))
    assert {d.attempt for d in got.items} == {2}
    await asyncio.sleep(0.3)
    assert (await raw.xpending(topic, group))["pending"] == 0


async def test_crashed_subscription_entries_go_to_another_consumer(make, raw, streams) -> None:
    topic, group = streams(), unique("g")
    victim = await make(claim_idle_ms=600, claim_interval_ms=100)
    held = Got(ack=False)
    await victim.subscribe(topic, group, held)
    for i in range(3):
        await victim.publish(topic, Event(type="t", source="/s", data={"i": i}))
    await wait_for(lambda: len(held.items) == 3)
    crash(victim)
    heir = await make(claim_idle_ms=600, claim_interval_ms=100)
    got = Got()
    await heir.subscribe(topic, group, got)
    await wait_for(lambda: len(got.items) == 3, timeout=10)
    assert sorted(e.data["i"] for e in got.events) == [0, 1, 2]


async def test_live_consumer_keeps_its_lease(make, raw, streams) -> None:
    topic, group = streams(), unique("g")
    holder_broker = await make(claim_idle_ms=300, claim_interval_ms=50)
    held = Got(ack=False)
    await holder_broker.subscribe(topic, group, held)
    await holder_broker.publish(topic, Event(type="t", source="/s"))
    await wait_for(lambda: len(held.items) == 1)
    thief_broker = await make(claim_idle_ms=300, claim_interval_ms=50)
    thief = Got()
    await thief_broker.subscribe(topic, group, thief)
    await asyncio.sleep(1.5)  # five times claim_idle_ms: renewed, never taken over
    assert thief.items == []
    assert len(held.items) == 1
    await held.items[0].ack()


async def test_stable_consumer_name_takes_its_own_pending_back_at_once(make, raw, streams) -> None:
    topic, group = streams(), unique("g")
    first = await make(consumer_name="pod-1", claim_idle_ms=60_000)
    held = Got(ack=False)
    await first.subscribe(topic, group, held)
    await first.publish(topic, Event(type="t", source="/s", data={"i": 1}))
    await wait_for(lambda: len(held.items) == 1)
    crash(first)
    again = await make(consumer_name="pod-1", claim_idle_ms=60_000)
    got = Got()
    await again.subscribe(topic, group, got)
    await wait_for(lambda: len(got.items) == 1, timeout=5, what="own pending entries re-read at start")
    assert got.items[0].attempt == 2


async def test_stopped_consumer_is_removed_from_the_group(make, raw, streams) -> None:
    broker = await make(client_id="svc")
    topic, group = streams(), unique("g")
    got = Got()
    sub = await broker.subscribe(topic, group, got)
    await broker.publish(topic, Event(type="t", source="/s"))
    await wait_for(lambda: len(got.items) == 1)
    consumers = await raw.xinfo_consumers(topic, group)
    assert len(consumers) == 1
    assert consumers[0]["name"].startswith(b"svc-")
    await sub.stop()
    assert await raw.xinfo_consumers(topic, group) == []


async def test_concurrency_with_batches_handles_everything_once(make, raw, streams) -> None:
    broker = await make(batch=7)
    topic, group = streams(), unique("g")
    got = Got()
    await broker.subscribe(topic, group, got, concurrency=5)
    await asyncio.gather(*(broker.publish(topic, Event(type="t", source="/s", data={"i": i})) for i in range(300)))
    await wait_for(lambda: len(got.items) == 300, timeout=30)
    assert sorted(e.data["i"] for e in got.events) == list(range(300))
    await asyncio.sleep(0.3)
    assert (await raw.xpending(topic, group))["pending"] == 0


async def test_entry_pending_for_us_but_never_handed_over_is_taken_over(make, raw, streams) -> None:
    """A claim whose reply was lost leaves an entry pending for a live consumer: not renewed."""
    broker = await make(claim_idle_ms=400, claim_interval_ms=100)
    topic, group = streams(), unique("g")
    await raw.xgroup_create(topic, group, "0", mkstream=True)
    entry = await raw.xadd(topic, {"data": b'{"lost": true}'})
    await raw.xreadgroup(group, "other", {topic: ">"}, count=1)
    got = Got()
    sub = await broker.subscribe(topic, group, got)
    # claimed for our consumer, but the reply never reached it
    await raw.xclaim(topic, group, sub.name, 0, [entry], justid=True)  # type: ignore[attr-defined]
    await wait_for(lambda: len(got.items) == 1, timeout=10, what="the orphaned entry")
    assert got.events[0].data == {"lost": True}


async def test_deleted_stream_and_group_are_created_again(make, raw, streams) -> None:
    broker = await make()
    topic, group = streams(), unique("g")
    got = Got()
    await broker.subscribe(topic, group, got)
    await broker.publish(topic, Event(type="t", source="/s", data={"i": 1}))
    await wait_for(lambda: len(got.items) == 1)
    await raw.delete(topic)
    await asyncio.sleep(0.3)
    await broker.publish(topic, Event(type="t", source="/s", data={"i": 2}))
    await wait_for(lambda: len(got.items) == 2, timeout=10, what="delivery after the group came back")
    assert got.events[1].data == {"i": 2}


async def test_idle_empty_consumers_are_forgotten(make, raw, streams, monkeypatch) -> None:
    import mesh.brokers.redis.consumer as module

    monkeypatch.setattr(module, "FORGET_IDLE_MS", 50)
    topic, group = streams(), unique("g")
    await raw.xgroup_create(topic, group, "0", mkstream=True)
    await raw.execute_command("XGROUP", "CREATECONSUMER", topic, group, "ghost")
    await raw.xadd(topic, {"data": b"1"})
    await raw.xreadgroup(group, "busy-ghost", {topic: ">"}, count=1)  # has a pending entry: kept
    await asyncio.sleep(0.1)
    broker = await make(claim_idle_ms=60_000)
    await broker.subscribe(topic, group, Got())
    await asyncio.sleep(0.3)
    names = {c["name"] for c in await raw.xinfo_consumers(topic, group)}
    assert b"ghost" not in names
    assert b"busy-ghost" in names


async def test_publish_errors_direct_and_coalesced(make, raw, streams) -> None:
    broker = await make()
    wrong, right = streams(), streams()
    await raw.set(wrong, "a string, not a stream")
    with pytest.raises(PublishError) as info:
        await broker.publish(wrong, Event(type="t", source="/s"))
    assert wrong in str(info.value)
    assert isinstance(info.value.__cause__, Exception)
    results = await asyncio.gather(
        *(broker.publish(wrong if i % 2 else right, Event(type="t", source="/s")) for i in range(40)),
        return_exceptions=True,
    )
    assert all(isinstance(r, PublishError) for r in results[1::2])
    assert results[0::2] == [None] * 20
    assert await raw.xlen(right) == 20


async def test_binary_entry_with_only_ce_datacontenttype(make, raw, streams) -> None:
    broker = await make()
    topic = streams()
    await raw.xadd(
        topic,
        {
            "ce_specversion": "1.0",
            "ce_id": "1",
            "ce_source": "/s",
            "ce_type": "t",
            "ce_datacontenttype": "application/json",
            "data": b'{"a": 1}',
        },
    )
    got = Got()
    await broker.subscribe(topic, unique("g"), got)
    await wait_for(lambda: len(got.items) == 1)
    assert got.events[0].data == {"a": 1}
    assert got.events[0].datacontenttype == "application/json"


async def test_written_entries_fit_the_documented_schema(make, raw, streams) -> None:
    schema = orjson.loads((ROOT / "schemas" / "redis-binding.schema.json").read_bytes())
    binary = schema["$defs"]["binary"]
    pattern = re.compile(next(iter(binary["patternProperties"])))
    topic = streams()
    ev = Event(type="t", source="/s", subject="x", data={"a": 1}, extensions={"partitionkey": "k", "n": 2})
    await (await make()).publish(topic, ev)
    await (await make(content_mode="structured")).publish(topic, ev)
    (_, written), (_, structured) = await raw.xrange(topic)
    names = {k.decode() for k in written}
    assert set(binary["required"]) <= names
    assert all(pattern.match(n) or n in binary["properties"] for n in names)
    assert {k.decode() for k in structured} == set(schema["$defs"]["structured"]["required"])
    doc = orjson.loads(structured[b"event"])
    assert set(schema["$defs"]["structured"]["properties"]["event"]["contentSchema"]["required"]) <= set(doc)


def test_example_config_builds_a_redis_broker() -> None:
    from mesh.brokers import create_broker
    from mesh.config import load_config

    config = load_config(str(ROOT / "examples" / "config" / "redis.yaml"))
    broker = create_broker(config.broker.type, config.broker.url, options=config.broker.options)
    assert isinstance(broker, RedisBroker)
    assert broker.settings.claim_idle_ms == 15_000
    assert broker.address == "redis://127.0.0.1:6379/0"


def test_repr_and_address_mask_the_password() -> None:
    broker = RedisBroker("redis://shop:s3cret@127.0.0.1:6379/0")
    assert broker.address == "redis://shop:***@127.0.0.1:6379/0"
    assert "s3cret" not in repr(broker)
    assert "shop:***@127.0.0.1:6379/0" in repr(broker)
