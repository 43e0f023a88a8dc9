"""Subscriptions of the Redis Streams adapter: one stream of one consumer group each.

A :class:`RedisConsumer` takes the broker's :class:`~.connection.RedisConnection` and the
:mod:`.reader` that reads its stream together with the group's other streams (one XREADGROUP
for many); its own worker runs the handler, so one busy subscription never holds up another.
Acks are batched into one XACK when the worker has nothing waiting (and coalesced with other
subscriptions' into one pipeline). An entry stays pending until acked:

======================  ======================================================================
what happens            what the consumer does
======================  ======================================================================
``ack()``               the id joins the next XACK (sent at once when the consumer stopped)
``nack()``              XCLAIM to the same consumer (the delivery count goes up), handled again
                        by the worker before the entries already waiting
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
from typing import Any, Protocol

from redis.exceptions import RedisError, ResponseError

from mesh.brokers.base import RESERVED_PREFIX, Delivery, DeliveryHandler, HandlerRunner, Mailbox, Subscription
from mesh.brokers.redis.connection import GROUP_FIELD, RedisConnection
from mesh.codecs.binary import WireMessage, decode
from mesh.codecs.bindings import REDIS
from mesh.codecs.redis import from_fields, lossy
from mesh.errors import BrokerError, DecodeError
from mesh.event import Event


class Reader(Protocol):
    """What a subscription needs of the reader that reads its stream (:mod:`.reader`)."""

    group: str
    name: str

    def add(self, sub: RedisConsumer) -> None: ...

    async def remove(self, sub: RedisConsumer) -> None: ...

    def detach(self, sub: RedisConsumer) -> None: ...

    def wake(self) -> None: ...


__all__ = ["FORGET_IDLE_MS", "GIVE_BACK_IDLE_MS", "RedisConsumer", "RedisDelivery"]

log = logging.getLogger("mesh.broker.redis")

GIVE_BACK_IDLE_MS = 100_000_000_000
"""Idle time (~3 years) set on entries a stopping consumer gives back: any claim takes them."""
FORGET_IDLE_MS = 300_000
"""A consumer with nothing pending and idle this long is removed from its group."""
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
            consumer.retry(self._id)
        else:
            await consumer.release()

    async def _nack(self, delay: float | None) -> None:
        """A delay waits in the group's delay set (durable, any consumer takes it when due)."""
        if delay is not None and delay > 0:
            await self._consumer.delay(self._id, delay)
        else:
            await self._requeue()


class RedisConsumer(Subscription):
    """One subscription: a consumer of a group on one stream, read by a shared :class:`GroupReader`.

    The reader hands it entries (:meth:`take`); its own worker task runs them through the
    handler (at most ``concurrency`` at once), flushes its acks and claims its immediate
    redeliveries. ``on_stop`` is called with the consumer once it stopped (the broker forgets it).
    """

    def __init__(
        self,
        conn: RedisConnection,
        reader: Reader,
        topic: str,
        handler: DeliveryHandler,
        concurrency: int,
        on_stop: Callable[[RedisConsumer], None],
    ) -> None:
        self.topic = topic
        self.group = reader.group
        self.name = reader.name
        """The Redis consumer name (the reader's: one per group and reader, shared by its streams)."""
        self.stream = conn.name_of(topic)
        self.key = self.stream.encode()
        """The stream key as XREADGROUP replies name it."""
        self._group_mark = self.group.encode()
        self.delays = f"{conn.namespace}{RESERVED_PREFIX}delay:{{{self.stream}}}:{self.group}"
        self.keys = (self.stream, self.delays)
        """The script's keys for this subscription: the stream and its group's delay set."""
        self._conn = conn
        self._call_script = conn.run_script
        self._reader = reader
        self._opts = conn.settings
        self._runner = HandlerRunner(handler, concurrency, topic)
        self._mailbox: Mailbox[RedisDelivery | None] = Mailbox()
        self.acks: list[bytes] = []
        """Acked ids not yet sent: one XACK for all of them (coalesced with other subscriptions')."""
        self.retries: list[bytes] = []
        """Ids nacked without delay: claimed again (delivery count + 1) and handled again."""
        self.held: set[bytes] = set()
        """Ids handed to this subscription and not yet acked or delayed: the lease renews these.
        An entry claimed for us whose reply was lost is not here, so it is taken over later."""
        self.cursor: bytes | str = "0-0"
        """Where XAUTOCLAIM's scan of this stream goes on (kept by the reader)."""
        self.running = True
        self._stopped = False
        self._idle = False  # the worker waits for entries (nothing to finish)
        self._on_stop = on_stop
        self._worker = asyncio.get_running_loop().create_task(
            self._work(), name=f"mesh-redis:{self.stream}:{self.group}"
        )
        reader.add(self)

    # -- what the reader calls ---------------------------------------------------------------

    def wants_more(self) -> bool:
        """Whether the next read should include this stream (back-pressure: a busy handler
        leaves its entries in the stream, not in memory)."""
        return self.running and self._mailbox.qsize() < self._opts.batch

    def take(self, entries: Sequence[Any]) -> None:
        """Entries read with XREADGROUP (``(id, fields)``, first delivery) for the worker."""
        if not self.running:
            return  # still pending for this consumer: stop() gives them back
        self.held.update(entry[0] for entry in entries)
        put = self._mailbox.put_nowait
        for entry_id, fields in entries:
            delivery = self._delivery(entry_id, fields, 1)
            if delivery is not None:
                put(delivery)

    def take_claimed(self, entries: Sequence[Any], counts: Sequence[Any]) -> None:
        """Entries claimed by the script (``[id, [field, value, ...]]`` and delivery counts)."""
        if not entries or not self.running:
            return
        self.held.update(entry[0] for entry in entries)
        put = self._mailbox.put_nowait
        for (entry_id, flat), count in zip(entries, counts, strict=False):
            delivery = self._delivery(entry_id, _pairs(flat), int(count))
            if delivery is not None:
                put(delivery)

    async def joined(self) -> None:
        """Once, when the reader takes this subscription: a stable consumer name gets its own
        pending entries back; idle consumers of the group that own nothing are forgotten."""
        await self._walk("own", deliver=True)
        await self.forget()

    async def forget(self) -> None:
        """Delete other consumers of the group that own nothing and idled ``FORGET_IDLE_MS``."""
        await self._call("forget", FORGET_IDLE_MS)

    async def renew(self) -> None:
        """Reset the idle time of the held entries (the lease; see the module docstring)."""
        held = list(self.held)
        for i in range(0, len(held), RENEW_CHUNK):
            await self._call("renew", *held[i : i + RENEW_CHUNK])

    # -- the worker ----------------------------------------------------------------------------

    async def _work(self) -> None:
        mailbox = self._mailbox
        submit = self._runner.submit
        wake, low = self._reader.wake, self._opts.batch // 2  # a stream left out of reads: read again at half
        backoff = 0.1
        while self.running:
            try:
                if self.retries:
                    await self._claim_retries()
                if mailbox.empty():
                    if self.acks:
                        await self.flush_acks()
                    self._idle = True
                    try:
                        delivery = await mailbox.get()
                    finally:
                        self._idle = False
                else:
                    delivery = mailbox.get_nowait()
                backoff = 0.1
            except (RedisError, OSError) as exc:  # the reader reports the connection; retry later
                log.debug("redis consumer %s of %s/%s: %s", self.name, self.stream, self.group, exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            if mailbox.qsize() == low:
                wake()  # the reader may have left this stream out of its reads (back-pressure)
            if delivery is None or not self.running:
                continue  # a wake-up; or stopping: the entry stays pending and is given back
            await submit(delivery)

    async def _claim_retries(self) -> None:
        ids, self.retries = self.retries, []
        try:
            entries, counts = await self._call("ids", *ids)
        except BaseException:
            self.retries[:0] = ids
            raise
        self.take_claimed(entries, counts)

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

    async def _call(self, mode: str, *args: Any) -> Any:
        return await self._call_script(self.keys, (self.group, self.name, mode, *args))

    async def _walk(self, mode: str, *extra: Any, deliver: bool = False) -> None:
        """Page through this consumer's pending entries with one script mode."""
        start: bytes | str = "-"
        while True:
            reply = await self._call(mode, start, self._opts.batch, *extra)
            if deliver:
                start = reply[0]
                self.take_claimed(reply[1], reply[2])
            else:
                start = reply
            if not start:
                return

    # -- what deliveries call ---------------------------------------------------------------

    async def flush_acks(self) -> None:
        """XACK every id acked since the last flush, in one command."""
        if self.acks:
            ids, self.acks = self.acks, []
            try:
                await self._conn.call("XACK", self.stream, self.group, *ids)
            except BaseException:
                self.acks[:0] = ids
                raise

    def retry(self, entry_id: bytes) -> None:
        """Claim the entry again (delivery count + 1) and hand it to the handler again, soon."""
        self.retries.append(entry_id)
        self._mailbox.put_nowait(None)  # wakes the worker

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
        await self._reader.remove(self)  # no read in flight hands it entries any more
        worker = self._worker
        if not drain or self._idle:
            worker.cancel()
        else:
            self._mailbox.put_nowait(None)  # with drain, the worker finishes its handler, then exits
        try:
            await worker
        except asyncio.CancelledError:
            pass
        except Exception:  # pragma: no cover - the worker only ends by design
            log.exception("redis consumer worker of %s ended with an error", self.name)
        if drain:
            await self._runner.drain()
        self._reader.detach(self)  # held entries are no longer renewed: they are given back now
        try:
            await self.flush_acks()
            await self.release()
        except ResponseError as exc:
            if not str(exc).startswith("NOGROUP"):  # no group, nothing to give back
                log.warning("could not give back the entries of %s: %s", self.name, exc)
        except (RedisError, OSError, BrokerError) as exc:
            log.warning(
                "could not give back the entries of %s: %s (they are taken over after claim_idle_ms)",
                self.name,
                exc,
            )
        self._on_stop(self)
