"""Helpers for the NATS and JetStream tests: a private nats-server, raw protocol publishing.

A test that must stop or misconfigure a server starts its own on a free loopback port (never
the machine's server on 4222), with its own JetStream store directory.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest

from mesh.brokers import Delivery
from tests.support import DEFAULT_URLS, free_port, reachable, unavailable

NATS_SERVER = os.environ.get("MESH_TEST_NATS_SERVER") or shutil.which("nats-server") or "/usr/sbin/nats-server"


def shared_url(kind: str) -> str:
    """The machine's NATS server for ``kind`` (skipped locally when unreachable)."""
    url = os.environ.get(f"MESH_TEST_{kind.upper()}_URL", DEFAULT_URLS[kind])
    if not reachable(url, 4222):
        unavailable(f"{kind} at {url}")
    return url


class NatsServer:
    """A nats-server process of our own on a free loopback port; restartable on the same port."""

    def __init__(
        self,
        store: Path,
        *,
        jetstream: bool = True,
        user: str | None = None,
        password: str | None = None,
        token: str | None = None,
    ) -> None:
        if not Path(NATS_SERVER).exists():
            pytest.skip(f"no nats-server binary at {NATS_SERVER}")
        self.port = free_port()
        self.store = store
        self.args = [NATS_SERVER, "-a", "127.0.0.1", "-p", str(self.port)]
        if jetstream:
            self.args += ["-js", "-sd", str(store)]
        if user is not None:
            self.args += ["--user", user, "--pass", password or ""]
        if token is not None:
            self.args += ["--auth", token]
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.proc = subprocess.Popen(self.args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 15
        while not reachable(self.url, self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"nats-server on port {self.port} did not start")
            time.sleep(0.05)

    def stop(self, kill: bool = False) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            if kill:
                proc.kill()
            else:
                proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)

    def restart(self, down_for: float = 0.0, kill: bool = False) -> None:
        self.stop(kill)
        time.sleep(down_for)
        self.start()


async def raw_publish(url: str, subject: str, body: bytes, header_lines: list[bytes] | None = None) -> None:
    """Publish with the bare protocol, so header bytes need not be UTF-8; waits for the PONG."""
    parsed = urlparse(url)
    reader, writer = await asyncio.open_connection(parsed.hostname or "127.0.0.1", parsed.port or 4222)
    try:
        await reader.readline()  # INFO
        writer.write(b'CONNECT {"verbose":false,"pedantic":false,"headers":true,"protocol":1}\r\n')
        if header_lines is None:
            writer.write(b"PUB %s %d\r\n%s\r\n" % (subject.encode(), len(body), body))
        else:
            head = b"NATS/1.0\r\n" + b"".join(line + b"\r\n" for line in header_lines) + b"\r\n"
            writer.write(b"HPUB %s %d %d\r\n" % (subject.encode(), len(head), len(head) + len(body)))
            writer.write(head + body + b"\r\n")
        writer.write(b"PING\r\n")
        await writer.drain()
        while True:
            line = await asyncio.wait_for(reader.readline(), 5)
            if line.startswith(b"PONG") or not line:
                break
            if line.startswith(b"-ERR"):
                raise RuntimeError(line.decode(errors="replace"))
    finally:
        writer.close()
        await writer.wait_closed()


class Recorder:
    """A handler that keeps every delivery (decoded or not) and acks it."""

    def __init__(self, ack: bool = True) -> None:
        self.ack = ack
        self.deliveries: list[Delivery] = []

    async def __call__(self, delivery: Delivery) -> None:
        self.deliveries.append(delivery)
        if self.ack:
            await delivery.ack()

    @property
    def events(self) -> list[Any]:
        return [d.event for d in self.deliveries if d.event is not None]

    @property
    def errors(self) -> list[Delivery]:
        return [d for d in self.deliveries if d.error is not None]


async def works_with_the_stock_client(
    make: Callable[..., Any], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A nats-py version FastClient was not tested with: the broker gets nats-py's own client
    (one warning line), and three events still go through publish and subscribe, in order."""
    from mesh.brokers.nats import fastclient
    from mesh.event import Event
    from tests.support import unique, wait_for

    monkeypatch.setattr(fastclient, "TESTED_VERSIONS", ("0.0.0-never",))
    with caplog.at_level(logging.WARNING, logger="mesh.broker.nats"):
        broker = await make()
    assert type(broker.connection.nc) is fastclient.SafeClient
    warnings = [r for r in caplog.records if "fast client was tested with" in r.getMessage()]
    assert len(warnings) == 1
    topic, got = unique(), Recorder()
    await broker.subscribe(topic, unique("g"), got)
    for i in range(3):
        await broker.publish(topic, Event(type="t", source="/s", data={"i": i}))
    await wait_for(lambda: len(got.events) == 3, what="three events through the stock client")
    assert [e.data["i"] for e in got.events] == [0, 1, 2]


POISON = b"NATS/1.0 503 \xff\xfe\xfd\xfc\r\n\r\n"
"""A header block whose status description is not UTF-8 (nats-py's reader raised on it)."""


async def publish_poison(url: str, subject: str) -> None:
    """Write ``HPUB <subject> 21 27`` with :data:`POISON` and the payload ``poison`` over a bare
    TCP connection; returns once the server answered the PING after it."""
    parsed = urlparse(url)
    reader, writer = await asyncio.open_connection(parsed.hostname or "127.0.0.1", parsed.port or 4222)
    try:
        await reader.readline()  # INFO
        writer.write(b'CONNECT {"headers":true,"verbose":false}\r\n')
        assert len(POISON) == 21
        writer.write(b"HPUB %s 21 27\r\n%spoison\r\nPING\r\n" % (subject.encode(), POISON))
        await writer.drain()
        while True:
            line = await asyncio.wait_for(reader.readline(), 5)
            if line.startswith(b"PONG") or not line:
                break
            if line.startswith(b"-ERR"):
                raise RuntimeError(line.decode(errors="replace"))
    finally:
        writer.close()
        await writer.wait_closed()


async def undecodable_headers_do_not_stop_reading(make: Callable[..., Any], url: str, **options: Any) -> None:
    """A message with :data:`POISON` arrives as undecodable (reason and bytes kept) and five good
    events published after it arrive promptly."""
    from mesh.errors import DecodeError
    from mesh.event import Event
    from tests.support import unique, wait_for

    broker = await make(**options)
    topic, got = unique(), Recorder()
    await broker.subscribe(topic, unique("g"), got)
    await publish_poison(url, broker.name_of(topic))
    for i in range(5):
        await broker.publish(topic, Event(type="t", source="/s", data={"i": i}))
    await wait_for(lambda: len(got.deliveries) == 6, timeout=5, what="the bad message and five good ones")
    bad = got.deliveries[0]
    assert bad.event is None
    assert isinstance(bad.error, DecodeError)
    assert "UnicodeDecodeError" in str(bad.error)
    assert bad.error.raw == b"poison"
    assert bad.raw is not None and bad.raw.body == b"poison"
    assert [e.data["i"] for e in got.events] == [0, 1, 2, 3, 4]
