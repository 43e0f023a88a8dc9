"""CPU per invocation, with instance choice on and off, and where it goes.

    python -m benchmarks.invoke_cpu [--broker nats] [--calls 10000] [--reps 3] [--profile 25]

The throughput of :mod:`benchmarks.invoke` on two shared cores swings with whatever else runs;
the CPU seconds the process spends per call do much less. Each row is :class:`~benchmarks.invoke.Mesh`
(caller and callee in this process: both sides of every call, and the client library) measured
over ``--calls`` calls with ``--concurrency`` in flight, after a warm-up, as
``time.process_time()`` per call; ``instances`` on is the default configuration, off is
``resiliency.instances.enabled: false`` (requests to the callee's shared group, no balancer).
The two settings alternate ``--reps`` times, each in a fresh pair of Apps; the summary is the
median and the lowest of each.

``--profile N`` then runs each setting once more under cProfile (not in the summary: profiling
slows every call) and prints its ``N`` costliest functions (own time) and the Python function
calls per invocation, which do not depend on the load.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import statistics
import time

from benchmarks import loops
from benchmarks.invoke import URLS, Mesh, reachable


async def cpu_per_call(broker: str, url: str | None, instances: bool, calls: int, concurrency: int,
                       profile: cProfile.Profile | None = None) -> float:
    """Microseconds of CPU per call, both Apps in this process (see the module docstring)."""
    mesh = Mesh(instances)
    call = await mesh.start(broker, url)
    try:
        for _ in range(min(200, calls)):  # warm up: connections, presence, the reply consumer
            await call()
        left = calls

        async def worker() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                await call()

        start = time.process_time()
        if profile is not None:
            profile.enable()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        if profile is not None:
            profile.disable()
        return (time.process_time() - start) / calls * 1e6
    finally:
        await mesh.close()


def main(argv: list[str] | None = None) -> dict[bool, list[float]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--broker", default="nats", help="a broker type of benchmarks.invoke")
    parser.add_argument("--calls", type=int, default=10000, help="calls measured per repetition")
    parser.add_argument("--concurrency", type=int, default=50, help="calls in flight")
    parser.add_argument("--reps", type=int, default=3, help="repetitions of each setting, alternating")
    parser.add_argument("--profile", type=int, default=0, metavar="N", help="profile the last repetitions")
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default=None, help="event loop")
    args = parser.parse_args(argv)
    loops.choose(args.loop)
    url = URLS.get(args.broker)
    if not reachable(args.broker, url):
        parser.error(f"{args.broker} is not reachable")
    results: dict[bool, list[float]] = {True: [], False: []}
    for _ in range(args.reps):
        for instances in (True, False):
            us = loops.run(cpu_per_call(args.broker, url, instances, args.calls, args.concurrency))
            results[instances].append(us)
            print(f"instances {'on ' if instances else 'off'}  {us:7.1f} us CPU per call", flush=True)
    for instances, values in results.items():
        print(f"instances {'on' if instances else 'off'}: median {statistics.median(values):.1f} us, "
              f"lowest {min(values):.1f} us CPU per call ({len(values)} runs)")
    for instances in (True, False) if args.profile else ():
        profile = cProfile.Profile()
        loops.run(cpu_per_call(args.broker, url, instances, args.calls, args.concurrency, profile))
        stats = pstats.Stats(profile)
        print(f"instances {'on' if instances else 'off'}, profiled: "
              f"{stats.total_calls / args.calls:.1f} Python function calls per invocation")
        stats.sort_stats("tottime").print_stats(args.profile)
    return results


if __name__ == "__main__":
    main()
