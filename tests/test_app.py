"""The App and the delivery pipeline on the memory broker: routing, injection, retries, dead letters."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from pydantic import BaseModel

from mesh import App, Context, DeadLetter, Event, MeshError, Retry, hookimpl
from mesh.brokers.memory import MemoryBroker
from mesh.codecs import WireMessage
from mesh.pipeline import settle
from tests.support import wait_for


class Order(BaseModel):
    id: str
    qty: int


@pytest.fixture
def cfg(request: pytest.FixtureRequest) -> Any:
    hub = f"app-{request.node.name}"
    yield {
        "broker": {"type": "memory", "options": {"name": hub}},
        "defaults": {"retry": {"initial": "1ms", "max": "5ms"}},
    }
    MemoryBroker.reset(hub)


def with_retry(cfg: dict[str, Any], **retry: Any) -> dict[str, Any]:
    return {**cfg, "defaults": {"retry": {"initial": "1ms", "max": "5ms", **retry}}}


async def test_publish_returns_the_event_with_key_and_source(cfg: dict[str, Any]) -> None:
    async with App("orders", config=cfg) as app:
        event = await app.publish("orders", Order(id="A1", qty=1), type="shop.order.created", key="A1", subject="A1")
    assert (event.type, event.source, event.subject, event.partitionkey) == (
        "shop.order.created",
        "/orders",
        "A1",
        "A1",
    )
    assert isinstance(event.data, Order)


async def test_filters_route_to_the_first_matching_handler(cfg: dict[str, Any]) -> None:
    app = App("svc", config=cfg)
    got: list[tuple[str, str]] = []

    @app.subscribe("t", type="a.created")
    async def exact(event: Event) -> None:
        got.append(("exact", event.type))

    @app.subscribe("t", type="a.*")
    async def glob(event: Event) -> None:
        got.append(("glob", event.type))

    @app.subscribe("t", type=["b.x", "b.y"], tenant="acme")
    async def listed(event: Event) -> None:
        got.append(("list+ext", event.type))

    @app.subscribe("t", subject=lambda s: s is not None and s.startswith("vip"))
    async def predicate(event: Event) -> None:
        got.append(("predicate", event.type))

    async with app:
        for kind, ext, subject in [
            ("a.created", {}, None),
            ("a.deleted", {}, None),
            ("b.x", {"tenant": "acme"}, None),
            ("b.x", {"tenant": "other"}, None),
            ("c", {}, "vip-1"),
            ("c", {}, "plain"),
        ]:
            await app.publish("t", None, type=kind, extensions=ext, subject=subject)
        await app.join()
    assert got == [("exact", "a.created"), ("glob", "a.deleted"), ("list+ext", "b.x"), ("predicate", "c")]
    assert app.broker.pending() == 0  # type: ignore[attr-defined]


async def test_parameters_are_injected_by_annotation(cfg: dict[str, Any]) -> None:
    app = App("svc", config=cfg)
    got: dict[str, Any] = {}

    @app.subscribe("t", type="model")
    async def model_and_event(order: Order, event: Event, ctx: Context) -> None:
        got["model"] = (order, event.type, ctx.topic, ctx.group, ctx.attempt)

    @app.subscribe("t", type="typed")
    async def typed(data: dict[str, int]) -> None:
        got["typed"] = data

    @app.subscribe("t", type="sync")
    def sync(event: Event) -> None:
        got["sync"] = event.data

    async with app:
        await app.publish("t", {"id": "A1", "qty": 2}, type="model")
        await app.publish("t", {"a": "1"}, type="typed")
        await app.publish("t", "text", type="sync")
        await app.join()
    assert got["model"] == (Order(id="A1", qty=2), "model", "t", "svc", 1)
    assert got["typed"] == {"a": 1}
    assert got["sync"] == "text"


async def test_invalid_data_is_dead_lettered_at_once_with_a_clear_reason(cfg: dict[str, Any]) -> None:
    app = App("svc", config=with_retry(cfg, attempts=5))
    calls = 0

    @app.subscribe("orders")
    async def handle(order: Order) -> None:
        nonlocal calls
        calls += 1

    async with app:
        await app.publish("orders", {"id": "A1", "qty": "many"}, type="x")
        await app.join()
    [dead] = app.broker.dead_letters("orders")  # type: ignore[attr-defined]
    assert calls == 0
    assert "event data does not match parameter 'order': qty" in str(dead.extensions["mesherror"])
    assert dead.extensions["mesherrortype"] == "ValidationError"


@pytest.mark.parametrize(("attempts", "immediate"), [(1, 0), (3, 0), (4, 2), (5, 9)])
async def test_always_failing_handler_is_called_exactly_attempts_times(
    cfg: dict[str, Any], attempts: int, immediate: int
) -> None:
    app = App("svc", config=with_retry(cfg, attempts=attempts, immediate=immediate))
    seen: list[int] = []

    @app.subscribe("jobs")
    async def work(ctx: Context) -> None:
        seen.append(ctx.attempt)
        raise TimeoutError("downstream timed out")

    async with app:
        sent = await app.publish("jobs", {"n": 1}, type="job")
        await app.join()
    assert seen == list(range(1, attempts + 1))
    [dead] = app.broker.dead_letters("jobs")  # type: ignore[attr-defined]
    assert dead.id == sent.id and dead.data == {"n": 1}
    ext = dead.extensions
    assert ext["mesherrortype"] == "TimeoutError" and "downstream timed out" in str(ext["mesherror"])
    assert (ext["meshtopic"], ext["meshgroup"], ext["meshattempts"]) == ("jobs", "svc", attempts)
    assert ext["meshfirstfail"] <= ext["meshlastfail"]  # type: ignore[operator]


async def test_retry_and_dead_letter_signals_and_never_types(cfg: dict[str, Any]) -> None:
    app = App("svc", config=with_retry(cfg, attempts=5, immediate=0, never=["KeyError"]))
    calls: dict[str, int] = {"retry": 0, "dead": 0, "never": 0}

    @app.subscribe("jobs")
    async def work(event: Event) -> None:
        kind = event.data["kind"]
        calls[kind] += 1
        if kind == "retry" and calls[kind] < 3:
            raise Retry(delay=0.01)
        if kind == "dead":
            raise DeadLetter("bad customer")
        if kind == "never":
            raise KeyError("missing")

    async with app:
        for kind in calls:
            await app.publish("jobs", {"kind": kind}, type="job")
        await app.join()
    assert calls == {"retry": 3, "dead": 1, "never": 1}
    reasons = {e.data["kind"]: e.extensions["mesherror"] for e in app.broker.dead_letters("jobs")}  # type: ignore[attr-defined]
    assert reasons["dead"] == "bad customer"
    assert "never retried" in str(reasons["never"])
    assert "retry" not in reasons


async def test_poison_message_never_blocks_the_subscription(cfg: dict[str, Any]) -> None:
    app = App("svc", config=with_retry(cfg, attempts=3, immediate=0, initial="50ms", max="50ms"))
    done: list[int] = []

    @app.subscribe("jobs")
    async def work(event: Event) -> None:
        if event.data["i"] == 0:
            raise RuntimeError("poison")
        done.append(event.data["i"])

    async with app:
        for i in range(20):
            await app.publish("jobs", {"i": i}, type="job", key="same")
        await wait_for(lambda: len(done) == 19, timeout=5, what="events after the poison one")
        await app.join()
    assert done == list(range(1, 20))
    assert len(app.broker.dead_letters("jobs")) == 1  # type: ignore[attr-defined]


async def test_undecodable_message_is_dead_lettered_with_raw_bytes(cfg: dict[str, Any]) -> None:
    app = App("svc", config=cfg)
    handled: list[Any] = []

    @app.subscribe("jobs")
    async def work(event: Event) -> None:
        handled.append(event.data)

    raw = WireMessage(
        b"{not json",
        {"ce_specversion": "1.0", "ce_id": "1", "ce_source": "/x", "ce_type": "t"},
        None,
        "application/json",
    )
    async with app:
        await app.broker.publish_raw("jobs", raw)  # type: ignore[attr-defined]
        await app.publish("jobs", {"ok": True}, type="t")
        await app.join()
    assert handled == [{"ok": True}]
    [dead] = app.broker.dead_letters("jobs")  # type: ignore[attr-defined]
    assert dead.type == "mesh.deadletter.undecodable" and dead.data == b"{not json"
    assert dead.extensions["mesherrortype"] == "DecodeError" and "invalid JSON" in str(dead.extensions["mesherror"])
    assert json.loads(str(dead.extensions["meshrawheaders"]))["ce_id"] == "1"


async def test_legacy_message_is_wrapped_and_handled(cfg: dict[str, Any]) -> None:
    app = App("svc", config=cfg)
    handled: list[Event] = []

    @app.subscribe("jobs")
    async def work(event: Event) -> None:
        handled.append(event)

    async with app:
        await app.broker.publish_raw("jobs", WireMessage(b'{"legacy": 1}'))  # type: ignore[attr-defined]
        await app.join()
    assert handled[0].type == "mesh.legacy.message" and handled[0].data == {"legacy": 1}


async def test_failed_dead_letter_write_does_not_ack(cfg: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    app = App("svc", config=with_retry(cfg, attempts=1))
    calls = 0

    @app.subscribe("jobs")
    async def work(event: Event) -> None:
        nonlocal calls
        calls += 1
        raise RuntimeError("fail")

    real_publish = app.broker.publish
    broken = {"on": True}

    async def flaky_publish(topic: str, event: Event) -> None:
        if topic.endswith(".dlq") and broken["on"]:
            broken["on"] = False
            raise ConnectionError("dlq unavailable")
        await real_publish(topic, event)

    async with app:
        app.runtime.publish = flaky_publish
        await app.publish("jobs", {}, type="x")
        await wait_for(lambda: len(app.broker.dead_letters("jobs")) == 1, timeout=5, what="the second dead-letter try")  # type: ignore[attr-defined]
    assert calls == 2, "the delivery came back after the dead-letter write failed"


async def test_a_delivery_that_can_never_be_dead_lettered_is_parked_not_spun(
    cfg: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(settle, "FALLBACK_REDELIVERY", 0.02)
    monkeypatch.setattr(settle, "PARK_DELAY", 3600.0)
    app = App("svc", config=with_retry(cfg, attempts=1))
    calls, outcomes = 0, []

    class Outcomes:
        @hookimpl
        def mesh_delivery_outcome(self, context: Context, outcome: str, error: BaseException | None) -> None:
            outcomes.append(outcome)

    app.plugins.register(Outcomes())

    @app.subscribe("jobs")
    async def work(event: Event) -> None:
        nonlocal calls
        calls += 1
        raise RuntimeError("fail")

    real_publish = app.broker.publish

    async def dlq_down(topic: str, event: Event) -> None:
        if topic.endswith(".dlq"):
            raise ConnectionError("dlq unavailable")
        await real_publish(topic, event)

    async with app:
        app.runtime.publish = dlq_down
        await app.publish("jobs", {}, type="x")
        await wait_for(lambda: "parked" in outcomes, timeout=10, what="the delivery parked")
        parked_at = calls
        await asyncio.sleep(0.3)  # a spinning delivery would be called again many times by now
    assert outcomes.count("returned") == settle.DEAD_LETTER_ATTEMPTS - 1
    assert outcomes.count("parked") == 1
    assert calls == parked_at == settle.DEAD_LETTER_ATTEMPTS, "parked: no further handler calls"


async def test_a_dead_letter_over_the_size_limit_becomes_a_bounded_stub(cfg: dict[str, Any]) -> None:
    app = App("svc", config={**with_retry(cfg, attempts=1), "max_event_bytes": 20_000})

    @app.subscribe("jobs")
    async def work(event: Event) -> None:
        raise RuntimeError("cannot handle it")

    body = bytes(range(256)) * 400  # 102,400 bytes from a producer that ignores the limit
    async with app:
        await app.broker.publish_raw("jobs", WireMessage(body, content_type="application/octet-stream"))  # type: ignore[attr-defined]
        await app.join()
    [dead] = app.broker.dead_letters("jobs")  # type: ignore[attr-defined]
    assert dead.type == "mesh.deadletter.stub"
    assert dead.extensions["mesherrortype"] == "RuntimeError"
    assert dead.data["size"] == len(body)
    assert "max_event_bytes" in dead.data["reason"]


async def test_app_stop_cancels_stuck_handlers_after_the_drain_timeout_and_gives_them_back(cfg: dict[str, Any]) -> None:
    app = App("svc", config=cfg)
    started, cancelled = asyncio.Event(), asyncio.Event()

    @app.subscribe("jobs")
    async def stuck(event: Event) -> None:
        started.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    await app.start()
    await app.publish("jobs", {}, type="x")
    await asyncio.wait_for(started.wait(), 5)
    loop = asyncio.get_running_loop()
    begun = loop.time()
    await app.stop(timeout=0.2)
    assert cancelled.is_set(), "the stuck handler was cancelled"
    assert loop.time() - begun < 5, "stop ended soon after the drain timeout"
    again = App("svc", config=cfg)
    seen: list[Event] = []

    @again.subscribe("jobs")
    async def takes_over(event: Event) -> None:
        seen.append(event)

    async with again:
        await wait_for(lambda: len(seen) == 1, timeout=5, what="the cancelled delivery redelivered")


async def test_concurrency_setting_runs_handlers_in_parallel(cfg: dict[str, Any]) -> None:
    app = App("svc", config={**cfg, "subscriptions": {"jobs": {"concurrency": 5}}})
    active = peak = 0

    @app.subscribe("jobs")
    async def work(event: Event) -> None:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        await asyncio.sleep(0.05)
        active -= 1

    async with app:
        for i in range(10):
            await app.publish("jobs", {"i": i}, type="x")
        await app.join()
    assert peak == 5


async def test_instances_share_a_group_and_apps_fan_out(cfg: dict[str, Any]) -> None:
    billing_a, billing_b, audit = App("billing", config=cfg), App("billing", config=cfg), App("audit", config=cfg)
    seen: dict[str, list[int]] = {"a": [], "b": [], "audit": []}
    for app, key in ((billing_a, "a"), (billing_b, "b"), (audit, "audit")):

        def register(app: App = app, key: str = key) -> None:
            @app.subscribe("orders")
            async def handle(event: Event) -> None:
                seen[key].append(event.data["i"])
                await asyncio.sleep(0)

        register()
    async with billing_a, billing_b, audit:
        for i in range(40):
            await audit.publish("orders", {"i": i}, type="x")
        await wait_for(lambda: len(seen["a"]) + len(seen["b"]) == 40 and len(seen["audit"]) == 40, what="all delivered")
    assert sorted(seen["a"] + seen["b"]) == list(range(40)) and seen["a"] and seen["b"]
    assert seen["audit"] == list(range(40))


async def test_reserved_topics_and_late_subscriptions_are_refused(cfg: dict[str, Any]) -> None:
    app = App("svc", config=cfg)
    with pytest.raises(MeshError, match="is reserved"):
        app.subscribe("_mesh.retry")
    async with app:
        with pytest.raises(MeshError, match="is reserved"):
            await app.publish("_mesh.x", None, type="t")
        with pytest.raises(MeshError, match="before the app starts"):
            app.subscribe("t")(lambda e: None)


async def test_run_stops_on_signal_event_and_drains(cfg: dict[str, Any]) -> None:
    app = App("svc", config=cfg)
    finished: list[int] = []

    @app.subscribe("t")
    async def slow(event: Event) -> None:
        await asyncio.sleep(0.2)
        finished.append(1)

    stop = asyncio.Event()
    runner = asyncio.create_task(app.run(stop))
    await wait_for(lambda: app.started, what="the app to start")
    await app.publish("t", None, type="x")
    await asyncio.sleep(0.05)
    stop.set()
    await asyncio.wait_for(runner, 5)
    assert finished == [1] and not app.started


async def test_handlers_whose_annotations_do_not_resolve(cfg: dict[str, Any]) -> None:
    """Names imported inside a function (or unknown) cannot be resolved: Event and Context are
    recognised by name, anything else gets the data as it is."""
    got: list[Any] = []
    namespace: dict[str, Any] = {"got": got}
    exec(  # a module of its own, where Event, Context and Missing are not global names
        "async def handle(event: 'Event', ctx: 'mesh.Context', data: 'Missing') -> None:\n"
        "    got.append((event.type, ctx.topic, data))\n",
        namespace,
    )
    app = App("svc", config=cfg)
    app.subscribe("t")(namespace["handle"])
    async with app:
        await app.publish("t", {"a": 1}, type="x")
        await app.join()
    assert got == [("x", "t", {"a": 1})]


async def test_oversize_events_are_refused_before_they_reach_the_broker(cfg: dict[str, Any]) -> None:
    from mesh import EncodeError

    async with App("svc", config={**cfg, "max_event_bytes": 2048}) as app:
        with pytest.raises(EncodeError, match=r"over max_event_bytes \(2,048\).*dataref"):
            await app.publish("t", b"x" * 4096, type="big")
        await app.publish("t", b"x" * 1024, type="small")
        assert [e.type for e in app.broker.messages("t")] == ["small"]  # type: ignore[attr-defined]


async def test_routes_subscribe_side_by_side_where_the_broker_allows_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(MemoryBroker, "subscribe_concurrency", 4)
    original = MemoryBroker.subscribe
    in_flight = most = 0

    async def slow_subscribe(self: MemoryBroker, topic: str, group: str, handler: Any, **kw: Any) -> Any:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        await asyncio.sleep(0.01)
        in_flight -= 1
        if topic == "t7":
            raise MeshError("refused t7")
        return await original(self, topic, group, handler, **kw)

    monkeypatch.setattr(MemoryBroker, "subscribe", slow_subscribe)
    app = App("side", config={"broker": {"type": "memory", "options": {"name": "side-by-side"}}})
    got: list[int] = []

    def handler_for(i: int) -> Any:
        async def handle(event: Event) -> None:
            got.append(i)

        return handle

    for i in range(7):
        app.subscribe(f"t{i}")(handler_for(i))
    async with app:
        assert most == 4 and len(app._subscriptions) == 7
        for i in range(7):
            await app.publish(f"t{i}", {}, type="x")
        await app.join()
    assert sorted(got) == list(range(7))
    app.subscribe("t7")(handler_for(7))
    with pytest.raises(MeshError, match="refused t7"):
        await app.start()
    assert not app.started
