"""The reader shared by a broker's subscriptions of one group: one XREADGROUP for many streams.

A broker with a thousand subscriptions in its app's group does not hold a thousand blocking
connections and run a thousand housekeeping loops: a :class:`GroupReader` is one consumer name
of the group reading up to :data:`STREAMS_PER_READER` streams with a single
``XREADGROUP ... STREAMS s1 s2 ... > > ...`` on one connection, and does the periodic work of
all of them in one script call each:

=========================  ===================================================================
what                       how, for every stream of the reader at once
=========================  ===================================================================
new entries                one XREADGROUP (``COUNT`` per stream, ``BLOCK``); a stream whose
                           subscription has ``batch`` entries waiting is left out of the read
                           until it catches up (its entries stay in the stream)
due delayed entries        one ``due_all`` script call every ``delay_poll_ms``
abandoned entries          one ``auto_all`` script call (XAUTOCLAIM per stream) every
                           ``claim_interval_ms``
the lease of held entries  ``renew`` per stream with held entries every third of
                           ``claim_idle_ms``, coalesced into one pipeline
idle consumers, acks       ``forget`` every minute, XACKs left over: coalesced likewise
a deleted stream or group  every group of the reader created again (XGROUP CREATE MKSTREAM)
=========================  ===================================================================

Each subscription (:class:`~.consumer.RedisConsumer`) keeps its own worker, handler
concurrency, acks, immediate redeliveries and stop; the reader only hands it entries. Two
subscriptions to one stream and group in one broker are two consumers: they get two readers.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from contextlib import suppress
from typing import Any

from redis.exceptions import RedisError, ResponseError

from mesh.brokers.redis.connection import RedisConnection
from mesh.brokers.redis.consumer import RedisConsumer
from mesh.errors import BrokerError
from mesh.logs import log_connection_lost, log_reconnected

__all__ = ["FORGET_INTERVAL", "STREAMS_PER_READER", "GroupReader"]

log = logging.getLogger("mesh.broker.redis")

STREAMS_PER_READER = 1000
"""Most streams one reader (one blocking connection, one XREADGROUP) reads."""
FORGET_INTERVAL = 60.0
"""Seconds between two rounds of forgetting idle consumers that own nothing."""


async def _all(calls: Sequence[Any]) -> None:
    """Await every call (they ride one pipeline); raise the first error once all are done."""
    if not calls:
        return
    results = await asyncio.gather(*calls, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result


class GroupReader:
    """One consumer name of one group reading many streams (see the module docstring).

    ``on_idle`` is called with the reader once its last subscription left.
    """

    def __init__(self, conn: RedisConnection, group: str, name: str, on_idle: Callable[[GroupReader], None]) -> None:
        self.group = group
        self.name = name
        self._conn = conn
        self._opts = conn.settings
        self._on_idle = on_idle
        self.reading: dict[bytes, RedisConsumer] = {}
        """Subscriptions read, by stream key."""
        self.members: list[RedisConsumer] = []
        """Every subscription not yet stopped (a draining one still has its lease renewed)."""
        self._joined: list[RedisConsumer] = []
        self._wake = asyncio.Event()
        self._read: asyncio.Future[None] | None = None  # set while an XREADGROUP is on the wire
        self._task: asyncio.Task[None] | None = None
        self._lease: asyncio.Task[None] | None = None
        self._lost = False  # the connection failed and no read has worked since
        self._next_due = self._next_claim = self._next_forget = 0.0

    def has_room(self, stream: str) -> bool:
        """Whether a subscription to ``stream`` can join (not read here yet, the reader not full)."""
        return stream.encode() not in self.reading and len(self.members) < STREAMS_PER_READER

    def add(self, sub: RedisConsumer) -> None:
        """Read ``sub``'s stream from the next read on."""
        self.reading[sub.key] = sub
        self.members.append(sub)
        self._joined.append(sub)
        self._wake.set()
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._loop(), name=f"mesh-redis-read:{self.group}:{self.name}")
        if self._lease is None or self._lease.done():
            self._lease = loop.create_task(self._renew_loop(), name=f"mesh-redis-lease:{self.group}:{self.name}")

    async def remove(self, sub: RedisConsumer) -> None:
        """Stop reading ``sub``'s stream; returns once no read in flight can hand it entries."""
        if self.reading.get(sub.key) is sub:
            del self.reading[sub.key]
        with suppress(ValueError):
            self._joined.remove(sub)
        read = self._read
        if read is not None:
            await asyncio.shield(read)

    def detach(self, sub: RedisConsumer) -> None:
        """Forget ``sub`` altogether (its lease is no longer renewed); the last one ends the reader."""
        with suppress(ValueError):
            self.members.remove(sub)
        if not self.members:
            self._wake.set()
            if self._lease is not None:
                self._lease.cancel()
            self._on_idle(self)

    def wake(self) -> None:
        """A subscription left out of reads has room again: read at once, not after ``block_ms``."""
        self._wake.set()

    def kill(self) -> None:
        """Stop reading and renewing at once, as a killed process would (tests)."""
        for task in (self._task, self._lease):
            if task is not None:
                task.cancel()

    # -- the read loop ------------------------------------------------------------------------

    async def _loop(self) -> None:
        opts = self._opts
        execute = self._conn.execute
        head: tuple[Any, ...] = ("XREADGROUP", "GROUP", self.group, self.name, "COUNT", opts.batch)
        head += ("BLOCK", opts.block_ms, "STREAMS")
        backoff = 0.1
        loop = asyncio.get_running_loop()
        while self.members:
            try:
                await self._housekeeping()
                self._wake.clear()  # before looking: a wake() from here on is not lost
                subs = [sub for sub in self.reading.values() if sub.wants_more()]
                if not subs:
                    with suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), opts.block_ms / 1000)
                    continue
                read = self._read = loop.create_future()
                try:
                    reply = await execute(*head, *(sub.stream for sub in subs), *(">",) * len(subs))
                finally:
                    self._read = None
                    read.set_result(None)
                if reply:
                    reading = self.reading
                    for key, entries in reply:
                        sub = reading.get(key)
                        if sub is not None:
                            sub.take(entries)
                backoff = 0.1
                if self._lost:
                    self._lost = False
                    log_reconnected("redis", self._conn.address)
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError, BrokerError) as exc:
                if not self.members:
                    break
                if isinstance(exc, ResponseError) and str(exc).startswith(("NOGROUP", "UNBLOCKED")):
                    # a stream (or its group) was deleted under us: the topology comes back
                    log.warning("redis group %s is gone from a stream; creating it again", self.group)
                    await self._create_groups()
                    continue
                if not isinstance(exc, ResponseError) and not self._lost:  # the connection, not a command
                    self._lost = True
                    log_connection_lost("redis", self._conn.address, str(exc))
                elif not self._lost:
                    log.warning("redis reader %s of group %s: %s", self.name, self.group, exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    async def _create_groups(self) -> None:
        call = self._conn.call
        for sub in list(self.reading.values()):
            with suppress(ResponseError):
                await call("XGROUP", "CREATE", sub.stream, self.group, "0", "MKSTREAM")

    async def _housekeeping(self) -> None:
        """Between reads: new subscriptions' own entries, acks, due and abandoned entries, tidying."""
        if self._joined:
            joined, self._joined = self._joined, []
            try:
                await _all([sub.joined() for sub in joined])
            except BaseException:
                self._joined[:0] = [sub for sub in joined if sub.running]
                raise
        subs = list(self.reading.values())
        await _all([sub.flush_acks() for sub in subs if sub.acks])
        opts = self._opts
        now = asyncio.get_running_loop().time()
        if now >= self._next_due and subs:
            self._next_due = now + opts.delay_poll_ms / 1000
            reply = await self._script(subs, "due_all", opts.batch)
            for i in range(0, len(reply), 3):
                sub = subs[int(reply[i]) - 1]
                sub.take_claimed(reply[i + 1], reply[i + 2])
                if len(reply[i + 1]) >= opts.batch:
                    self._next_due = now  # more may be due
        if now >= self._next_claim and subs:
            self._next_claim = now + opts.claim_interval_ms / 1000
            reply = await self._script(subs, "auto_all", opts.claim_idle_ms, opts.batch, *(s.cursor for s in subs))
            for i in range(0, len(reply), 4):
                sub = subs[int(reply[i]) - 1]
                sub.cursor = reply[i + 1]
                sub.take_claimed(reply[i + 2], reply[i + 3])
                if len(reply[i + 2]) >= opts.batch:
                    self._next_claim = now
        if now >= self._next_forget:
            self._next_forget = now + FORGET_INTERVAL
            await _all([sub.forget() for sub in subs])

    async def _script(self, subs: list[RedisConsumer], mode: str, *args: Any) -> Any:
        keys = [key for sub in subs for key in sub.keys]
        return await self._conn.run_script(keys, (self.group, self.name, mode, *args))

    async def _renew_loop(self) -> None:
        """Keep held entries from being taken over while their subscription lives (a lease)."""
        every = self._opts.claim_idle_ms / 3000
        while self.members:
            await asyncio.sleep(every)
            try:
                await _all([sub.renew() for sub in list(self.members) if sub.held])
            except (RedisError, OSError, BrokerError) as exc:
                log.warning("lease renewal of redis reader %s failed: %s", self.name, exc)
