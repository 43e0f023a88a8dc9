"""app.jobs on one instance: bad input fails at schedule time, CRUD, handlers, delayed publish, never early."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from mesh import App, Event
from mesh.errors import FeatureNotSupported
from mesh.jobs import InvalidSchedule, JobExists, JobNotFound
from tests.support import DEFAULT_URLS, reachable, unavailable, unique, wait_for

pytestmark = pytest.mark.memory


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[dict[str, Any]]:
    """The jobs store: memory, or a Redis namespace of this test (its keys deleted afterwards)."""
    if request.param == "memory":
        yield {"type": "memory"}
        return
    if not reachable(DEFAULT_URLS["redis"], 0):
        unavailable("redis")
    import redis.asyncio as aioredis

    ns = unique("jr")
    yield {"type": "redis", "url": DEFAULT_URLS["redis"], "namespace": ns}
    r = aioredis.from_url(DEFAULT_URLS["redis"])
    keys = [k async for k in r.scan_iter(match=f"{ns}:*")]
    if keys:
        await r.delete(*keys)
    await r.aclose()


def make_app(store: dict[str, Any] | None = None, **jobs: Any) -> App:
    state = {"jobs": store or {"type": "memory"}}
    return App(unique("jobs"), config={"broker": {"type": "memory", "options": {"name": unique("b")}},
                                       "state": state, "jobs": {"store": "jobs", "poll_interval": 0.05, **jobs}})


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"cron": "61 * * * *", "topic": "t"}, "bad cron"),
        ({"cron": "* * *", "topic": "t"}, "five fields"),
        ({"cron": "0 2 * * *", "tz": "Mars/Olympus", "topic": "t"}, "unknown time zone"),
        ({"every": 0, "topic": "t"}, "longer than zero"),
        ({"every": timedelta(0), "topic": "t"}, "longer than zero"),
        ({"topic": "t"}, "cron=, every= or at="),
        ({"cron": "* * * * *", "every": 5, "topic": "t"}, "not both"),
        ({"every": 5}, "topic="),
        ({"at": datetime(2030, 1, 1), "topic": "t"}, "timezone-aware"),
        ({"every": 5, "topic": "t", "data": object()}, "JSON"),
        ({"every": 5, "topic": "t", "repeats": 0}, "repeats"),
    ],
)
async def test_bad_input_is_a_clear_error_at_schedule_time(kwargs: dict[str, Any], words: str) -> None:
    async with make_app() as app:
        with pytest.raises(InvalidSchedule, match=words):
            await app.jobs.schedule("bad", **kwargs)
        assert await app.jobs.get("bad") is None


async def test_a_duplicate_name_needs_replace() -> None:
    async with make_app() as app:
        await app.jobs.schedule("dup", every=60, topic="t")
        with pytest.raises(JobExists, match="replace=True"):
            await app.jobs.schedule("dup", every=30, topic="t")
        job = await app.jobs.schedule("dup", every=30, topic="t", replace=True)
        assert job.every == 30
        assert (await app.jobs.get("dup")).every == 30  # type: ignore[union-attr]


async def test_a_store_without_queries_is_refused_naming_the_ones_that_work() -> None:
    from mesh.components import Registry
    from mesh.jobs.store import JobStore
    from mesh.state.block import build_store

    handle, _ = build_store("jobs", {"type": "nats-kv", "url": DEFAULT_URLS["nats"]}, Registry(), "app")
    with pytest.raises(FeatureNotSupported, match="memory, sqlite, postgres or redis"):
        JobStore(handle)  # refused before anything is opened


async def test_schedule_get_list_cancel_trigger(store: dict[str, Any]) -> None:
    async with make_app(store) as app:
        await app.jobs.schedule("a", cron="0 2 * * *", tz="Europe/Berlin", topic="reports", type="r", data={"k": 1})
        await app.jobs.schedule("b", every=timedelta(hours=1), topic="t")
        assert [j.name async for j in app.jobs.list()] == ["a", "b"]
        await app.jobs.cancel("b")
        assert await app.jobs.get("b") is None
        with pytest.raises(JobNotFound):
            await app.jobs.cancel("b")
        with pytest.raises(JobNotFound):
            await app.jobs.trigger("b")


async def test_a_fired_job_is_never_early_and_carries_its_name_and_time(store: dict[str, Any]) -> None:
    app = make_app(store)
    seen: list[tuple[float, Event]] = []

    @app.subscribe("fires")
    async def on(event: Event) -> None:
        seen.append((time.time(), event))

    async with app:
        at = datetime.now(UTC) + timedelta(seconds=0.3)
        await app.jobs.schedule("once", at=at, topic="fires", type="x.fired", data={"n": 1}, jitter=0.1)
        await app.jobs.schedule("rep", every=0.15, repeats=3, topic="fires", type="x.rep")
        await wait_for(lambda: len(seen) == 4, what="four fires")
        await asyncio.sleep(0.3)
    assert len(seen) == 4
    for fired_at, event in seen:
        scheduled = event.extensions["meshjobtime"]
        assert isinstance(scheduled, datetime)
        assert fired_at >= scheduled.timestamp()
    once = next(e for _, e in seen if e.type == "x.fired")
    assert once.extensions["meshjob"] == "once" and once.data == {"n": 1}
    assert once.extensions["meshjobtime"] == at


async def test_a_past_one_shot_fires_at_once(store: dict[str, Any]) -> None:
    app = make_app(store)
    seen: list[Event] = []

    @app.subscribe("past")
    async def on(event: Event) -> None:
        seen.append(event)

    async with app:
        await app.jobs.schedule("late", at=datetime.now(UTC) - timedelta(hours=1), topic="past", type="p")
        await wait_for(lambda: len(seen) == 1, what="the past one-shot")
    assert [e.extensions["meshjob"] for e in seen] == ["late"]


async def test_job_handler_runs_through_the_pipeline_and_trigger_fires_now(store: dict[str, Any]) -> None:
    app = make_app(store)
    calls: list[str] = []

    @app.job("report")
    async def report(event: Event) -> None:
        calls.append(str(event.extensions["meshjob"]))

    async with app:
        await app.jobs.schedule("report", cron="0 2 * * *", tz="Europe/Berlin")
        await app.jobs.trigger("report")
        await wait_for(lambda: calls == ["report"], what="the triggered fire")
        assert [j.name async for j in app.jobs.list()] == ["report"]  # the trigger copy is gone
        with pytest.raises(InvalidSchedule, match=r"@app\.job"):
            await app.jobs.schedule("nohandler", every=5)


async def test_delayed_publish_arrives_at_its_time(tmp_path: Path) -> None:
    app = make_app({"type": "sqlite", "url": f"sqlite:///{tmp_path}/j.db"})
    seen: list[tuple[float, Event]] = []

    @app.subscribe("orders")
    async def on(event: Event) -> None:
        seen.append((time.time(), event))

    async with app:
        at = datetime.now(UTC) + timedelta(seconds=0.4)
        sent = await app.publish("orders", {"id": 7}, type="shop.order.remind", deliver_at=at)
        await wait_for(lambda: len(seen) == 1, what="the delayed event")
    fired_at, event = seen[0]
    assert fired_at >= at.timestamp()
    assert event.id == sent.id and event.data == {"id": 7} and event.type == "shop.order.remind"


async def test_ensure_index_is_used_for_due_queries(tmp_path: Path) -> None:
    import sqlite3

    async with make_app({"type": "sqlite", "url": f"sqlite:///{tmp_path}/ix.db"}) as app:
        await app.jobs.schedule("x", every=60, topic="t")
    conn = sqlite3.connect(tmp_path / "ix.db")
    names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")]
    assert "mesh_state_ix_due" in names
    plan = conn.execute("EXPLAIN QUERY PLAN SELECT key FROM mesh_state WHERE json_extract(value, '$.due') <= 5 "
                        "ORDER BY json_extract(value, '$.due')").fetchall()
    assert any("mesh_state_ix_due" in str(row) for row in plan)
