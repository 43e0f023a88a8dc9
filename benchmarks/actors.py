"""Actor calls next to plain invoke on the same broker: latency and throughput.

    python -m benchmarks.actors [--brokers memory,nats,...] [--n 1000] [--calls 4000] [--concurrency 50] [--actors 100]

Per reachable broker (as :mod:`benchmarks.invoke` finds them), in one process and event loop:

- **invoke**: ``app.invoke`` of an ``echo`` method (the same row as ``benchmarks.invoke``'s mesh);
- **actor echo**: ``app.actor("Echo", id).call("echo", data)``: placement, the actor destination,
  one turn, no state write;
- **actor write**: the same with a state write per turn (``set`` + lease in one transaction on the
  in-process memory store): what a turn that changes state costs.

Calls cycle over ``--actors`` ids, so turns of different actors run side by side while each
actor runs one at a time. The ratio column is actor / invoke throughput (target >= 0.7x).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
from typing import Any

from benchmarks.invoke import ALL, PAYLOAD, URLS, Call, Mesh, Row, _name, kafka_url, measure, reachable


class Actors:
    """Two Apps: ``bench-host`` hosting ``Echo``, ``bench-caller`` calling it."""

    def __init__(self, write: bool, actors: int) -> None:
        self.write = write
        self.actors = actors

    async def start(self, broker: str, url: str | None) -> Call:
        from mesh import Actor, App

        options: dict[str, Any] = {"name": _name("hub")} if broker == "memory" else {}
        if broker == "kafka":
            options = {"fetch_max_wait_ms": 5, "ephemeral_fetch_max_wait_ms": 5}
        config = {"broker": {"type": broker, "url": url, "namespace": _name("ns") + ".", "options": options},
                  "presence": {"warmup": 5}}
        self.host, self.caller = App("bench-host", config=config), App("bench-caller", config=config)
        write = self.write

        @self.host.actor("Echo")
        class Echo(Actor):
            async def echo(self, data: Any) -> Any:
                if write:
                    self.state.set("last", data)
                return data

        await self.host.start()
        await self.caller.start()
        ids = itertools.cycle([f"a{i}" for i in range(self.actors)])
        proxies = {i: self.caller.actor("Echo", i) for i in (f"a{i}" for i in range(self.actors))}

        async def call() -> Any:
            return await proxies[next(ids)].call("echo", PAYLOAD, timeout=10)

        return call

    async def close(self) -> None:
        await self.caller.stop()
        await self.host.stop()


async def bench(broker: str, url: str | None, n: int, calls: int, concurrency: int, actors: int) -> list[Row]:
    rows = []
    clients: list[tuple[str, Any]] = [("invoke", Mesh()), ("actor echo", Actors(False, actors)),
                                      ("actor write", Actors(True, actors))]
    for label, client in clients:
        call = await client.start(broker, url)
        try:
            p50, p99, rps = await measure(call, n, calls, concurrency)
        finally:
            await client.close()
        rows.append(Row(broker, label, p50, p99, rps))
    return rows


def run(brokers: list[str], n: int, calls: int, concurrency: int, actors: int) -> list[Row]:
    """Measure every reachable broker of ``brokers``; the rows in order."""
    rows: list[Row] = []
    with kafka_url() if "kafka" in brokers else contextlib.nullcontext() as kafka:
        for broker in brokers:
            url = kafka if broker == "kafka" else URLS.get(broker)
            if not reachable(broker, url):
                print(f"{broker}: not reachable, skipped")
                continue
            rows += asyncio.run(bench(broker, url, n, calls, concurrency, actors))
    return rows


def table(rows: list[Row], concurrency: int) -> str:
    """The rows as a text table with the actor / invoke throughput ratio."""
    head = f"{'broker':<10} {'client':<12} {'p50 ms':>8} {'p99 ms':>8} {f'calls/s @{concurrency}':>14} {'/invoke':>8}"
    lines = [head, "-" * len(head)]
    invoke = {r.broker: r for r in rows if r.client == "invoke"}
    for r in rows:
        ratio = f"{r.rps / invoke[r.broker].rps:.2f}x" if r.client != "invoke" and r.broker in invoke else ""
        lines.append(f"{r.broker:<10} {r.client:<12} {r.p50_ms:>8.2f} {r.p99_ms:>8.2f} {r.rps:>14,.0f} {ratio:>8}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[Row]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--brokers", default=",".join(ALL), help="comma-separated broker types")
    parser.add_argument("--n", type=int, default=1000, help="sequential calls for the latency percentiles")
    parser.add_argument("--calls", type=int, default=4000, help="calls for the throughput")
    parser.add_argument("--concurrency", type=int, default=50, help="calls in flight for the throughput")
    parser.add_argument("--actors", type=int, default=100, help="actor ids the calls cycle over")
    args = parser.parse_args(argv)
    brokers = [b.strip() for b in args.brokers.split(",") if b.strip()]
    unknown = set(brokers) - set(ALL)
    if unknown:
        parser.error(f"unknown brokers: {', '.join(sorted(unknown))}")
    rows = run(brokers, args.n, args.calls, args.concurrency, args.actors)
    print(table(rows, args.concurrency))
    return rows


if __name__ == "__main__":
    main()
