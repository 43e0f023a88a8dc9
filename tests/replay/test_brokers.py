"""Replay and redrive on every broker: archive a window, replay it to one group only, redrive dead
letters, and resume a replay that was killed mid-run (a subprocess, SIGKILL)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from mesh import App, Event
from mesh.brokers import broker_class
from mesh.brokers.capabilities import keeps_history
from mesh.codecs.data import format_time
from mesh.errors import FeatureNotSupported
from mesh.event import now
from mesh.replay import ReplaySpec, Target, Tools, Window, open_tools
from tests.replay.support import Consumer, flush, mesh_config, settle, sqlite_url
from tests.support import BrokerSpec, unique, wait_for

pytestmark = [pytest.mark.timeout(180), pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
N = 20


class World:
    """A shop publishing N timed events on a fresh topic; billing and shipping consume them."""

    def __init__(self, spec: BrokerSpec, tmp_path: Path) -> None:
        self.spec = spec
        self.topic = unique("orders")
        self.config = mesh_config(spec, sqlite_url(tmp_path))
        self.file = tmp_path / "mesh.yaml"
        self.file.write_text(yaml.safe_dump(self.config))
        self.shop = App(unique("shop"), config=self.config)
        self.billing = Consumer(unique("billing"), self.topic, self.config)
        self.shipping = Consumer(unique("shipping"), self.topic, self.config)
        self.t0 = now().replace(microsecond=0) - timedelta(seconds=90)
        self.sent: list[Event] = []

    def at(self, seconds: float) -> Any:
        return self.t0 + timedelta(seconds=seconds)

    async def publish(self, n: int = N) -> None:
        for i in range(n):
            self.sent.append(
                await self.shop.publish(self.topic, {"i": i}, type="shop.order.created", time=self.at(i * 0.5))
            )
        await wait_for(
            lambda: len(self.billing.events) >= n and len(self.shipping.events) >= n, 60, "both groups to get all"
        )
        await flush(self.shop, self.billing.app, self.shipping.app)

    def tools(self) -> Any:
        return open_tools(App(unique("ops"), config=self.config))


@pytest.fixture
async def world(broker_spec: BrokerSpec, tmp_path: Path) -> AsyncIterator[World]:
    w = World(broker_spec, tmp_path)
    async with w.shop, w.billing.app, w.shipping.app:
        await w.publish()
        yield w


async def replay_to_billing(w: World, tools: Tools, source: str) -> None:
    window = Window(w.at(2.5), w.at(7.5))  # events 5..14
    spec = ReplaySpec(w.topic, name=unique("r"), source=source, window=window, target=Target.group(w.billing.app.id))  # type: ignore[arg-type]
    result = await tools.replayer.run(spec)
    assert result.delivered == 10
    await wait_for(lambda: len(w.billing.replayed()) >= 10, 60, "10 replayed events for billing")
    await settle(1.0)
    replayed = w.billing.replayed()
    assert sorted(e.id for e in replayed) == sorted(e.id for e in w.sent[5:15]), "exact events, ids preserved"
    assert {e.extensions["meshreplay"] for e in replayed} == {spec.name}
    assert len(w.shipping.events) == N, "nobody else received them"


async def test_archive_replay_of_a_window_to_one_group_only(world: World) -> None:
    async with world.tools() as tools:
        await replay_to_billing(world, tools, "archive")


async def test_broker_history_replay_or_a_pointer_to_the_archive(world: World) -> None:
    async with world.tools() as tools:
        if not broker_class(world.spec.type).features.history:
            with pytest.raises(FeatureNotSupported, match="replay from the archive"):
                await tools.replayer.run(ReplaySpec(world.topic, name=unique("r"), source="broker"))
            return
        await replay_to_billing(world, tools, "broker")


async def test_unknown_group_is_refused(world: World) -> None:
    from mesh.replay import UnknownGroup

    async with world.tools() as tools:
        with pytest.raises(UnknownGroup):
            await tools.replayer.run(
                ReplaySpec(
                    world.topic,
                    name=unique("r"),
                    window=Window(world.at(0), world.at(60)),
                    target=Target.group("nobody"),
                )
            )
    await settle(0.5)
    assert len(world.billing.events) == len(world.shipping.events) == N


async def test_dead_letter_redrive_round_trip(broker_spec: BrokerSpec, tmp_path: Path) -> None:
    config = mesh_config(broker_spec, sqlite_url(tmp_path))
    topic = unique("pay")
    fixed = False
    shop = App(unique("shop"), config=config)
    payments = Consumer(
        unique("payments"), topic, config, fail=lambda e: TimeoutError if e.data["i"] % 2 and not fixed else None
    )
    async with shop, payments.app:
        sent = [await shop.publish(topic, {"i": i}, type="pay.requested") for i in range(10)]
        await wait_for(lambda: len(payments.events) >= 10, 60, "10 deliveries")
        async with open_tools(App(unique("ops"), config=config)) as tools:
            dlq = tools.dead_letters(f"{topic}.dlq")
            await wait_for(lambda: True, 0.1)
            for _ in range(100):  # dead letters are recorded before the dead-letter write is acked
                summary = await dlq.summary()
                if summary.total == 5:
                    break
                await asyncio.sleep(0.1)
            assert {e: s.count for e, s in summary.by_error.items()} == {"TimeoutError": 5}
            if keeps_history(tools.app.runtime.broker, f"{topic}.dlq"):  # rabbitmq: its *.dlq stream queue
                from_log = await tools.dead_letters(f"{topic}.dlq", "broker").summary()
                assert from_log.total == 5, "the broker's log of the dead-letter topic says the same"
            fixed = True
            result = await dlq.redrive(canary=2, canary_wait=2.0, rate=200)
            assert result.sent == 5 and result.canary == 2 and result.by_destination == {topic: 5}
            await wait_for(lambda: len(payments.events) >= 15, 60, "5 redriven deliveries")
            redriven = payments.events[10:]
            assert sorted(e.id for e in redriven) == sorted(e.id for e in sent if e.data["i"] % 2)
            assert all(
                str(e.extensions["meshredrive"]) == "1" and "mesherrortype" not in e.extensions for e in redriven
            )
            after = await dlq.summary()
            assert after.total == 0 and after.done == 5


async def test_a_killed_replay_resumes_with_no_gap_and_no_repeat_beyond_one_batch(
    broker_spec: BrokerSpec, tmp_path: Path
) -> None:
    if broker_spec.type == "memory":
        pytest.skip("an in-process broker cannot be shared with a subprocess (see test_engine's interrupted replay)")
    w = World(broker_spec, tmp_path)
    total, batch, name = 60, 5, unique("cut")
    async with w.shop, w.billing.app, w.shipping.app:
        await w.publish(total)
        window = [format_time(w.at(-1)), format_time(w.at(total))]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        base = [sys.executable, "-m", "mesh.cli", "replay", "-c", str(w.file)]
        args = ["--topic", w.topic, "--since", window[0], "--until", window[1], "--to-group", w.billing.app.id]
        args += ["--rate", "25/s", "--batch", str(batch), "--name", name, "--no-progress"]
        first = await asyncio.create_subprocess_exec(
            *base, *args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        try:
            await wait_for(
                lambda: len(w.billing.replayed()) >= 22 or first.returncode is not None, 90, "a replay half way"
            )
            assert first.returncode is None, "the replay ended before it was killed"
        finally:
            if first.returncode is None:
                first.kill()  # SIGKILL: no chance to save anything
            await first.wait()
        async with w.tools() as tools:
            saved = await tools.replayer.checkpoint(name)
        assert saved is not None and not saved["done"]
        done_before = saved["delivered"]
        assert done_before % batch == 0 and 0 < done_before < total
        second = await asyncio.create_subprocess_exec(
            *base,
            "--resume",
            name,
            "--no-progress",
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        out = (await asyncio.wait_for(second.communicate(), 120))[0].decode()
        assert second.returncode == 0, out
        assert f"{total} in all" in out
        wanted = [e.id for e in w.sent]
        await wait_for(lambda: {e.id for e in w.billing.replayed()} >= set(wanted), 90, "every event after the resume")
        await settle(1.0)
    counts = Counter(e.id for e in w.billing.replayed())
    repeated = {i for i, c in counts.items() if c > 1}
    assert set(counts) == set(wanted), "no gap, nothing outside the window"
    assert max(counts.values()) <= 2
    assert repeated <= set(wanted[done_before : done_before + batch]), "repeats only from the unfinished batch"
    assert len(w.shipping.events) == total
