"""Three App instances in separate processes sharing one jobs store (SQLite file, PostgreSQL, Redis) and
Redis Streams: each due job fires exactly once, a SIGKILLed instance's claims still fire, and the
misfire policy holds after every instance was down past a due time."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from mesh import App, Event
from mesh.components import Registry
from mesh.jobs.model import Job
from mesh.jobs.store import JobStore
from mesh.state.block import build_store
from tests.support import DEFAULT_URLS, reachable, unavailable, unique, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.redis, pytest.mark.timeout(60)]

PG_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(params=["sqlite", "postgres"])
def store_conf(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    """The shared jobs store of the instances."""
    if not reachable(DEFAULT_URLS["redis"], 0):
        unavailable("redis")
    if request.param == "sqlite":
        return {"type": "sqlite", "url": f"sqlite:///{tmp_path}/jobs.db"}
    if request.param == "redis":
        return {"type": "redis", "url": DEFAULT_URLS["redis"], "namespace": unique("jobs")}
    if not reachable(PG_URL, 0):
        unavailable("postgres")
    return {"type": "postgres", "url": PG_URL, "table": unique("jobs").replace("-", "_"), "pool_size": 4}


class Cluster:
    """The worker processes of one app, the jobs store, and the fires counted off Redis."""

    def __init__(self, store: dict[str, Any], **jobs: Any) -> None:
        self.app_id = unique("japp")
        self.topic = unique("fires")
        self.config = {"app": self.app_id, "broker": {"type": "redis", "url": DEFAULT_URLS["redis"]},
                       "state": {"jobs": store},
                       "jobs": {"store": "jobs", "poll_interval": 0.2, "lease": 2.0, "misfire_grace": 1.0, **jobs}}
        self.procs: list[subprocess.Popen[str]] = []
        self.ids: list[str] = []
        self.fires: list[tuple[str, float, float]] = []  # (job, scheduled, fired)
        self.store_conf = store

    def start(self, n: int = 3) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        new = [subprocess.Popen([sys.executable, "-m", "tests.jobs.worker", json.dumps(self.config)], cwd=ROOT,
                                env=env, stdout=subprocess.PIPE, text=True) for _ in range(n)]
        for p in new:
            assert p.stdout is not None
            line = p.stdout.readline().split()
            assert line[:1] == ["ready"], line
            self.ids.append(line[1])
        self.procs.extend(new)

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            p.wait(15)
            if p.stdout is not None:
                p.stdout.close()
        self.procs.clear()

    def counts(self) -> Counter[str]:
        return Counter(name for name, _, _ in self.fires)


@pytest.fixture
async def cluster(store_conf: dict[str, Any]) -> AsyncIterator[Callable[..., Any]]:
    made: list[tuple[Cluster, App, Any]] = []

    async def make(**jobs: Any) -> tuple[Cluster, JobStore]:
        c = Cluster(store_conf, **jobs)
        watcher = App(unique("watch"), config={"broker": {"type": "redis", "url": DEFAULT_URLS["redis"]}})

        @watcher.subscribe(c.topic)
        async def on(event: Event) -> None:
            raw = event.extensions["meshjobtime"]  # an RFC 3339 string once it crossed the wire
            t = raw if isinstance(raw, datetime) else datetime.fromisoformat(str(raw).replace("Z", "+00:00"))
            assert event.time is not None
            c.fires.append((str(event.extensions["meshjob"]), t.timestamp(), event.time.timestamp()))

        await watcher.start()
        handle, _ = build_store("jobs", store_conf, Registry(), c.app_id)
        await handle.backend.open()
        store = JobStore(handle)
        await store.prepare()
        made.append((c, watcher, handle))
        return c, store

    yield make
    for c, watcher, handle in made:
        c.stop()
        await watcher.stop()
        if store_conf["type"] in ("postgres", "redis"):
            await handle.backend.destroy()
        await handle.backend.close()


async def add_one_shots(store: JobStore, topic: str, times: list[float], **kw: Any) -> list[str]:
    names = []
    for i, t in enumerate(times):
        job = await store.add(Job(name=f"j{i:04d}", at=t, topic=topic, type="t.fired", **kw))
        names.append(job.name)
    return names


@pytest.mark.parametrize("store_conf", ["sqlite", "postgres", "redis"], indirect=True)
async def test_200_jobs_due_within_two_seconds_fire_exactly_once_never_early(cluster: Any) -> None:
    c, store = await cluster()
    c.start(3)
    base = time.time() + 1.5
    names = await add_one_shots(store, c.topic, [base + i * 0.01 for i in range(200)])
    await wait_for(lambda: len(c.counts()) == 200, timeout=20, what="200 distinct fires")
    await asyncio.sleep(1.0)  # a duplicate would arrive by now (leases are 2 s)
    assert c.counts() == Counter(dict.fromkeys(names, 1))
    assert all(fired >= scheduled for _, scheduled, fired in c.fires), "a job fired early"


async def test_a_sigkilled_instance_holding_claims_still_has_its_jobs_fired(cluster: Any) -> None:
    c, store = await cluster(poll_interval=1.5)  # claims are taken up to 1.5 s ahead of the fire
    c.start(3)
    base = time.time() + 2.0
    names = await add_one_shots(store, c.topic, [base + i * 0.02 for i in range(60)])
    held: list[str] = []
    victim: str | None = None
    deadline = time.time() + 10
    while not held and time.time() < deadline:  # the victim: whichever instance holds claims first
        claims = [h.job for h in await store.due(time.time() + 100, 500)
                  if h.job.owner in c.ids and h.job.fire > time.time() + 0.1]
        if claims:
            victim = claims[0].owner
            held = [job.name for job in claims if job.owner == victim]
    assert held and victim is not None, "no instance ever held a claim"
    os.kill(c.procs[c.ids.index(victim)].pid, signal.SIGKILL)
    await wait_for(lambda: set(c.counts()) == set(names), timeout=20, what="every job fired")
    await asyncio.sleep(2.5)
    counts = c.counts()
    assert all(1 <= counts[n] <= 2 for n in names), counts
    assert all(counts[n] >= 1 for n in held)
    assert all(fired >= scheduled for _, scheduled, fired in c.fires)


async def test_misfire_policy_holds_after_every_instance_was_down(cluster: Any) -> None:
    c, store = await cluster()
    c.start(3)
    c.stop()  # every instance down
    now = time.time()
    await store.add(Job(name="once-catchup", at=now + 0.3, topic=c.topic, misfire="fire_once"))
    await store.add(Job(name="once-skip", at=now + 0.3, topic=c.topic, misfire="skip"))
    await store.add(Job(name="every-catchup", every=0.5, topic=c.topic, misfire="fire_once", created=now))
    await store.add(Job(name="every-skip", every=0.5, topic=c.topic, misfire="skip", created=now))
    await asyncio.sleep(3.0)  # six intervals missed, past the 1 s grace
    restart = time.time()
    c.start(3)
    await wait_for(lambda: c.counts()["every-skip"] >= 2 and c.counts()["every-catchup"] >= 3, timeout=15,
                   what="the interval jobs running again")
    await asyncio.sleep(0.5)
    missed = Counter(name for name, scheduled, _ in c.fires if scheduled < restart)
    assert missed == Counter({"once-catchup": 1, "every-catchup": 1})
    assert c.counts()["once-skip"] == 0
