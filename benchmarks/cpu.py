"""CPU per message on each side of the pub/sub benchmark, and where it goes.

    python -m benchmarks.cpu --broker nats [--n 50000] [--contenders raw,mesh] [--profile 25]

Throughput on two shared cores mixes three processes (producer, consumer, broker); the CPU
seconds each side spends per message do not. For each contender this measures, in this process:

- **producer**: the contender's producer alone, CPU from its first publish to its last
  confirmation, divided by ``n`` (no consumer runs);
- **consumer**: the contender's consumer, CPU from ready to the ``n``-th message handled, while
  the mesh's producer feeds it from a child process: every consumer reads the same CloudEvents.

``--profile N`` runs each measured side under cProfile and prints its ``N`` costliest functions
(own time): the numbers docs/benchmarks.md quotes come from here.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import multiprocessing as mp
import pstats
import time
import uuid
from collections.abc import Iterator
from typing import Any

from benchmarks import contenders, loops, pubsub


@contextlib.contextmanager
def _profiled(top: int) -> Iterator[None]:
    if not top:
        yield
        return
    profile = cProfile.Profile()
    profile.enable()
    try:
        yield
    finally:
        profile.disable()
        pstats.Stats(profile).sort_stats("tottime").print_stats(top)


async def _prepare(kind: str, url: str, topic: str) -> None:
    """What a producer needs before anyone consumes: a Kafka topic, a JetStream stream."""
    if kind == "kafka":
        await pubsub._kafka_topic(url, topic)
    elif kind == "jetstream":
        import nats

        nc = await nats.connect(url)
        try:
            await nc.jetstream().add_stream(name=topic.replace(".", "_"), subjects=[topic])
        finally:
            await nc.close()


def producer_cpu(name: str, kind: str, url: str, n: int, top: int = 0) -> float:
    """Microseconds of CPU per message for ``name``'s producer alone."""
    topic = f"bench-cpu-{uuid.uuid4().hex[:8]}"
    loops.run(_prepare(kind, url, topic))
    marks: list[float] = []
    contenders.on_first_publish = lambda: marks.append(time.process_time())
    try:
        with _profiled(top):
            loops.run(contenders.PRODUCERS[name](kind, url, topic, n))
        return (time.process_time() - marks[0]) / n * 1e6
    finally:
        contenders.on_first_publish = None
        loops.run(pubsub._cleanup(kind, url, topic, "g"))


class _Ready:
    """The consumer's ``ready``: starts the feeding producer and the clock."""

    def __init__(self, start: Any) -> None:
        self.start, self.cpu = start, 0.0

    def set(self) -> None:
        self.cpu = time.process_time()
        self.start()


class _Done:
    def __init__(self) -> None:
        self.cpu = 0.0

    def put(self, _: float) -> None:
        self.cpu = time.process_time()


def consumer_cpu(name: str, kind: str, url: str, n: int, top: int = 0, feeder: str = "mesh") -> float:
    """Microseconds of CPU per message for ``name``'s consumer, fed by ``feeder``'s producer."""
    ctx = mp.get_context("spawn")
    topic, group = f"bench-cpu-{uuid.uuid4().hex[:8]}", f"g-{uuid.uuid4().hex[:6]}"
    if kind == "kafka":
        loops.run(pubsub._kafka_topic(url, topic))
    started: Any = ctx.Queue()
    producer = ctx.Process(target=pubsub._producer, args=(feeder, kind, url, topic, n, started))
    ready, done = _Ready(producer.start), _Done()
    try:
        with _profiled(top):
            loops.run(contenders.CONSUMERS[name](kind, url, topic, group, n, ready, done))
        return (done.cpu - ready.cpu) / n * 1e6
    finally:
        producer.join(60)
        if producer.is_alive():
            producer.kill()
        loops.run(pubsub._cleanup(kind, url, topic, group))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="CPU per message on each side of pub/sub")
    parser.add_argument("--broker", default="nats", choices=[b for b in pubsub.BROKERS if b != "memory"])
    parser.add_argument("--n", type=int, default=50_000, help="messages per measurement")
    parser.add_argument("--contenders", default="raw,mesh")
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default=None, help="event loop of every process")
    parser.add_argument("--profile", type=int, default=0, metavar="N", help="print cProfile's N costliest functions")
    args = parser.parse_args(argv)
    loops.choose(args.loop)
    tansu = None
    url = pubsub.URLS.get(args.broker, "")
    if args.broker == "kafka":
        from mesh.testing import Tansu

        tansu = Tansu()
        url = tansu.url
    try:
        print(f"{'broker':<10} {'contender':<11} {'producer us/msg':>16} {'consumer us/msg':>16}")
        for name in args.contenders.split(","):
            produce = producer_cpu(name, args.broker, url, args.n, args.profile)
            consume = consumer_cpu(name, args.broker, url, args.n, args.profile)
            print(f"{args.broker:<10} {name:<11} {produce:>16.1f} {consume:>16.1f}", flush=True)
    finally:
        if tansu is not None:
            tansu.stop()


if __name__ == "__main__":
    main()
