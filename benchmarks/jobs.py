"""Jobs: fires per second and lateness (fire time minus scheduled time) with 1,000 jobs due at once.

    python -m benchmarks.jobs [--n 1000] [--window 60] [--instances 3] [--stores sqlite,postgres]

Two shapes per store, on the memory broker (so the numbers are the scheduler's and the store's):
``spread``: ``n`` one-shot jobs due evenly within ``window`` seconds (1,000 in one minute by
default); ``burst``: ``n`` jobs due at the same instant. ``instances`` Apps share the store (in
one process: they contend for the same claims as separate processes would). Lateness is measured
when the subscriber receives the event; p50/p99 over all jobs. Target: p99 < 250 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from datetime import datetime
from typing import Any

from mesh import App, Event
from mesh.jobs.model import Job

PG = os.environ.get("MESH_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")
TAG = os.urandom(3).hex()


def store_config(kind: str, tmp: str) -> dict[str, Any]:
    """A fresh store config."""
    name = f"bench_jobs_{TAG}_{os.urandom(2).hex()}"
    if kind == "postgres":
        return {"type": "postgres", "url": PG, "table": name}
    return {"type": "sqlite", "url": f"sqlite:///{tmp}/{name}.db"}


async def run(kind: str, shape: str, n: int, window: float, instances: int, tmp: str) -> dict[str, float]:
    """One measurement: fires per second, lateness p50/p99/max in milliseconds."""
    broker = {"type": "memory", "options": {"name": f"bj-{os.urandom(3).hex()}"}}
    conf = {"broker": broker, "state": {"jobs": store_config(kind, tmp)}, "jobs": {"store": "jobs"}}
    apps = [App("benchjobs", config=conf) for _ in range(instances)]
    late: list[float] = []
    done = asyncio.Event()
    watcher = App("benchwatch", config={"broker": broker})

    @watcher.subscribe("bench.fires")
    async def on(event: Event) -> None:
        scheduled = event.extensions["meshjobtime"]
        assert isinstance(scheduled, datetime)
        late.append(time.time() - scheduled.timestamp())
        if len(late) >= n:
            done.set()

    await watcher.start()
    for app in apps:
        await app.start()
    try:
        start = time.time() + 2.0
        times = [start + (i * window / n if shape == "spread" else 0.0) for i in range(n)]
        store = await apps[0].jobs._open()
        for i, t in enumerate(times):
            await store.add(Job(name=f"b{i:05d}", at=t, topic="bench.fires", type="bench"))
        if time.time() > start:
            print(f"  (adding {n} jobs took past their first due time; raise the lead)")
        await asyncio.wait_for(done.wait(), timeout=window + 120)
        elapsed = max(time.time() - start, 1e-9)
    finally:
        for app in apps:
            await app.stop()
        await watcher.stop()
        if kind == "postgres":
            await apps[0]._state.stores["jobs"].backend.open()
            await apps[0]._state.stores["jobs"].backend.destroy()
            await apps[0]._state.stores["jobs"].backend.close()
    ms = sorted(x * 1000 for x in late)
    return {"fires/s": n / elapsed if shape == "burst" else n / max(window, elapsed),
            "p50 ms": statistics.median(ms), "p99 ms": ms[int(0.99 * (len(ms) - 1))], "max ms": ms[-1],
            "early": float(sum(1 for x in late if x < 0))}


async def main(args: argparse.Namespace) -> None:
    """Print one row per store and shape."""
    print(f"{args.n} jobs, {args.instances} instance(s), spread over {args.window:g}s or in one burst")
    print(f"{'store':<10}{'shape':<8}{'fires/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'max ms':>10}{'early':>7}")
    with tempfile.TemporaryDirectory() as tmp:
        for kind in args.stores.split(","):
            for shape in ("spread", "burst"):
                r = await run(kind, shape, args.n, args.window, args.instances, tmp)
                print(f"{kind:<10}{shape:<8}{r['fires/s']:>10.0f}{r['p50 ms']:>10.1f}{r['p99 ms']:>10.1f}"
                      f"{r['max ms']:>10.1f}{r['early']:>7.0f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--window", type=float, default=60.0)
    parser.add_argument("--instances", type=int, default=3)
    parser.add_argument("--stores", default="sqlite,postgres")
    asyncio.run(main(parser.parse_args()))
