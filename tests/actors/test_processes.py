"""Instances in separate processes over real brokers, actor state in Redis (and PostgreSQL on NATS): single activation
under load, a SIGKILLed owner, a joining instance, reminders after a full restart, routed events."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis

from mesh import App
from mesh.actors.placement import owner
from tests.support import DEFAULT_URLS, BrokerSpec, unique, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.redis]
ROOT = Path(__file__).resolve().parents[2]


def _start(config: dict[str, Any], ns: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "tests.actors.actor_proc", orjson.dumps(config).decode(), ns],
                            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE, text=True)


class Cluster:
    """Actor-hosting processes and a client app, all on one broker and one Redis namespace."""

    def __init__(self, spec: BrokerSpec, store: str = "redis") -> None:
        self.ns = unique("act")
        self.kind = spec.type
        state: dict[str, Any] = {"type": "redis", "url": "redis://127.0.0.1:6379/0", "namespace": self.ns}
        if store == "postgres":
            state = {"type": "postgres", "url": DEFAULT_URLS["postgres"], "table": self.ns.replace("-", "_")}
        self.config: dict[str, Any] = {
            # a namespace of its own: presence too, so hosts a failed test left behind are not seen
            "broker": {
                **spec.config(**({"join_timeout": 6} if spec.type == "kafka" else {})),
                "namespace": f"{self.ns}.",
            },
            "presence": {"interval": 0.3, "expiry": 1.2, "warmup": 1.5},
            # reminders are jobs; jobs refuse Redis stores, so they always live in PostgreSQL
            "state": {"actors": state, "jobs": {"type": "postgres", "url": DEFAULT_URLS["postgres"],
                                                "table": self.ns.replace("-", "_") + "_jobs"}},
            "actors": {"lease": 2.0},
            "jobs": {"store": "jobs", "poll_interval": 0.1},
            "drain_timeout": 5,
        }
        self.procs: dict[str, subprocess.Popen[str]] = {}
        self.client = App("actor-client", config=self.config)
        # the client routes events to the actors it does not host (one Kafka group member: on Kafka a
        # member the group gives no partition never starts, so the hosts do not subscribe themselves)
        self.client.subscribe(f"{self.ns}-commands", actor="Counter")
        self.redis = aioredis.Redis.from_url("redis://127.0.0.1:6379/0")

    async def spawn(self, n: int = 1) -> list[str]:
        procs = [_start(self.config, self.ns) for _ in range(n)]
        ids = []
        for proc in procs:
            line = await asyncio.to_thread(proc.stdout.readline)  # type: ignore[union-attr]
            if not line.startswith("ready"):
                for other in procs:  # none left behind, no pipe left open
                    if other.poll() is None:
                        other.kill()
                        other.wait(10)
                    if other.stdout is not None:
                        other.stdout.close()
                raise AssertionError(f"an actor process did not start: {line!r}")
            ids.append(line.split()[1])
            self.procs[ids[-1]] = proc
        directory = self.client.actors.directory
        await wait_for(lambda: all(i in directory.hosts("Counter") for i in ids), 10, "the new hosts in presence")
        return ids

    def kill(self, instance: str, sig: int = signal.SIGKILL) -> None:
        proc = self.procs.pop(instance)
        proc.send_signal(sig)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:  # a slow drain on a loaded machine: no survivor either way
            proc.kill()
            proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()

    async def close(self) -> None:
        for instance in list(self.procs):
            self.kill(instance, signal.SIGTERM)
        await self.client.stop()
        for name in ("actors", "jobs"):
            if self.config["state"][name]["type"] == "postgres":
                store = self.client.state(name)
                await store.backend.open()
                await store.backend.destroy()
                await store.backend.close()
        keys = [k async for k in self.redis.scan_iter(f"*{self.ns}*")]
        if keys:
            await self.redis.delete(*keys)
        await self.redis.aclose()

    def counter(self, i: str) -> Any:
        return self.client.actor("Counter", i)

    async def overlaps(self) -> list[str]:
        """Actors two of whose ``add`` turns overlapped in time (turns that never ended do not count)."""
        bad = []
        async for key in self.redis.scan_iter(f"{self.ns}:turns:*"):
            spans = sorted(tuple(map(int, s.split())) for s in await self.redis.lrange(key, 0, -1))
            if any(b[0] < a[1] for a, b in itertools.pairwise(spans)):
                bad.append(key.decode())
        return bad


@pytest.fixture
async def cluster(actor_setup: tuple[BrokerSpec, str]) -> AsyncIterator[Cluster]:
    c = Cluster(*actor_setup)
    await c.client.start()
    await c.client.actors.caller.ready()
    try:
        yield c
    finally:
        await c.close()


async def test_concurrent_calls_run_one_turn_at_a_time_and_leave_exact_state(cluster: Cluster) -> None:
    await cluster.spawn(3)
    n, actors = 1000, 20

    async def one(k: int) -> int:  # all 1,000 in flight at once
        return int(await cluster.counter(f"a{k % actors}").call("add", f"t{k}", timeout=30))

    await asyncio.gather(*(one(k) for k in range(n)))
    assert await cluster.overlaps() == []
    for a in range(actors):
        tokens = await cluster.counter(f"a{a}").call("tokens")
        assert sorted(tokens) == sorted(f"t{k}" for k in range(a, n, actors))
    where = {await cluster.counter(f"a{a}").call("where") for a in range(actors)}
    assert len(where) == 3  # spread over the instances


async def test_a_killed_owner_loses_no_acknowledged_turn(cluster: Cluster) -> None:
    hosts = await cluster.spawn(3)
    actors = [f"k{a}" for a in range(20)]
    acked: dict[str, list[str]] = {a: [] for a in actors}
    stop = asyncio.Event()

    async def load(a: str) -> None:
        k = 0
        while not stop.is_set():
            token = f"{a}-{k}"
            k += 1
            await cluster.counter(a).call("add", token, timeout=20)
            acked[a].append(token)

    tasks = [asyncio.ensure_future(load(a)) for a in actors]
    await wait_for(lambda: sum(map(len, acked.values())) >= 200, 20, "load before the kill")
    victim = hosts[0]
    moved = [a for a in actors if owner(hosts, "Counter", a) == victim]
    assert moved
    cluster.kill(victim)
    before = {a: len(acked[a]) for a in moved}
    await wait_for(lambda: all(len(acked[a]) > before[a] + 3 for a in moved), 25, "the killed owner's actors again")
    stop.set()
    await asyncio.gather(*tasks)
    assert await cluster.overlaps() == []
    for a in actors:
        tokens = await cluster.counter(a).call("tokens", timeout=10)
        assert set(acked[a]) <= set(tokens), f"{a} lost acknowledged turns"
        assert len(tokens) <= len(acked[a]) + 1  # at most the one in flight when the owner died
    for a in moved:
        assert await cluster.counter(a).call("where") != victim


async def test_a_joining_instance_takes_only_its_share(cluster: Cluster) -> None:
    await cluster.spawn(3)
    actors = [f"j{a}" for a in range(40)]
    before = {a: await cluster.counter(a).call("where") for a in actors}
    (fourth,) = await cluster.spawn(1)
    directory = cluster.client.actors.directory
    await wait_for(lambda: len(directory.hosts("Counter")) == 4, 10, "four hosts")

    async def settled() -> dict[str, str]:
        return {a: await cluster.counter(a).call("where", timeout=10) for a in actors}

    after = await settled()
    for _ in range(40):  # moved actors finish their handover within a lease renewal
        if all(after[a] == owner(directory.hosts("Counter"), "Counter", a) for a in actors):
            break
        await asyncio.sleep(0.25)
        after = await settled()
    moved = {a for a in actors if after[a] != before[a]}
    assert moved, "the fourth instance took no actor"
    assert all(after[a] == fourth for a in moved)
    assert moved == {a for a in actors if owner(directory.hosts("Counter"), "Counter", a) == fourth}


async def test_reminders_fire_after_a_full_restart(cluster: Cluster) -> None:
    hosts = await cluster.spawn(3)
    for a in range(5):
        await cluster.counter(f"r{a}").call("later", 3.0)
    for host in hosts:
        cluster.kill(host)
    await asyncio.sleep(0.5)
    await cluster.spawn(3)

    async def fired() -> int:
        return sum([bool(await cluster.counter(f"r{a}").call("reminded", timeout=10)) for a in range(5)])

    for _ in range(100):
        if await fired() == 5:
            break
        await asyncio.sleep(0.3)
    assert await fired() == 5
    data = await cluster.counter("r0").call("reminded")
    assert data[0] == "wake" and data[2] not in hosts


async def test_events_routed_by_subject_reach_the_right_actor(cluster: Cluster) -> None:
    await cluster.spawn(3)
    topic = f"{cluster.ns}-commands"
    sent: dict[str, list[str]] = {f"e{a}": [] for a in range(10)}
    for k in range(50):
        actor = f"e{k % 10}"
        event = await cluster.client.publish(topic, {"k": k}, type="counter.touch", subject=actor)
        sent[actor].append(event.id)
    for actor, ids in sent.items():
        for _ in range(100):
            got = await cluster.counter(actor).call("events", timeout=10)
            if set(ids) <= set(got):
                break
            await asyncio.sleep(0.1)
        assert set(got) == set(ids)


@pytest.mark.nats
async def test_mesh_actors_list_shows_active_actors_per_instance(tmp_path: Path) -> None:
    spec = BrokerSpec("nats", "nats://127.0.0.1:4222")
    cluster = Cluster(spec)
    await cluster.client.start()
    await cluster.client.actors.caller.ready()
    try:
        hosts = await cluster.spawn(2)
        for a in range(6):
            await cluster.counter(f"l{a}").call("add", "x")
        path = tmp_path / "mesh.yaml"
        path.write_bytes(orjson.dumps(cluster.config))
        out = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "mesh.cli", "actors", "list", "Counter",
                                                       "--json", "--config", str(path)],
                                      capture_output=True, text=True, cwd=ROOT, check=True)
        listed = orjson.loads(out.stdout)["Counter"]
        assert {i["instance"] for i in listed} == set(hosts)
        assert sorted(a for i in listed for a in i["active"]) == [f"l{a}" for a in range(6)]
    finally:
        await cluster.close()
