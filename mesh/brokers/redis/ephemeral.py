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
from typing import TYPE_CHECKING, Any

from redis.exceptions import RedisError

from mesh.brokers.base import Delivery, DeliveryHandler, HandlerRunner, Subscription
from mesh.codecs.binary import decode
from mesh.codecs.bindings import REDIS
from mesh.codecs.redis import from_fields, lossy
from mesh.errors import DecodeError

if TYPE_CHECKING:
    from mesh.brokers.redis.broker import RedisBroker

__all__ = ["EXCLUSIVE_TTL_MS", "EphemeralSubscription"]

log = logging.getLogger("mesh.broker.redis")

EXCLUSIVE_TTL_MS = 300_000
"""Expiry of an exclusive stream; its reader renews it every third of this."""


class _Delivery(Delivery):
    """At most once: nothing is pending, so there is nothing to ack or give back."""

    __slots__ = ()

    async def _ack(self) -> None:
        pass

    async def _nack(self, delay: float | None) -> None:
        pass


class EphemeralSubscription(Subscription):
    """XREAD from the id that was last when it started (see the module docstring)."""

    def __init__(
        self, broker: RedisBroker, topic: str, handler: DeliveryHandler, concurrency: int, exclusive: bool
    ) -> None:
        self.topic = topic
        self.group = ""
        self.stream = broker.name_of(topic)
        self.exclusive = exclusive
        self._broker = broker
        self._runner = HandlerRunner(handler, concurrency, topic)
        self._last: bytes | str = "0-0"
        self._running = True
        self._renewed = 0.0
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Create the stream if needed, remember where it ends, start reading."""
        await self._broker.ensure_topic(self.topic)
        execute = self._broker.execute
        last = await execute("XREVRANGE", self.stream, "+", "-", "COUNT", 1)
        if last:
            self._last = last[0][0]
        if self.exclusive:
            await execute("PEXPIRE", self.stream, EXCLUSIVE_TTL_MS)
            self._renewed = asyncio.get_running_loop().time()
        self._task = asyncio.get_running_loop().create_task(self._loop(), name=f"mesh-redis-ephemeral:{self.stream}")

    async def _loop(self) -> None:
        execute, submit = self._broker.execute, self._runner.submit
        block = self._broker.settings.block_ms
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

    def _delivery(self, entry_id: bytes, fields: dict[bytes, bytes]) -> _Delivery:
        try:
            msg = from_fields(fields)
        except DecodeError as exc:
            return _Delivery(self.topic, "", None, lossy(fields), exc)
        try:
            return _Delivery(self.topic, "", decode(msg, REDIS, self.topic, f"{self.stream}:{entry_id.decode()}"), msg)
        except DecodeError as exc:
            return _Delivery(self.topic, "", None, msg, exc)

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
                await self._broker.execute("DEL", self.stream)
            except (RedisError, OSError) as exc:
                log.warning("could not delete the redis stream %s (it expires): %s", self.stream, exc)
        self._broker.forget_ephemeral(self)


def ephemeral_args(stream: str, maxlen: int, fields: list[Any]) -> list[Any]:
    """XADD that never creates the stream and keeps it about ``maxlen`` entries long."""
    return ["XADD", stream, "NOMKSTREAM", "MAXLEN", "~", maxlen, "*", *fields]
