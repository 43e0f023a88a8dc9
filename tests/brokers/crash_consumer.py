"""A consumer process for the crash tests: records each handled event, then acks it.

Usage: python -m tests.brokers.crash_consumer TYPE URL TOPIC GROUP OUTFILE
Writes ``ready`` once subscribed, then one line per handled event (its ``i``), flushed before
the ack, so a SIGKILL at any point loses nothing the broker will not redeliver.
"""

from __future__ import annotations

import asyncio
import sys

from mesh.brokers import Delivery, create_broker


async def main(kind: str, url: str, topic: str, group: str, outfile: str) -> None:
    broker = create_broker(kind, None if url == "-" else url)
    await broker.connect()
    with open(outfile, "a", buffering=1) as out:

        async def handler(delivery: Delivery) -> None:
            assert delivery.event is not None
            out.write(f"{delivery.event.data['i']}\n")
            out.flush()
            await asyncio.sleep(0.002)  # a handler that takes a moment: the kill lands mid-stream
            await delivery.ack()

        await broker.subscribe(topic, group, handler, concurrency=4)
        out.write("ready\n")
        await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:6]))
