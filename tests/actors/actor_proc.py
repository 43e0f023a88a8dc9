"""One actor-hosting instance in a process of its own: ``python -m tests.actors.actor_proc CONFIG_JSON NS``.

Hosts ``Counter``: every ``add`` turn records its start and end on Redis's clock
(``<ns>:turns:<id>``), so the test can check that no two turns of one actor overlapped anywhere.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from typing import Any

import orjson
import redis.asyncio as aioredis

from mesh import Actor, App, Event


def build(config: dict[str, Any], ns: str) -> App:
    app = App("actor-test", config=config)
    r = aioredis.Redis.from_url("redis://127.0.0.1:6379/0")

    @app.actor("Counter", idle_after=60)
    class Counter(Actor):
        async def add(self, token: str) -> int:
            start = await r.time()
            tokens = await self.state.get("tokens", list[str]) or []
            await asyncio.sleep(0.001)
            tokens.append(token)
            self.state.set("tokens", tokens)
            end = await r.time()
            # the turn's span on Redis's clock; the test checks that no two spans of one actor overlap
            await r.rpush(f"{ns}:turns:{self.id}", f"{start[0] * 1_000_000 + start[1]} {end[0] * 1_000_000 + end[1]}")
            return len(tokens)

        async def tokens(self) -> list[str]:
            return await self.state.get("tokens", list[str]) or []

        async def where(self) -> str:
            return app.instance_id

        async def later(self, seconds: float) -> None:
            await self.remind("wake", due=seconds, data={"from": app.instance_id})

        async def on_reminder(self, name: str, data: Any) -> None:
            self.state.set("reminded", [name, data, app.instance_id])

        async def reminded(self) -> Any:
            return await self.state.get("reminded")

        async def on_event(self, event: Event) -> None:
            seen = await self.state.get("events", list[str]) or []
            self.state.set("events", [*seen, event.id])

        async def events(self) -> list[str]:
            return await self.state.get("events", list[str]) or []

    return app


async def main(config_json: str, ns: str) -> None:
    if os.environ.get("MESH_ACTORS_DEBUG"):
        logging.basicConfig(level=logging.DEBUG, format=f"%(asctime)s {os.getpid()} %(name)s %(message)s")
        for noisy in ("nats", "asyncio", "aiormq", "aio_pika", "aiokafka"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
    app = build(orjson.loads(config_json), ns)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    started = loop.create_task(app.run(stop))
    while not app.started:
        if started.done():
            started.result()
        await asyncio.sleep(0.01)
    print("ready", app.instance_id, flush=True)
    await started


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
