"""An inbound circuit breaker pauses a failing subscription and resumes it, dead-lettering nothing."""

from __future__ import annotations

import asyncio

import pytest

from mesh import App, Event
from mesh.resiliency import telemetry
from tests.support import BrokerSpec, unique, wait_for

pytestmark = pytest.mark.timeout(90)

OPEN_FOR = 2.0


async def test_an_open_breaker_pauses_consumption_and_a_half_open_success_resumes_it(broker_spec: BrokerSpec) -> None:
    namespace, topic = unique("brk") + ".", unique("orders")
    cfg = {
        "broker": {**broker_spec.config(), "namespace": namespace},
        "subscriptions": {topic: {"retry": {"attempts": 30, "immediate": 0, "initial": 0.2, "max": 0.3}}},
        "resiliency": {
            "policies": {"circuit_breakers": {"sub": {"trip": "consecutive_failures >= 3", "open_for": OPEN_FOR}}},
            "targets": {"topics": {topic: {"inbound": {"circuit_breaker": "sub"}}}},
        },
        "drain_timeout": 1,
    }
    failing = True
    calls: list[str] = []
    handled: set[str] = set()
    dead: list[str] = []
    app, watcher, producer = App(unique("shop"), config=cfg), App(unique("dlq"), config=cfg), App(unique("p"), config=cfg)

    @app.subscribe(topic)
    async def on_order(event: Event) -> None:
        calls.append(event.id)
        if failing:
            raise RuntimeError("the database is down")
        handled.add(event.id)

    @watcher.subscribe(f"{topic}.dlq")
    async def on_dead(event: Event) -> None:
        dead.append(event.id)

    target = f"topic:{topic}:inbound"
    async with app, watcher, producer:
        first = [(await producer.publish(topic, {"n": n}, type="order")).id for n in range(3)]
        await wait_for(lambda: telemetry().counts["breaker", target, "open"] == 1, what="the breaker to open")
        assert app.routes[0].breaker is not None and app.routes[0].breaker.state == "open"
        seen = len(calls)
        later = [(await producer.publish(topic, {"n": n}, type="order")).id for n in range(3, 8)]
        await asyncio.sleep(OPEN_FOR / 2)  # open: nothing reaches the handler, nothing is retried
        assert len(calls) == seen, "deliveries wait while the breaker is open"
        failing = False
        await wait_for(lambda: handled == set(first + later), timeout=30, what="every event handled")
        await wait_for(lambda: telemetry().counts["breaker", target, "closed"] == 1, what="the breaker to close")
        assert telemetry().counts["breaker", target, "half-open"] == 1
        assert dead == [], "nothing paused was dead-lettered"
        assert all(calls.count(i) == 1 for i in later), "the paused events were handled once each, not retried"
