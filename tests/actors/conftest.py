"""Fixtures of the actor tests: the brokers the multi-process tests run on."""

from __future__ import annotations

import pytest

from tests.conftest import _spec
from tests.support import DEFAULT_URLS, BrokerSpec, reachable, unavailable

SETUPS = [("nats", "redis"), ("rabbitmq", "redis"), ("kafka", "redis"), ("nats", "postgres")]


@pytest.fixture(params=[pytest.param(s, marks=[getattr(pytest.mark, s[0]), getattr(pytest.mark, s[1])],
                                     id=f"{s[0]}-{s[1]}") for s in SETUPS])
def actor_setup(request: pytest.FixtureRequest) -> tuple[BrokerSpec, str]:
    """Each (broker, actor state store) the multi-process actor tests run on."""
    broker, store = request.param
    if store == "postgres" and not reachable(DEFAULT_URLS["postgres"], 5432):
        unavailable("postgres")
    return _spec(broker, request), store
