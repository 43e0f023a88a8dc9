"""The archive's writer: a buffer filled on the hot path, written in batches by one background task.

What is guaranteed ("acknowledged" means the row's transaction committed):

- An event is acknowledged once the batch holding it committed. Nothing is removed from the
  buffer before that: a failed write is retried (with backoff) with the same rows, in order.
- ``durable: true``: ``record(..., wait=True)`` returns only once the event is acknowledged, so a
  publish that returned, or a consumed delivery that was acked, is in the archive. Dead letters
  are always recorded this way (they are rare, and ``mesh dlq`` depends on them). A wait longer
  than ``wait_timeout`` raises :class:`~mesh.archive.ArchiveError`: the publish fails (a dead
  letter's delivery comes back later) while the row stays buffered.
- Otherwise the publish path only appends to the buffer; a batch is written every
  ``flush_interval`` or as soon as ``batch_size`` rows wait. :meth:`Recorder.flush` waits until
  everything recorded so far is acknowledged, and stopping the app (``app.on_stop``) flushes. A
  process that is killed loses what was still buffered (at most ``flush_interval`` of events):
  those were never acknowledged.
- When ``max_buffer`` events wait (the database is slow or down), ``when_full: wait`` makes the
  caller wait for room and ``drop`` skips the event and counts it in :attr:`Recorder.dropped`.
"""

from __future__ import annotations

import asyncio
import fnmatch
import logging
from collections import deque
from datetime import datetime, timedelta
from itertools import islice
from typing import Any

from mesh.archive import DEAD_LETTER_MARK, ArchiveError, ArchiveRow, ArchiveSettings, ArchiveStore
from mesh.brokers.base import RESERVED_PREFIX
from mesh.event import Event, now

__all__ = ["Recorder"]

log = logging.getLogger("mesh.archive")

# (topic, event, kind, group, seen at, future to resolve on commit); event None is a flush barrier
_Item = tuple[str, Event | None, str, str | None, datetime, "asyncio.Future[None] | None"]
MAX_BACKOFF = 5.0
CLOSE_ATTEMPTS = 3


class Recorder:
    """Buffers events and writes them to an :class:`~mesh.archive.ArchiveStore` in batches."""

    def __init__(self, store: ArchiveStore, settings: ArchiveSettings, app: str) -> None:
        self.store = store
        self.settings = settings
        self.app = app
        self.recorded = 0
        """Events written (duplicates of rows already there included)."""
        self.dropped = 0
        """Events not recorded because the buffer was full (``when_full: drop``) or unserialisable."""
        self._buffer: deque[_Item] = deque()
        self._wake = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._waiters = 0
        self._wanted: dict[str, bool] = {}
        self._task: asyncio.Task[None] | None = None
        self._inflight: asyncio.Task[bool] | None = None
        self._opened = False
        self._closed = False
        self._failures = 0
        self._commit_lock = asyncio.Lock()

    # -- what to record ------------------------------------------------------------------------

    def wants(self, topic: str, event: Event | None = None) -> bool:
        """Whether events on ``topic`` are recorded (dead letters always, with ``dead_letters``)."""
        if event is not None and self.settings.dead_letters and DEAD_LETTER_MARK in event.extensions:
            return not topic.startswith(RESERVED_PREFIX)
        wanted = self._wanted.get(topic)
        if wanted is None:
            s = self.settings
            wanted = (
                not topic.startswith(RESERVED_PREFIX)
                and any(fnmatch.fnmatchcase(topic, p) for p in s.topics)
                and not any(fnmatch.fnmatchcase(topic, p) for p in s.exclude)
            )
            if len(self._wanted) < 10_000:
                self._wanted[topic] = wanted
        return wanted

    # -- the hot path --------------------------------------------------------------------------

    def add_nowait(self, topic: str, event: Event, kind: str, group: str | None = None) -> bool:
        """Buffer an event without waiting; ``False`` when the buffer is full (call :meth:`record`)."""
        buffer = self._buffer
        if len(buffer) >= self.settings.max_buffer:
            return False
        buffer.append((topic, event, kind, group, now(), None))
        if len(buffer) >= self.settings.batch_size:
            self._wake.set()
        return True

    async def record(self, topic: str, event: Event, kind: str, group: str | None = None, wait: bool = False) -> None:
        """Buffer an event; with ``wait``, return once it is committed (group commit)."""
        if self._closed:
            raise ArchiveError("the archive recorder is closed")
        while len(self._buffer) >= self.settings.max_buffer:
            if self.settings.when_full == "drop":
                self.dropped += 1
                if self.dropped % 1000 == 1:
                    log.error(
                        "archive buffer full (%d events): %d events not recorded", len(self._buffer), self.dropped
                    )
                return
            self._room.clear()
            self._wake.set()
            await self._room.wait()
        if not wait:
            self._buffer.append((topic, event, kind, group, now(), None))
            if len(self._buffer) >= self.settings.batch_size:
                self._wake.set()
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._buffer.append((topic, event, kind, group, now(), future))
        self._waiters += 1
        self._wake.set()
        try:
            await asyncio.wait_for(asyncio.shield(future), self.settings.wait_timeout)
        except TimeoutError:
            raise ArchiveError(
                f"the archive did not commit event {event.id} within {self.settings.wait_timeout:g}s "
                "(it stays buffered and is written once the database answers)"
            ) from None
        finally:
            self._waiters -= 1

    async def flush(self) -> None:
        """Return once every event recorded before this call is committed."""
        if not self._buffer and (self._inflight is None or self._inflight.done()):
            return
        if self._task is None or self._task.done():
            await self._drain()
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._buffer.append(("", None, "", None, now(), future))
        self._waiters += 1
        self._wake.set()
        try:
            await asyncio.shield(future)
        finally:
            self._waiters -= 1

    @property
    def pending(self) -> int:
        """Events buffered and not yet committed."""
        return sum(1 for item in self._buffer if item[1] is not None)

    # -- the writer ----------------------------------------------------------------------------

    def start(self) -> asyncio.Task[None]:
        """Start the background writer (``App.spawn`` it so it stops with the app)."""
        self._task = asyncio.get_running_loop().create_task(self.run(), name=f"mesh-archive:{self.app}")
        return self._task

    async def run(self) -> None:
        """The writer loop: open the store, then write batches and sweep old rows until cancelled."""
        self._task = asyncio.current_task()
        await self._open_with_retry()
        loop = asyncio.get_running_loop()
        s = self.settings
        next_sweep = loop.time()
        while True:
            if s.retention is not None and loop.time() >= next_sweep:
                await self._sweep()
                next_sweep = loop.time() + s.retention_interval
            buffer = self._buffer
            if not buffer:
                self._wake.clear()
                await self._sleep(None if s.retention is None else max(0.0, next_sweep - loop.time()))
                continue
            if len(buffer) < s.batch_size and not self._waiters:
                self._wake.clear()
                await self._sleep(s.flush_interval)
            if not await self._write_batch():
                await asyncio.sleep(min(MAX_BACKOFF, 0.1 * 2 ** min(self._failures, 6)))

    async def _sleep(self, timeout: float | None) -> None:
        try:
            await asyncio.wait_for(self._wake.wait(), timeout)
        except TimeoutError:
            pass

    async def _open_with_retry(self) -> None:
        attempt = 0
        while not self._opened:
            try:
                await self.store.open()
                self._opened = True
            except ArchiveError as exc:
                attempt += 1
                if attempt == 1 or attempt % 20 == 0:
                    log.error(
                        "%s: cannot open the archive (attempt %d, retrying; events are buffered): %s",
                        self.app,
                        attempt,
                        exc,
                    )
                await asyncio.sleep(min(MAX_BACKOFF, 0.1 * 2 ** min(attempt, 6)))

    async def _write_batch(self) -> bool:
        """Write the oldest batch; the write goes on even if the writer is cancelled meanwhile."""
        task = self._inflight = asyncio.get_running_loop().create_task(self._commit())
        return await asyncio.shield(task)

    async def _commit(self) -> bool:
        async with self._commit_lock:  # one batch at a time: rows leave the buffer only once written
            return await self._commit_locked()

    async def _commit_locked(self) -> bool:
        buffer = self._buffer
        n = min(len(buffer), self.settings.batch_size)
        items = list(islice(buffer, n))
        rows = []
        for topic, event, kind, group, seen, _ in items:
            if event is None:
                continue
            try:
                rows.append(ArchiveRow.of(topic, event, kind=kind, app=self.app, recorded=seen, group=group))
            except Exception as exc:  # data that cannot be JSON: reported, never blocks the archive
                self.dropped += 1
                log.error("cannot archive event %s on %s: %s", event.id, topic, exc)
        try:
            await self.store.write(rows)
        except ArchiveError as exc:
            self._failures += 1
            if self._failures == 1 or self._failures % 20 == 0:
                log.error(
                    "archive write failed (attempt %d, %d events buffered, retrying): %s",
                    self._failures,
                    len(buffer),
                    exc,
                )
            return False
        self._failures = 0
        for _ in range(n):
            item = buffer.popleft()
            future = item[5]
            if future is not None and not future.done():
                future.set_result(None)
        self.recorded += len(rows)
        if len(buffer) < self.settings.max_buffer:
            self._room.set()
        return True

    async def _sweep(self) -> None:
        retention = self.settings.retention
        if retention is None:
            return
        try:
            gone = await self.store.delete_older(now() - timedelta(seconds=retention))
        except ArchiveError as exc:
            log.warning("archive retention sweep failed: %s", exc)
            return
        if gone:
            log.info("archive retention: %d rows older than %gs deleted", gone, retention)

    async def _drain(self) -> None:
        """Write everything buffered now (used at close, when the writer is gone)."""
        inflight = self._inflight
        if inflight is not None and not inflight.done():
            await asyncio.wait([inflight])
        if not self._buffer:
            return
        if not self._opened:
            try:
                await self.store.open()
                self._opened = True
            except ArchiveError as exc:
                log.error("cannot open the archive to flush %d events: %s", self.pending, exc)
                return
        attempts = 0
        while self._buffer and attempts < CLOSE_ATTEMPTS:
            if await self._write_batch():
                attempts = 0
            else:
                attempts += 1
                await asyncio.sleep(0.2 * attempts)

    async def close(self) -> None:
        """Stop the writer, write what is buffered, close the store (``app.on_stop``)."""
        if self._closed:
            return
        self._closed = True
        task = self._task
        if task is not None and not task.done() and task is not asyncio.current_task():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        await self._drain()
        lost = self.pending
        if lost:
            log.error("the archive is unreachable: %d buffered events were not recorded", lost)
        for *_, future in self._buffer:
            if future is not None and not future.done():
                future.set_exception(ArchiveError("the archive closed before the event was recorded"))
                future.exception()
        self._buffer.clear()
        self._room.set()
        if self._opened:
            await self.store.close()

    def stats(self) -> dict[str, Any]:
        """Counters for logs and tests."""
        return {"recorded": self.recorded, "dropped": self.dropped, "pending": self.pending}
