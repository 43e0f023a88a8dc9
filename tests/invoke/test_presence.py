"""Presence on the memory broker: announcements, probes, leave, expiry, warm-up, broken input."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from mesh import App, Event, NoResponders
from mesh.brokers.memory import MemoryBroker
from mesh.invoke.presence import HEARTBEAT, PRESENCE_TOPIC
from tests.support import unique, wait_for

pytestmark = [pytest.mark.memory, pytest.mark.timeout(60)]


@pytest.fixture
def hub() -> Iterator[str]:
    name = unique("hub")
    yield name
    MemoryBroker.reset(name)


def cfg(hub: str, **presence: Any) -> dict[str, Any]:
    return {"broker": {"type": "memory", "options": {"name": hub}}, "presence": presence}


def callee(hub: str, app_id: str = "inventory", **presence: Any) -> App:
    app = App(app_id, config=cfg(hub, **presence), version="3")

    @app.method("reserve", idempotent=True)
    async def reserve() -> None: ...

    @app.method("release")
    async def release() -> None: ...

    return app


async def test_announcements_name_methods_subscriptions_and_version(hub: str) -> None:
    inventory, mailer, watcher = callee(hub), App("mailer", config=cfg(hub)), App("watcher", config=cfg(hub))

    @mailer.subscribe("orders", type="shop.order.*")
    async def mail(event: Event) -> None: ...

    async with inventory, mailer, watcher:
        assert inventory.presence.announcing and mailer.presence.announcing
        assert not watcher.presence.announcing, "an app with nothing to offer does not announce"
        await watcher.presence.listen()
        await wait_for(lambda: set(watcher.presence.apps()) == {"inventory", "mailer"}, what="both apps")
        [inv] = watcher.presence.live("inventory")
        assert inv.instance == inventory.instance_id and inv.version == "3"
        assert inv.methods == {"reserve": True, "release": False}
        [mail_instance] = watcher.presence.live("mailer")
        assert mail_instance.subscriptions == [("orders", "mailer")]
        assert mail_instance.as_dict()["subscriptions"] == [{"topic": "orders", "group": "mailer"}]
        assert watcher.presence.idempotent("inventory", "reserve") is True
        assert watcher.presence.idempotent("inventory", "release") is False
        assert watcher.presence.idempotent("inventory", "other") is None


async def test_a_new_listener_learns_the_live_apps_at_once_by_probing(hub: str) -> None:
    slow_beat = {"interval": 30.0, "expiry": 90.0}
    inventory = callee(hub, **slow_beat)
    caller = App("caller", config=cfg(hub, **slow_beat))
    async with inventory, caller:
        await asyncio.sleep(0.05)  # the first heartbeat went out before anyone listened
        await caller.presence.listen()
        await wait_for(lambda: bool(caller.presence.live("inventory")), timeout=2, what="the probe answered")


async def test_leave_is_immediate_and_expiry_is_a_departure(hub: str) -> None:
    fast = {"interval": 0.1, "expiry": 0.4}
    first, second = callee(hub, **fast), callee(hub, **fast)
    caller = App("caller", config=cfg(hub, **fast))
    async with first, second, caller:
        await caller.presence.listen()
        await wait_for(lambda: len(caller.presence.live("inventory")) == 2, what="two instances")
        assert sorted(caller.presence.direct_instances("inventory")) == sorted([first.instance_id, second.instance_id])
        departure = caller.presence.departure("inventory")
        await first.stop()  # a goodbye: gone at once, not a departure
        await wait_for(lambda: len(caller.presence.live("inventory")) == 1, timeout=1, what="the leave")
        assert caller.presence.direct_instances("inventory") == (second.instance_id,), "a leave is no choice"
        assert not departure.done()
        beat = second.presence._heartbeat  # a crash: the heartbeats just stop
        assert beat is not None
        beat.cancel()
        await wait_for(lambda: not caller.presence.has_live("inventory"), timeout=3, what="the expiry")
        assert caller.presence.direct_instances("inventory") == (), "an expired instance is no choice"
        await asyncio.wait_for(asyncio.shield(departure), 3)
        assert caller.presence.live("inventory") == []


async def test_warm_up_waits_for_a_late_starter_then_fails_fast(hub: str) -> None:
    caller = App("caller", config=cfg(hub, warmup=1.5))
    async with caller:
        late = callee(hub)
        loop = asyncio.get_running_loop()
        starter = loop.call_later(0.3, lambda: asyncio.ensure_future(late.start()))
        try:
            await caller.invoke("inventory", "reserve", timeout=5)  # found within the warm-up
        finally:
            starter.cancel()
        await asyncio.sleep(1.5)
        started = loop.time()
        with pytest.raises(NoResponders, match="'nobody'"):
            await caller.invoke("nobody", "x", timeout=10)
        assert loop.time() - started < 0.5
        await late.stop()


async def test_broken_presence_messages_are_ignored(hub: str) -> None:
    inventory, caller = callee(hub), App("caller", config=cfg(hub))
    async with inventory, caller:
        await caller.presence.listen()
        for data in ({"app": 1}, "text", {"app": "x", "instance": "y", "methods": "nope", "expiry": "soon"}):
            await caller.broker.publish_ephemeral(PRESENCE_TOPIC, Event(HEARTBEAT, "/stranger", data))
        await caller.broker.publish_ephemeral(PRESENCE_TOPIC, Event("mesh.presence.other", "/stranger", {}))
        await wait_for(lambda: bool(caller.presence.live("inventory")), what="the listener still works")
        assert await caller.invoke("inventory", "reserve") is None
