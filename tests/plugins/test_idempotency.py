"""The idempotency plugin: a redelivered event a group already handled is not handled again."""

from __future__ import annotations

from typing import Any

import pytest

from mesh import App, Event
from mesh.brokers.memory import MemoryBroker
from mesh.errors import ConfigError
from tests.support import DEFAULT_URLS, reachable, unavailable, unique


@pytest.fixture
def hub(request: pytest.FixtureRequest) -> Any:
    name = unique("idem")
    yield name
    MemoryBroker.reset(name)


def config(hub: str, store: dict[str, Any] | None = None, **topics: Any) -> dict[str, Any]:
    return {
        "broker": {"type": "memory", "options": {"name": hub}},
        "subscriptions": topics,
        "plugins": {"config": {"idempotency": store or {}}},
    }


async def run_twice(app: App, handled: list[str], topic: str = "pay") -> Event:
    async with app:
        event = await app.publish(topic, {"amount": 5}, type="pay")
        await app.send(topic, event)  # the same event again: same source and id, as a redelivery is
        await app.send(topic, event.replace(id="other"))
        await app.join()
    return event


@pytest.mark.parametrize("store", ["memory", "redis"])
async def test_duplicates_are_dropped_for_opted_in_subscriptions(hub: str, store: str) -> None:
    settings: dict[str, Any] = {"store": store, "window": "1m"}
    if store == "redis":
        if not reachable(DEFAULT_URLS["redis"], 6379):
            unavailable("redis")
        settings.update(url=DEFAULT_URLS["redis"], prefix=unique("idem") + ":")
    app = App("billing", config=config(hub, settings, pay={"idempotent": True}))
    handled: list[str] = []

    @app.subscribe("pay")
    async def charge(event: Event) -> None:
        handled.append(event.id)

    event = await run_twice(app, handled)
    assert handled == [event.id, "other"]


async def test_subscriptions_that_do_not_opt_in_see_every_delivery(hub: str) -> None:
    app = App("billing", config=config(hub, pay={"idempotent": False}, other={"idempotent": True}))
    handled: list[str] = []

    @app.subscribe("pay")
    async def charge(event: Event) -> None:
        handled.append(event.id)

    event = await run_twice(app, handled)
    assert handled == [event.id, event.id, "other"]


async def test_a_failed_handling_is_not_recorded(hub: str) -> None:
    cfg = config(hub, pay={"idempotent": True, "retry": {"attempts": 2, "immediate": 1, "initial": "1ms"}})
    app = App("billing", config=cfg)
    calls: list[int] = []

    @app.subscribe("pay")
    async def charge(event: Event) -> None:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("first try fails")

    async with app:
        event = await app.publish("pay", {}, type="pay")
        await app.join()
        await app.send("pay", event)
        await app.join()
    assert len(calls) == 2, "retried after the failure, then the duplicate was dropped"


def test_bad_settings_name_their_path(hub: str) -> None:
    with pytest.raises(ConfigError, match=r"plugins\.config\.idempotency\.window"):
        App("billing", config=config(hub, {"window": "soon"}, pay={"idempotent": True}))
