"""One app consuming many topics, on every broker: each handler gets its own topic's events.

Behaviour only (speed is the benchmark's: ``python -m benchmarks.subscriptions``). Kafka runs
fewer topics: every topic is a group member's assignment on Tansu, which is slow to rebalance.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from mesh import App, Event
from tests.support import BrokerSpec, unique, wait_for

pytestmark = pytest.mark.timeout(180)

TOPICS = {"kafka": 12}
"""Topics per broker type (default 200)."""


def _config(spec: BrokerSpec) -> dict[str, Any]:
    broker = {**spec.config(), "namespace": unique("many") + "."}
    return {"broker": broker, "plugins": {"disable": ["tracing", "metrics"]}}


async def test_each_of_many_subscriptions_gets_its_own_topic(broker_spec: BrokerSpec) -> None:
    n = TOPICS.get(broker_spec.type, 200)
    config = _config(broker_spec)
    app = App(unique("many-app"), config=config)
    got: dict[int, list[Any]] = {i: [] for i in range(n)}

    def handler_for(i: int) -> Any:
        async def handle(event: Event) -> None:
            got[i].append(event.data)

        return handle

    for i in range(n):
        app.subscribe(f"t{i}")(handler_for(i))
    async with app, App(unique("many-producer"), config=config) as producer:
        await asyncio.gather(*(producer.publish(f"t{i}", {"i": i}, type="many.event") for i in range(n)))
        await wait_for(lambda: all(got.values()), timeout=120, what=f"one event on each of {n} topics")
    assert got == {i: [{"i": i}] for i in range(n)}


async def test_a_busy_handler_does_not_hold_up_the_other_subscriptions(broker_spec: BrokerSpec) -> None:
    config = _config(broker_spec)
    app = App(unique("many-busy"), config=config)
    other_ran = asyncio.Event()
    order: list[str] = []

    @app.subscribe("slow")
    async def slow(event: Event) -> None:
        order.append("slow started")
        await asyncio.wait_for(other_ran.wait(), 60)  # only the other subscription can end this wait
        order.append("slow done")

    @app.subscribe("quick")
    async def quick(event: Event) -> None:
        order.append("quick")
        other_ran.set()

    async with app, App(unique("many-producer"), config=config) as producer:
        await producer.publish("slow", {}, type="many.event")
        await wait_for(lambda: "slow started" in order, timeout=60, what="the slow handler")
        await producer.publish("quick", {}, type="many.event")
        await wait_for(lambda: "slow done" in order, timeout=60, what="the slow handler to finish")
    assert order == ["slow started", "quick", "slow done"]


async def test_stopping_an_app_of_many_subscriptions_lets_their_handlers_finish(broker_spec: BrokerSpec) -> None:
    n = min(20, TOPICS.get(broker_spec.type, 20))
    config = _config(broker_spec)
    app = App(unique("many-drain"), config=config)
    started: set[int] = set()
    finished: set[int] = set()
    release = asyncio.Event()

    def handler_for(i: int) -> Any:
        async def handle(event: Event) -> None:
            started.add(i)
            await release.wait()
            finished.add(i)

        return handle

    for i in range(n):
        app.subscribe(f"t{i}")(handler_for(i))
    async with App(unique("many-producer"), config=config) as producer:
        await app.start()
        await asyncio.gather(*(producer.publish(f"t{i}", {"i": i}, type="many.event") for i in range(n)))
        await wait_for(lambda: len(started) == n, timeout=120, what=f"{n} handlers running at once")
        stopping = asyncio.ensure_future(app.stop(timeout=60))
        await asyncio.sleep(0)
        assert not stopping.done()
        release.set()
        await stopping
    assert finished == set(range(n))
