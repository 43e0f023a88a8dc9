"""The outbox relay: publishes what a store's writes left in its outbox, once per store.

====================  =======================================================================
situation             behaviour
====================  =======================================================================
several instances     one holds the lease ``__mesh<sep>relay`` (an ETag-guarded row in the store
                      itself, renewed each round, taken over when its ``until`` has passed)
normal                rows are published in outbox order, then removed; a local write wakes
                      the relay at once, other instances' writes are seen within ``poll``
broker down           publishing fails: the rows stay, the relay retries with backoff (<= 5 s)
crash                 rows published but not yet removed are sent again on restart (at least
                      once); each keeps the event id it was written with, so consumers can
                      drop duplicates
NATS KV               no outbox: :func:`watch_changes` publishes what the bucket's watch sees
====================  =======================================================================
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from mesh.codecs.structured import from_structured
from mesh.event import Event
from mesh.state.events import CHANGED, DELETED, EXT_ETAG, EXT_STORE
from mesh.state.handle import StateStore

__all__ = ["Relay", "watch_changes"]

Publish = Callable[[str, Event], Awaitable[Any]]


class Relay:
    """Moves one store's outbox rows to the broker (see the module docstring)."""

    def __init__(self, store: StateStore, publish: Publish, owner: str, log: Any = None, *,
                 batch: int = 200, poll: float = 0.5, lease: float = 10.0) -> None:
        self.store = store
        self.publish = publish
        self.owner = owner
        self.log = log or logging.getLogger("mesh.state")
        self.batch = batch
        self.poll = poll
        self.lease = lease
        self.published = 0
        self._wake = asyncio.Event()
        self._held_until = 0.0
        self._stopping = False

    def stop(self) -> None:
        """Make :meth:`run` return at its next turn (a client library may swallow a cancel)."""
        self._stopping = True
        self._wake.set()

    def notify(self) -> None:
        """Wake the relay: a write just added outbox rows."""
        self._wake.set()

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._wake.wait()
        self._wake.clear()

    async def _holds_lease(self) -> bool:
        loop = asyncio.get_running_loop()
        if loop.time() < self._held_until:
            return True
        if await self.store.lease("relay", self.owner, self.lease):
            self._held_until = loop.time() + self.lease / 3
            return True
        return False

    async def run_once(self) -> int:
        """Publish one batch if this instance holds the lease; how many rows went out."""
        if not await self._holds_lease():
            return 0
        backend = self.store.backend
        rows = await backend.outbox_read(self.batch)
        done = []
        try:
            for row in rows:
                await self.publish(row.topic, from_structured(row.body))
                done.append(row)
        finally:
            if done:
                await backend.outbox_ack(done)
                self.published += len(done)
        return len(rows)

    async def run(self) -> None:
        """Relay until cancelled."""
        backoff = 0.1
        while not self._stopping:
            try:
                n = await self.run_once()
                backoff = 0.1
                if n < self.batch:
                    await self._sleep(self.poll)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.log.warning("state store %r: outbox relay failed (%s: %s); retrying in %.1fs",
                                 self.store.name, type(exc).__name__, exc, backoff)
                self._held_until = 0.0
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)


async def watch_changes(store: StateStore, publish: Publish, owner: str, log: Any = None,
                        lease: float = 10.0, ready: asyncio.Event | None = None) -> None:
    """Publish a NATS KV bucket's changes on the store's ``changes`` topic (one owner at a time).

    ``ready`` is set once the watch is running, or once another instance is found to hold it.
    """
    ready = ready or asyncio.Event()
    log = log or logging.getLogger("mesh.state")
    watch = getattr(store.backend, "watch", None)
    assert watch is not None and store.changes is not None
    while not await store.lease("watch", owner, lease):
        ready.set()
        await asyncio.sleep(lease / 3)
    loop = asyncio.get_running_loop()
    renewed = loop.time()
    p = len(store.prefix)
    async for key, value, etag in watch(ready.set):
        if not key.startswith(store.prefix) or key.startswith("__mesh"):
            continue
        k = key[p:]
        data: dict[str, Any] = {"key": k, "etag": etag}
        if value is not None and store.changes_data:
            data["value"] = from_json(value)
        event = Event(CHANGED if value is not None else DELETED, store.source, data, subject=k,
                      id=f"{store.name}-{etag}", extensions={EXT_STORE: store.name, EXT_ETAG: etag, "partitionkey": k})
        while True:
            try:
                await publish(store.changes, event)
                break
            except Exception as exc:
                log.warning("state store %r: publishing a change failed (%s); retrying", store.name, exc)
                await asyncio.sleep(1.0)
        if loop.time() - renewed > lease / 3:
            await store.lease("watch", owner, lease)
            renewed = loop.time()


def from_json(text: str) -> Any:
    """Decode JSON text."""
    import orjson

    return orjson.loads(text)
