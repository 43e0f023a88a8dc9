"""The replay engine on the memory broker with a SQLite archive: targets, filters, bad input, resume."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from mesh import App, Event
from mesh.archive import ArchiveQuery
from mesh.brokers.memory import MemoryBroker
from mesh.event import now
from mesh.replay import (
    BadReplayInput,
    EventFilter,
    NothingToReplay,
    ReplayExists,
    ReplaySpec,
    Target,
    Tools,
    UnknownGroup,
    UnknownTopic,
    Window,
    open_tools,
)
from mesh.replay.targets import Sender
from tests.replay.support import Consumer, flush, mesh_config, settle, sqlite_url, wait_count
from tests.support import BrokerSpec, unique

pytestmark = [pytest.mark.memory, pytest.mark.timeout(60)]

N = 30
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@pytest.fixture
def memory(request: pytest.FixtureRequest) -> Any:
    spec = BrokerSpec("memory", None, {"name": unique("replay")})
    yield spec
    MemoryBroker.reset(spec.options["name"])


class World:
    """A shop publishing N timed events on ``orders``; billing and shipping consume them."""

    def __init__(self, spec: BrokerSpec, tmp_path: Path) -> None:
        self.config = mesh_config(spec, sqlite_url(tmp_path))
        self.shop = App("shop", config=self.config)
        self.billing = Consumer("billing", "orders", self.config)
        self.shipping = Consumer("shipping", "orders", self.config)
        self.t0 = now().replace(microsecond=0) - timedelta(minutes=2)  # within the broker seek margin
        self.sent: list[Event] = []

    def at(self, seconds: float) -> datetime:
        return self.t0 + timedelta(seconds=seconds)

    async def publish(self, n: int = N) -> None:
        for i in range(n):
            self.sent.append(
                await self.shop.publish(
                    "orders",
                    {"i": i},
                    type="shop.order.created" if i % 3 else "shop.order.paid",
                    key=f"k{i % 4}",
                    subject=f"order-{i}",
                    time=self.at(i),
                    extensions={"tenant": "acme" if i % 2 else "globex", "traceparent": TRACEPARENT},
                )
            )
        await self.billing.app.join()
        await self.shipping.app.join()
        await flush(self.shop, self.billing.app, self.shipping.app)


@pytest.fixture
async def world(memory: BrokerSpec, tmp_path: Path) -> AsyncIterator[World]:
    w = World(memory, tmp_path)
    async with w.shop, w.billing.app, w.shipping.app:
        await w.publish()
        yield w


@pytest.fixture
async def tools(world: World) -> AsyncIterator[Tools]:
    async with open_tools(App("ops", config=world.config)) as t:
        yield t


def window(world: World, start: float = 10, end: float = 20) -> Window:
    return Window(world.at(start), world.at(end))


async def test_replay_a_window_to_one_group_only(world: World, tools: Tools) -> None:
    spec = ReplaySpec("orders", name="rebill", window=window(world), target=Target.group("billing"), batch=4)
    result = await tools.replayer.run(spec)
    assert (result.matched, result.delivered, result.batches) == (10, 10, 3)
    await wait_count(world.billing, N + 10)
    await settle(0.2)
    replayed = world.billing.replayed()
    assert [e.id for e in replayed] == [e.id for e in world.sent[10:20]], "ids and order preserved"
    assert all(e.extensions["meshreplay"] == "rebill" for e in replayed)
    assert [e.data for e in replayed] == [{"i": i} for i in range(10, 20)]
    # the original trace goes on: same trace id (with an SDK tracer set, the replay's send span
    # is a new span in that trace, so the span id part may differ)
    trace_id = TRACEPARENT.split("-")[1]
    assert all(str(e.extensions["traceparent"]).split("-")[1] == trace_id for e in replayed), "in the original trace"
    assert len(world.shipping.events) == N, "nobody else received them"
    saved = await tools.replayer.checkpoint("rebill")
    assert saved is not None and saved["done"] and saved["delivered"] == 10


async def test_dry_run_counts_by_type_and_sends_nothing(world: World, tools: Tools) -> None:
    spec = ReplaySpec("orders", name="peek", window=window(world, 0, 30), target=Target.group("billing"))
    result = await tools.replayer.dry_run(spec)
    assert result.matched == N and result.delivered == 0
    assert result.by_type == {"shop.order.paid": 10, "shop.order.created": 20}
    await settle(0.2)
    assert len(world.billing.events) == N
    assert await tools.replayer.checkpoint("peek") is None, "a dry run saves nothing"


async def test_original_topic_reaches_every_group_and_another_topic_only_its_own(world: World, tools: Tools) -> None:
    audit = Consumer("audit", "orders-audit", world.config)
    async with audit.app:
        await tools.replayer.run(ReplaySpec("orders", name="all", window=window(world, 0, 2)))
        await tools.replayer.run(
            ReplaySpec("orders", name="copy", window=window(world, 0, 3), target=Target.topic("orders-audit"))
        )
        await wait_count(world.billing, N + 2)
        await wait_count(world.shipping, N + 2)
        await wait_count(audit, 3)
        await settle(0.2)
    assert len(world.billing.events) == len(world.shipping.events) == N + 2
    assert [e.extensions["meshreplay"] for e in audit.events] == ["copy"] * 3


async def test_filters_on_type_source_subject_and_any_extension(world: World, tools: Tools) -> None:
    async def count(**kw: Any) -> int:
        spec = ReplaySpec("orders", name="f", window=window(world, 0, 30), filter=EventFilter(**kw))
        return (await tools.replayer.dry_run(spec)).matched

    assert await count(types=("shop.order.paid",)) == 10
    assert await count(types=("shop.order.*",)) == N
    assert await count(sources=("/shop",)) == N
    assert await count(subjects=("order-1?",)) == 10
    assert await count(where=(("tenant", "acme"),)) == 15
    assert await count(where=(("tenant", "acme"), ("tenant", "globex"))) == N, "one name: alternatives"
    assert await count(where=(("tenant", "acme"), ("partitionkey", "k1"))) == 8, "names: all must match"


async def test_order_of_original_time_is_kept_per_key(world: World, tools: Tools) -> None:
    await tools.replayer.run(
        ReplaySpec("orders", name="keys", window=window(world, 0, 30), target=Target.group("billing"))
    )
    await wait_count(world.billing, 2 * N)
    for key in ("k0", "k1", "k2", "k3"):
        got = [e.data["i"] for e in world.billing.replayed() if e.extensions["partitionkey"] == key]
        assert got == sorted(got) and len(got) == N // 4 + (1 if int(key[1]) < N % 4 else 0)


async def test_bad_input_is_refused_before_anything_is_sent(world: World, tools: Tools) -> None:
    with pytest.raises(BadReplayInput, match="empty window"):
        Window(world.at(20), world.at(10))
    with pytest.raises(UnknownTopic, match=r"unknown topic 'nope'.*it has: orders"):
        await tools.replayer.run(ReplaySpec("nope", name="x1", window=window(world)))
    with pytest.raises(UnknownGroup, match="no group 'nobody' subscribes to 'orders'"):
        await tools.replayer.run(ReplaySpec("orders", name="x2", window=window(world), target=Target.group("nobody")))
    with pytest.raises(NothingToReplay, match="has the attribute 'region'"):
        await tools.replayer.run(
            ReplaySpec("orders", name="x3", window=window(world), filter=EventFilter(where=(("region", "eu"),)))
        )
    with pytest.raises(NothingToReplay, match="no events on 'orders'"):
        await tools.replayer.run(ReplaySpec("orders", name="x4", window=Window(world.at(-100), world.at(-50))))
    with pytest.raises(NothingToReplay, match=r"none matches type=nothing\.here"):
        await tools.replayer.run(
            ReplaySpec("orders", name="x5", window=window(world), filter=EventFilter(types=("nothing.here",)))
        )
    await settle(0.2)
    assert len(world.billing.events) == len(world.shipping.events) == N
    assert await tools.replayer.checkpoints() == {}, "no replay left a checkpoint behind"


async def test_a_name_is_used_once_and_a_finished_replay_resumes_to_nothing(world: World, tools: Tools) -> None:
    spec = ReplaySpec("orders", name="once", window=window(world, 0, 1), target=Target.group("billing"))
    await tools.replayer.run(spec)
    with pytest.raises(ReplayExists, match="--resume once"):
        await tools.replayer.run(spec)
    again = await tools.replayer.resume("once")
    assert again.finished and again.sent_now == 0 and again.delivered == 1


async def test_corrupt_archive_rows_are_reported_and_skipped(world: World, tools: Tools) -> None:
    assert tools.archive is not None
    rows = await tools.archive.read(ArchiveQuery("orders", limit=100))
    bad = rows[12]
    await tools.archive.execute("UPDATE mesh_archive SET event = ? WHERE seq = ?", b"{not json", bad.seq)
    spec = ReplaySpec("orders", name="corrupt", window=window(world), target=Target.group("billing"))
    result = await tools.replayer.run(spec)
    assert result.delivered == 9 and result.corrupt_count == 1
    assert result.corrupt[0].startswith(f"row {bad.seq}: invalid JSON")


async def test_an_interrupted_replay_resumes_without_gap_or_repeat_beyond_one_batch(world: World, tools: Tools) -> None:
    spec = ReplaySpec("orders", name="cut", window=window(world, 0, 30), target=Target.group("billing"), batch=4)
    sent: list[str] = []
    original = Sender.send

    async def counting(self: Sender, event: Event, destination: str | None = None) -> None:
        await original(self, event, destination)
        sent.append(event.id)
        if len(sent) == 10:  # mid-batch: the third batch has 2 of its 4 events out
            raise asyncio.CancelledError

    Sender.send = counting  # type: ignore[method-assign]
    try:
        with pytest.raises(asyncio.CancelledError):
            await tools.replayer.run(spec)
    finally:
        Sender.send = original  # type: ignore[method-assign]
    saved = await tools.replayer.checkpoint("cut")
    assert saved is not None and not saved["done"] and saved["delivered"] == 8
    result = await tools.replayer.resume("cut")
    assert result.resumed and result.finished and result.delivered == N and result.sent_now == N - 8
    await wait_count(world.billing, N + 10 + N - 8)
    ids = [e.id for e in world.billing.replayed()]
    expected = [e.id for e in world.sent]
    assert ids == expected[:10] + expected[8:], "the unfinished batch's first two went twice, nothing else"


async def test_rate_limit_spaces_events(world: World, tools: Tools) -> None:
    loop = asyncio.get_running_loop()
    start = loop.time()
    await tools.replayer.run(
        ReplaySpec("orders", name="slow", window=window(world, 0, 21), target=Target.group("billing"), rate=100)
    )
    assert loop.time() - start >= 0.18


async def test_broker_history_source_and_earlier_copies_left_out(world: World, tools: Tools) -> None:
    await tools.replayer.run(ReplaySpec("orders", name="first", window=window(world, 0, 5)))  # copies on the topic
    await wait_count(world.billing, N + 5)
    spec = ReplaySpec(
        "orders", name="hist", source="broker", window=window(world, 0, 10), target=Target.group("shipping")
    )
    result = await tools.replayer.run(spec)
    assert result.delivered == 10 and result.skipped["earlier replay copy"] == 5
    await wait_count(world.shipping, N + 5 + 10)
    assert [e.id for e in world.shipping.replayed()][-10:] == [e.id for e in world.sent[:10]]


async def test_idempotent_consumers_drop_replayed_events(memory: BrokerSpec, tmp_path: Path) -> None:
    config = mesh_config(memory, sqlite_url(tmp_path), subscriptions={"pay": {"idempotent": True}})
    shop, ledger = App("shop", config=config), Consumer("ledger", "pay", config)
    async with shop, ledger.app:
        for i in range(5):
            await shop.publish("pay", {"i": i}, type="pay", time=now() - timedelta(minutes=1))
        await ledger.app.join()
        await flush(shop, ledger.app)
        async with open_tools(App("ops", config=config)) as t:
            result = await t.replayer.run(
                ReplaySpec(
                    "pay", name="dup", window=Window(now() - timedelta(hours=1), now()), target=Target.group("ledger")
                )
            )
        assert result.delivered == 5
        await ledger.app.join()
    assert len(ledger.events) == 5, "the replayed copies were recognised as duplicates"
