"""``@app.method`` and ``app.invoke`` on the memory broker: registration, injection, errors, hooks, metrics."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader, NumberDataPoint
from pydantic import BaseModel

from mesh import App, Context, Event, InvocationError, MeshError, RemoteError, Runtime, hookimpl
from mesh.brokers.memory import MemoryBroker
from mesh.invoke import Invocation, InvokeHandle, InvokeLayer
from mesh_plugins.metrics import APP_PLUGIN, AppMetrics, Instruments
from tests.support import unique, wait_for

pytestmark = [pytest.mark.memory, pytest.mark.timeout(60)]


class Order(BaseModel):
    id: str
    qty: int


@pytest.fixture
def hub() -> Iterator[dict[str, Any]]:
    name = unique("hub")
    yield {"broker": {"type": "memory", "options": {"name": name}}}
    MemoryBroker.reset(name)


def test_registration_rules(hub: dict[str, Any]) -> None:
    app = App("svc", config=hub)

    @app.method()
    async def ping() -> str:
        return "pong"

    assert list(app.callee.methods) == ["ping"]
    assert app.callee.methods["ping"].idempotent is False
    with pytest.raises(MeshError, match="registered twice"):
        app.method("ping")(ping)


async def test_invoke_needs_a_started_app(hub: dict[str, Any]) -> None:
    with pytest.raises(MeshError, match="before invoking"):
        await App("caller", config=hub).invoke("svc", "ping")


async def test_parameters_are_injected_and_results_typed(hub: dict[str, Any]) -> None:
    svc, caller = App("svc", config=hub), App("caller", config=hub)

    @svc.method("place")
    async def place(order: Order, event: Event, ctx: Context) -> Order:
        assert ctx.event is event and event.subject == "place" and event.source == "/caller"
        return Order(id=order.id, qty=order.qty * 2)

    @svc.method("plain")
    def plain(data: Any) -> Any:  # a plain function works too
        return data

    async with svc, caller:
        doubled = await caller.invoke("svc", "place", Order(id="A1", qty=2), result_type=Order)
        assert doubled == Order(id="A1", qty=4)
        assert await caller.invoke("svc", "plain", "text") == "text"
        assert await caller.invoke("svc", "plain", [1, 2], result_type=tuple[int, int]) == (1, 2)
        with pytest.raises(InvocationError, match="is not a Order"):
            await caller.invoke("svc", "plain", {"id": "A1"}, result_type=Order)


async def test_bad_data_unserialisable_results_and_tracebacks(hub: dict[str, Any]) -> None:
    svc = App("svc", config={**hub, "invoke": {"include_traceback": True}})
    caller = App("caller", config=hub)

    @svc.method("place")
    async def place(order: Order) -> None:
        raise AssertionError("not reached")

    @svc.method("weird")
    async def weird() -> object:
        return object()

    @svc.method("fail")
    async def fail() -> None:
        raise KeyError("gone")

    async with svc, caller:
        with pytest.raises(RemoteError) as caught:
            await caller.invoke("svc", "place", {"id": "A1", "qty": "many"})
        assert (caught.value.type, caught.value.code) == ("InvalidArgument", "invalid_argument")
        assert "qty" in caught.value.message
        with pytest.raises(RemoteError) as caught:
            await caller.invoke("svc", "weird")
        assert caught.value.type == "EncodeError"
        with pytest.raises(RemoteError) as caught:
            await caller.invoke("svc", "fail")
        assert caught.value.type == "KeyError" and 'raise KeyError("gone")' in caught.value.details["traceback"]


async def test_a_handler_may_invoke_while_its_app_drains(hub: dict[str, Any]) -> None:
    svc, worker = App("svc", config=hub), App("worker", config=hub)
    results: list[str] = []
    started = asyncio.Event()

    @svc.method()
    async def ping() -> str:
        return "pong"

    @worker.subscribe("jobs")
    async def job(event: Event) -> None:
        started.set()
        await asyncio.sleep(0.2)
        results.append(await worker.invoke("svc", "ping", timeout=5))

    async with svc:
        await worker.start()
        await worker.publish("jobs", {}, type="job")
        await asyncio.wait_for(started.wait(), 5)
        await worker.stop()  # drains the handler, which still invokes
    assert results == ["pong"]


async def test_presence_off_means_no_fail_fast(hub: dict[str, Any]) -> None:
    caller = App("caller", config={**hub, "presence": {"enabled": False}})
    async with caller:
        with pytest.raises(InvocationError, match=r"within 0\.3s"):
            await caller.invoke("nobody", "x", timeout=0.3)


# -- hooks -----------------------------------------------------------------------------------


class Stamp:
    """An invoke layer adding an extension to every request, and an outcome recorder."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, int]] = []
        self.outcomes: list[tuple[str, str, str, str]] = []

    @hookimpl
    def mesh_invoke_layers(self, runtime: Runtime) -> InvokeLayer:
        def layer(next_: InvokeHandle) -> InvokeHandle:
            async def invoke(call: Invocation) -> Any:
                call.extensions["tenant"] = "acme"
                try:
                    return await next_(call)
                finally:
                    self.seen.append((call.outcome, call.attempts))

            return invoke

        return layer

    @hookimpl
    def mesh_invocation_outcome(
        self, runtime: Runtime, side: str, method: str, peer: str, outcome: str, error: BaseException | None
    ) -> None:
        self.outcomes.append((side, method, peer, outcome))


async def test_invoke_layers_and_outcome_hooks(hub: dict[str, Any]) -> None:
    stamp = Stamp()
    svc = App("svc", config={**hub, "invoke": {"allow": {"*": ["caller"]}}}, plugins=[stamp])
    caller, other = App("caller", config=hub, plugins=[stamp]), App("other", config=hub)

    @svc.method()
    async def tenant(event: Event) -> Any:
        return event.extensions.get("tenant")

    async with svc, caller, other:
        assert await caller.invoke("svc", "tenant") == "acme"
        with pytest.raises(RemoteError):
            await caller.invoke("svc", "missing")
        with pytest.raises(RemoteError):
            await other.invoke("svc", "tenant")
    assert stamp.seen == [("ok", 1), ("method_not_found", 1)]
    assert stamp.outcomes == [
        ("callee", "tenant", "caller", "ok"),
        ("callee", "<unknown>", "caller", "method_not_found"),
        ("callee", "tenant", "other", "permission_denied"),
    ]


# -- metrics ---------------------------------------------------------------------------------


def values(reader: InMemoryMetricReader, name: str) -> dict[tuple[tuple[str, Any], ...], float]:
    """Points of one metric by their attributes (a histogram gives its count)."""
    out: dict[tuple[tuple[str, Any], ...], float] = {}
    data = reader.get_metrics_data()
    for rm in data.resource_metrics if data else ():
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                if metric.name != name:
                    continue
                for point in metric.data.data_points:
                    key = tuple(sorted((point.attributes or {}).items()))
                    if isinstance(point, HistogramDataPoint):
                        out[key] = point.count
                    else:
                        assert isinstance(point, NumberDataPoint)
                        out[key] = point.value
    return out


async def test_metrics_of_invocations(hub: dict[str, Any]) -> None:
    reader = InMemoryMetricReader()
    instruments = Instruments(MeterProvider(metric_readers=[reader]).get_meter("mesh"))
    svc = App("svc", config={**hub, "invoke": {"allow": {"*": ["caller"]}}})
    caller, other = App("caller", config=hub), App("other", config=hub)
    for app in (svc, caller, other):
        if app.plugins.pm.get_plugin(APP_PLUGIN) is not None:  # a provider set by an earlier test
            app.plugins.pm.unregister(name=APP_PLUGIN)
        app.plugins.register(AppMetrics(app.runtime, instruments), name=APP_PLUGIN)

    @svc.method()
    async def slow(seconds: float) -> str:
        await asyncio.sleep(seconds)
        return "done"

    async with svc, caller, other:
        assert await caller.invoke("svc", "slow", 0) == "done"
        with pytest.raises(InvocationError):
            await caller.invoke("svc", "slow", 0.5, timeout=0.1)
        with pytest.raises(RemoteError):
            await other.invoke("svc", "slow", 0)
        await wait_for(lambda: caller.caller.late_replies == 1, what="the late reply")
    served = values(reader, "mesh.invoke.served")
    common = (("app", "svc"), ("broker", "memory"), ("method", "slow"))
    assert served[(*common, ("outcome", "ok"))] == 2
    assert served[(*common, ("outcome", "permission_denied"))] == 1
    durations = values(reader, "mesh.invoke.duration")
    calls = (("app", "caller"), ("broker", "memory"), ("method", "slow"))
    assert durations[(*calls, ("outcome", "ok"), ("target", "svc"))] == 1
    assert durations[(*calls, ("outcome", "timeout"), ("target", "svc"))] == 1
    dropped = values(reader, "mesh.invoke.replies_dropped")
    assert dropped[(("app", "caller"), ("broker", "memory"), ("reason", "late_reply"))] == 1
