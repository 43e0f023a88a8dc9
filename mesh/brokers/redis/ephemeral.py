"""Ephemeral subscriptions of the Redis adapter: a stream read with XREAD, without a group.

Used for the mesh's own short-lived traffic (invocation replies, presence). The subscription
makes sure the stream exists (so publishers, who never create one, can reach it), notes its last
id and reads on from there with ``XREAD BLOCK``: no consumer group, nothing pending, nothing to
acknowledge. An exclusive stream (a reply inbox) is deleted when its subscription stops, and
carries an expiry the reader keeps pushing forward, so the inbox of a process that crashed goes
away by itself. Ephemeral publishes (``XADD NOMKSTREAM``) keep these streams short.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from redis.exceptions import RedisError

from mesh.brokers.base import AtMostOnceDelivery, DeliveryHandler, HandlerRunner, Subscription
from mesh.brokers.redis.connection import RedisConnection
from mesh.codecs.binary import decode
from mesh.codecs.bindings import REDIS
from mesh.codecs.redis import from_fields, lossy
from mesh.errors import DecodeError

__all__ = ["EPHEMERAL_MAXLEN", "EXCLUSIVE_TTL_MS", "EphemeralSubscription", "ephemeral_args"]

log = logging.getLogger("mesh.broker.redis")

EXCLUSIVE_TTL_MS = 300_000
"""Expiry of an exclusive stream; its reader renews it every third of this."""
EPHEMERAL_MAXLEN = 10_000
"""About how many entries an ephemeral stream (replies, presence, requests) keeps."""


class EphemeralSubscription(Subscription):
    """XREAD from the id that was last when it started (see the module docstring).

    ``on_stop`` is called with the subscription once it stopped (the broker forgets it).
    """

    def __init__(
        self,
        conn: RedisConnection,
        topic: str,
        handler: DeliveryHandler,
        concurrency: int,
        exclusive: bool,
        on_stop: Callable[[EphemeralSubscription], None],
    ) -> None:
        self.topic = topic
        self.group = ""
        self.stream = conn.name_of(topic)
        self.exclusive = exclusive
        self._conn = conn
        self._on_stop = on_stop
        self._runner = HandlerRunner(handler, concurrency, topic)
        self._last: bytes | str = "0-0"
        self._running = True
        self._renewed = 0.0
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Create the stream if needed, remember where it ends, start reading."""
        await self._conn.ensure_stream(self.stream)
        execute = self._conn.execute
        last = await execute("XREVRANGE", self.stream, "+", "-", "COUNT", 1)
        if last:
            self._last = last[0][0]
        if self.exclusive:
            await execute("PEXPIRE", self.stream, EXCLUSIVE_TTL_MS)
            self._renewed = asyncio.get_running_loop().time()
        self._task = asyncio.get_running_loop().create_task(self._loop(), name=f"mesh-redis-ephemeral:{self.stream}")

    async def _loop(self) -> None:
        execute, submit = self._conn.execute, self._runner.submit
        block = self._conn.settings.block_ms
        loop = asyncio.get_running_loop()
        backoff = 0.1
        while self._running:
            try:
                if self.exclusive and loop.time() - self._renewed > EXCLUSIVE_TTL_MS / 3000:
                    await execute("PEXPIRE", self.stream, EXCLUSIVE_TTL_MS)
                    self._renewed = loop.time()
                reply = await execute("XREAD", "COUNT", 500, "BLOCK", block, "STREAMS", self.stream, self._last)
                backoff = 0.1
            except (RedisError, OSError) as exc:
                if not self._running:
                    return
                log.warning("redis ephemeral read of %s: %s", self.stream, exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            if not reply:
                continue
            for entry_id, fields in reply[0][1]:
                self._last = entry_id
                if not self._running:
                    return
                await submit(self._delivery(entry_id, fields))

    def _delivery(self, entry_id: bytes, fields: dict[bytes, bytes]) -> AtMostOnceDelivery:
        try:
            msg = from_fields(fields)
        except DecodeError as exc:
            return AtMostOnceDelivery(self.topic, "", None, lossy(fields), exc)
        try:
            event = decode(msg, REDIS, self.topic, f"{self.stream}:{entry_id.decode()}")
        except DecodeError as exc:
            return AtMostOnceDelivery(self.topic, "", None, msg, exc)
        return AtMostOnceDelivery(self.topic, "", event, msg)

    async def stop(self, drain: bool = True) -> None:
        if not self._running:
            return
        self._running = False
        task = self._task
        if task is not None:
            if not drain:
                task.cancel()  # else XREAD returns within block_ms and the loop ends
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if drain:
            await self._runner.drain()
        if self.exclusive:
            try:
                await self._conn.execute("DEL", self.stream)
            except (RedisError, OSError) as exc:
                log.warning("could not delete the redis stream %s (it expires): %s", self.stream, exc)
        self._on_stop(self)


def ephemeral_args(stream: str, fields: list[Any], maxlen: int = EPHEMERAL_MAXLEN) -> list[Any]:
    """XADD that never creates the stream and keeps it about ``maxlen`` entries long."""
    return ["XADD", stream, "NOMKSTREAM", "MAXLEN", "~", maxlen, "*", *fields]
