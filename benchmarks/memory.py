"""Memory use: an idle app with 10 subscriptions, and RSS across many events through the memory broker.

    python -m benchmarks.memory [--events 1000000]

Targets (issue 7): idle app with 10 subscriptions under 80 MB RSS; RSS flat (within 10%) from the point
the topics' retention is full (or the first tenth of the events) to the end. RSS is read from /proc/self/status (Linux).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
from typing import Any

from benchmarks import loops
from mesh import App, Event


def rss_mb() -> float:
    """Resident set size of this process in MB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


async def run(events: int = 1_000_000, batch: int = 1000) -> dict[str, Any]:
    """Idle RSS with 10 subscriptions, then RSS once retention is full (or at 10%) and at the end."""
    config = {"broker": {"type": "memory", "options": {"name": "bench-memory", "retention": 10_000}}}
    app = App("bench", config=config)
    handled = 0

    for i in range(10):

        @app.subscribe(f"topic{i}")
        async def handle(event: Event) -> None:
            nonlocal handled
            handled += 1

    async with app:
        await asyncio.sleep(0.1)
        gc.collect()
        idle = rss_mb()
        early = 0.0
        warm = 10 * 10_000  # the topics' retention is full from here on: what stays is steady state
        data = {"id": "A1", "qty": 2, "sku": "espresso"}
        for n in range(0, events, batch):
            for j in range(batch):
                await app.publish(f"topic{j % 10}", data, type="bench.event")
            await app.join(timeout=60)
            if early == 0.0 and n + batch >= (max(events // 10, warm) if events > 2 * warm else events // 2):
                gc.collect()
                early = rss_mb()
        gc.collect()
        final = rss_mb()
    return {"idle_mb": idle, "early_mb": early, "final_mb": final, "events": handled, "growth": final / early - 1}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="RSS of an idle app and across many events (memory broker)")
    parser.add_argument("--events", type=int, default=1_000_000)
    args = parser.parse_args(argv)
    r = loops.run(run(args.events))
    print(f"idle app, 10 subscriptions: {r['idle_mb']:.1f} MB RSS (target < 80 MB)")
    print(
        f"{r['events']:,} events: RSS {r['early_mb']:.1f} MB at 10%, {r['final_mb']:.1f} MB at the end "
        f"({r['growth']:+.1%}; target within ±10%)"
    )


if __name__ == "__main__":
    main()
