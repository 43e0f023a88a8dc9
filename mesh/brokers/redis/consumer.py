"""Consumers of the Redis Streams adapter: one consumer of a consumer group per subscription.

A :class:`RedisConsumer` takes the broker's :class:`~.connection.RedisConnection` and reads with
XREADGROUP (``COUNT`` and ``BLOCK``); acks are batched into one XACK before the next read. An
entry stays pending until acked:

======================  ======================================================================
what happens            what the consumer does
======================  ======================================================================
``ack()``               the id joins the next XACK (sent at once when the consumer stopped)
``nack()``              XCLAIM to the same consumer (the delivery count goes up), handled again
                        before the next read
``nack(delay)``         the id goes into the group's delay set with its due time (Redis server
                        time); any consumer of the group takes due ids atomically and XCLAIMs
                        them, later entries keep flowing
stop                    unacked entries are given back (idle time pushed far into the past, so
                        the next XAUTOCLAIM of any consumer of the group takes them at once)
crash                   the entries are no longer renewed; after ``claim_idle_ms`` another
                        consumer takes them with XAUTOCLAIM (live ones renew every third of it)
an entry for one group  (``_mesh.group`` field, a replay) other groups ack it unseen
======================  ======================================================================

``Delivery.attempt`` is Redis's own delivery count of the entry (XPENDING ``times_delivered``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from contextlib import suppress
from typing import Any

from redis.exceptions import RedisError, ResponseError

from mesh.brokers.base import RESERVED_PREFIX, Delivery, DeliveryHandler, HandlerRunner, Subscription
from mesh.brokers.redis.connection import GROUP_FIELD, RedisConnection
from mesh.codecs.binary import WireMessage, decode
from mesh.codecs.bindings import REDIS
from mesh.codecs.redis import from_fields, lossy
from mesh.errors import DecodeError
from mesh.event import Event
from mesh.logs import log_connection_lost, log_reconnected

__all__ = ["FORGET_IDLE_MS", "GIVE_BACK_IDLE_MS", "RedisConsumer", "RedisDelivery"]

log = logging.getLogger("mesh.broker.redis")

GIVE_BACK_IDLE_MS = 100_000_000_000
"""Idle time (~3 years) set on entries a stopping consumer gives back: any claim takes them."""
FORGET_IDLE_MS = 300_000
"""A consumer with nothing pending and idle this long is removed from its group."""
FORGET_INTERVAL = 60.0
RENEW_CHUNK = 500


def _pairs(flat: Sequence[bytes]) -> dict[bytes, bytes]:
    it = iter(flat)
    return dict(zip(it, it, strict=False))


class RedisDelivery(Delivery):
    """A stream entry delivered to one consumer of a group."""

    __slots__ = ("_consumer", "_id")

    def __init__(
        self,
        consumer: RedisConsumer,
        entry_id: bytes,
        event: Event | None,
        raw: WireMessage | None,
        error: DecodeError | None,
        attempt: int,
    ) -> None:
        super().__init__(consumer.topic, consumer.group, event, raw, error, attempt)
        self._consumer = consumer
        self._id = entry_id

    @property
    def entry_id(self) -> str:
        """The stream entry id (``<ms>-<seq>``)."""
        return self._id.decode()

    async def _ack(self) -> None:
        consumer = self._consumer
        consumer.held.discard(self._id)
        consumer.acks.append(self._id)
        if not consumer.running:
            await consumer.flush_acks()

    async def _requeue(self) -> None:
        consumer = self._consumer
        if consumer.running:
            consumer.retries.append(self._id)
        else:
            await consumer.release()

    async def _nack(self, delay: float | None) -> None:
        """A delay waits in the group's delay set (durable, any consumer takes it when due)."""
        if delay is not None and delay > 0:
            await self._consumer.delay(self._id, delay)
        else:
            await self._requeue()


class RedisConsumer(Subscription):
    """One consumer of a group: the read loop, the lease renewer and the give-back on stop.

    ``on_stop`` is called with the consumer once it stopped (the broker forgets it).
    """

    def __init__(
        self,
        conn: RedisConnection,
        topic: str,
        group: str,
        name: str,
        handler: DeliveryHandler,
        concurrency: int,
        on_stop: Callable[[RedisConsumer], None],
    ) -> None:
        self.topic = topic
        self.group = group
        self.name = name
        self.stream = conn.name_of(topic)
        self._group_mark = group.encode()
        self.delays = f"{conn.namespace}{RESERVED_PREFIX}delay:{{{self.stream}}}:{group}"
        self._execute = conn.execute
        self._script = conn.script
        self._address = conn.address
        self._lost = False  # the connection failed and no read has worked since
        self._opts = conn.settings
        self._keys = (self.stream, self.delays)
        self._runner = HandlerRunner(handler, concurrency, topic)
        self.acks: list[bytes] = []
        """Acked ids not yet sent: one XACK for all of them before the next read."""
        self.retries: list[bytes] = []
        """Ids nacked without delay: claimed again (delivery count + 1) before the next read."""
        self.held: set[bytes] = set()
        """Ids handed to this subscription and not yet acked or delayed: the lease renews these.
        An entry claimed for us whose reply was lost is not here, so it is taken over later."""
        self.running = True
        self._stopped = False
        self._reclaimed = False
        self._next_due = self._next_claim = self._next_forget = 0.0
        self._cursor: bytes | str = "0-0"  # of XAUTOCLAIM's scan
        self._on_stop = on_stop
        loop = asyncio.get_running_loop()
        self._task = loop.create_task(self._loop(), name=f"mesh-redis:{self.stream}:{group}")
        self._lease = loop.create_task(self._renew_loop(), name=f"mesh-redis-lease:{self.stream}:{group}")

    # -- the read loop ------------------------------------------------------------------------

    async def _loop(self) -> None:
        opts = self._opts
        read: tuple[Any, ...] = ("XREADGROUP", "GROUP", self.group, self.name)
        read += ("COUNT", opts.batch, "BLOCK", opts.block_ms, "STREAMS", self.stream, ">")
        execute = self._execute
        held = self.held
        backoff = 0.1
        while self.running:
            try:
                await self._housekeeping()
                if not self.running:
                    break
                reply = await execute(*read)
                if reply:
                    submit = self._runner.submit
                    entries = reply[0][1]
                    held.update(entry[0] for entry in entries)
                    for entry_id, fields in entries:
                        if not self.running:
                            break  # the rest stays pending and is given back by stop()
                        delivery = self._delivery(entry_id, fields, 1)
                        if delivery is not None:
                            await submit(delivery)
                backoff = 0.1
                if self._lost:
                    self._lost = False
                    log_reconnected("redis", self._address)
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                if not self.running:
                    break
                if isinstance(exc, ResponseError) and str(exc).startswith(("NOGROUP", "UNBLOCKED")):
                    # the stream (or the group) was deleted under us: the topology comes back
                    log.warning("redis group %s of %s is gone; creating it again", self.group, self.stream)
                    with suppress(ResponseError):
                        await execute("XGROUP", "CREATE", self.stream, self.group, "0", "MKSTREAM")
                    continue
                if not isinstance(exc, ResponseError) and not self._lost:  # the connection, not a command
                    self._lost = True
                    log_connection_lost("redis", self._address, str(exc))
                elif not self._lost:
                    log.warning("redis consumer %s of %s/%s: %s", self.name, self.stream, self.group, exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    async def _housekeeping(self) -> None:
        """Between reads: flush acks, redeliver nacked, due and abandoned entries, tidy the group."""
        opts = self._opts
        if not self._reclaimed:  # a stable consumer name gets its own pending entries back
            await self._walk("own", deliver=True)
            self._reclaimed = True
        if self.acks:
            await self.flush_acks()
        if self.retries:
            ids, self.retries = self.retries, []
            try:
                claimed = await self._call("ids", *ids)
            except BaseException:
                self.retries[:0] = ids
                raise
            await self._deliver(claimed)
        now = asyncio.get_running_loop().time()
        if now >= self._next_due:
            entries, counts = await self._call("due", opts.batch)
            self._next_due = now + opts.delay_poll_ms / 1000 if len(entries) < opts.batch else now
            await self._deliver((entries, counts))
        if now >= self._next_claim:
            self._cursor, entries, counts = await self._call("auto", opts.claim_idle_ms, self._cursor, opts.batch)
            self._next_claim = now + opts.claim_interval_ms / 1000 if len(entries) < opts.batch else now
            await self._deliver((entries, counts))
        if now >= self._next_forget:
            self._next_forget = now + FORGET_INTERVAL
            await self._call("forget", FORGET_IDLE_MS)

    def _delivery(self, entry_id: bytes, fields: dict[bytes, bytes], attempt: int) -> RedisDelivery | None:
        mark = fields.pop(GROUP_FIELD, None)
        if mark is not None and mark != self._group_mark:  # a replay for another group: ack, unseen
            self.held.discard(entry_id)
            self.acks.append(entry_id)
            return None
        try:
            msg = from_fields(fields)
        except DecodeError as exc:
            return RedisDelivery(self, entry_id, None, lossy(fields), exc, attempt)
        try:
            fallback = None if REDIS.h_specversion in msg.headers else f"{self.stream}:{entry_id.decode()}"
            event = decode(msg, REDIS, self.topic, fallback)
        except DecodeError as exc:
            return RedisDelivery(self, entry_id, None, msg, exc, attempt)
        return RedisDelivery(self, entry_id, event, msg, None, attempt)

    async def _deliver(self, claimed: Sequence[Any]) -> None:
        """Hand claimed entries (``[entries, counts]`` from the script) to the handler."""
        entries, counts = claimed
        if not entries:
            return
        self.held.update(entry[0] for entry in entries)
        submit = self._runner.submit
        for (entry_id, flat), count in zip(entries, counts, strict=False):
            if not self.running:
                return  # still pending for this consumer: stop() gives it back
            delivery = self._delivery(entry_id, _pairs(flat), int(count))
            if delivery is not None:
                await submit(delivery)

    async def _call(self, mode: str, *args: Any) -> Any:
        return await self._script(keys=self._keys, args=(self.group, self.name, mode, *args))

    async def _walk(self, mode: str, *extra: Any, deliver: bool = False) -> None:
        """Page through this consumer's pending entries with one script mode."""
        start: bytes | str = "-"
        while True:
            reply = await self._call(mode, start, self._opts.batch, *extra)
            if deliver:
                start = reply[0]
                await self._deliver(reply[1:])
            else:
                start = reply
            if not start:
                return

    async def _renew_loop(self) -> None:
        """Keep held entries from being taken over while this consumer lives (a lease)."""
        every = self._opts.claim_idle_ms / 3000
        while True:
            await asyncio.sleep(every)
            held = list(self.held)
            try:
                for i in range(0, len(held), RENEW_CHUNK):
                    await self._call("renew", *held[i : i + RENEW_CHUNK])
            except (RedisError, OSError) as exc:
                log.warning("lease renewal of redis consumer %s failed: %s", self.name, exc)

    # -- what deliveries call ---------------------------------------------------------------

    async def flush_acks(self) -> None:
        """XACK every id acked since the last flush, in one command."""
        if self.acks:
            ids, self.acks = self.acks, []
            try:
                await self._execute("XACK", self.stream, self.group, *ids)
            except BaseException:
                self.acks[:0] = ids
                raise

    async def delay(self, entry_id: bytes, delay: float) -> None:
        """Keep the entry pending and due in ``delay`` seconds (in the group's delay set)."""
        await self._call("delay", max(1, round(delay * 1000)), entry_id)
        self.held.discard(entry_id)

    async def release(self) -> None:
        """Give this consumer's unacked entries back to the group; forget it when it has none."""
        await self._walk("release", GIVE_BACK_IDLE_MS)

    # -- stop -------------------------------------------------------------------------------

    async def stop(self, drain: bool = True) -> None:
        if self._stopped:
            return
        self._stopped = True
        self.running = False
        if not drain:
            self._task.cancel()
        try:
            await self._task  # with drain, the loop finishes the handler it is running, then exits
        except asyncio.CancelledError:
            pass
        except Exception:  # pragma: no cover - the loop only ends by design
            log.exception("redis consumer loop of %s ended with an error", self.name)
        if drain:
            await self._runner.drain()
        self._lease.cancel()
        with suppress(asyncio.CancelledError):
            await self._lease
        try:
            await self.flush_acks()
            await self.release()
        except ResponseError as exc:
            if not str(exc).startswith("NOGROUP"):  # no group, nothing to give back
                log.warning("could not give back the entries of %s: %s", self.name, exc)
        except (RedisError, OSError) as exc:
            log.warning(
                "could not give back the entries of %s: %s (they are taken over after claim_idle_ms)",
                self.name,
                exc,
            )
        self._on_stop(self)
