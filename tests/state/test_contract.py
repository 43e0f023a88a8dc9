"""The state contract suite on every store type (memory, sqlite, postgres, redis, nats-kv)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from mesh.state.contract import CHECKS


@pytest.mark.parametrize("check", CHECKS, ids=[c.__name__.removeprefix("check_") for c in CHECKS])
async def test_contract(make: Callable[[], dict[str, Any]], check: Callable[[Any], Awaitable[None]]) -> None:
    await check(make)
