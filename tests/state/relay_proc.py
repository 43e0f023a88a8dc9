"""A relay in a process of its own, for the crash test: ``python -m tests.state.relay_proc DB TOPIC URL``."""

from __future__ import annotations

import asyncio
import logging
import sys

from mesh.brokers import create_broker
from mesh.components import Registry
from mesh.event import Event
from mesh.state.block import StateBlock


async def main(db: str, topic: str, url: str) -> None:
    broker = create_broker("redis", url)
    await broker.connect()

    async def publish(t: str, event: Event) -> None:
        await broker.publish(t, event)
        await asyncio.sleep(0.002)  # slow enough that a SIGKILL lands mid-batch

    block = StateBlock("crash", {"s": {"type": "sqlite", "url": f"sqlite:///{db}", "changes": topic}},
                       Registry(), publish, asyncio.ensure_future, logging.getLogger("relay"))
    await block.start()
    print("started", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
