"""Poison messages on core NATS and JetStream, sent with nats-py and, for bytes nats-py cannot
send, over a raw TCP connection speaking the NATS protocol.

NATS headers are text lines after a status line (``NATS/1.0``), so NATS gets the common cases
plus a status line that is not UTF-8 (issue #12's one message that made a consumer deaf) and a
header value that is not UTF-8. Nothing pending (JetStream): the group's consumer has no
message waiting and none awaiting an ack. Core NATS keeps nothing, so there is nothing to check.
The slow-consumer test shows a core subscription's buffer bounded in bytes.
"""

from __future__ import annotations

import asyncio
import resource
from typing import Any
from urllib.parse import urlparse

import nats
import pytest

from mesh import App, Event
from mesh.brokers.nats.options import NatsOptions
from tests.poison.support import BAD_TYPE, SOURCE, Message, PoisonRun, common, eventually, good, tag
from tests.support import BrokerSpec, unique, wait_for

pytestmark = pytest.mark.timeout(120)

BROKERS = [pytest.param("nats", marks=pytest.mark.nats), pytest.param("jetstream", marks=pytest.mark.jetstream)]


async def raw_hpub(url: str, subject: str, head: bytes, body: bytes) -> None:
    """Publish ``head`` (the whole header block) and ``body`` with the bare protocol; waits for the PONG."""
    parsed = urlparse(url)
    reader, writer = await asyncio.open_connection(parsed.hostname or "127.0.0.1", parsed.port or 4222)
    try:
        await reader.readline()  # INFO
        writer.write(b'CONNECT {"verbose":false,"pedantic":false,"headers":true,"protocol":1}\r\n')
        writer.write(
            b"HPUB %s %d %d\r\n%s%s\r\nPING\r\n" % (subject.encode(), len(head), len(head) + len(body), head, body)
        )
        await writer.drain()
        while not (line := await asyncio.wait_for(reader.readline(), 5)).startswith(b"PONG"):
            if not line or line.startswith(b"-ERR"):
                raise RuntimeError(f"nats-server refused the raw publish: {line!r}")
    finally:
        writer.close()
        await writer.wait_closed()


def raw_cases() -> list[Message]:
    """Header blocks nats-py cannot write: a non-UTF-8 status line, a non-UTF-8 header value."""
    status = Message(tag("status-line"), tag("status-line").encode(), {"head": b"NATS/1.0 503 \xff\xfe\r\n\r\n"})
    lines = [
        b"ce-specversion: 1.0",
        b"ce-id: \xff\xfe",
        b"ce-source: " + SOURCE.encode(),
        b"ce-type: " + BAD_TYPE.encode(),
    ]
    lines.append(b"x-poison: " + tag("header-value").encode())
    value = Message(
        tag("header-value"), tag("header-value").encode(), {"head": b"NATS/1.0\r\n" + b"\r\n".join(lines) + b"\r\n\r\n"}
    )
    return [status, value]


def nats_headers(message: Message) -> dict[str, str]:
    """The message's headers as nats-py takes them, ``content-type`` included."""
    headers = {k: str(v) for k, v in message.headers.items()}
    if message.content_type is not None:
        headers["content-type"] = str(message.content_type)
    return headers


async def run_poison(spec: BrokerSpec, raw: list[Message], bad: list[Message]) -> None:
    """Send ``raw`` over TCP, then ``bad`` and five good events with nats-py, and check the run."""
    url = spec.url or ""
    sent = [*raw, *bad, *(good("ce-", i) for i in range(5))]
    nc = await nats.connect(url)
    try:
        async with PoisonRun(spec) as run:
            for message in raw:
                await raw_hpub(url, run.topic, message.headers["head"], message.body)
            for message in sent[len(raw) :]:
                await nc.publish(run.topic, message.body, headers=nats_headers(message))
            await nc.flush()
            await run.settled(sent)
            if spec.type == "jetstream":
                await eventually(lambda: waiting(nc, run.topic), (0, 0), what="(num_pending, num_ack_pending)")
    finally:
        await nc.close()
    run.check(sent)


@pytest.mark.parametrize("broker_spec", BROKERS, indirect=True)
async def test_no_message_stops_a_nats_consumer(broker_spec: BrokerSpec) -> None:
    await run_poison(broker_spec, [], common("ce-"))


@pytest.mark.parametrize("broker_spec", BROKERS, indirect=True)
async def test_a_header_block_that_is_not_utf8_is_dead_lettered_and_the_reader_goes_on(
    broker_spec: BrokerSpec,
) -> None:
    await run_poison(broker_spec, raw_cases(), [])


async def waiting(nc: Any, subject: str) -> tuple[int, int]:
    """``(num_pending, num_ack_pending)`` of the consumer filtered on ``subject`` in its stream."""
    js = nc.jetstream()
    stream = await js.find_stream_name_by_subject(subject)
    [info] = [c for c in await js.consumers_info(stream) if c.config.filter_subject == subject]
    return info.num_pending, info.num_ack_pending


def rss() -> int:
    """This process's resident set size in bytes (Linux)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


LIMIT = 8 * 1024 * 1024
PUBLISHED = 50 * 1024 * 1024
CHUNK = 64 * 1024


@pytest.mark.slow
@pytest.mark.nats
@pytest.mark.timeout(60)
@pytest.mark.parametrize("broker_spec", ["nats"], indirect=True)
async def test_a_slow_core_consumer_buffers_at_most_its_byte_limit(broker_spec: BrokerSpec) -> None:
    if "pending_bytes_limit" not in NatsOptions.model_fields:
        pytest.skip("the NATS option pending_bytes_limit is not on this branch yet (issue #12, item 4)")
    url = broker_spec.url or ""
    app = App(unique("slow"), config={"broker": broker_spec.config(pending_bytes_limit=LIMIT)})
    release, started = asyncio.Event(), asyncio.Event()
    topic = unique("slow")

    @app.subscribe(topic)
    async def blocked(event: Event) -> None:
        started.set()
        await release.wait()

    async with app:
        nc = getattr(app.broker, "_nc", None)  # only to know when the server has sent everything
        before = peak = rss()

        async def sample() -> None:
            nonlocal peak
            while True:
                peak = max(peak, rss())
                await asyncio.sleep(0.05)

        sampler = asyncio.get_running_loop().create_task(sample())
        try:
            parsed = urlparse(url)
            reader, writer = await asyncio.open_connection(parsed.hostname or "127.0.0.1", parsed.port or 4222)
            await reader.readline()
            writer.write(b'CONNECT {"verbose":false,"pedantic":false,"headers":true,"protocol":1}\r\n')
            body = b"z" * CHUNK
            for _ in range(PUBLISHED // CHUNK):
                writer.write(b"PUB %s %d\r\n%s\r\n" % (topic.encode(), len(body), body))
                await writer.drain()
            writer.write(b"PING\r\n")
            await writer.drain()
            while not (await asyncio.wait_for(reader.readline(), 10)).startswith(b"PONG"):
                pass
            writer.close()
            await wait_for(started.is_set, what="the handler to block on the first message")
            if nc is not None:
                await wait_for(
                    lambda: nc.stats["in_bytes"] >= PUBLISHED * 0.9 or nc.is_closed,
                    timeout=15,
                    what="the subscriber to read what was published",
                )
        finally:
            sampler.cancel()
            release.set()
    growth = peak - before
    assert growth < LIMIT + 24 * 1024 * 1024, (
        f"RSS grew by {growth / 2**20:.1f} MiB for a {LIMIT / 2**20:.0f} MiB limit"
    )
