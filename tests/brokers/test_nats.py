"""Core NATS adapter: what the contract suite does not cover (foreign input, errors, reconnects)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import nats
import nats.aio.client
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mesh.brokers import Delivery, broker_class
from mesh.brokers.nats.core import NatsBroker
from mesh.codecs.binary import LEGACY_TYPE
from mesh.codecs.structured import to_structured
from mesh.errors import BrokerConnectionError, BrokerError, ConfigError, PublishError
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

pytestmark = [pytest.mark.nats, pytest.mark.timeout(90)]


@pytest.fixture
def url() -> str:
    return shared_url("nats")


@pytest.fixture
async def make(url: str) -> AsyncIterator[Callable[..., Any]]:
    async for factory in brokers("nats", url):
        yield factory


def ev(i: int = 0, **kw: Any) -> Event:
    return Event(type="test.nats", source="/nats", data={"i": i}, **kw)


def test_features_are_honest() -> None:
    f = broker_class("nats").features
    assert (f.persistent, f.history, f.history_by_time, f.order_by_key) == (False, False, False, False)
    assert f.consumer_groups
    assert f.headers
    assert not f.redelivery_count
    assert not f.native_delay


def test_options_are_validated_with_their_path() -> None:
    with pytest.raises(ConfigError) as info:
        NatsBroker(options={"connect_timeout": -1, "batch": 5})
    paths = {path for path, _ in info.value.problems}
    assert paths == {"broker.options.connect_timeout", "broker.options.batch"}


async def test_binary_headers_on_the_wire(make, url: str) -> None:
    broker = await make()
    topic = unique()
    nc = await nats.connect(url)
    try:
        sub = await nc.subscribe(topic)
        await nc.flush()
        await broker.publish(topic, ev(1, subject="A1", extensions={"partitionkey": "k"}))
        msg = await sub.next_msg(timeout=5)
    finally:
        await nc.close()
    assert msg.headers is not None
    assert msg.headers["ce-specversion"] == "1.0"
    assert msg.headers["ce-type"] == "test.nats"
    assert msg.headers["ce-subject"] == "A1"
    assert msg.headers["ce-partitionkey"] == "k"
    assert msg.headers["content-type"] == "application/json"
    assert msg.data == b'{"i":1}'


async def test_namespace_prefixes_the_subject(make, url: str) -> None:
    ns = unique("ns") + "."
    broker = await make(namespace=ns)
    topic, got = unique(), Recorder()
    await broker.subscribe(topic, "g", got)
    nc = await nats.connect(url)
    try:
        await nc.publish(ns + topic, b'{"plain": true}')
        await nc.flush()
    finally:
        await nc.close()
    await wait_for(lambda: len(got.events) == 1, what="a message on the prefixed subject")


async def test_legacy_json_and_bytes_are_wrapped(make, url: str) -> None:
    broker = await make()
    topic, got = unique(), Recorder()
    await broker.subscribe(topic, unique("g"), got)
    nc = await nats.connect(url)
    try:
        await nc.publish(topic, b'{"order": 7}')
        await nc.publish(topic, b"\x00\x01 not json")
        await nc.flush()
    finally:
        await nc.close()
    await wait_for(lambda: len(got.events) == 2, what="two wrapped messages")
    first, second = got.events
    assert first.type == LEGACY_TYPE
    assert first.data == {"order": 7}
    assert second.type == LEGACY_TYPE
    assert second.data == b"\x00\x01 not json"
    assert first.source == f"/mesh/legacy/{topic}"


async def test_structured_cloudevent_is_read(make, url: str) -> None:
    broker = await make()
    topic, got = unique(), Recorder()
    await broker.subscribe(topic, unique("g"), got)
    sent = ev(3, subject="s1", extensions={"tenant": "acme"})
    nc = await nats.connect(url)
    try:
        await nc.publish(topic, to_structured(sent), headers={"content-type": "application/cloudevents+json"})
        await nc.publish(topic, to_structured(sent))  # no content type at all: sniffed
        await nc.flush()
    finally:
        await nc.close()
    await wait_for(lambda: len(got.events) == 2, what="two structured events")
    for received in got.events:
        assert received.id == sent.id
        assert received.data == {"i": 3}
        assert received.extensions["tenant"] == "acme"


async def test_structured_content_mode_round_trip(make) -> None:
    broker = await make(content_mode="structured")
    topic, got = unique(), Recorder()
    await broker.subscribe(topic, unique("g"), got)
    sent = ev(4)
    await broker.publish(topic, sent)
    await wait_for(lambda: len(got.events) == 1, what="a structured event")
    assert got.events[0].id == sent.id
    assert got.events[0].data == {"i": 4}


async def test_corrupt_input_arrives_as_error_and_later_events_flow(make, url: str) -> None:
    broker = await make()
    topic, got = unique(), Recorder()
    await broker.subscribe(topic, unique("g"), got)
    good = [b"ce-specversion: 1.0", b"ce-source: /x", b"ce-type: t"]
    await raw_publish(url, topic, b"{}", [*good, b"ce-id: \xff\xfe\xfd"])  # non-UTF-8 header
    await raw_publish(url, topic, b"{not json", [*good, b"ce-id: 1", b"content-type: application/json"])
    await raw_publish(url, topic, b"{not json", [b"content-type: application/json"])  # legacy, bad JSON
    await raw_publish(url, topic, b"{}", [b"ce-specversion: 1.0", b"ce-source: /x", b"ce-type: t"])  # no id
    await broker.publish(topic, ev(9))
    await wait_for(lambda: len(got.deliveries) == 5, what="five deliveries")
    errors = got.deliveries[:4]
    assert all(d.event is None and d.error is not None and d.raw is not None for d in errors)
    assert "UTF-8" in str(errors[0].error)
    assert "JSON" in str(errors[1].error)
    assert "JSON" in str(errors[2].error)
    assert "id" in str(errors[3].error)
    assert got.deliveries[4].event is not None
    assert got.deliveries[4].event.data == {"i": 9}


async def test_nack_rehandles_in_process_with_attempts(make) -> None:
    broker = await make()
    topic, seen = unique(), []
    loop = asyncio.get_running_loop()

    async def handler(d: Delivery) -> None:
        seen.append((d.attempt, loop.time()))
        if d.attempt == 1:
            await d.nack()
        elif d.attempt == 2:
            await d.nack(delay=0.3)
        else:
            await d.ack()

    await broker.subscribe(topic, unique("g"), handler)
    await broker.publish(topic, ev())
    await wait_for(lambda: len(seen) == 3, what="three attempts")
    assert [a for a, _ in seen] == [1, 2, 3]
    assert seen[2][1] - seen[1][1] >= 0.25


async def test_stop_hands_unacked_and_delayed_to_a_live_member(make) -> None:
    first, second = await make(), await make()
    topic, group = unique(), unique("g")
    held: list[Delivery] = []

    async def holder(d: Delivery) -> None:
        held.append(d)
        if d.event is not None and d.event.data["i"] == 1:
            await d.nack(delay=30)  # due long after the stop

    other = Recorder()
    sub = await first.subscribe(topic, group, holder)
    for i in range(2):
        await first.publish(topic, ev(i))
    await wait_for(lambda: len(held) == 2, what="both held by the first member")
    await second.subscribe(topic, group, other)
    await sub.stop()
    await wait_for(lambda: len(other.events) == 2, what="the held ones handed over")
    assert sorted(e.data["i"] for e in other.events) == [0, 1]
    assert {d.attempt for d in other.deliveries} == {2}
    await held[0].ack()  # a late ack of the original is harmless


async def test_groups_use_queue_groups_with_raw_clients(make, url: str) -> None:
    broker = await make()
    topic, group = unique(), unique("g")
    got = Recorder()
    await broker.subscribe(topic, group, got)
    raw_got: list[bytes] = []
    nc = await nats.connect(url)
    try:

        async def cb(msg: Any) -> None:
            raw_got.append(msg.data)

        await nc.subscribe(topic, queue=group, cb=cb)
        await nc.flush()
        for i in range(40):
            await broker.publish(topic, ev(i))
        await wait_for(lambda: len(got.events) + len(raw_got) == 40, what="40 shared deliveries")
        await asyncio.sleep(0.2)
        assert len(got.events) + len(raw_got) == 40
        assert got.events, "the mesh member got work"
        assert raw_got, "a raw member of the same queue group shares the work"
    finally:
        await nc.close()


async def test_connection_refused_is_bounded() -> None:
    port = free_port()
    broker = NatsBroker(f"nats://127.0.0.1:{port}", options={"connect_timeout": 2})
    loop = asyncio.get_running_loop()
    start = loop.time()
    with pytest.raises(BrokerConnectionError) as info:
        await broker.connect()
    assert loop.time() - start < 4
    assert f"127.0.0.1:{port}" in str(info.value)
    assert "nats" in str(info.value)
    assert info.value.__cause__ is not None


async def test_bad_host_is_bounded() -> None:
    broker = NatsBroker("nats://no-such-host.invalid:4222,nats://127.0.0.1:1", options={"connect_timeout": 2})
    loop = asyncio.get_running_loop()
    start = loop.time()
    with pytest.raises(BrokerConnectionError, match=r"no-such-host\.invalid"):
        await broker.connect()
    assert loop.time() - start < 4


async def test_bad_credentials_are_refused(tmp_path: Path) -> None:
    server = NatsServer(tmp_path, jetstream=False, user="mesh", password="right")
    try:
        broker = NatsBroker(f"nats://mesh:wrong@127.0.0.1:{server.port}", options={"connect_timeout": 3})
        with pytest.raises(BrokerConnectionError, match="authorization") as info:
            await broker.connect()
        assert "wrong" not in str(info.value), "the password is masked"
        ok = NatsBroker(server.url, options={"user": "mesh", "password": "right"})
        await ok.connect()
        await ok.close()
    finally:
        server.stop()


async def test_publish_without_connect_is_a_clear_error() -> None:
    broker = NatsBroker("nats://127.0.0.1:1")
    with pytest.raises(PublishError, match="not connected"):
        await broker.publish("t", ev())
    with pytest.raises(BrokerError, match="not connected"):
        await broker.subscribe("t", "g", Recorder())


async def test_publish_after_close_is_publish_error(make) -> None:
    broker = await make()
    await broker.close()
    await broker.close()  # idempotent
    with pytest.raises(PublishError):
        await broker.publish(unique(), ev())


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_reconnects_after_server_restart(tmp_path: Path) -> None:
    server = NatsServer(tmp_path, jetstream=False)
    broker = NatsBroker(server.url, options={"reconnect_time_wait": 0.2})
    publisher = NatsBroker(server.url, options={"reconnect_time_wait": 0.2})
    try:
        await broker.connect()
        await publisher.connect()
        topic, got = unique(), Recorder()
        await broker.subscribe(topic, unique("g"), got)
        await publisher.publish(topic, ev(0))
        await wait_for(lambda: len(got.events) == 1, what="a message before the restart")
        await asyncio.to_thread(server.restart, 0.5)

        async def keep_publishing() -> None:
            i = 1
            while not any(e.data["i"] > 0 for e in got.events):
                with contextlib.suppress(PublishError):
                    await publisher.publish(topic, ev(i))
                i += 1
                await asyncio.sleep(0.1)

        await asyncio.wait_for(keep_publishing(), 60)
        assert broker.connection.nc is not None
        assert broker.connection.nc.is_connected
    finally:
        await broker.close()
        await publisher.close()
        server.stop()


@pytest.mark.parametrize(
    "raw",
    [
        b"ce-id: 1\r\nce-type: t\r\n\r\n",
        b"bad name: x\r\ngood:\tv \r\n:novalue\r\n\xffx: 1\r\nk: \xff\xfe\r\n",
        b"a:b:c\r\n  spaced  : v\r\n   : x\r\n\tt\tx: y\r\nnocolon\r\n",
    ],
)
def test_fast_header_parser_matches_the_client_s_own(raw: bytes) -> None:
    from nats.aio.client import Client

    from mesh.brokers.nats.fastclient import FastClient

    assert FastClient._parse_header_lines(raw) == Client._parse_header_lines(raw)


_HEADER_BYTES = st.lists(
    st.sampled_from(
        [
            b"a",
            b"B",
            b"-",
            b":",
            b" ",
            b"\t",
            b"\r\n",
            b"\r",
            b"\n",
            b"\xff",
            b"\x0b",
            b"\x1c",
            b"\x01",
            b"\xc3\xa9",
            b": ",
            b"ce-id",
            b"\r\n\r\n",
        ]
    ),
    max_size=40,
).map(b"".join)


@settings(max_examples=5000, deadline=None)
@given(_HEADER_BYTES)
def test_fast_header_parser_matches_the_client_s_own_on_any_bytes(raw: bytes) -> None:
    from nats.aio.client import Client

    from mesh.brokers.nats.fastclient import FastClient, _fast_headers

    assert FastClient._parse_header_lines(raw) == Client._parse_header_lines(raw)
    for _ in range(2):  # the second time with the names learned
        fast = _fast_headers(b"NATS/1.0\r\n" + raw)
        if fast is not None:
            assert fast == Client._parse_header_lines(raw)


async def test_fast_publish_writes_what_the_client_s_own_publish_writes() -> None:
    """The HPUB command built in one pass is byte for byte nats-py's; odd values take nats-py's path."""
    nc = await _connected()
    try:
        cases = [
            {"ce-id": "1", "ce-type": "t", "content-type": "application/json"},
            {"ce-subject": " padded ", "ce-id": "2"},
            {"ce-subject": "two\r\nlines", "ce-id": "3"},
            {"ce-subject": "tab\there"},
        ]
        for headers in cases:
            for _ in range(2):  # the first publish with new names takes nats-py's path, the second the fast one
                nc._pending.clear()
                await nats.aio.client.Client.publish(nc, "mt.sub", b"{}", "", dict(headers))
                stock = b"".join(nc._pending)
                nc._pending.clear()
                await nc.publish("mt.sub", b"{}", headers=dict(headers))
                assert b"".join(nc._pending) == stock
                nc._pending.clear()
    finally:
        await nc.close()


async def _connected() -> Any:
    """A client of the shared server, connected as the brokers connect."""
    from mesh.brokers.nats.connection import NatsConnection
    from mesh.brokers.nats.options import NatsOptions
    from mesh.codecs.bindings import NATS

    conn = NatsConnection("nats", shared_url("nats"), NatsOptions(), NATS)
    await conn.open()
    return conn.client()


async def test_fast_request_gets_the_answer_times_out_and_reports_no_responders() -> None:
    """FastClient.ask: the answer with its headers; nats-py's TimeoutError; a 503 status."""
    from nats.errors import TimeoutError as NatsTimeoutError

    nc = await _connected()
    subject, silent = unique("ask"), unique("silent")
    try:

        async def answer(msg: Any) -> None:
            await msg.respond(msg.data[::-1])

        await nc.subscribe(subject, cb=answer)
        await nc.subscribe(silent, cb=_ignore)
        await nc.flush()
        answers = await asyncio.gather(*(nc.ask(subject, f"m{i}".encode(), {"ce-id": str(i)}, 5) for i in range(20)))
        assert [data for data, _ in answers] == [f"m{i}".encode()[::-1] for i in range(20)]
        with pytest.raises(NatsTimeoutError):
            await nc.ask(silent, b"x", None, 0.2)
        data, status = await nc.ask(unique("nobody"), b"x", None, 5)
        assert data == b"" and status is not None and status.get("Status") == "503"
        assert not nc._answers  # nothing left waiting
    finally:
        await nc.close()


async def _ignore(msg: Any) -> None:
    pass


async def test_an_untested_nats_py_falls_back_to_its_stock_client(
    make, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    await works_with_the_stock_client(make, monkeypatch, caplog)


@pytest.mark.parametrize("fast", [True, False], ids=["fast-client", "stock-client"])
async def test_a_header_block_that_is_not_utf8_arrives_undecodable_and_reading_goes_on(
    make, url: str, fast: bool
) -> None:
    await undecodable_headers_do_not_stop_reading(make, url, fast_client=fast)


async def test_pending_bytes_limit_caps_what_a_subscription_holds(make, caplog: pytest.LogCaptureFixture) -> None:
    """A handler that does not keep up: the buffer never holds more than pending_bytes_limit
    payload bytes, the newest are dropped with one warning line for the burst."""
    broker = await make(pending_bytes_limit=1000)
    topic, release, got = unique(), asyncio.Event(), []

    async def slow(d: Delivery) -> None:
        got.append(d)
        await release.wait()
        await d.ack()

    sub = await broker.subscribe(topic, unique("g"), slow)
    peak = 0
    try:
        with caplog.at_level(logging.WARNING, logger="mesh.broker.nats"):
            for i in range(30):
                await broker.publish(topic, Event(type="t", source="/s", data={"i": i, "pad": "x" * 200}))
                await broker.connection.barrier()  # the message came back and was buffered or dropped
                peak = max(peak, sub.buffered_bytes)
    finally:
        release.set()
    assert 0 < peak <= 1000, peak
    warnings = [r for r in caplog.records if "slow consumer" in r.getMessage()]
    assert len(warnings) == 1, [r.getMessage() for r in caplog.records]
    await wait_for(lambda: sub.buffered_bytes == 0 and all(d.done for d in got), what="the buffer handled")
    assert 1 < len(got) < 30


async def test_the_stock_client_can_be_chosen(make, caplog: pytest.LogCaptureFixture) -> None:
    from mesh.brokers.nats.fastclient import SafeClient

    with caplog.at_level(logging.WARNING, logger="mesh.broker.nats"):
        broker = await make(fast_client=False)
    assert type(broker.connection.nc) is SafeClient
    assert not caplog.records
    topic, got = unique(), Recorder()
    await broker.subscribe(topic, unique("g"), got)
    await broker.publish(topic, ev(1))
    await wait_for(lambda: len(got.events) == 1, what="an event through the stock client")


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_a_token_in_the_url_is_never_shown(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Errors, repr and the lost/reconnected log lines show the servers with the token masked."""
    token = "s3cr3tt0ken"
    refused = NatsBroker(f"nats://{token}@127.0.0.1:{free_port()}", options={"connect_timeout": 1})
    with pytest.raises(BrokerConnectionError) as info:
        await refused.connect()
    assert token not in str(info.value) and "***@127.0.0.1" in str(info.value)
    assert token not in repr(refused)
    server = NatsServer(tmp_path, jetstream=False, token=token)
    broker = NatsBroker(f"nats://{token}@127.0.0.1:{server.port}", options={"reconnect_time_wait": 0.2})
    try:
        with pytest.raises(BrokerConnectionError, match="authorization") as wrong:
            await NatsBroker(f"nats://wr0ng@127.0.0.1:{server.port}", options={"connect_timeout": 2}).connect()
        assert "wr0ng" not in str(wrong.value)
        with caplog.at_level(logging.INFO, logger="mesh.broker.nats"):
            await broker.connect()
            await asyncio.to_thread(server.restart, 0.5)
            await wait_for(
                lambda: any("reconnected" in r.getMessage() for r in caplog.records), timeout=60, what="a reconnect"
            )
        lines = [r.getMessage() for r in caplog.records]
        assert any("lost" in line for line in lines)
        assert all(token not in line for line in lines)
        assert any("***@127.0.0.1" in line for line in lines)
    finally:
        await broker.close()
        server.stop()
