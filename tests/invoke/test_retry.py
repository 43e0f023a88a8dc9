"""An instance that dies with a call in hand: the caller sends it again only if the method is idempotent.

"Dies" here is what the caller can see of it: its heartbeats stop while it holds the request (a
hung or cut-off process). The broker cannot tell that instance from a live one, so it redelivers
nothing; only presence notices. Every broker, one pair of callee instances per broker.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest

from mesh import App, InvocationTimeout
from mesh.brokers.memory import MemoryBroker
from tests.invoke.conftest import Recorder
from tests.support import BrokerSpec, unique, wait_for

pytestmark = pytest.mark.timeout(180)


def config(spec: BrokerSpec, namespace: str) -> dict[str, Any]:
    broker = {**spec.config(), "namespace": namespace}
    if spec.type == "kafka":
        broker["options"] = {**broker["options"], "fetch_max_wait_ms": 20}
    return {"broker": broker, "presence": {"interval": 0.2, "expiry": 0.8}}


async def silence(app: App) -> None:
    """Stop an instance's heartbeats without a goodbye, as a crash would (its consumer lives on)."""
    presence = app.presence
    beat, presence._heartbeat = presence._heartbeat, None
    presence.announcing = False
    assert beat is not None
    beat.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await beat


async def revive(app: App) -> None:
    presence = app.presence
    presence.announcing = True
    presence._heartbeat = asyncio.get_running_loop().create_task(presence._beat())


async def test_only_idempotent_calls_are_sent_again_when_an_instance_dies(broker_spec: BrokerSpec) -> None:
    namespace, callee_id = unique("retry") + ".", unique("worker")
    cfg = config(broker_spec, namespace)
    release = asyncio.Event()
    took: dict[str, list[App]] = {"lookup": [], "charge": []}

    def build() -> App:
        app = App(callee_id, config=cfg)

        async def handle(method: str) -> dict[str, str]:
            took[method].append(app)
            if len(took[method]) == 1:
                await release.wait()  # the first instance to get one never answers it
            return {"by": app.instance_id}

        @app.method("lookup", idempotent=True)
        async def lookup() -> dict[str, str]:
            return await handle("lookup")

        @app.method("charge")
        async def charge() -> dict[str, str]:
            return await handle("charge")

        return app

    instances = [build(), build()]
    recorder = Recorder()
    caller = App(unique("client"), config=cfg, plugins=[recorder])
    await asyncio.gather(*(app.start() for app in instances))
    await caller.start()
    try:
        await caller.presence.listen()
        await wait_for(lambda: len(caller.presence.live(callee_id)) == 2, timeout=30, what="both instances live")

        # idempotent: presence sees the holder vanish, the call goes out again and is answered
        call = asyncio.create_task(caller.invoke(callee_id, "lookup", timeout=60))
        await wait_for(lambda: len(took["lookup"]) == 1, timeout=30, what="the first delivery")
        victim = took["lookup"][0]
        await silence(victim)
        reply = await call
        assert len(took["lookup"]) == 2
        assert recorder.calls[-1].attempts == 2
        assert recorder.calls[-1].outcome == "ok"
        assert reply["by"] == took["lookup"][1].instance_id

        await revive(victim)
        await wait_for(lambda: len(caller.presence.live(callee_id)) == 2, timeout=30, what="the victim back")

        # not idempotent: never sent twice; the caller times out
        call = asyncio.create_task(caller.invoke(callee_id, "charge", timeout=4))
        await wait_for(lambda: len(took["charge"]) == 1, timeout=30, what="the first delivery")
        await silence(took["charge"][0])
        with pytest.raises(InvocationTimeout, match="1 attempt"):
            await call
        assert recorder.calls[-1].attempts == 1
        assert len(took["charge"]) == 1
    finally:
        release.set()
        await asyncio.gather(*(app.stop() for app in [*instances, caller]))
        if broker_spec.type == "memory":
            MemoryBroker.reset(broker_spec.options["name"])
