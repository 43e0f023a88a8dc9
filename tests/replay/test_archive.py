"""The archive: both stores (SQLite always, PostgreSQL on the real server), the recorder, the plugin."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from mesh import App, Event
from mesh.archive import ArchiveError, ArchiveQuery, ArchiveRow, ArchiveSettings, ArchiveStore, open_archive
from mesh.archive.recorder import Recorder
from mesh.brokers.memory import MemoryBroker
from mesh.errors import ConfigError
from mesh.event import now
from mesh_plugins.archive import recorder_of
from tests.replay.support import Consumer, flush, mesh_config, sqlite_url, wait_for
from tests.support import DEFAULT_URLS, BrokerSpec, reachable, unavailable, unique

pytestmark = pytest.mark.timeout(60)


def postgres_url() -> str:
    import os

    return os.environ.get("MESH_TEST_POSTGRES_URL", DEFAULT_URLS["postgres"])


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ArchiveStore]:
    """An open, empty store of each kind (PostgreSQL: a table of its own, dropped after)."""
    if request.param == "sqlite":
        s = open_archive(sqlite_url(tmp_path))
        await s.open()
        yield s
        await s.close()
        return
    url = postgres_url()
    if not reachable(url, 5432):
        unavailable(f"postgresql at {url}")
    table = unique("arch").replace("-", "_")
    s = open_archive(url, table)
    await s.open()
    try:
        yield s
    finally:
        await s.execute(f"DROP TABLE IF EXISTS {table}")
        await s.execute(f"DROP TABLE IF EXISTS {table}_state")
        await s.close()


def row(topic: str, event: Event, kind: str = "published", seconds: float = 0.0) -> ArchiveRow:
    return ArchiveRow.of(topic, event, kind=kind, app="test", recorded=now() + timedelta(seconds=seconds))


def ev(i: int, **kw: Any) -> Event:
    t0 = now().replace(microsecond=0) - timedelta(minutes=10)
    kw.setdefault("time", t0 + timedelta(seconds=i))
    return Event(kw.pop("type", "t.created"), kw.pop("source", "/s"), {"i": i}, id=f"e{i}", **kw)


# -- the stores ------------------------------------------------------------------------------


async def test_rows_come_back_in_time_order_with_paging(store: ArchiveStore) -> None:
    events = [ev(i) for i in range(25)]
    await store.write([row("orders", e) for e in reversed(events)])  # recorded out of order
    got, after = [], None
    while True:
        page = await store.read(ArchiveQuery("orders", after=after, limit=10))
        got += page
        if len(page) < 10:
            break
        after = (page[-1].time, page[-1].seq)
    assert [r.event_id for r in got] == [e.id for e in events]
    assert got[3].event == events[3] and got[3].kind == "published" and got[3].app == "test"
    assert await store.count(ArchiveQuery("orders")) == 25
    window = ArchiveQuery("orders", since=events[5].time, until=events[9].time)
    assert [r.event_id for r in await store.read(window)] == ["e5", "e6", "e7", "e8"]
    assert await store.topics() == ["orders"]


async def test_one_row_per_event_and_topic_but_a_returning_dead_letter_is_new(store: ArchiveStore) -> None:
    e = ev(1)
    await store.write([row("orders", e), row("orders", e, "consumed"), row("audit", e)])
    await store.write([row("orders", e.with_extensions(meshreplay="r1"))])  # a replayed copy
    assert await store.count(ArchiveQuery("orders")) == 1
    dead = e.with_extensions(mesherrortype="TimeoutError", meshtopic="orders")
    await store.write([row("orders.dlq", dead)])
    await store.write([row("orders.dlq", dead.with_extensions(meshredrive=1))])
    rows = await store.read(ArchiveQuery("orders.dlq"))
    assert [r.redrive for r in rows] == [0, 1]
    keys = await store.read(ArchiveQuery("orders.dlq", keys=(("/s", "e1", 1),), order="seq"))
    assert [r.redrive for r in keys] == [1]


async def test_type_source_and_subject_are_filtered_by_the_database(store: ArchiveStore) -> None:
    await store.write(
        [row("o", ev(i, type=f"t.{i % 2}", source=f"/s{i % 3}", subject=f"sub{i % 5}")) for i in range(30)]
    )
    assert await store.count(ArchiveQuery("o", types=("t.0",))) == 15
    assert await store.count(ArchiveQuery("o", sources=("/s1", "/s2"))) == 20
    assert await store.count(ArchiveQuery("o", subjects=("sub4",), types=("t.1",))) == 3


async def test_delete_and_retention(store: ArchiveStore) -> None:
    await store.write([row("o", ev(i), seconds=-100 if i < 4 else 0) for i in range(10)])
    assert await store.delete_older(now() - timedelta(seconds=50)) == 4
    rows = await store.read(ArchiveQuery("o"))
    assert await store.delete([rows[0].seq, rows[1].seq]) == 2
    assert await store.count(ArchiveQuery("o")) == 4


async def test_state_documents(store: ArchiveStore) -> None:
    assert await store.get_state("replay", "r1") is None
    await store.put_state("replay", "r1", '{"a": 1}')
    await store.put_state("replay", "r1", '{"a": 2}')
    await store.put_states("dlq:x", [("k1", "1"), ("k2", "2")])
    assert await store.get_state("replay", "r1") == '{"a": 2}'
    assert await store.list_state("dlq:x") == {"k1": "1", "k2": "2"}
    await store.delete_state("dlq:x", "k1")
    assert await store.list_state("dlq:x") == {"k2": "2"}


async def test_a_corrupt_row_is_reported_not_fatal(store: ArchiveStore) -> None:
    await store.write([row("o", ev(i)) for i in range(3)])
    rows = await store.read(ArchiveQuery("o"))
    placeholder = "$1" if "postgres" in store.url else "?"
    seq_ph = "$2" if "postgres" in store.url else "?"
    table = store.table
    await store.execute(f"UPDATE {table} SET event = {placeholder} WHERE seq = {seq_ph}", b"\xff garbage", rows[1].seq)
    again = await store.read(ArchiveQuery("o"))
    assert [r.event is None for r in again] == [False, True, False]
    assert again[1].error is not None and again[1].error.startswith(f"row {rows[1].seq}:")


async def test_an_unreachable_archive_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ArchiveError, match="cannot open the archive"):
        await open_archive("postgresql://postgres@127.0.0.1:1/none").open()
    (tmp_path / "dir.db").mkdir()
    with pytest.raises(ArchiveError, match="cannot open the archive"):
        await open_archive(sqlite_url(tmp_path, "dir.db")).open()


def test_settings_are_validated_with_their_path() -> None:
    from mesh.config import load_config

    for bad, path in [
        ({"url": "mysql://x"}, "plugins.config.archive.url"),
        ({"table": "Drop Table"}, "plugins.config.archive.table"),
        ({"retention": "soon"}, "plugins.config.archive.retention"),
        ({"record": ["everything"]}, "plugins.config.archive.record"),
        ({"nope": 1}, "plugins.config.archive.nope"),
    ]:
        with pytest.raises(ConfigError, match=path.replace(".", r"\.")):
            App("a", config={"plugins": {"config": {"archive": bad}}})
    assert load_config({"plugins": {"config": {"archive": {}}}}).plugins.config["archive"] == {}


# -- the recorder ----------------------------------------------------------------------------


class FlakyStore:
    """Wraps a store; the first ``fail`` writes raise, and every write is logged."""

    def __init__(self, inner: ArchiveStore, fail: int = 0) -> None:
        self.inner = inner
        self.fail = fail
        self.writes: list[int] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def write(self, rows: Any) -> None:
        if self.fail > 0:
            self.fail -= 1
            raise ArchiveError("database is down")
        await self.inner.write(rows)
        self.writes.append(len(rows))


def settings(**kw: Any) -> ArchiveSettings:
    return ArchiveSettings.model_validate({"url": "sqlite:///:memory:", "flush_interval": "20ms", **kw})


async def test_the_recorder_writes_in_batches_and_flushes_on_close(tmp_path: Path) -> None:
    inner = open_archive(sqlite_url(tmp_path))
    flaky = FlakyStore(inner)
    recorder = Recorder(flaky, settings(batch_size=50, flush_interval="10s"), "app")  # type: ignore[arg-type]
    recorder.start()
    for i in range(120):
        assert recorder.add_nowait("o", ev(i), "published")
    await wait_for(lambda: flaky.writes == [50, 50] and recorder.pending == 20, what="two full batches")
    await recorder.close()  # opens a fresh connection to count below
    check = open_archive(sqlite_url(tmp_path))
    await check.open()
    assert await check.count(ArchiveQuery("o")) == 120
    await check.close()


async def test_a_waiting_record_returns_once_committed_and_failures_lose_nothing(tmp_path: Path) -> None:
    inner = open_archive(sqlite_url(tmp_path))
    flaky = FlakyStore(inner, fail=3)
    recorder = Recorder(flaky, settings(), "app")  # type: ignore[arg-type]
    recorder.start()
    for i in range(10):
        recorder.add_nowait("o", ev(i), "published")
    await recorder.record("o", ev(10), "published", wait=True)
    assert flaky.fail == 0 and await inner.count(ArchiveQuery("o")) == 11
    assert [r.event_id for r in await inner.read(ArchiveQuery("o"))] == [f"e{i}" for i in range(11)]
    await recorder.close()


async def test_a_full_buffer_waits_or_drops(tmp_path: Path) -> None:
    store = open_archive(sqlite_url(tmp_path))
    dropping = Recorder(store, settings(max_buffer=5, when_full="drop"), "app")
    for i in range(8):
        await dropping.record("o", ev(i), "published")
    assert dropping.dropped == 3 and dropping.pending == 5
    waiting = Recorder(FlakyStore(store, fail=2), settings(max_buffer=5), "app")  # type: ignore[arg-type]
    for i in range(5):
        await waiting.record("o", ev(i), "published")
    blocked = asyncio.create_task(waiting.record("o", ev(5), "published"))
    await asyncio.sleep(0.05)
    assert not blocked.done(), "no room: the caller waits"
    waiting.start()
    await asyncio.wait_for(blocked, 10)
    await waiting.close()
    await dropping.close()
    check = open_archive(sqlite_url(tmp_path))
    await check.open()
    assert await check.count(ArchiveQuery("o")) == 6
    await check.close()


async def test_an_event_that_cannot_be_serialised_does_not_block_the_rest(tmp_path: Path) -> None:
    store = open_archive(sqlite_url(tmp_path))
    recorder = Recorder(store, settings(), "app")
    recorder.start()
    recorder.add_nowait("o", Event("t", "/s", {"x": object()}, id="bad"), "published")
    await recorder.record("o", ev(1), "published", wait=True)
    assert recorder.dropped == 1 and await store.count(ArchiveQuery("o")) == 1
    await recorder.close()


async def test_retention_sweeps_old_rows(tmp_path: Path) -> None:
    store = open_archive(sqlite_url(tmp_path))
    await store.open()
    await store.write([row("o", ev(1), seconds=-7200), row("o", ev(2))])
    recorder = Recorder(store, settings(retention="1h"), "app")
    recorder.start()
    await wait_for(lambda: recorder._opened, what="the recorder to open")
    await asyncio.sleep(0.1)
    assert [r.event_id for r in await store.read(ArchiveQuery("o"))] == ["e2"]
    await recorder.close()


# -- the plugin ------------------------------------------------------------------------------


@pytest.fixture
def memory() -> Any:
    spec = BrokerSpec("memory", None, {"name": unique("arch")})
    yield spec
    MemoryBroker.reset(spec.options["name"])


async def test_the_plugin_records_published_consumed_and_dead_letters(memory: BrokerSpec, tmp_path: Path) -> None:
    config = mesh_config(memory, sqlite_url(tmp_path))
    config["plugins"]["config"]["archive"].update(topics=["orders*", "pay"], exclude=["orders.audit"])
    shop = App("shop", config=config)
    billing = Consumer("billing", "pay", config, fail=lambda e: TimeoutError if e.data["i"] == 1 else None)
    audit = Consumer("audit", "orders", config)
    async with shop, billing.app, audit.app:
        for topic, i in (("orders", 0), ("orders.audit", 0), ("other", 0), ("pay", 0), ("pay", 1)):
            await shop.publish(topic, {"i": i}, type="t")
        await billing.app.join()
        await audit.app.join()
        await flush(shop, billing.app, audit.app)
        store = recorder_of(shop).store  # type: ignore[union-attr]
        rows = {t: await store.read(ArchiveQuery(t)) for t in await store.topics()}
    assert set(rows) == {"orders", "pay", "pay.dlq"}, "topic filter and exclude; a dead letter always"
    assert len(rows["orders"]) == 1 and len(rows["pay"]) == 2, "publisher and consumer: one row per event"
    assert {(r.kind, r.app) for r in rows["orders"]} <= {("published", "shop"), ("consumed", "audit")}
    (dead,) = rows["pay.dlq"]
    assert (dead.app, dead.kind) == ("billing", "published") and dead.event is not None
    assert dead.event.extensions["mesherrortype"] == "TimeoutError"


async def test_durable_publish_returns_once_recorded(memory: BrokerSpec, tmp_path: Path) -> None:
    config = mesh_config(memory, sqlite_url(tmp_path))
    config["plugins"]["config"]["archive"].update(durable=True, flush_interval="1h")
    app = App("shop", config=config)
    async with app:
        event = await app.publish("orders", {"a": 1}, type="t")
        store = recorder_of(app).store  # type: ignore[union-attr]
        assert [r.event_id for r in await store.read(ArchiveQuery("orders"))] == [event.id]


async def test_the_buffer_is_written_when_the_app_stops(memory: BrokerSpec, tmp_path: Path) -> None:
    config = mesh_config(memory, sqlite_url(tmp_path))
    config["plugins"]["config"]["archive"].update(flush_interval="1h", batch_size=10_000)
    app = App("shop", config=config)
    async with app:
        for i in range(100):
            await app.publish("orders", {"i": i}, type="t")
    store = open_archive(sqlite_url(tmp_path))
    await store.open()
    assert await store.count(ArchiveQuery("orders")) == 100
    await store.close()


async def test_the_plugin_is_off_unless_configured(memory: BrokerSpec) -> None:
    app = App("shop", config={"broker": memory.config()})
    assert recorder_of(app) is None
    app = App("shop", config={"broker": memory.config(), "plugins": {"config": {"archive": {"enabled": False}}}})
    assert recorder_of(app) is None


@pytest.mark.postgres
async def test_apps_share_one_postgresql_archive(memory: BrokerSpec) -> None:
    url = postgres_url()
    if not reachable(url, 5432):
        unavailable(f"postgresql at {url}")
    table = unique("shared").replace("-", "_")
    config = mesh_config(memory, url)
    config["plugins"]["config"]["archive"]["table"] = table
    shop = App("shop", config=config)
    billing = Consumer("billing", "orders", config)
    try:
        async with shop, billing.app:
            sent = [await shop.publish("orders", {"i": i}, type="t") for i in range(20)]
            await billing.app.join()
            await flush(shop, billing.app)
            store = recorder_of(shop).store  # type: ignore[union-attr]
            rows = await store.read(ArchiveQuery("orders"))
            assert [r.event_id for r in rows] == [e.id for e in sent], "one row per event, two apps recording"
    finally:
        check = open_archive(url, table)
        await check.open()
        await check.execute(f"DROP TABLE IF EXISTS {table}")
        await check.execute(f"DROP TABLE IF EXISTS {table}_state")
        await check.close()


async def test_the_archive_benchmark_reports_the_publish_rate_ratio() -> None:
    from benchmarks import archive

    result = await archive.run(events=300)
    assert result["plain"] > 0 and result["archived"] > 0 and result["ratio"] > 0


async def test_a_durable_record_gives_up_waiting_but_keeps_the_row(tmp_path: Path) -> None:
    inner = open_archive(sqlite_url(tmp_path))
    flaky = FlakyStore(inner, fail=1_000_000)
    recorder = Recorder(flaky, settings(wait_timeout="200ms"), "app")  # type: ignore[arg-type]
    recorder.start()
    with pytest.raises(ArchiveError, match=r"did not commit event e1 within 0\.2s"):
        await recorder.record("o", ev(1), "published", wait=True)
    assert recorder.pending == 1
    flaky.fail = 0  # the database is back
    await recorder.flush()
    assert await inner.count(ArchiveQuery("o")) == 1
    await recorder.close()
