"""The state block as an App user meets it: ``app.state(name)`` from the config, changes as events."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from mesh import App, ConfigError, Event
from mesh.state import ETagMismatch
from tests.support import unique, wait_for


class Cart(BaseModel):
    id: str
    items: list[str]


def config(tmp_path: Path, **state: Any) -> dict[str, Any]:
    return {"broker": {"type": "memory", "options": {"name": unique("hub")}}, "state": state}


async def test_a_configured_store_sets_gets_and_publishes_its_changes(tmp_path: Path) -> None:
    changes = unique("carts.changes")
    app = App("shop", config=config(tmp_path, carts={"type": "sqlite", "url": f"sqlite:///{tmp_path}/s.db", "changes": changes}))
    seen: list[Event] = []

    @app.subscribe(changes)
    async def on_change(event: Event) -> None:
        seen.append(event)

    async with app:
        carts = app.state("carts")
        await carts.set("c-1", Cart(id="c-1", items=["A1"]))
        item = await carts.get("c-1", Cart)
        assert item is not None and item.value == Cart(id="c-1", items=["A1"])
        await carts.set("c-1", Cart(id="c-1", items=["A1", "B2"]), etag=item.etag)
        with pytest.raises(ETagMismatch):
            await carts.set("c-1", Cart(id="c-1", items=[]), etag=item.etag)  # stale: someone wrote first
        await carts.delete("c-1")
        await wait_for(lambda: len(seen) == 3, what="three change events")
    assert [e.type for e in seen] == ["mesh.state.changed", "mesh.state.changed", "mesh.state.deleted"]
    assert seen[1].data["value"] == {"id": "c-1", "items": ["A1", "B2"]}
    assert seen[0].extensions["meshstore"] == "carts"


async def test_without_a_state_section_every_store_is_in_memory(tmp_path: Path) -> None:
    async with App("shop", config={"broker": {"type": "memory", "options": {"name": unique("hub")}}}) as app:
        await app.state("anything").set("k", {"v": 1})
        item = await app.state("anything").get("k")
        assert item is not None and item.value == {"v": 1}


def test_a_misspelt_store_option_is_reported_at_its_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"state\.carts\.urll.*unknown key"):
        App("shop", config=config(tmp_path, carts={"type": "sqlite", "urll": "sqlite:///x.db"}))
    with pytest.raises(ConfigError, match=r"state\.carts\.type.*unknown state type 'mongo'"):
        App("shop", config=config(tmp_path, carts={"type": "mongo"}))
