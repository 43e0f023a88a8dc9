"""Every benchmark in one command: the machine, the versions, then each table.

    python -m benchmarks                 # the sizes docs/benchmarks.md reports (about 10 minutes)
    python -m benchmarks --quick         # tiny sizes: checks that every row still runs
    python -m benchmarks --brokers nats,rabbitmq
    python -m benchmarks --loop uvloop   # every process (mesh, raw client, FastStream) on uvloop

Each part can also run alone (``python -m benchmarks.pubsub --help`` and so on); every ratio is
computed from one run of one part, the contenders side by side.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from importlib import metadata

from benchmarks import codec, invoke, loops, pubsub, subscriptions

PACKAGES = (
    "aiokafka",
    "aio-pika",
    "aiormq",
    "nats-py",
    "redis",
    "faststream",
    "cloudevents",
    "orjson",
    "pydantic",
    "uvloop",
)
SIZES = {
    "full": {
        "codec": 200_000,
        "pubsub": 20_000,
        "invoke": (2000, 5000),
        "memory": 1_000_000,
        "subscriptions": [100, 1000],
    },
    "quick": {"codec": 2_000, "pubsub": 300, "invoke": (20, 100), "memory": 5_000, "subscriptions": [20]},
}


def machine() -> str:
    """One paragraph: CPU, cores, memory, Python and the client versions."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    try:
        memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        memory_gib = 0.0
    versions = []
    for name in PACKAGES:
        try:
            versions.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{name} (not installed)")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (
        f"{cpu}, {os.cpu_count()} cores, {memory_gib:.0f} GiB, load {load:.2f}; "
        f"{platform.python_implementation()} {platform.python_version()} on {platform.system()}; " + ", ".join(versions)
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="every benchmark: codec, pub/sub, invoke, subscriptions, memory")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (a smoke run, numbers mean nothing)")
    parser.add_argument("--brokers", default=",".join(pubsub.BROKERS), help="comma-separated broker types")
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default=None, help="event loop of every process")
    args = parser.parse_args(argv)
    loop = loops.choose(args.loop)
    sizes = SIZES["quick" if args.quick else "full"]
    brokers = [b.strip() for b in args.brokers.split(",") if b.strip()]
    started = time.monotonic()

    print(f"# machine\n\n{machine()}; event loop {loop}\n", flush=True)
    print(f"# codec (--n {sizes['codec']})\n")
    codec.main(["--n", str(sizes["codec"])])
    names = ["mesh", "raw", "faststream", "mesh-bulk"]  # mesh-bulk: publish_many into a batch subscription
    print(f"\n# publish -> subscribe (--n {sizes['pubsub']})\n")
    print(pubsub.table(pubsub.run(brokers, sizes["pubsub"], names), names))
    n, calls = sizes["invoke"]
    print(f"\n# invoke (--n {n} --calls {calls} --concurrency 50)\n")
    invoke.main(["--brokers", ",".join(b for b in brokers if b in invoke.ALL), "--n", str(n), "--calls", str(calls)])
    print(f"\n# many subscriptions (--n {','.join(map(str, sizes['subscriptions']))})\n")
    print(subscriptions.HEADER, flush=True)
    subscriptions.run(brokers, sizes["subscriptions"])
    print(
        f"\n# memory (--events {sizes['memory']}, a fresh process: the parts above loaded every client)\n", flush=True
    )
    subprocess.run([sys.executable, "-m", "benchmarks.memory", "--events", str(sizes["memory"])], check=True)
    print(f"\n(all parts in {time.monotonic() - started:.0f} s)")


if __name__ == "__main__":
    main()
