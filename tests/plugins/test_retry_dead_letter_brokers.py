"""Retries and dead letters through the App on every broker: exact attempts, the dead-letter event
with its metadata, a delayed retry that lets later events flow, and a poison message that blocks nothing."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from mesh import App, Context, Event, Retry
from tests.support import BrokerSpec, unique, wait_for

pytestmark = pytest.mark.timeout(180)


def config(spec: BrokerSpec, **retry: Any) -> dict[str, Any]:
    return {
        "broker": {**spec.config(), "namespace": unique("rd") + "."},
        "defaults": {"retry": {"initial": "200ms", "max": "400ms", "jitter": False, **retry}},
    }


async def test_always_failing_handler_ends_in_the_dlq_after_exactly_the_attempts(broker_spec: BrokerSpec) -> None:
    cfg = config(broker_spec, attempts=4, immediate=1)
    worker, watcher = App("worker", config=cfg), App("watcher", config=cfg)
    calls: list[int] = []
    dead: list[Event] = []

    @worker.subscribe("jobs")
    async def work(ctx: Context) -> None:
        calls.append(ctx.attempt)
        raise TimeoutError("downstream timed out")

    @watcher.subscribe("jobs.dlq")
    async def on_dead(event: Event) -> None:
        dead.append(event)

    async with watcher, worker:
        sent = await worker.publish("jobs", {"n": 1}, type="job", key="k1")
        await wait_for(lambda: len(dead) == 1, timeout=90, what="the dead letter")
        await asyncio.sleep(0.5)
    assert calls == [1, 2, 3, 4], "exactly the configured attempts, counted by the handler"
    [letter] = dead
    assert (letter.id, letter.type, letter.data) == (sent.id, "job", {"n": 1})
    ext = letter.extensions
    assert ext["mesherrortype"] == "TimeoutError" and "downstream timed out" in str(ext["mesherror"])
    assert (ext["meshtopic"], ext["meshgroup"], str(ext["meshattempts"])) == ("jobs", "worker", "4")
    assert "meshfirstfail" in ext and "meshlastfail" in ext


async def test_a_delayed_retry_waits_while_later_events_flow(broker_spec: BrokerSpec) -> None:
    app = App("worker", config=config(broker_spec, attempts=3, immediate=0))
    loop = asyncio.get_running_loop()
    handled: dict[int, float] = {}
    tries: list[int] = []

    @app.subscribe("jobs")
    async def work(event: Event) -> None:
        i = event.data["i"]
        if i == 0 and not tries:
            tries.append(1)
            raise Retry(delay=1.5)
        handled[i] = loop.time()

    async with app:
        start = loop.time()
        for i in range(5):
            await app.publish("jobs", {"i": i}, type="job", key="same")
        await wait_for(lambda: len(handled) == 5, timeout=90, what="every event, the retried one last")
    assert max(handled[i] for i in range(1, 5)) < handled[0], "later events did not wait for the retry"
    assert handled[0] - start >= 1.2, "the retry waited about its delay"


async def test_poison_message_does_not_block_the_subscription(broker_spec: BrokerSpec) -> None:
    app = App("worker", config=config(broker_spec, attempts=2, immediate=0))
    done: list[int] = []

    @app.subscribe("jobs")
    async def work(event: Event) -> None:
        if event.data["i"] == 0:
            raise ValueError("poison")
        done.append(event.data["i"])

    async with app:
        for i in range(10):
            await app.publish("jobs", {"i": i}, type="job", key="same")
        await wait_for(lambda: len(done) == 9, timeout=90, what="the events after the poison one")
    assert sorted(done) == list(range(1, 10))
