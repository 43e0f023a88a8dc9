"""What instance choice costs an invocation: the shared group next to a chosen instance's destination.

    python -m benchmarks.resiliency [--brokers memory,nats,redis,rabbitmq] [--n 1000] [--calls 3000]

Per reachable broker, in one process and event loop: two callee instances of one app with an
``echo`` method (idempotent) and a caller, measured twice: ``resiliency.instances.enabled: false``
(every request to the app's shared group, as before) and the default (each request to one
instance chosen by power of two choices, on its own destination). Sequential p50/p99 over
``--n`` calls and throughput with 50 calls in flight; the ratio is chosen / group from this run.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from benchmarks.invoke import PAYLOAD, URLS, _name, measure, reachable

ALL = ("memory", "nats", "redis", "rabbitmq")


async def one(broker: str, url: str | None, enabled: bool, n: int, calls: int) -> tuple[float, float, float]:
    from mesh import App

    options: dict[str, Any] = {"name": _name("hub")} if broker == "memory" else {}
    config = {"broker": {"type": broker, "url": url, "namespace": _name("ns") + ".", "options": options},
              "resiliency": {"instances": {"enabled": enabled}}}
    callees = [App("bench-callee", config=config) for _ in range(2)]
    for app in callees:
        @app.method("echo", idempotent=True)
        async def echo(data: Any) -> Any:
            return data

    caller = App("bench-caller", config=config)
    for app in callees:
        await app.start()
    await caller.start()
    try:
        await caller.presence.listen()
        for _ in range(200):  # both instances announced (they answer the caller's probe at once)
            if len(caller.presence.live("bench-callee")) >= 2:
                break
            await asyncio.sleep(0.05)

        async def call() -> Any:
            return await caller.invoke("bench-callee", "echo", PAYLOAD, timeout=10)

        return await measure(call, n, calls, 50)
    finally:
        await caller.stop()
        for app in callees:
            await app.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--brokers", default=",".join(ALL))
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--calls", type=int, default=3000)
    args = parser.parse_args(argv)
    print(f"{'broker':<10} {'requests to':<10} {'p50 ms':>8} {'p99 ms':>8} {'req/s @50':>10} {'ratio':>7}")
    for broker in args.brokers.split(","):
        url = URLS.get(broker)
        if not reachable(broker, url):
            print(f"{broker}: not reachable, skipped")
            continue
        group = asyncio.run(one(broker, url, False, args.n, args.calls))
        chosen = asyncio.run(one(broker, url, True, args.n, args.calls))
        for label, (p50, p99, rps) in (("group", group), ("chosen", chosen)):
            ratio = f"{rps / group[2]:.2f}x" if label == "chosen" else ""
            print(f"{broker:<10} {label:<10} {p50:>8.2f} {p99:>8.2f} {rps:>10,.0f} {ratio:>7}")


if __name__ == "__main__":
    main()
