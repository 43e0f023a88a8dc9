"""Fixtures of the actor tests: the brokers the multi-process tests run on."""

from __future__ import annotations

import pytest

from tests.conftest import _spec
from tests.support import BrokerSpec


@pytest.fixture(params=[pytest.param(k, marks=getattr(pytest.mark, k)) for k in ("nats", "rabbitmq", "kafka")])
def actor_broker(request: pytest.FixtureRequest) -> BrokerSpec:
    """Each broker the multi-process actor tests run on."""
    return _spec(request.param, request)
