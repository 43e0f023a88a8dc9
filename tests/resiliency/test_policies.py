"""The ``resiliency:`` section and its parts without a broker: config errors, breakers, budgets, ejection."""

from __future__ import annotations

import asyncio
import logging
import random
from pathlib import Path
from typing import Any

import pytest

from mesh import App, ConfigError, Event, InvocationTimeout
from mesh.config import load_config
from mesh.resiliency import (
    Balancer,
    BreakerPolicy,
    CircuitBreaker,
    CircuitOpen,
    InstancesConfig,
    Resiliency,
    RetryBudget,
    RetryPolicySpec,
    interval,
    telemetry,
)
from tests.support import unique, wait_for

BAD = """\
resiliency:
  policies:
    timeouts: {fast: 500ms}
    retries: {idempotent: {policy: exponential, initial: 50ms}}
    circuit_breakers:
      apps: {trip: "consecutive_failures >> 5"}
  targets:
    apps:
      inventory: {timeout: fast, retry: idempotnet, circuit_breaker: apps}
      "bad app": {timeout: fast}
    topics:
      payments: {inbound: {circuit_breaker: nope}}
"""


def test_bad_input_is_reported_whole_with_paths_and_lines(tmp_path: Path) -> None:
    path = tmp_path / "mesh.yaml"
    path.write_text(BAD)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    text = str(info.value)
    assert "resiliency.policies.circuit_breakers.apps.trip (line 6): unexpected '>'" in text or \
        "resiliency.policies.circuit_breakers.apps.trip (line 6): expected a number" in text
    assert "resiliency.targets.apps.inventory.retry (line 9): unknown retry policy 'idempotnet' (known: idempotent)" \
        in text
    assert "resiliency.targets.apps.bad app (line 10): app id 'bad app' cannot be used" in text
    assert "resiliency.targets.topics.payments.inbound.circuit_breaker (line 12): unknown circuit breaker policy " \
        "'nope' (known: apps)" in text


def test_a_timeout_shorter_than_the_retry_interval_is_warned_about(caplog: pytest.LogCaptureFixture) -> None:
    cfg = {"resiliency": {"policies": {"timeouts": {"t": "50ms"}, "retries": {"r": {"policy": "constant",
                                                                                 "duration": "100ms"}}},
                          "targets": {"apps": {"inventory": {"timeout": "t", "retry": "r"}}}}}
    with caplog.at_level(logging.WARNING, "mesh.config"):
        load_config(cfg)
    assert "resiliency.targets.apps.inventory: timeout 't' (0.05s) is not longer than" in caplog.text


def test_no_config_means_sensible_defaults() -> None:
    conf = load_config({}).resiliency
    assert conf.instances.enabled and conf.instances.eject_after == 2 and conf.instances.ejection == 5.0
    assert not conf.targets.apps and not conf.targets.topics


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_a_breaker_opens_on_its_trip_expression_and_closes_after_a_good_probe() -> None:
    clock = Clock()
    breaker = CircuitBreaker(unique("b"), BreakerPolicy(trip="failure_ratio >= 0.5 and requests >= 4", open_for=10),
                             clock)
    for ok in (True, False, True):
        assert breaker.allow()
        breaker.record(ok)
    assert breaker.state == "closed"
    breaker.record(False)
    assert breaker.state == "open"
    with pytest.raises(CircuitOpen, match="is open"):
        breaker.check()
    clock.t = 10
    assert breaker.allow() and breaker.state == "half-open"
    assert not breaker.allow(), "one probe at a time"
    breaker.record(False)
    assert breaker.state == "open"
    clock.t = 20
    assert breaker.allow()
    breaker.record(True)
    assert breaker.state == "closed"
    assert telemetry().counts["breaker", breaker.target, "open"] == 2


def test_a_breaker_forgets_its_counts_every_interval() -> None:
    clock = Clock()
    breaker = CircuitBreaker(unique("b"), BreakerPolicy(trip="failures >= 3", interval=5), clock)
    breaker.record(False)
    breaker.record(False)
    clock.t = 6
    breaker.record(False)
    assert breaker.state == "closed"


def test_retry_intervals_and_the_budget() -> None:
    rng = random.Random(1)
    policy = RetryPolicySpec(policy="exponential", initial=0.1, max_interval=0.5, jitter=False)
    assert [interval(policy, n) for n in (1, 2, 3, 4, 5)] == [0.1, 0.2, 0.4, 0.5, 0.5]
    jittered = RetryPolicySpec(policy="constant", initial=1.0)
    assert all(0.5 <= interval(jittered, 3, rng) <= 1.0 for _ in range(100))
    budget = RetryBudget(0.2, 0.1)  # 1 retry per 10 s window, plus one per five calls
    for t in range(10):
        budget.call(float(t) / 10)
    assert [budget.take(1.0) for _ in range(4)] == [True, True, True, False]
    assert budget.take(12.0), "the window moved on"
    for t in range(1000):
        budget.call(20.0 + t)
    assert len(budget._calls) == 11, "a caller that never retries keeps one window of calls, not every call"


async def test_the_balancer_ejects_probes_and_readmits() -> None:
    answers: list[bool] = [False, True]
    probed: list[str] = []

    async def probe(app: str, instance: str) -> bool:
        probed.append(instance)
        return answers.pop(0)

    tasks: list[asyncio.Task[Any]] = []
    config = InstancesConfig(eject_after=2, ejection=0.05, max_ejection=1)
    balancer = Balancer(config, probe, lambda c: tasks.append(asyncio.ensure_future(c)), random.Random(3))
    live = ["a", "b", "c"]
    for _ in range(2):
        balancer.started("app", "a")
        balancer.finished("app", "a", False, live=live)
    assert balancer.ejected("a")
    assert {balancer.choose("app", live) for _ in range(50)} == {"b", "c"}
    balancer.started("app", "b")
    balancer.finished("app", "b", False, live=live)
    balancer.started("app", "b")
    balancer.finished("app", "b", False, live=live)
    assert not balancer.ejected("b"), "at most half of the instances are ejected"
    await asyncio.sleep(0.06)
    balancer.choose("app", live)  # the ejection is over: a probe goes out (and fails)
    await asyncio.gather(*tasks)
    assert probed == ["a"] and balancer.ejected("a")
    await asyncio.sleep(0.11)  # twice as long this time
    balancer.choose("app", live)
    await asyncio.gather(*tasks)
    assert probed == ["a", "a"] and not balancer.ejected("a")
    for _ in range(10):
        balancer.started("app", "c")  # c is busy: power of two choices avoids it when it can
    picks = [balancer.choose("app", live) for _ in range(300)]
    assert picks.count("c") < picks.count("a") and picks.count("c") < picks.count("b")


async def test_outbound_policies_retry_a_publish_and_a_breaker_refuses_at_once() -> None:
    topic = unique("pay")
    cfg = load_config({"resiliency": {
        "policies": {"retries": {"r": {"policy": "constant", "duration": "10ms", "max_retries": 2}},
                     "circuit_breakers": {"b": {"trip": "consecutive_failures >= 3", "open_for": 60}}},
        "targets": {"topics": {topic: {"outbound": {"retry": "r", "circuit_breaker": "b"}}}}}})
    failures = [OSError("down")] * 2
    sent: list[str] = []

    async def publish(t: str, event: Event) -> None:
        if failures:
            raise failures.pop()
        sent.append(t)

    wrapped = Resiliency(cfg).wrap_publish(publish)
    await wrapped(topic, Event("t", "/s", None))
    assert sent == [topic] and telemetry().counts["retry", f"topic:{topic}", "error"] == 2
    failures.extend([OSError("down")] * 5)
    with pytest.raises(OSError):  # three attempts fail: the third trips the breaker (it counts attempts)
        await wrapped(topic, Event("t", "/s", None))
    with pytest.raises(CircuitOpen):
        await wrapped(topic, Event("t", "/s", None))
    failures.clear()
    await wrapped(unique("other"), Event("t", "/s", None))  # other topics are not wrapped


async def test_an_app_breaker_fails_calls_at_once_once_open() -> None:
    hub, callee_id = unique("hub"), unique("svc")
    cfg = {"broker": {"type": "memory", "options": {"name": hub}},
           "resiliency": {"policies": {"circuit_breakers": {"b": {"trip": "consecutive_failures >= 2",
                                                                  "open_for": 60}}},
                          "targets": {"apps": {callee_id: {"circuit_breaker": "b"}}}}}
    callee = App(callee_id, config={"broker": cfg["broker"]})
    gate = asyncio.Event()

    @callee.method("slow")
    async def slow() -> None:
        await gate.wait()

    caller = App(unique("client"), config=cfg)
    async with callee, caller:
        await caller.presence.listen()
        await wait_for(lambda: caller.presence.has_live(callee_id), what="the callee")
        for _ in range(2):
            with pytest.raises(InvocationTimeout):
                await caller.invoke(callee_id, "slow", timeout=0.1)
        with pytest.raises(CircuitOpen):
            await caller.invoke(callee_id, "slow", timeout=0.1)
        gate.set()


async def test_an_inbound_target_naming_a_topic_nobody_knows_fails_at_start(tmp_path: Path) -> None:
    path = tmp_path / "mesh.yaml"
    path.write_text(f"""\
broker: {{type: memory, options: {{name: {unique("hub")}}}}}
resiliency:
  policies:
    circuit_breakers: {{b: {{trip: "consecutive_failures >= 3"}}}}
  targets:
    topics:
      ordres: {{inbound: {{circuit_breaker: b}}}}
""")
    app = App(unique("shop"), config=path)

    @app.subscribe("orders")
    async def on_order(event: Event) -> None: ...

    with pytest.raises(ConfigError, match=r"resiliency.targets.topics.ordres.inbound \(line 7\): the app subscribes "
                                          r"to no topic 'ordres'.*known: orders"):
        await app.start()


def test_an_inbound_retry_policy_points_to_the_subscription_s_own() -> None:
    cfg = {"resiliency": {"policies": {"retries": {"r": {}}}, "targets": {"topics": {"orders": {"inbound": {
        "retry": "r"}}}}}}
    with pytest.raises(ConfigError, match=r"resiliency.targets.topics.orders.inbound.retry: a subscription retries "
                                          r"by its own policy: use subscriptions.orders.retry"):
        load_config(cfg)


async def test_an_inbound_timeout_bounds_a_handler_call() -> None:
    topic, hub = unique("orders"), unique("hub")
    cfg = {"broker": {"type": "memory", "options": {"name": hub}},
           "subscriptions": {topic: {"retry": {"attempts": 2, "immediate": 1, "initial": 0.01}}},
           "resiliency": {"policies": {"timeouts": {"quick": "50ms"}},
                          "targets": {"topics": {topic: {"inbound": {"timeout": "quick"}}}}}}
    app = App(unique("shop"), config=cfg)
    calls: list[int] = []
    dead: list[str] = []

    @app.subscribe(topic)
    async def on_order(event: Event) -> None:
        calls.append(1)
        await asyncio.sleep(10)

    @app.subscribe(f"{topic}.dlq")
    async def on_dead(event: Event) -> None:
        dead.append(str(event.extensions.get("mesherrortype")))

    async with app:
        await app.publish(topic, {}, type="order")
        await wait_for(lambda: bool(dead), what="the dead letter")
    assert len(calls) == 2 and "TimeoutError" in dead[0]


async def test_an_ejected_instance_that_vanishes_and_comes_back_is_probed_first() -> None:
    probed: list[str] = []
    gate = asyncio.Event()

    async def probe(app: str, instance: str) -> bool:
        probed.append(instance)
        await gate.wait()
        return True

    tasks: list[asyncio.Task[Any]] = []
    balancer = Balancer(InstancesConfig(eject_after=1, ejection=0.01), probe, lambda c: tasks.append(
        asyncio.ensure_future(c)))
    balancer.started("app", "a")
    balancer.finished("app", "a", False, live=["a", "b"])
    assert balancer.ejected("a")
    await asyncio.sleep(0.02)
    assert balancer.choose("app", ["b"]) == "b"  # presence dropped it: its ejection is remembered
    assert {balancer.choose("app", ["a", "b"]) for _ in range(20)} == {"b"}, "back, but not before its probe"
    await asyncio.sleep(0)  # the probe task starts
    assert probed == ["a"]
    gate.set()
    await asyncio.gather(*tasks)
    assert "a" in {balancer.choose("app", ["a", "b"]) for _ in range(50)}
