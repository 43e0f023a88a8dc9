"""The actors block in one process on the memory broker: turns, state, outbox, errors, timers,
reminders, routed events, reentrancy, idle deactivation, and placement over two instances."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from mesh import Actor, App, Event, InvocationTimeout, MethodNotFound, NoResponders, RemoteError
from mesh.actors import ReentrancyError, TurnTimeout
from mesh.actors.placement import owner
from mesh.actors.reminders import REMINDER_TYPE, Reminders
from mesh.brokers.memory import MemoryBroker
from mesh.extensions import REMINDER_PREFIX
from tests.support import unique, wait_for


class Item(BaseModel):
    sku: str
    qty: int = 1


class CartView(BaseModel):
    lines: list[Item]


def config(hub: str, **actors: Any) -> dict[str, Any]:
    return {
        "broker": {"type": "memory", "options": {"name": hub}},
        "presence": {"interval": 0.2, "expiry": 0.7, "warmup": 0.4},
        "actors": {"lease": 1.0, **actors},
        "jobs": {"store": "actors", "poll_interval": 0.1},
    }


EVENTS: list[tuple[str, str]] = []
INSIDE: dict[str, int] = {}
OVERLAPS: list[str] = []
LOG: list[str] = []
FLAKY: dict[str, int] = {}


def make_app(hub: str, name: str = "shop", state: dict[str, Any] | None = None, **actors: Any) -> App:
    cfg = config(hub, **actors)
    if state is not None:
        cfg["state"] = state
    app = App(name, config=cfg)

    @app.actor("Cart", idle_after=0.5)
    class Cart(Actor):
        async def add(self, item: Item) -> CartView:
            INSIDE[self.id] = INSIDE.get(self.id, 0) + 1
            try:
                if INSIDE[self.id] > 1:
                    OVERLAPS.append(self.id)
                lines = await self.state.get("lines", list[Item]) or []
                await asyncio.sleep(0)
                lines.append(item)
                self.state.set("lines", lines)
                await self.publish("carts", {"cart": self.id, "n": len(lines)}, type="cart.updated")
                return CartView(lines=lines)
            finally:
                INSIDE[self.id] -= 1

        async def view(self) -> CartView:
            return CartView(lines=await self.state.get("lines", list[Item]) or [])

        async def broken(self, item: Item) -> None:
            self.state.set("lines", [item])
            await self.publish("carts", {"cart": self.id}, type="cart.broken")
            raise ValueError("no such sku")

        async def slow(self, seconds: float) -> None:
            self.state.set("lines", [])
            await asyncio.sleep(seconds)

        async def tick(self, every: float) -> None:
            self.timer("t", every, every, data="x")

        async def on_timer(self, name: str, data: Any) -> None:
            self.state.set("ticks", (await self.state.get("ticks") or 0) + 1)

        async def ticks(self) -> int:
            return int(await self.state.get("ticks") or 0)

        async def later(self, seconds: float) -> None:
            await self.remind("wake", due=seconds, data={"why": "test"})

        async def on_reminder(self, name: str, data: Any) -> None:
            if name == "flaky":
                FLAKY[self.id] = FLAKY.get(self.id, 0) + 1
                if FLAKY[self.id] == 1:
                    raise RuntimeError("the first try of a flaky reminder fails")
            self.state.set("reminded", [name, data])

        async def flaky(self) -> None:
            await self.remind("flaky", due=0.1)

        async def reminded(self) -> Any:
            return await self.state.get("reminded")

        async def drop(self, name: str) -> None:
            await self.forget(name)

        async def on_event(self, event: Event) -> None:
            EVENTS.append((self.id, event.type))
            self.state.set("last", event.data)

        async def last(self) -> Any:
            return await self.state.get("last")

        async def on_deactivate(self) -> None:
            LOG.append(f"deactivate {self.id}")

    @app.actor("Ping", reentrant=True)
    class Ping(Actor):
        async def ping(self, n: int) -> int:
            if n <= 0:
                return 0
            return 1 + int(await self.actor("Pong", self.id).call("pong", n - 1, timeout=5))

    @app.actor("Pong", reentrant=True)
    class Pong(Actor):
        async def pong(self, n: int) -> int:
            if n <= 0:
                return 0
            return 1 + int(await self.actor("Ping", self.id).call("ping", n - 1, timeout=5))

    @app.actor("Solo")
    class Solo(Actor):
        async def again(self) -> None:
            await self.actor("Solo", self.id).call("again", timeout=5)

    app.subscribe("cart-commands", actor="Cart")
    return app


@pytest.fixture
def hub() -> Any:
    name = unique("hub")
    yield name
    MemoryBroker.reset(name)


async def test_turns_keep_state_and_never_overlap(hub: str) -> None:
    OVERLAPS.clear()
    app = make_app(hub)
    async with app:
        n, actors = 300, 6
        calls = [app.actor("Cart", f"c-{i % actors}").call("add", Item(sku=f"s{i}"), timeout=10, result_type=CartView)
                 for i in range(n)]
        views = await asyncio.gather(*calls)
        assert all(isinstance(v, CartView) for v in views)
        assert OVERLAPS == []
        for i in range(actors):
            view = await app.actor("Cart", f"c-{i}").call("view", result_type=CartView)
            assert len(view.lines) == n // actors


async def test_a_turn_that_raises_leaves_state_and_events_unchanged(hub: str) -> None:
    app = make_app(hub)
    got: list[Event] = []

    @app.subscribe("carts")
    async def seen(event: Event) -> None:
        got.append(event)

    async with app:
        cart = app.actor("Cart", "c-r")
        await cart.call("add", Item(sku="A1"))
        with pytest.raises(RemoteError, match="no such sku") as info:
            await cart.call("broken", {"sku": "B2"})
        assert info.value.type == "ValueError"
        view = await cart.call("view", result_type=CartView)
        assert [i.sku for i in view.lines] == ["A1"]
        await wait_for(lambda: len(got) >= 1, 5, "the outbox event")
        await asyncio.sleep(0.2)
        assert [e.type for e in got] == ["cart.updated"]


async def test_bad_input_gives_typed_errors_and_the_actor_stays_usable(hub: str) -> None:
    app = make_app(hub, turn_timeout=0.3)
    async with app:
        cart = app.actor("Cart", "c-bad")
        with pytest.raises(MethodNotFound):
            await cart.call("nope")
        with pytest.raises(RemoteError) as info:
            await cart.call("add", {"qty": "many"})
        assert info.value.code == "invalid_argument"
        with pytest.raises(TurnTimeout):
            await cart.call("slow", 5)
        loop = asyncio.get_running_loop()
        t = loop.time()
        with pytest.raises(NoResponders):
            await app.actor("Nobody", "x").call("m", timeout=5)
        assert loop.time() - t < 2
        await cart.call("add", Item(sku="A1"))
        view = await cart.call("view", result_type=CartView)
        assert [i.sku for i in view.lines] == ["A1"]


async def test_timers_reminders_and_idle_deactivation(hub: str) -> None:
    LOG.clear()
    app = make_app(hub)
    async with app:
        cart = app.actor("Cart", "c-t")
        await cart.call("tick", 0.05)
        for _ in range(100):
            if await cart.call("ticks") >= 3:
                break
            await asyncio.sleep(0.05)
        assert await cart.call("ticks") >= 3
        await app.actor("Cart", "c-rem").call("later", 0.2)
        for _ in range(100):
            if await app.actor("Cart", "c-rem").call("reminded"):
                break
            await asyncio.sleep(0.05)
        assert await app.actor("Cart", "c-rem").call("reminded") == ["wake", {"why": "test"}]
        await app.actor("Cart", "c-idle").call("view")
        await wait_for(lambda: "deactivate c-idle" in LOG, 5, "idle deactivation")


async def test_a_reminder_is_a_job_replaced_when_set_again_and_cancelled_by_forget(hub: str) -> None:
    app = make_app(hub)
    async with app:
        cart = app.actor("Cart", "c-job")
        name = Reminders.name("Cart", "c-job", "wake")
        await cart.call("later", 60)
        job = await app.jobs.get(name)
        assert job is not None and job.topic == REMINDER_PREFIX + app.id and job.type == REMINDER_TYPE
        assert job.data == {"type": "Cart", "id": "c-job", "name": "wake", "data": {"why": "test"}}
        await cart.call("later", 120)  # set again: the same job, moved
        again = await app.jobs.get(name)
        assert again is not None and again.at is not None and job.at is not None and again.at > job.at + 30
        assert Reminders.name("Cart", "c-job2", "wake") != name != Reminders.name("Cart", "c-job", "wake2")
        await cart.call("drop", "wake")
        assert await app.jobs.get(name) is None
        await cart.call("drop", "wake")  # forgetting a reminder not set is a no-op


async def test_a_failing_on_reminder_is_fired_again_by_the_jobs_block(hub: str) -> None:
    app = make_app(hub)
    async with app:
        cart = app.actor("Cart", "c-flaky")
        await cart.call("flaky")
        await wait_for(lambda: FLAKY.get("c-flaky", 0) >= 2, 20, "the reminder's second try")
        assert FLAKY["c-flaky"] == 2  # the turn after the call below sees the committed state
        assert await cart.call("reminded") == ["flaky", None]


async def test_a_call_sent_twice_runs_once_and_both_copies_get_its_answer(hub: str) -> None:
    # a caller sends a call again (same id) when it believes the owner vanished; a live owner must
    # not run it twice, whether the first copy is still queued or already answered
    from datetime import timedelta

    from mesh import extensions as ext
    from mesh.actors.proxy import actor_topic
    from mesh.event import now
    from mesh.invoke.protocol import parse_reply, reply_topic, request_event

    app = make_app(hub)
    async with app:
        await app.actor("Cart", "c-dup").call("view")  # active here
        replies: list[Event] = []

        async def on_reply(delivery: Any) -> None:
            await delivery.ack()
            replies.append(delivery.event)

        inbox = reply_topic(unique("inbox"))
        sub = await app.runtime.broker.subscribe_ephemeral(inbox, on_reply, exclusive=True)
        try:
            def copy(call_id: str) -> Event:
                return request_event("/caller", "add", {"sku": "once"}, reply_to=inbox,
                                     deadline=now() + timedelta(seconds=10), id=call_id,
                                     extensions={ext.ACTOR_TYPE: "Cart", ext.ACTOR_ID: "c-dup"})

            topic = actor_topic(app.runtime.instance_id)
            await app.runtime.broker.publish_ephemeral(topic, copy("call-1"))
            await app.runtime.broker.publish_ephemeral(topic, copy("call-1"))  # while the first is in hand
            await wait_for(lambda: len(replies) >= 1, 10, "the first answer")
            await app.runtime.broker.publish_ephemeral(topic, copy("call-1"))  # after it was answered
            await wait_for(lambda: len(replies) >= 2, 10, "the answer to the late copy")
            await app.runtime.broker.publish_ephemeral(topic, copy("call-2"))  # another call runs
            await wait_for(lambda: len(replies) >= 3, 10, "the other call's answer")
        finally:
            await sub.stop()
        results = [parse_reply(r) for r in replies]
        assert [r[0] for r in results] == ["call-1", "call-1", "call-2"]
        assert results[0][2] == results[1][2] == {"lines": [{"sku": "once", "qty": 1}]}
        view = await app.actor("Cart", "c-dup").call("view", result_type=CartView)
        assert [i.sku for i in view.lines] == ["once", "once"]  # call-1 once, call-2 once


async def test_events_routed_by_subject_reach_the_actor(hub: str) -> None:
    EVENTS.clear()
    app = make_app(hub)
    async with app:
        for i in range(3):
            await app.publish("cart-commands", {"n": i}, type="cart.touch", subject=f"c-ev{i}")
        await wait_for(lambda: len(EVENTS) == 3, 5, "three routed events")
        assert sorted(EVENTS) == [(f"c-ev{i}", "cart.touch") for i in range(3)]
        assert await app.actor("Cart", "c-ev2").call("last") == {"n": 2}


async def test_reentrancy_is_opt_in_with_a_depth_limit(hub: str) -> None:
    app = make_app(hub, max_depth=8)
    async with app:
        assert await app.actor("Ping", "p1").call("ping", 4, timeout=5) == 4
        with pytest.raises(ReentrancyError):
            await app.actor("Ping", "p2").call("ping", 20, timeout=5)
        with pytest.raises(InvocationTimeout):  # Solo is not reentrant: calling itself waits for itself
            await app.actor("Solo", "s1").call("again", timeout=1.0)


async def test_two_instances_share_actors_and_hand_them_over_on_stop(hub: str, tmp_path: Path) -> None:
    state = {"actors": {"type": "sqlite", "url": f"sqlite:///{tmp_path / 'a.db'}"}}
    a, b = make_app(hub, state=state), make_app(hub, state=state)
    async with a:
        await b.start()
        try:
            await wait_for(lambda: len(a.actors.directory.hosts("Cart")) == 2, 5, "both hosts")
            ids = [f"k{i}" for i in range(20)]
            await asyncio.gather(*(a.actor("Cart", i).call("add", Item(sku="x")) for i in ids))
            placed = {i: owner(a.actors.directory.hosts("Cart"), "Cart", i) for i in ids}
            assert set(placed.values()) == {a.instance_id, b.instance_id}
            assert b.actors.host is not None
            assert {i for (_, i) in b.actors.host.activations} == {i for i, o in placed.items() if o == b.instance_id}
        finally:
            await b.stop()
        await asyncio.gather(*(a.actor("Cart", i).call("add", Item(sku="y"), timeout=10) for i in ids))
        for i in ids:
            view = await a.actor("Cart", i).call("view", result_type=CartView)
            assert [x.sku for x in view.lines] == ["x", "y"]


async def test_each_turn_has_a_span_that_is_a_child_of_the_call_and_links_to_it(hub: str) -> None:
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    app = make_app(hub)
    async with app:
        await app.actor("Cart", "c-span").call("add", Item(sku="A1"))
    spans = {s.name: s for s in exporter.get_finished_spans()}
    call, turn = spans["call actor Cart.add"], spans["actor Cart.add"]
    assert turn.parent is not None and turn.parent.span_id == call.context.span_id
    assert turn.context.trace_id == call.context.trace_id
    assert [link.context.span_id for link in turn.links] == [call.context.span_id]
    assert turn.attributes is not None and turn.attributes["actor.id"] == "c-span"
    exporter.shutdown()


METRICS_SCRIPT = """
import asyncio, json
from opentelemetry import metrics
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
reader = InMemoryMetricReader()
metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
from mesh import Actor, App

app = App("m", config={"broker": {"type": "memory", "options": {"name": "actor-metrics"}}})

@app.actor("Cart")
class Cart(Actor):
    async def add(self, n: int) -> int:
        return n

async def main():
    async with app:
        await asyncio.gather(*(app.actor("Cart", f"c{i % 3}").call("add", i) for i in range(30)))
        out = {}
        for rm in reader.get_metrics_data().resource_metrics:
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    points = list(m.data.data_points)
                    out[m.name] = sum(getattr(p, "count", None) or getattr(p, "value", 0) for p in points)
        print(json.dumps(out))

asyncio.run(main())
"""


def test_metrics_count_active_actors_turns_and_queued_work() -> None:
    import json
    import subprocess
    import sys

    # a meter provider can be set once per process: measure in a process of its own
    out = subprocess.run([sys.executable, "-c", METRICS_SCRIPT], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[2], timeout=60)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["mesh.actors.active"] == 3
    assert got["mesh.actors.turn.duration"] >= 30 + 3  # 30 calls and one on_activate turn per actor
    assert got["mesh.actors.queue_length"] == 0
