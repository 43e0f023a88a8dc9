"""Rebuilding a store's read model from its change topic with the replay tools (docs/state.md)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from mesh import App, Event
from mesh.replay import ReplaySpec, Target, open_tools
from mesh.state import CHANGED, StateStore
from tests.support import DEFAULT_URLS, reachable, unavailable, unique, wait_for

pytestmark = [pytest.mark.redis, pytest.mark.timeout(90)]


def broker(**options: Any) -> dict[str, Any]:
    return {"type": "redis", "url": DEFAULT_URLS["redis"], "options": options}


async def contents(app: App, name: str) -> dict[str, Any]:
    page = await app.state(name).query(limit=1000)
    return {item.key: item.value for item in page.items}


async def drained(store: StateStore, timeout: float = 15) -> None:
    """Wait until the store's relay has published (and removed) every outbox row."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while await store.backend.outbox_read(1):
        assert loop.time() < deadline, "the relay did not publish every change in time"
        await asyncio.sleep(0.02)


async def test_a_store_is_rebuilt_from_its_change_topic_by_a_replay(tmp_path: Path) -> None:
    if not reachable(DEFAULT_URLS["redis"], 6379):
        unavailable("redis at 127.0.0.1:6379")
    topic = unique("carts.changes")
    shop = App(unique("shop"), config={"broker": broker(), "state": {
        "carts": {"type": "sqlite", "url": f"sqlite:///{tmp_path}/source.db", "changes": topic}}})
    # The read model: a fresh store, fed only by what the replay sends to its group.
    rebuild = App(unique("rebuild"), config={"broker": broker(initial_offset="latest"), "state": {
        "carts": {"type": "sqlite", "url": f"sqlite:///{tmp_path}/rebuilt.db"}}})
    applied: list[str] = []

    @rebuild.subscribe(topic, concurrency=1)  # one at a time: a key's changes apply in their order
    async def apply(event: Event) -> None:
        carts = rebuild.state("carts")
        if event.type == CHANGED:
            await carts.set(event.data["key"], event.data["value"])
        else:
            await carts.delete(event.data["key"])
        applied.append(event.id)

    async with shop:
        carts = shop.state("carts")
        for i in range(60):
            await carts.set(f"c-{i % 20}", {"n": i, "items": [f"sku-{i}"]})  # every key written 3 times
        for i in range(0, 20, 4):
            await carts.delete(f"c-{i}")
        async with carts.transaction() as tx:
            tx.set("c-0", {"n": 99, "items": []})
            tx.delete("c-1")
        await drained(carts)
        source = await contents(shop, "carts")

    async with rebuild:
        assert await contents(rebuild, "carts") == {}
        async with open_tools(App(unique("ops"), config={"broker": broker()}), state_dir=str(tmp_path)) as tools:
            result = await tools.replayer.run(
                ReplaySpec(topic, name=unique("rebuild"), source="broker", target=Target.group(rebuild.id)))
        assert result.delivered == 67
        await wait_for(lambda: len(applied) >= 67, 30, f"every change applied ({len(applied)}/67)")
        assert await contents(rebuild, "carts") == source
    assert len(source) == 15 and source["c-0"] == {"n": 99, "items": []}
