"""What the contract checks share: the broker factory and name types, and waiting for a condition."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from mesh.brokers.base import Broker

__all__ = ["MakeBroker", "Names", "wait_for"]

MakeBroker = Callable[..., Awaitable[Broker]]
"""``await make_broker(**options)``: a new connected broker of the type under test."""
Names = Callable[..., str]
"""``names(prefix="t")``: a topic or group name no other test uses."""


async def wait_for(predicate: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    """Poll until ``predicate()`` is true; ``AssertionError`` naming ``what`` after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.01)
