"""What the archive plugin costs on the publish path: publish rate with and without it, one run.

    python -m benchmarks.archive [--events 50000]

Both runs publish the same events through the in-process broker with no subscriber, so the
broker costs little and the difference is the plugin's: the buffer append on the publish path.
Writing happens on the archive's own thread; the time to flush what was buffered is reported
apart. Ratios, not timings, are what to compare.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

from mesh import App
from mesh_plugins.archive import recorder_of


async def publish_rate(events: int, archive: str | None) -> tuple[float, float]:
    """(events per second while publishing, seconds to flush the archive afterwards)."""
    config: dict[str, Any] = {"broker": {"type": "memory", "options": {"name": f"bench-archive-{archive is None}"}}}
    if archive is not None:
        config["plugins"] = {"config": {"archive": {"url": archive, "batch_size": 2000}}}
    app = App("bench", config=config)
    data = {"id": "A1", "qty": 2, "sku": "espresso"}
    async with app:
        start = time.perf_counter()
        for _ in range(events):
            await app.publish("orders", data, type="bench.event")
        elapsed = time.perf_counter() - start
        recorder = recorder_of(app)
        flush_start = time.perf_counter()
        if recorder is not None:
            await recorder.flush()
        flushed = time.perf_counter() - flush_start
    return events / elapsed, flushed


async def run(events: int = 50_000) -> dict[str, float]:
    """Rates without and with the archive (SQLite in a temporary directory) and their ratio."""
    with tempfile.TemporaryDirectory() as tmp:
        plain, _ = await publish_rate(events, None)
        archived, flush_s = await publish_rate(events, f"sqlite:///{Path(tmp) / 'bench.db'}")
    return {"events": events, "plain": plain, "archived": archived, "ratio": archived / plain, "flush_s": flush_s}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=50_000)
    args = parser.parse_args(argv)
    r = asyncio.run(run(args.events))
    print(f"publish without archive: {r['plain']:,.0f} events/s")
    print(f"publish with archive:    {r['archived']:,.0f} events/s  ({r['ratio']:.2f}x)")
    print(f"flush after the run:     {r['flush_s'] * 1000:,.0f} ms for what was still buffered")


if __name__ == "__main__":
    main()
