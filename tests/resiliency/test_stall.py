"""A stalled instance (its handler blocks while its heartbeats go on) is ejected like a partitioned one."""

from __future__ import annotations

import asyncio

import pytest

from mesh import App
from mesh.resiliency import telemetry
from tests.resiliency.load import Load
from tests.support import BrokerSpec, unique, wait_for

pytestmark = pytest.mark.timeout(90)

STALL = 8.0


async def test_a_stalled_instance_is_ejected(broker_spec: BrokerSpec) -> None:
    namespace, callee_id = unique("stall") + ".", unique("svc")
    cfg = {"broker": {**broker_spec.config(), "namespace": namespace}, "drain_timeout": 1}
    stalled = asyncio.Event()
    release = asyncio.Event()

    def build() -> App:
        app = App(callee_id, config=cfg)

        @app.method("echo", idempotent=True)
        async def echo(n: int) -> dict[str, object]:
            if stalled.is_set() and app is instances[0]:
                await release.wait()  # the handler blocks; presence keeps beating
            return {"n": n, "by": app.instance_id}

        return app

    instances = [build(), build()]
    caller = App(unique("client"), config=cfg)
    async with instances[0], instances[1], caller:
        await caller.presence.listen()
        await wait_for(lambda: len(caller.presence.live(callee_id)) == 2, timeout=20, what="both instances")
        load = Load(caller, callee_id)
        load.start()
        loop = asyncio.get_running_loop()
        try:
            ids = {i.instance_id for i in instances}
            await wait_for(lambda: {r[2] for r in load.results if r[1]} >= ids, timeout=10, what="both answering")
            before = telemetry().counts["ejection", callee_id, "timeout"]
            start = loop.time()
            stalled.set()
            await asyncio.sleep(STALL)
            end = loop.time()
        finally:
            await load.stop()
            release.set()
    during = load.between(start, end)
    failed = load.failures()
    assert len(failed) <= 3, failed
    assert sum(1 for r in during if r[1]) >= 0.95 * len(during)
    assert telemetry().counts["ejection", callee_id, "timeout"] > before
    late = [r for r in during if r[1] and r[0] > start + 2]
    assert all(r[2] == instances[1].instance_id for r in late), "after its ejection the stalled one answers nothing"
