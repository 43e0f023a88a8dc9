"""Two instances of one app on one store: one relay publishes (a lease), the other takes over when it stops."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter

import pytest

from mesh.components import Registry
from mesh.event import Event
from mesh.state.block import StateBlock
from tests.support import DEFAULT_URLS, reachable, unavailable, unique, wait_for

pytestmark = [pytest.mark.redis, pytest.mark.timeout(90)]

LEASE = 2.0


async def test_two_instances_publish_each_change_once_and_the_survivor_takes_over() -> None:
    if not reachable(DEFAULT_URLS["redis"], 6379):
        unavailable("redis at 127.0.0.1:6379")
    config = {"s": {"type": "redis", "url": DEFAULT_URLS["redis"], "namespace": unique("relays"),
                    "changes": "carts.changes", "relay_lease": LEASE}}
    published: dict[str, list[str]] = {"a": [], "b": []}

    def block(name: str) -> StateBlock:
        async def publish(topic: str, event: Event) -> None:
            published[name].append(event.id)

        return StateBlock("shop", config, Registry(), publish, asyncio.ensure_future, logging.getLogger(name))

    blocks = {"a": block("a"), "b": block("b")}
    for b in blocks.values():
        await b.start()
    try:
        stores = [blocks["a"].store("s"), blocks["b"].store("s")]
        for i in range(500):
            await stores[i % 2].set(f"k{i % 50}", {"i": i})  # both instances write
        await wait_for(lambda: len(published["a"]) + len(published["b"]) >= 500, 30, "500 changes published")
        await asyncio.sleep(LEASE)  # the other relay has polled several times: it must not publish
        ids = published["a"] + published["b"]
        assert len(ids) == 500 and max(Counter(ids).values()) == 1, "each change published exactly once"
        holder, other = ("a", "b") if published["a"] else ("b", "a")
        assert published[other] == [], "only the lease holder publishes"

        await blocks[holder].stop()
        loop = asyncio.get_running_loop()
        stopped = loop.time()
        survivor = blocks[other].store("s")
        for i in range(20):
            await survivor.set(f"after-{i}", i)
        await wait_for(lambda: len(published[other]) >= 20, LEASE + 5, "the survivor to take over")
        took = loop.time() - stopped
        assert took < LEASE + 1.0, f"takeover took {took:.1f}s, lease {LEASE}s"
        assert len(set(published[other])) == 20 and len(published[holder]) == 500
    finally:
        for b in blocks.values():
            if b._started:
                await b.store("s").backend.destroy()
            await b.stop()
