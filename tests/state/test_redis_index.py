"""The Redis store's due-time index: every write keeps the sorted set in step, queries read it, not a scan."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from mesh.errors import FeatureNotSupported
from mesh.state.contract import open_store
from mesh.state.handle import StateStore
from mesh.state.query import encode_cursor, parse_query
from mesh.state.redis import RedisStore
from tests.state.conftest import store_config
from tests.support import DEFAULT_URLS, reachable, unavailable, wait_for

pytestmark = pytest.mark.redis


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[StateStore]:
    """A started Redis store with ``due`` indexed (its namespace destroyed afterwards)."""
    if not reachable(DEFAULT_URLS["redis"], 0):
        unavailable("redis")
    async with open_store(store_config("redis", tmp_path)) as (s, _):
        await s.ensure_index("due")
        yield s


def backend(s: StateStore) -> RedisStore:
    """The Redis backend of a store."""
    assert isinstance(s.backend, RedisStore)
    return s.backend


async def indexed(s: StateStore) -> dict[str, float]:
    """The due index as ``{key: score}`` (keys without the app prefix)."""
    b = backend(s)
    rows = await b._r.zrange(f"{b.ns}:idx:due", 0, -1, withscores=True)
    return {k[len(s.prefix):]: score for k, score in rows}


async def due(s: StateStore, where: dict[str, Any], limit: int = 100, after: str | None = None) -> list[str]:
    """Keys of the backend's answer to an ordered due-range query."""
    b = backend(s)
    q = parse_query(s.name, where, ["due"], limit, after, s.prefix)
    return [r.key[len(s.prefix):] for r in await b.query(q, time.time())]


async def test_set_delete_and_transactions_keep_the_index_in_step(store: StateStore) -> None:
    await store.set("a", {"due": 1.25})
    await store.set("b", {"due": 1764755180.1234567})  # a float survives exactly (not Lua's 14 digits)
    await store.set("c", {"due": "soon"})  # not a number: not indexed
    assert await indexed(store) == {"a": 1.25, "b": 1764755180.1234567}
    async with store.transaction() as tx:
        tx.set("a", {"due": 3})
        tx.delete("b")
        tx.set("c", {"due": 2})
    assert await indexed(store) == {"a": 3.0, "c": 2.0}
    await store.set("a", {"other": 1})
    await store.delete("c")
    assert await indexed(store) == {}


async def test_rows_written_before_ensure_index_are_indexed(tmp_path: Path) -> None:
    if not reachable(DEFAULT_URLS["redis"], 0):
        unavailable("redis")
    async with open_store(store_config("redis", tmp_path)) as (s, _):
        await s.set("old", {"due": 7})
        await s.ensure_index("due")
        assert await indexed(s) == {"old": 7.0}


async def test_range_order_limit_and_cursor_match_the_other_stores(store: StateStore) -> None:
    for i in range(12):
        await store.set(f"k{i:02}", {"due": i // 2, "kind": "job" if i % 3 else "other"})
    assert await due(store, {"due": {"lte": 2}}) == ["k00", "k01", "k02", "k03", "k04", "k05"]
    assert await due(store, {"due": {"gt": 1, "lt": 4}, "kind": "job"}) == ["k04", "k05", "k07"]
    seen: list[str] = []
    after = None
    while True:
        page = await due(store, {"due": {"gte": 0}}, limit=5, after=after)
        seen += page
        if len(page) < 5:
            break
        after = encode_cursor([int(page[-1][1:]) // 2, store.prefix + page[-1]])
    assert seen == [f"k{i:02}" for i in range(12)]


async def test_expired_keys_leave_the_index_on_purge(store: StateStore) -> None:
    start = time.time()
    await store.set("short", {"due": 1}, ttl=0.2)
    await store.set("long", {"due": 2})
    assert set(await indexed(store)) == {"short", "long"}
    assert await due(store, {"due": {"lte": 5}}) == ["short", "long"]
    await wait_for(lambda: time.time() > start + 0.25, what="the TTL to pass")
    assert await store.get("short") is None
    assert await due(store, {"due": {"lte": 5}}) == ["long"]  # hidden at once
    await backend(store).purge(time.time())  # the block's sweeper calls this too
    assert await indexed(store) == {"long": 2.0}


@pytest.mark.parametrize(("where", "order"), [
    ({"kind": "job"}, ["due"]),  # no range on the indexed path
    ({"due": {"lte": 5}}, []),  # not ordered by it
    ({"due": {"lte": 5}}, ["-due"]),  # descending
    ({"name": {"lte": 5}}, ["name"]),  # not an indexed path
    ({"or": [{"due": 1}, {"due": 2}]}, ["due"]),  # or
    ({"due": {"in": [1, 2]}}, ["due"]),  # not a range
])
async def test_other_query_shapes_are_not_supported(store: StateStore, where: dict[str, Any],
                                                    order: list[str]) -> None:
    q = parse_query(store.name, where, order, 10, None, store.prefix)
    with pytest.raises(FeatureNotSupported, match="the redis state store does not support"):
        await store.backend.query(q, time.time())
