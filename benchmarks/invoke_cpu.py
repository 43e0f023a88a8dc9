"""CPU per call of invocation: the raw client's request/reply and the mesh, in this process.

    python -m benchmarks.invoke_cpu [--broker rabbitmq] [--calls 5000] [--concurrency 50] [--rounds 3] [--profile 25]

Requests per second on two shared cores move with whatever else runs (the broker too). Both
sides of a call run in this one process (the clients of :mod:`benchmarks.invoke`), so the CPU
seconds it spends while ``--calls`` calls complete with ``--concurrency`` in flight, per call, is
what the client costs: caller and callee together. The broker's own CPU is not counted. Rounds
alternate raw and mesh; every round is printed, then the median of each.

``--profile N`` runs one more mesh round under cProfile and prints its ``N`` costliest functions
(own time).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import statistics
import time
from typing import Any

from benchmarks import invoke, loops


async def cpu_per_call(client: Any, broker: str, calls: int, concurrency: int, top: int = 0) -> tuple[float, float]:
    """(microseconds of CPU per call, calls per second) of one client, after a warm-up."""
    url = invoke.URLS.get(broker)
    call = await (client.start(broker, url) if isinstance(client, invoke.Mesh) else client.start(url))
    try:
        for _ in range(200):
            await call()
        left = calls

        async def worker() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                await call()

        profile = cProfile.Profile() if top else None
        cpu, wall = time.process_time(), time.perf_counter()
        if profile is not None:
            profile.enable()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        if profile is not None:
            profile.disable()
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    finally:
        await client.close()
    if profile is not None:
        pstats.Stats(profile).sort_stats("tottime").print_stats(top)
    return cpu / calls * 1e6, calls / wall


def main(argv: list[str] | None = None) -> dict[str, list[tuple[float, float]]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--broker", default="rabbitmq", choices=sorted(set(invoke.RAW) & set(invoke.URLS)))
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--profile", type=int, default=0, metavar="N", help="profile one more mesh round")
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default=None)
    args = parser.parse_args(argv)
    loops.choose(args.loop)
    if not invoke.reachable(args.broker, invoke.URLS.get(args.broker)):
        parser.error(f"{args.broker} is not reachable")
    results: dict[str, list[tuple[float, float]]] = {"raw": [], "mesh": []}
    for round_ in range(args.rounds):
        for name, client in (("raw", invoke.RAW[args.broker]()), ("mesh", invoke.Mesh())):
            us, rps = loops.run(cpu_per_call(client, args.broker, args.calls, args.concurrency))
            results[name].append((us, rps))
            print(f"round {round_ + 1} {name:<5} {us:8.0f} us CPU/call {rps:10,.0f} req/s")
    for name, rows in results.items():
        us = statistics.median(r[0] for r in rows)
        rps = statistics.median(r[1] for r in rows)
        print(f"median  {name:<5} {us:8.0f} us CPU/call {rps:10,.0f} req/s")
    if args.profile:
        loops.run(cpu_per_call(invoke.Mesh(), args.broker, args.calls, args.concurrency, args.profile))
    return results


if __name__ == "__main__":
    main()
