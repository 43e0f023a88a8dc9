"""Dead-letter operations on the memory broker, from the archive and from the broker's log."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from mesh import App, Event
from mesh.brokers.memory import MemoryBroker
from mesh.event import now
from mesh.replay import CanaryFailed, EventFilter, NothingToReplay, Tools, UnknownTopic, open_tools, parse_when
from mesh_plugins.deadletter import FAILURE_EXTENSIONS
from tests.replay.support import Consumer, flush, mesh_config, settle, sqlite_url, wait_count
from tests.support import BrokerSpec, unique, wait_for

pytestmark = [pytest.mark.memory, pytest.mark.timeout(60)]


class Broken:
    """What the payments consumer fails with, by the event's ``kind``; fixed by clearing it."""

    def __init__(self) -> None:
        self.errors: dict[str, type[Exception]] = {"slow": TimeoutError, "bad": ValueError}

    def __call__(self, event: Event) -> type[Exception] | None:
        return self.errors.get(str(event.data.get("kind")))


class World:
    def __init__(self, spec: BrokerSpec, tmp_path: Path) -> None:
        self.config = mesh_config(spec, sqlite_url(tmp_path))
        self.shop = App("shop", config=self.config)
        self.broken = Broken()
        self.payments = Consumer("payments", "pay", self.config, fail=self.broken)
        self.sent: list[Event] = []

    async def publish(self) -> None:
        kinds = ["slow"] * 6 + ["bad"] * 3 + ["ok"] * 3
        for i, kind in enumerate(kinds):
            self.sent.append(await self.shop.publish("pay", {"i": i, "kind": kind}, type="pay.requested"))
        await self.payments.app.join()
        await flush(self.shop, self.payments.app)


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    spec = BrokerSpec("memory", None, {"name": unique("dlq")})
    w = World(spec, tmp_path)
    try:
        async with w.shop, w.payments.app:
            await w.publish()
            yield w
    finally:
        MemoryBroker.reset(spec.options["name"])


@pytest.fixture(params=["archive", "broker"])
async def tools(request: pytest.FixtureRequest, world: World) -> AsyncIterator[tuple[Tools, Any]]:
    async with open_tools(App("ops", config=world.config)) as t:
        yield t, request.param


async def test_list_counts_pending_dead_letters_by_error_type(tools: tuple[Tools, Any], world: World) -> None:
    t, source = tools
    summary = await t.dead_letters("pay.dlq", source).summary()
    assert summary.total == 9
    assert {e: s.count for e, s in summary.by_error.items()} == {"TimeoutError": 6, "ValueError": 3}
    stats = summary.by_error["TimeoutError"]
    assert stats.oldest is not None and stats.newest is not None and stats.oldest <= stats.newest <= now()
    assert summary.by_origin == {"pay": 9}
    only = await t.dead_letters("pay.dlq", source).summary(filter=EventFilter(where=(("mesherrortype", "Value*"),)))
    assert only.total == 3


async def test_show_finds_one_dead_letter_with_its_failure(tools: tuple[Tools, Any], world: World) -> None:
    t, source = tools
    entries = await t.dead_letters("pay.dlq", source).show(world.sent[7].id)
    assert len(entries) == 1 and entries[0].state == "pending"
    ext = entries[0].event.extensions
    assert ext["mesherrortype"] == "ValueError" and ext["meshtopic"] == "pay" and ext["meshgroup"] == "payments"
    assert await t.dead_letters("pay.dlq", source).show("no-such-id") == []


async def test_redrive_round_trip(tools: tuple[Tools, Any], world: World) -> None:
    t, source = tools
    world.broken.errors.clear()  # the consumer is fixed
    dlq = t.dead_letters("pay.dlq", source)
    result = await dlq.redrive(
        filter=EventFilter(where=(("mesherrortype", "TimeoutError"),)), canary=2, canary_wait=0.3
    )
    assert result.sent == 6 and result.canary == 2 and result.by_destination == {"pay": 6}
    await wait_count(world.payments, 12 + 6)
    again = world.payments.events[12:]
    assert sorted(e.id for e in again) == sorted(e.id for e in world.sent[:6]), "ids kept"
    for event in again:
        assert event.extensions["meshredrive"] == 1 and event.extensions["meshreplay"] == result.name
        assert not set(FAILURE_EXTENSIONS) & set(event.extensions), "failure extensions removed"
    summary = await dlq.summary()
    assert summary.total == 3 and summary.done == 6, "what was redriven is no longer pending"
    with pytest.raises(NothingToReplay, match="6 already redriven"):
        await dlq.redrive(filter=EventFilter(where=(("mesherrortype", "TimeoutError"),)), canary=0)


async def test_a_failing_canary_stops_the_redrive(tools: tuple[Tools, Any], world: World) -> None:
    t, source = tools
    dlq = t.dead_letters("pay.dlq", source)
    with pytest.raises(CanaryFailed, match=r"canary failed: [123] of 3 redriven events came back") as failed:
        await dlq.redrive(canary=3, canary_wait=5.0, rate=1000)
    assert set(failed.value.returned) <= {e.id for e in world.sent[:3]}
    await flush(world.payments.app)
    await settle(0.1)
    assert len(world.payments.events) == 12 + 3, "only the canary was sent"
    summary = await dlq.summary()
    assert summary.total == 9 and summary.done == 3, "the canary came back, redriven once"
    back = await dlq.show(world.sent[0].id)
    assert [e.event.extensions.get("meshredrive") for e in back] == [None, 1]
    assert back[0].state.startswith("redriven by redrive-") and back[1].state == "pending"


async def test_an_event_redriven_too_often_is_not_sent_again(tools: tuple[Tools, Any], world: World) -> None:
    t, source = tools
    dlq = t.dead_letters("pay.dlq", source)
    slow = EventFilter(where=(("mesherrortype", "TimeoutError"),))
    await dlq.redrive(filter=slow, canary=0, max_redrives=1)  # they fail again: back with meshredrive 1
    await wait_for(lambda: len(world.payments.events) == 18, what="6 redriven deliveries")
    await flush(world.payments.app)
    await settle(0.1)
    with pytest.raises(NothingToReplay, match="6 redriven 1 times already"):
        await dlq.redrive(filter=slow, canary=0, max_redrives=1)
    world.broken.errors.clear()
    forced = await dlq.redrive(filter=slow, canary=0, max_redrives=2)
    assert forced.sent == 6
    await wait_count(world.payments, 24)
    assert {e.extensions["meshredrive"] for e in world.payments.events[18:]} == {2}


async def test_redrive_to_another_topic(tools: tuple[Tools, Any], world: World) -> None:
    t, source = tools
    quarantine = Consumer("review", "pay.review", world.config)
    async with quarantine.app:
        result = await t.dead_letters("pay.dlq", source).redrive(to="pay.review", canary=0)
        await wait_count(quarantine, 9)
    assert result.by_destination == {"pay.review": 9}


async def test_purge_asks_and_removes_only_older_dead_letters(tools: tuple[Tools, Any], world: World) -> None:
    t, source = tools
    dlq = t.dead_letters("pay.dlq", source)
    asked: list[int] = []
    assert await dlq.purge(older_than=parse_when("1h"), confirm=lambda n: asked.append(n) or True) == 0
    assert asked == [], "nothing that old: nothing to ask"
    assert await dlq.purge(older_than=parse_when("now"), dry_run=True) == 9
    assert await dlq.purge(older_than=parse_when("now"), confirm=lambda n: False) == 0
    assert (await dlq.summary()).total == 9, "declined: nothing removed"
    gone = await dlq.purge(
        older_than=parse_when("now"),
        filter=EventFilter(where=(("mesherrortype", "ValueError"),)),
        confirm=lambda n: True,
    )
    assert gone == 3
    assert (await dlq.summary()).total == 6


async def test_unknown_dead_letter_topic(tools: tuple[Tools, Any], world: World) -> None:
    t, source = tools
    with pytest.raises(UnknownTopic, match=r"unknown dead-letter topic 'orders\.dlq'"):
        await t.dead_letters("orders.dlq", source).summary()
