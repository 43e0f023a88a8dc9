"""CPU per invocation: the raw client's request/reply, the mesh, and the mesh without instance choice.

    python -m benchmarks.invoke_cpu [--broker nats] [--calls 5000] [--concurrency 50] [--rounds 3] [--profile 25]

Requests per second on two shared cores move with whatever else runs (the broker too). Both
sides of a call run in this one process (the clients of :mod:`benchmarks.invoke`), so the CPU
seconds it spends while ``--calls`` calls complete with ``--concurrency`` in flight, per call, is
what the client costs: caller and callee together (the broker's own CPU is not counted). Rows:
``raw`` (the client library's own request/reply, where :mod:`benchmarks.invoke` has one),
``mesh`` (the default configuration) and ``mesh-shared`` (``resiliency.instances.enabled:
false``: requests to the callee's shared group, no balancer). Rounds alternate the rows, each in
fresh clients; every round is printed, then the median of each row.

``--profile N`` then runs each mesh row once more under cProfile (not in the summary: profiling
slows every call) and prints its ``N`` costliest functions (own time) and the Python function
calls per invocation, which do not depend on the load.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import statistics
import time
from collections.abc import Callable
from typing import Any

from benchmarks import invoke, loops


async def cpu_per_call(client: Any, broker: str, calls: int, concurrency: int,
                       profile: cProfile.Profile | None = None) -> tuple[float, float]:
    """(microseconds of CPU per call, calls per second) of one client, after a warm-up."""
    url = invoke.URLS.get(broker)
    call = await (client.start(broker, url) if isinstance(client, invoke.Mesh) else client.start(url))
    try:
        for _ in range(min(200, calls)):  # warm up: connections, presence, the reply consumer
            await call()
        cpu, wall = time.process_time(), time.perf_counter()
        if profile is not None:
            profile.enable()
        await invoke.in_flight(call, calls, concurrency)
        if profile is not None:
            profile.disable()
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    finally:
        await client.close()
    return cpu / calls * 1e6, calls / wall


def rows(broker: str) -> dict[str, Callable[[], Any]]:
    """The clients measured on ``broker``, by row name."""
    made: dict[str, Callable[[], Any]] = {}
    if broker in invoke.RAW:
        made["raw"] = invoke.RAW[broker]
    made["mesh"] = invoke.Mesh
    made["mesh-shared"] = lambda: invoke.Mesh(instances=False)
    return made


def main(argv: list[str] | None = None) -> dict[str, list[tuple[float, float]]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--broker", default="nats", choices=invoke.ALL)
    parser.add_argument("--calls", type=int, default=5000, help="calls measured per round and row")
    parser.add_argument("--concurrency", type=int, default=50, help="calls in flight")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, each row once per round")
    parser.add_argument("--profile", type=int, default=0, metavar="N", help="profile each mesh row once more")
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default=None, help="event loop")
    args = parser.parse_args(argv)
    loops.choose(args.loop)
    if not invoke.reachable(args.broker, invoke.URLS.get(args.broker)):
        parser.error(f"{args.broker} is not reachable")
    clients = rows(args.broker)
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in clients}
    for round_ in range(args.rounds):
        for name, make in clients.items():
            us, rps = loops.run(cpu_per_call(make(), args.broker, args.calls, args.concurrency))
            results[name].append((us, rps))
            print(f"round {round_ + 1} {name:<12} {us:8.1f} us CPU/call {rps:10,.0f} req/s", flush=True)
    for name, measured in results.items():
        us = statistics.median(r[0] for r in measured)
        rps = statistics.median(r[1] for r in measured)
        print(f"median  {name:<12} {us:8.1f} us CPU/call {rps:10,.0f} req/s")
    for name in ("mesh", "mesh-shared") if args.profile else ():
        profile = cProfile.Profile()
        loops.run(cpu_per_call(clients[name](), args.broker, args.calls, args.concurrency, profile))
        stats = pstats.Stats(profile)
        print(f"{name}, profiled: {stats.total_calls / args.calls:.1f} Python function calls per invocation")
        stats.sort_stats("tottime").print_stats(args.profile)
    return results


if __name__ == "__main__":
    main()
