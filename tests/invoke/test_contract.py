"""The invocation contract, on every broker: one set of apps per broker, shared by the tests.

``inventory`` runs as three instances (one group), ``orders`` and ``intruder`` call it. Every
test uses its own data or method, so the shared apps keep the tests independent; Kafka's slow
group joins are paid once per broker instead of once per test.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
import pytest_asyncio
import yaml
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from pydantic import BaseModel

from mesh import (
    App,
    Event,
    InvocationTimeout,
    MethodNotFound,
    NoResponders,
    PermissionDenied,
    RemoteError,
)
from mesh.brokers.memory import MemoryBroker
from mesh.event import now
from mesh.invoke.protocol import (
    CORRELATION,
    REPLY_TYPE,
    STATUS,
    invoke_topic,
    reply_topic,
    request_event,
)
from tests.invoke.conftest import Recorder
from tests.support import BrokerSpec, unique, wait_for

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(180)]

ROOT = Path(__file__).resolve().parents[2]


class Reservation(BaseModel):
    sku: str
    qty: int


class Receipt(BaseModel):
    sku: str
    qty: int
    instance: str


class OutOfStock(Exception):
    code = "out_of_stock"


@dataclass
class Mesh:
    """The shared apps of one broker."""

    spec: BrokerSpec
    config: dict[str, Any]
    callee_id: str
    callees: list[App]
    orders: App
    intruder: App
    recorders: list[Recorder]
    caller_recorder: Recorder
    calls: Counter[str] = field(default_factory=Counter)
    release: asyncio.Event = field(default_factory=asyncio.Event)

    def served(self, outcome: str, method: str | None = None) -> int:
        return sum(r.count("callee", outcome, method) for r in self.recorders)


@pytest.fixture(scope="module")
def exporter() -> Iterator[InMemorySpanExporter]:
    """Finished spans (the global tracer provider is set once per process; reused if set)."""
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield exporter
    exporter.shutdown()


def config_for(spec: BrokerSpec, namespace: str, **extra: Any) -> dict[str, Any]:
    broker = {**spec.config(), "namespace": namespace}
    if spec.type == "kafka":
        broker["options"] = {**broker["options"], "fetch_max_wait_ms": 20}
    return {"broker": broker, "presence": {"interval": 0.5, "expiry": 1.5, "warmup": 1.0}, **extra}


def build_callee(mesh: Mesh, config: dict[str, Any]) -> tuple[App, Recorder]:
    recorder = Recorder()
    app = App(mesh.callee_id, config=config, plugins=[recorder], version="2.1")

    @app.method("reserve")
    async def reserve(req: Reservation) -> Receipt:
        mesh.calls[f"reserve:{req.sku}"] += 1
        return Receipt(sku=req.sku, qty=req.qty, instance=app.instance_id)

    @app.method("echo", idempotent=True)
    async def echo(data: Any, event: Event) -> dict[str, Any]:
        mesh.calls[f"echo:{data.get('marker') if isinstance(data, dict) else data}"] += 1
        return {"data": data, "instance": app.instance_id, "traceparent": event.extensions.get("traceparent")}

    @app.method("boom")
    async def boom(data: Any) -> None:
        raise OutOfStock(f"no {data['sku']} left")

    @app.method("slow")
    async def slow(data: dict[str, Any]) -> str:
        mesh.calls[f"slow:{data['marker']}"] += 1
        await asyncio.sleep(data["sleep"])
        return "late"

    @app.method("secret")
    async def secret() -> str:
        return "the recipe"

    return app, recorder


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def mesh(module_spec: BrokerSpec, exporter: InMemorySpanExporter) -> AsyncIterator[Mesh]:
    namespace = unique("inv") + "."
    callee_id, orders_id, intruder_id = unique("inventory"), unique("orders"), unique("intruder")
    allow = {"secret": [orders_id], "*": ["*"]}
    config = config_for(module_spec, namespace)
    callee_config = config_for(module_spec, namespace, invoke={"allow": allow})
    caller_recorder = Recorder()
    mesh = Mesh(
        module_spec,
        config,
        callee_id,
        [],
        App(orders_id, config=config, plugins=[caller_recorder]),
        App(intruder_id, config=config),
        [],
        caller_recorder,
    )
    for _ in range(3):
        app, recorder = build_callee(mesh, callee_config)
        mesh.callees.append(app)
        mesh.recorders.append(recorder)
    await asyncio.gather(*(app.start() for app in mesh.callees))
    await mesh.orders.start()
    await mesh.intruder.start()
    try:
        yield mesh
    finally:
        mesh.release.set()
        await asyncio.gather(*(app.stop() for app in [*mesh.callees, mesh.orders, mesh.intruder]))
        if module_spec.type == "memory":
            MemoryBroker.reset(module_spec.options["name"])


async def send_request(app: App, topic: str, event: Event) -> None:
    """Publish a hand-made request the way a caller does (no need for a no-responders watch)."""
    status = await app.broker.publish_request(topic, event)
    if status is not None:
        status.cancel()


# -- the round trip ---------------------------------------------------------------------------


async def test_round_trip_with_typed_data(mesh: Mesh) -> None:
    receipt = await mesh.orders.invoke(
        mesh.callee_id, "reserve", Reservation(sku="A1", qty=2), timeout=30, result_type=Receipt
    )
    assert isinstance(receipt, Receipt)
    assert (receipt.sku, receipt.qty) == ("A1", 2)
    assert receipt.instance in {app.instance_id for app in mesh.callees}
    plain = await mesh.orders.invoke(mesh.callee_id, "reserve", {"sku": "A2", "qty": 1}, timeout=30)
    assert plain["sku"] == "A2" and plain["qty"] == 1


async def test_many_concurrent_invokes_each_get_their_own_reply(mesh: Mesh) -> None:
    marker = unique("c")
    replies = await asyncio.gather(
        *(mesh.orders.invoke(mesh.callee_id, "echo", {"marker": marker, "i": i}, timeout=60) for i in range(200))
    )
    assert [r["data"]["i"] for r in replies] == list(range(200))
    assert mesh.calls[f"echo:{marker}"] == 200, "each request handled once"
    assert mesh.orders.caller.pending == 0


async def test_three_instances_share_the_calls(mesh: Mesh) -> None:
    served: set[str] = set()
    for _ in range(10):
        replies = await asyncio.gather(
            *(mesh.orders.invoke(mesh.callee_id, "echo", {"marker": unique("l")}, timeout=30) for _ in range(30))
        )
        served.update(r["instance"] for r in replies)
        if len(served) == 3:
            break
    assert served == {app.instance_id for app in mesh.callees}


# -- failures ---------------------------------------------------------------------------------


async def test_no_responders_fails_fast(mesh: Mesh) -> None:
    await mesh.orders.caller.ready()
    await asyncio.sleep(mesh.orders.presence.warmup)  # past the caller's warm-up
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(NoResponders, match="ghost"):
        await mesh.orders.invoke(unique("ghost"), "anything", {}, timeout=20)
    assert loop.time() - started < 2.0, "no waiting out the timeout"


async def test_timeout_raises_invocation_timeout(mesh: Mesh) -> None:
    marker, late = unique("t"), mesh.orders.caller.late_replies
    with pytest.raises(InvocationTimeout) as caught:
        await mesh.orders.invoke(mesh.callee_id, "slow", {"marker": marker, "sleep": 2.0}, timeout=1.0)
    assert isinstance(caught.value, TimeoutError)
    assert "within 1s" in str(caught.value)
    # its reply comes later: let it arrive here, so later tests count only their own
    await wait_for(lambda: mesh.orders.caller.late_replies > late, timeout=30, what="the late reply")


async def test_remote_exception_carries_type_message_and_code(mesh: Mesh) -> None:
    with pytest.raises(RemoteError) as caught:
        await mesh.orders.invoke(mesh.callee_id, "boom", {"sku": "Z9"}, timeout=30)
    error = caught.value
    assert (error.type, error.message, error.code) == ("OutOfStock", "no Z9 left", "out_of_stock")
    assert "Traceback" not in str(error) and "traceback" not in error.details
    assert type(error) is RemoteError


async def test_unknown_method_is_method_not_found(mesh: Mesh) -> None:
    with pytest.raises(MethodNotFound) as caught:
        await mesh.orders.invoke(mesh.callee_id, "teleport", {}, timeout=30)
    assert caught.value.code == "method_not_found" and "teleport" in caught.value.message
    await wait_for(lambda: mesh.served("method_not_found", "<unknown>") >= 1, what="the outcome counted")


async def test_access_control_denies_and_counts(mesh: Mesh) -> None:
    assert await mesh.orders.invoke(mesh.callee_id, "secret", timeout=30) == "the recipe"
    before = mesh.served("permission_denied", "secret")
    with pytest.raises(PermissionDenied) as caught:
        await mesh.intruder.invoke(mesh.callee_id, "secret", timeout=30)
    assert caught.value.code == "permission_denied"
    assert mesh.intruder.id in caught.value.message
    await wait_for(lambda: mesh.served("permission_denied", "secret") == before + 1, what="the denial counted")
    # "*" lets everyone call the other methods
    assert (await mesh.intruder.invoke(mesh.callee_id, "echo", {"marker": "x"}, timeout=30))["data"] == {"marker": "x"}


async def test_request_past_its_deadline_is_dropped_unrun_and_counted(mesh: Mesh) -> None:
    marker = unique("d")
    before = mesh.served("expired", "slow")
    request = request_event(
        mesh.orders.source,
        "slow",
        {"marker": marker, "sleep": 0},
        reply_to=mesh.orders.caller.reply_topic,
        deadline=now() - timedelta(seconds=1),
    )
    await send_request(mesh.orders, invoke_topic(mesh.callee_id), request)
    await wait_for(lambda: mesh.served("expired", "slow") == before + 1, timeout=30, what="the drop counted")
    assert mesh.calls[f"slow:{marker}"] == 0


async def test_late_reply_is_dropped_and_counted(mesh: Mesh) -> None:
    late, counted = mesh.orders.caller.late_replies, mesh.caller_recorder.count("caller", "late_reply")
    with pytest.raises(InvocationTimeout):
        await mesh.orders.invoke(mesh.callee_id, "slow", {"marker": unique("late"), "sleep": 1.5}, timeout=0.7)
    await wait_for(lambda: mesh.orders.caller.late_replies == late + 1, timeout=30, what="the late reply")
    await wait_for(lambda: mesh.caller_recorder.count("caller", "late_reply") == counted + 1, what="the hook")
    assert await mesh.orders.invoke(mesh.callee_id, "secret", timeout=30) == "the recipe"


async def test_a_reply_from_another_source_than_the_called_app_is_dropped(mesh: Mesh) -> None:
    caller = mesh.orders.caller
    await caller.ready()
    foreign = caller.foreign_replies
    marker = unique("forged")
    call = asyncio.ensure_future(
        mesh.orders.invoke(mesh.callee_id, "slow", {"marker": marker, "sleep": 0.5}, timeout=30)
    )
    await wait_for(lambda: caller.pending >= 1, what="the request in flight")
    for request_id in list(caller._pending):  # the ids of the requests now waiting
        forged = Event(REPLY_TYPE, mesh.intruder.source, "forged", extensions={CORRELATION: request_id, STATUS: "ok"})
        await mesh.intruder.broker.publish_ephemeral(caller.reply_topic, forged)
    assert await call == "late", "the caller took the answer of the app it called"
    assert caller.foreign_replies > foreign


async def test_malformed_requests_get_an_error_reply_or_a_dead_letter(mesh: Mesh) -> None:
    broker = mesh.orders.broker
    topic = invoke_topic(mesh.callee_id)
    inbox, got = reply_topic(unique("probe")), []

    async def collect(delivery: Any) -> None:
        await delivery.ack()
        got.append(delivery.event)

    sub = await broker.subscribe_ephemeral(inbox, collect, exclusive=True)
    try:
        before = mesh.served("malformed")
        no_method = Event("mesh.invoke.request", mesh.orders.source, {}, extensions={"meshreplyto": inbox})
        await send_request(mesh.orders, topic, no_method)
        await wait_for(lambda: len(got) == 1, timeout=30, what="an error reply to the malformed request")
        [reply] = got
        assert reply.type == REPLY_TYPE and reply.extensions[STATUS] == "error"
        assert reply.extensions[CORRELATION] == no_method.id
        assert reply.data["code"] == "malformed" and "subject" in reply.data["message"]
        # no reply address: nobody to tell; it goes to the dead-letter destination
        await send_request(mesh.orders, topic, Event("not.a.request", "/stranger", {"x": 1}))
        await wait_for(lambda: mesh.served("malformed") == before + 2, timeout=30, what="both counted")
    finally:
        await sub.stop()
    assert (await mesh.orders.invoke(mesh.callee_id, "echo", {"marker": "after"}, timeout=30))["data"]


async def test_malformed_and_stray_replies_do_not_disturb_the_caller(mesh: Mesh) -> None:
    caller = mesh.orders.caller
    await caller.ready()
    malformed, late = caller.malformed_replies, caller.late_replies
    broker = mesh.intruder.broker
    stray_count = mesh.caller_recorder.peers[("late_reply", "stranger")]  # before the stray can arrive
    await broker.publish_ephemeral(caller.reply_topic, Event("junk", "/stranger", b"\x00\xff"))
    stray = Event(REPLY_TYPE, "/stranger", {"x": 1}, extensions={CORRELATION: "nope", STATUS: "ok"})
    await broker.publish_ephemeral(caller.reply_topic, stray)
    await wait_for(lambda: caller.malformed_replies == malformed + 1, timeout=30, what="the junk noticed")
    await wait_for(lambda: caller.late_replies > late, timeout=30, what="the stray reply noticed")
    await wait_for(
        lambda: mesh.caller_recorder.peers[("late_reply", "stranger")] == stray_count + 1, what="counted as late"
    )
    assert (await mesh.orders.invoke(mesh.callee_id, "echo", {"marker": "fine"}, timeout=30))["data"]


# -- tracing, discovery, the CLI ---------------------------------------------------------------


def _span_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return span.context.span_id


async def test_an_invoke_is_a_client_span_whose_child_is_the_callee_span(
    mesh: Mesh, exporter: InMemorySpanExporter
) -> None:
    marker = unique("tr")
    reply = await mesh.orders.invoke(mesh.callee_id, "echo", {"marker": marker}, timeout=30)
    name = f"{mesh.callee_id}/echo"

    def spans() -> list[ReadableSpan]:
        return [s for s in exporter.get_finished_spans() if s.name == name and s.context is not None]

    await wait_for(lambda: any(s.kind == SpanKind.CLIENT for s in spans()), what="the client span")
    client = [s for s in spans() if s.kind == SpanKind.CLIENT][-1]
    server = [s for s in spans() if s.kind == SpanKind.SERVER and s.parent and s.parent.span_id == _span_id(client)]
    assert len(server) == 1, "the callee's span is a child of the client span"
    assert client.context is not None and server[0].context is not None
    assert server[0].context.trace_id == client.context.trace_id
    assert (client.attributes or {})["rpc.method"] == "echo"
    assert (client.attributes or {})["mesh.invoke.outcome"] == "ok"
    assert f"{client.context.span_id:016x}" in reply["traceparent"]
    trace_id = client.context.trace_id
    in_trace = [s for s in exporter.get_finished_spans() if s.context and s.context.trace_id == trace_id]
    assert not [s for s in in_trace if s.name.startswith("send ")], "requests and replies make no send spans"


async def test_presence_lists_instances_methods_and_versions(mesh: Mesh) -> None:
    await mesh.orders.presence.listen()
    await wait_for(lambda: len(mesh.orders.presence.live(mesh.callee_id)) == 3, what="three live instances")
    live = mesh.orders.presence.apps()[mesh.callee_id]
    assert {i.instance for i in live} == {app.instance_id for app in mesh.callees}
    assert all(i.version == "2.1" for i in live)
    assert live[0].methods == {"reserve": False, "echo": True, "boom": False, "slow": False, "secret": False}
    assert mesh.orders.presence.idempotent(mesh.callee_id, "echo") is True


@pytest.mark.timeout(120)
async def test_cli_invoke_and_apps(mesh: Mesh, tmp_path: Path) -> None:
    if mesh.spec.type == "memory":
        pytest.skip("the memory broker lives inside one process: a CLI process cannot reach it")
    cfg = tmp_path / "mesh.yaml"
    cfg.write_text(yaml.safe_dump(mesh.config))

    async def mesh_cli(*args: str) -> tuple[int, str, str]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "mesh.cli",
            *args,
            "--config",
            str(cfg),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        out, err = await asyncio.wait_for(proc.communicate(), 90)
        return proc.returncode or 0, out.decode(), err.decode()

    code, out, err = await mesh_cli("invoke", mesh.callee_id, "echo", "--data", '{"marker": "cli"}', "--timeout", "30")
    assert code == 0, err
    assert orjson.loads(out)["data"] == {"marker": "cli"}
    code, out, err = await mesh_cli("invoke", mesh.callee_id, "boom", "--data", '{"sku": "Q"}')
    assert code == 1 and f"{mesh.callee_id}.boom failed: OutOfStock: no Q left [out_of_stock]" in err
    assert "Traceback" not in err
    code, out, err = await mesh_cli("apps", "--json", "--wait", "1.5")
    assert code == 0, err
    listed = orjson.loads(out)[mesh.callee_id]
    assert {i["instance"] for i in listed} == {app.instance_id for app in mesh.callees}
    assert {"name": "echo", "idempotent": True} in listed[0]["methods"]
    code, out, err = await mesh_cli("apps", "--wait", "1.5")
    assert code == 0 and f"{mesh.callee_id}  (3 instances, version 2.1)" in out
    assert "echo (idempotent)" in out
