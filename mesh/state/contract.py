"""The state store contract suite: plain async checks every store type must pass.

Each check takes ``make``, a function returning a fresh store config (``{"type": ..., "url": ...,
<unique table, namespace or bucket>}``); the check opens a :class:`~mesh.state.block.StateBlock`
on it, runs, and removes what it wrote (``Backend.destroy``). Checks for a feature the store
says it lacks assert that it raises :class:`~mesh.errors.FeatureNotSupported` instead.
An outside package runs ``for check in CHECKS: await check(make)`` against its own store.
"""

# ruff: noqa: PT017 - the suite runs without pytest, so it checks exceptions by hand
from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from pydantic import BaseModel

from mesh.components import Registry
from mesh.errors import FeatureNotSupported
from mesh.event import Event
from mesh.state.block import StateBlock
from mesh.state.errors import ETagMismatch, InvalidKey, InvalidQuery, InvalidValue
from mesh.state.events import CHANGED, DELETED
from mesh.state.handle import StateStore

__all__ = ["CHECKS", "StoreConfig", "open_store", "read_modify_write"]

StoreConfig = Callable[[], dict[str, Any]]
log = logging.getLogger("mesh.state.contract")


class Cart(BaseModel):
    """A value type for the checks."""

    id: str
    total: int = 0
    status: str = "open"


@asynccontextmanager
async def open_store(make: StoreConfig, app_id: str = "contract", config: dict[str, Any] | None = None,
                     **options: Any) -> AsyncIterator[tuple[StateStore, list[tuple[str, Event]]]]:
    """A started store named ``s`` and the list of ``(topic, event)`` its block published."""
    published: list[tuple[str, Event]] = []

    async def publish(topic: str, event: Event) -> None:
        published.append((topic, event))

    block = StateBlock(app_id, {"s": {**(config or make()), **options}}, Registry(), publish,
                       asyncio.ensure_future, log)
    await block.start()
    try:
        yield block.store("s"), published
    finally:
        if config is None:
            await block.store("s").backend.destroy()
        await block.stop()


async def until(predicate: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    """Wait until ``predicate()`` holds, or fail naming ``what``."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


async def check_get_set_delete(make: StoreConfig) -> None:
    """A set value reads back with an ETag; a deleted or never-set key reads as None."""
    async with open_store(make) as (s, _):
        assert await s.get("a") is None
        etag = await s.set("a", {"n": 1})
        item = await s.get("a")
        assert item is not None and item.value == {"n": 1} and item.etag == etag and item.key == "a"
        await s.delete("a")
        assert await s.get("a") is None
        await s.delete("a")  # deleting an absent key is a no-op


async def check_etags(make: StoreConfig) -> None:
    """First write wins with an ETag, last write wins without; stale deletes fail; create is once."""
    async with open_store(make) as (s, _):
        e1 = await s.set("k", 1)
        e2 = await s.set("k", 2, etag=e1)
        assert e2 != e1
        try:
            await s.set("k", 3, etag=e1)
            raise AssertionError("a stale etag was accepted")
        except ETagMismatch as exc:
            assert exc.key == "k" and exc.store == "s"
        try:
            await s.delete("k", etag=e1)
            raise AssertionError("a delete with a stale etag was accepted")
        except ETagMismatch:
            pass
        await s.set("k", 4)  # no etag: last write wins
        item = await s.get("k")
        assert item is not None and item.value == 4
        try:
            await s.set("k", 5, create=True)
            raise AssertionError("create over an existing key was accepted")
        except ETagMismatch:
            pass
        await s.delete("k", etag=item.etag)
        assert await s.get("k") is None
        await s.set("k", 6, create=True)
        try:
            await s.set("absent", 1, etag=e2)
            raise AssertionError("an etag on an absent key was accepted")
        except ETagMismatch:
            pass


async def check_get_many_and_models(make: StoreConfig) -> None:
    """get_many returns what exists in order; pydantic models go in and come out."""
    async with open_store(make) as (s, _):
        await s.set("c-1", Cart(id="c-1", total=5))
        await s.set("c-2", Cart(id="c-2", total=7))
        items = await s.get_many(["c-2", "nope", "c-1"], Cart)
        assert [i.key for i in items] == ["c-2", "c-1"]
        assert items[0].value == Cart(id="c-2", total=7)
        one = await s.get("c-1", Cart)
        assert one is not None and isinstance(one.value, Cart)


async def check_bad_input(make: StoreConfig) -> None:
    """Bad keys and values are clear errors naming store and key; nothing is written."""
    async with open_store(make) as (s, _):
        for bad in ("", 5, "x" * 5000):
            try:
                await s.set(bad, 1)  # type: ignore[arg-type]
                raise AssertionError(f"key {bad!r} was accepted")
            except InvalidKey as exc:
                assert "'s'" in str(exc)
        try:
            await s.set("v", object())
            raise AssertionError("a non-JSON value was accepted")
        except InvalidValue as exc:
            assert "'v'" in str(exc) and "'s'" in str(exc)
        assert await s.get("v") is None


async def read_modify_write(s: StateStore, key: str, n: int) -> int:
    """Add one to ``key`` ``n`` times, retrying on ETagMismatch; how many conflicts it met."""
    conflicts = 0
    for _ in range(n):
        while True:
            item = await s.get(key)
            try:
                if item is None:
                    await s.set(key, 1, create=True)
                else:
                    await s.set(key, item.value + 1, etag=item.etag)
                break
            except ETagMismatch:
                conflicts += 1
    return conflicts


async def check_concurrent_writers(make: StoreConfig) -> None:
    """20 concurrent read-modify-write writers with retry end with the exact count."""
    async with open_store(make) as (s, _):
        conflicts = await asyncio.gather(*(read_modify_write(s, "counter", 5) for _ in range(20)))
        item = await s.get("counter")
        assert item is not None and item.value == 100, item
        assert sum(conflicts) > 0 or s.backend.type == "memory"  # they really raced


async def check_ttl(make: StoreConfig) -> None:
    """An expired key reads as absent at once and is removed by the sweep; without TTL: unsupported."""
    async with open_store(make) as (s, _):
        if not s.features.ttl:
            try:
                await s.set("t", 1, ttl=1)
                raise AssertionError("ttl accepted by a store without the feature")
            except FeatureNotSupported as exc:
                assert f"the {s.backend.type} state store does not support" in str(exc), exc
                return
        await s.set("t", 1, ttl=0.4)
        await s.set("keep", 1)
        assert await s.get("t") is not None
        await asyncio.sleep(0.6)
        assert await s.get("t") is None and await s.get_many(["t", "keep"]) != []
        try:
            await s.set("t", 2, etag="whatever")
            raise AssertionError("an etag on an expired key was accepted")
        except ETagMismatch:
            pass
        await s.backend.purge(__import__("time").time())
        assert await s.get("keep") is not None


async def check_transactions(make: StoreConfig) -> None:
    """Several writes commit together, or none does (stale ETag, or an error inside the block)."""
    async with open_store(make) as (s, _):
        if not s.features.transactions:
            try:
                s.transaction()
                raise AssertionError("a transaction on a store without the feature")
            except FeatureNotSupported as exc:
                assert f"the {s.backend.type} state store does not support" in str(exc), exc
                return
        e = await s.set("a", 1)
        await s.set("b", 1)
        async with s.transaction() as tx:
            tx.set("a", 2, etag=e)
            tx.delete("b")
            tx.set("c", 3)
        assert [i.value for i in await s.get_many(["a", "b", "c"])] == [2, 3]
        try:
            async with s.transaction() as tx:
                tx.set("c", 30)
                tx.set("a", 20, etag=e)  # stale
            raise AssertionError("a stale etag in a transaction was accepted")
        except ETagMismatch:
            pass
        try:
            async with s.transaction() as tx:
                tx.set("c", 300)
                raise RuntimeError("boom")
        except RuntimeError:
            pass
        assert [i.value for i in await s.get_many(["a", "c"])] == [2, 3]
        assert tx.etags == {}


async def check_changes(make: StoreConfig) -> None:
    """Each committed set/delete is a CloudEvent on the changes topic, in order; tx events only on commit."""
    async with open_store(make, changes="t.changes") as (s, published):
        e1 = await s.set("k", {"n": 1})
        e2 = await s.set("k", {"n": 2})
        await s.delete("k")
        await until(lambda: len(published) >= 3, "three change events")
        topics = {t for t, _ in published}
        assert topics == {"t.changes"}
        kinds = [(e.type, e.subject, e.data.get("value")) for _, e in published]
        assert kinds == [(CHANGED, "k", {"n": 1}), (CHANGED, "k", {"n": 2}), (DELETED, "k", None)], kinds
        assert [e.data["etag"] for _, e in published[:2]] == [e1, e2]
        if not s.features.transactions:
            return
        published.clear()
        try:
            async with s.transaction() as tx:
                tx.set("x", 1)
                tx.publish("orders", {"id": "o-1"}, type="shop.order.placed")
                raise RuntimeError("rolled back")
        except RuntimeError:
            pass
        async with s.transaction() as tx:
            tx.set("y", 1)
            tx.publish("orders", {"id": "o-2"}, type="shop.order.placed")
        await until(lambda: len(published) >= 2, "the committed transaction's events")
        await asyncio.sleep(0.1)
        assert sorted(t for t, _ in published) == ["orders", "t.changes"]
        assert [e.data for t, e in published if t == "orders"] == [{"id": "o-2"}]


async def check_query(make: StoreConfig) -> None:
    """Filters, dotted paths, ordering and keyset pagination (or FeatureNotSupported)."""
    async with open_store(make) as (s, _):
        if not s.features.query:
            try:
                await s.query({"a": 1})
                raise AssertionError("a query on a store without the feature")
            except FeatureNotSupported as exc:
                assert f"the {s.backend.type} state store does not support" in str(exc), exc
                return
        for i in range(12):
            await s.set(f"c-{i:02}", {"total": i * 10, "status": "open" if i % 2 else "closed",
                                      "customer": {"city": "Oslo" if i < 6 else "Rome"}})
        page = await s.query({"status": "open", "total": {"gt": 20}})
        assert sorted(i.key for i in page.items) == ["c-03", "c-05", "c-07", "c-09", "c-11"]
        page = await s.query({"or": [{"customer.city": "Rome", "total": {"lt": 70}}, {"total": {"in": [0, 10]}}]})
        assert sorted(i.key for i in page.items) == ["c-00", "c-01", "c-06"]
        page = await s.query({"total": {"gte": 30, "lte": 50}, "status": {"ne": "open"}})
        assert [i.key for i in page.items] == ["c-04"]
        seen: list[str] = []
        after = None
        while True:
            page = await s.query(None, order_by=["-total"], limit=5, after=after)
            seen += [i.key for i in page.items]
            if page.next is None:
                break
            after = page.next
        assert seen == [f"c-{i:02}" for i in range(11, -1, -1)], seen
        bad: dict[str, Any]
        for bad in ({"a..b": 1}, {"total": {"like": 1}}, {"and": []}):
            try:
                await s.query(bad)
                raise AssertionError(f"filter {bad!r} accepted")
            except InvalidQuery:
                pass
        try:
            await s.query({"nosuch": 1}, type=Cart)
            raise AssertionError("a path missing from the model was accepted")
        except InvalidQuery as exc:
            assert "nosuch" in str(exc)


async def check_key_prefixes(make: StoreConfig) -> None:
    """Two apps on one store see their own keys, unless ``shared``."""
    config = make()
    try:
        async with open_store(make, "app-a", config=config) as (a, _), \
                open_store(make, "app-b", config=config) as (b, _):
            await a.set("k", "a")
            assert await b.get("k") is None
        async with open_store(make, "app-a", config={**config, "shared": True}) as (a, _), \
                open_store(make, "app-b", config={**config, "shared": True}) as (b, _):
            await a.set("k", "shared")
            item = await b.get("k")
            assert item is not None and item.value == "shared"
    finally:
        async with open_store(make, config=config) as (s, _):
            await s.backend.destroy()


CHECKS: tuple[Callable[[StoreConfig], Awaitable[None]], ...] = (
    check_get_set_delete,
    check_etags,
    check_get_many_and_models,
    check_bad_input,
    check_concurrent_writers,
    check_ttl,
    check_transactions,
    check_changes,
    check_query,
    check_key_prefixes,
)
"""Every check, in the order to run them."""
