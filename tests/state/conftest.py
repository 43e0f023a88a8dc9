"""Store configs for the state tests: each call gives fresh, run-marked table/namespace/bucket names."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support import DEFAULT_URLS, RUN, reachable, unavailable

STORES = ("memory", "sqlite", "postgres", "redis", "nats-kv")
PG_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def _name() -> str:
    return f"mt_{RUN}_{uuid.uuid4().hex[:8]}".replace("-", "_")


def store_config(kind: str, tmp: Path) -> Callable[[], dict[str, Any]]:
    """A factory of fresh configs for one store type."""
    if kind == "memory":
        return lambda: {"type": "memory", "url": f"memory://{_name()}"}
    if kind == "sqlite":
        return lambda: {"type": "sqlite", "url": f"sqlite:///{tmp}/{_name()}.db"}
    if kind == "postgres":
        return lambda: {"type": "postgres", "url": PG_URL, "table": _name(), "pool_size": 25}
    if kind == "redis":
        return lambda: {"type": "redis", "url": DEFAULT_URLS["redis"], "namespace": f"mt-{RUN}-{_name()}"}
    return lambda: {"type": "nats-kv", "url": DEFAULT_URLS["nats"], "bucket": f"mt-{RUN}-{_name()}"}


_ADDRESS = {"postgres": PG_URL, "redis": DEFAULT_URLS["redis"], "nats-kv": DEFAULT_URLS["nats"]}


@pytest.fixture(params=STORES)
def make(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], dict[str, Any]]:
    """A config factory for each store type in turn."""
    kind: str = request.param
    url = _ADDRESS.get(kind)
    if url is not None and not reachable(url, 0):
        unavailable(f"{kind} at {url}")
    return store_config(kind, tmp_path)
