"""Redis Streams adapter (redis.asyncio): a stream per topic, a consumer group per mesh group.

Names (DESIGN §3): the stream key is the topic (namespace applied); a mesh group is a Redis
consumer group; every subscription is one consumer in it, named ``<client_id>-<random>`` (or
the ``consumer_name`` option). Delayed redeliveries of a group live in the sorted set
``<namespace>_mesh.delay:{<stream>}:<group>`` (the hash tag keeps it in the stream's slot).

Binding (``schemas/redis-binding.md``): binary mode writes fields ``ce_<attr>``,
``content-type`` and ``data``; structured mode one ``event`` field. Both are read; an entry with
neither ``ce_specversion`` nor a lone ``event`` field is a legacy entry and is wrapped.

Delivery: XREADGROUP with ``COUNT`` and ``BLOCK``; acks are batched into one XACK before the
next read. An entry stays pending until acked:

- immediate ``nack()``: XCLAIM to the same consumer (the delivery count goes up) and handle again;
- ``nack(delay)``: the id goes into the delay set with its due time (Redis server time); any
  consumer of the group takes due ids atomically and XCLAIMs them, later entries keep flowing;
- a consumer that stops gives its unacked entries back (their idle time is pushed far into the
  past, so the next XAUTOCLAIM of any consumer of the group takes them at once);
- a consumer that crashed stops renewing its entries; after ``claim_idle_ms`` another consumer
  takes them with XAUTOCLAIM. Live consumers renew theirs every ``claim_idle_ms / 3``.

``Delivery.attempt`` is Redis's own delivery count of the entry (XPENDING ``times_delivered``).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from contextlib import suppress
from types import ModuleType
from typing import Any, ClassVar, cast
from urllib.parse import urlsplit

from pydantic import ValidationError
from redis.asyncio import ConnectionPool, Redis
from redis.exceptions import RedisError, ResponseError

from mesh.brokers.base import (
    RESERVED_PREFIX,
    Broker,
    Delivery,
    DeliveryHandler,
    Features,
    HandlerRunner,
    Subscription,
)
from mesh.brokers.capabilities import DelegatedHistory
from mesh.brokers.redis import history as _replay
from mesh.brokers.redis.ephemeral import EphemeralSubscription, ephemeral_args
from mesh.brokers.redis.options import RedisOptions
from mesh.brokers.redis.script import SCRIPT
from mesh.codecs.binary import WireMessage, decode, encode
from mesh.codecs.bindings import REDIS
from mesh.codecs.redis import from_fields, lossy, to_fields
from mesh.errors import BrokerConnectionError, BrokerError, ConfigError, DecodeError, PublishError
from mesh.event import Event

__all__ = ["RedisBroker", "RedisDelivery"]

log = logging.getLogger("mesh.broker.redis")

DEFAULT_URL = "redis://127.0.0.1:6379/0"
GIVE_BACK_IDLE_MS = 100_000_000_000
"""Idle time (~3 years) set on entries a stopping consumer gives back: any claim takes them."""
FORGET_IDLE_MS = 300_000
"""A consumer with nothing pending and idle this long is removed from its group."""
FORGET_INTERVAL = 60.0
PIPELINE_MAX = 1000
"""Most publishes sent in one pipeline when concurrent publishes are coalesced."""
RENEW_CHUNK = 500
EPHEMERAL_MAXLEN = 10_000
"""About how many entries an ephemeral stream (replies, presence, requests) keeps."""


def _pairs(flat: Sequence[bytes]) -> dict[bytes, bytes]:
    it = iter(flat)
    return dict(zip(it, it, strict=False))


class RedisDelivery(Delivery):
    """A stream entry delivered to one consumer of a group."""

    __slots__ = ("_consumer", "_id")

    def __init__(
        self,
        consumer: _Consumer,
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

    async def _nack(self, delay: float | None) -> None:
        consumer = self._consumer
        if delay is not None and delay > 0:
            await consumer.delay(self._id, delay)
        elif consumer.running:
            consumer.retries.append(self._id)
        else:
            await consumer.release()


class _Consumer(Subscription):
    """One consumer of a group: the read loop, the lease renewer and the give-back on stop."""

    def __init__(
        self,
        broker: RedisBroker,
        topic: str,
        group: str,
        name: str,
        handler: DeliveryHandler,
        concurrency: int,
    ) -> None:
        self.topic = topic
        self.group = group
        self.name = name
        self.stream = broker.name_of(topic)
        self._group_mark = group.encode()
        self.delays = f"{broker.namespace}{RESERVED_PREFIX}delay:{{{self.stream}}}:{group}"
        self._execute = broker.execute
        self._script = broker.script
        self._opts = broker.settings
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
        self._broker = broker
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
        mark = fields.pop(_replay.GROUP_FIELD, None)
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
        self._broker.forget(self)


class RedisBroker(DelegatedHistory, Broker):
    """Redis Streams (``redis://host:port/db``); see the module docstring and docs/brokers/redis.md."""

    _replay: ClassVar[ModuleType] = _replay  # the replay capabilities live in mesh.brokers.redis.history

    type: ClassVar[str] = "redis"
    binding = REDIS
    options_model = RedisOptions
    features: ClassVar[Features] = Features(
        name="redis",
        persistent=True,
        consumer_groups=True,
        order_by_key=False,
        history=True,
        history_by_time=True,
        native_delay=False,
        native_request_reply=False,
        headers=True,
        redelivery_count=True,
        group_delivery=True,
        ephemeral=True,
    )

    def __init__(self, url: str | None = None, **kwargs: Any) -> None:
        super().__init__(url, **kwargs)
        try:
            self.settings = RedisOptions.model_validate(self.options)
        except ValidationError as exc:
            raise ConfigError(
                [(".".join(["broker", "options", *map(str, e["loc"])]), e["msg"]) for e in exc.errors()]
            ) from None
        self._redis: Redis | None = None
        self._script: Any = None
        self.execute: Callable[..., Awaitable[Any]] = self._not_connected
        """``execute_command`` of the connected client (one attribute lookup on the hot path)."""
        self._subs: list[_Consumer] = []
        self._ephemeral: list[EphemeralSubscription] = []
        opts = self.settings
        self._sending = False  # a publish (or a pipeline of them) is on the wire
        self._queue: list[tuple[list[Any], asyncio.Future[None]]] = []
        self._flushers: set[asyncio.Task[None]] = set()
        self._trim: tuple[Any, ...] = ()
        if opts.maxlen is not None:
            self._trim = ("MAXLEN", "~", opts.maxlen) if opts.approximate_trim else ("MAXLEN", opts.maxlen)

    @property
    def address(self) -> str:
        """Where the broker is, without credentials: ``host:port/db``."""
        return _redact(self.url or DEFAULT_URL)

    @property
    def client(self) -> Redis:
        """The connected client (raises :class:`BrokerError` before ``connect()``)."""
        if self._redis is None:
            raise BrokerError(f"the redis broker at {self.address} is not connected")
        return self._redis

    @property
    def script(self) -> Any:
        """The group script (registered with the client: EVALSHA, loaded on NOSCRIPT)."""
        return self._script

    async def _not_connected(self, *args: Any) -> Any:
        raise BrokerError(f"the redis broker at {self.address} is not connected")

    async def connect(self) -> None:
        if self._redis is not None:
            return
        opts = self.settings
        kwargs: dict[str, Any] = {
            "socket_connect_timeout": opts.connect_timeout,
            "socket_timeout": opts.socket_timeout,
        }
        if opts.username is not None:
            kwargs["username"] = opts.username
        if opts.password is not None:
            kwargs["password"] = opts.password
        url = self.url or DEFAULT_URL
        try:
            # concurrent publishes are coalesced into pipelines on one connection (see publish);
            # every subscription holds a connection of its own while it blocks
            pool = ConnectionPool.from_url(url, max_connections=2**31, **kwargs)
            client = Redis.from_pool(pool)
        except ValueError as exc:
            raise BrokerConnectionError("redis", self.address, f"invalid URL: {exc}") from exc
        try:
            await asyncio.wait_for(client.ping(), opts.connect_timeout)
        except (RedisError, OSError, TimeoutError) as exc:
            await client.aclose()
            reason = (
                f"no answer within {opts.connect_timeout:g}s"
                if isinstance(exc, TimeoutError) and not str(exc)
                else f"{type(exc).__name__}: {exc}"
            )
            raise BrokerConnectionError("redis", self.address, reason) from exc
        self._redis = client
        self._script = client.register_script(SCRIPT)
        self.execute = cast(Callable[..., Awaitable[Any]], client.execute_command)

    async def close(self) -> None:
        ephemeral, self._ephemeral = self._ephemeral, []
        for eph in ephemeral:
            await eph.stop()
        subs, self._subs = self._subs, []
        for sub in subs:
            await sub.stop()
        if self._flushers:  # publishes riding a pipeline finish first
            await asyncio.gather(*self._flushers, return_exceptions=True)
        client, self._redis = self._redis, None
        self.execute = self._not_connected
        if client is not None:
            await client.aclose()

    def forget(self, sub: _Consumer) -> None:
        """Called by a stopped subscription."""
        if sub in self._subs:
            self._subs.remove(sub)

    async def publish(self, topic: str, event: Event) -> None:
        msg = encode(event, self.wire)
        stream = self.name_of(topic)
        await self._xadd(stream, ["XADD", stream, *self._trim, "*", *to_fields(msg)])

    async def _xadd(self, stream: str, args: list[Any]) -> None:
        """Send one XADD, or ride the next pipeline when another publish is on the wire."""
        if self._sending or self._queue:
            await self._enqueue(args)  # another publish is on the wire: ride the next pipeline
            return
        self._sending = True
        try:
            await self.execute(*args)
        except (RedisError, OSError) as exc:
            raise self._publish_error(stream, exc) from exc
        finally:
            self._sending = False
            if self._queue:
                self._start_flusher()

    def _publish_error(self, stream: str, exc: BaseException) -> PublishError:
        return PublishError(f"redis at {self.address} did not take the event for {stream!r}: {exc}")

    async def _enqueue(self, args: list[Any]) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append((args, future))
        if not self._sending:
            self._start_flusher()
        await future

    def _start_flusher(self) -> None:
        self._sending = True
        task = asyncio.get_running_loop().create_task(self._flush_queue())
        self._flushers.add(task)
        task.add_done_callback(self._flushers.discard)

    async def _flush_queue(self) -> None:
        """Send queued publishes as pipelines (one round trip each) until the queue is empty."""
        try:
            while self._queue:
                batch = self._queue[:PIPELINE_MAX]
                del self._queue[:PIPELINE_MAX]
                try:
                    pipe = self.client.pipeline(transaction=False)
                    for args, _ in batch:
                        pipe.execute_command(*args)
                    results = await pipe.execute(raise_on_error=False)
                except (RedisError, OSError, BrokerError) as exc:
                    results = [exc] * len(batch)
                for (args, future), result in zip(batch, results, strict=False):
                    if future.done():
                        continue
                    if isinstance(result, BaseException):
                        error = self._publish_error(args[1], result)
                        error.__cause__ = result
                        future.set_exception(error)
                    else:
                        future.set_result(None)
        finally:
            self._sending = False

    async def ensure_topic(self, topic: str) -> None:
        stream = self.name_of(topic)
        try:
            kind = await self._script(keys=(stream, stream), args=("", "", "ensure"), client=self.client)
        except (RedisError, OSError) as exc:
            raise BrokerError(f"cannot create stream {stream!r} on redis at {self.address}: {exc}") from exc
        kind = kind.decode() if isinstance(kind, bytes) else str(kind)
        if kind != "stream":
            raise BrokerError(f"redis key {stream!r} exists and is a {kind}, not a stream")

    async def subscribe(
        self, topic: str, group: str, handler: DeliveryHandler, *, concurrency: int = 1
    ) -> Subscription:
        if self._redis is None:
            await self._not_connected()
        stream = self.name_of(topic)
        start = "0" if self.settings.initial_offset == "earliest" else "$"
        try:
            await self.execute("XGROUP", "CREATE", stream, group, start, "MKSTREAM")
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise BrokerError(f"cannot create group {group!r} on stream {stream!r}: {exc}") from exc
        except (RedisError, OSError) as exc:
            raise BrokerError(f"cannot subscribe to {stream!r} on redis at {self.address}: {exc}") from exc
        name = self.settings.consumer_name
        if name is None:
            name = f"{self.client_id}-{uuid.uuid4().hex[:12]}"
        elif any(s.stream == stream and s.group == group and s.name == name for s in self._subs):
            name = f"{name}-{len(self._subs)}"
        sub = _Consumer(self, topic, group, name, handler, concurrency)
        self._subs.append(sub)
        return sub

    # -- ephemeral destinations (invocation replies and requests, presence) --------------------

    async def subscribe_ephemeral(
        self,
        topic: str,
        handler: DeliveryHandler,
        *,
        group: str | None = None,
        exclusive: bool = False,
        concurrency: int = 1,
    ) -> Subscription:
        """With a group, an ordinary consumer group (entries are trimmed to about
        ``EPHEMERAL_MAXLEN``); without, XREAD from the current end (see :mod:`._redis_ephemeral`)."""
        if group is not None:
            return await self.subscribe(topic, group, handler, concurrency=concurrency)
        if self._redis is None:
            await self._not_connected()
        sub = EphemeralSubscription(self, topic, handler, concurrency, exclusive)
        try:
            await sub.start()
        except (RedisError, OSError) as exc:
            raise BrokerError(f"cannot read {sub.stream!r} on redis at {self.address}: {exc}") from exc
        self._ephemeral.append(sub)
        return sub

    def forget_ephemeral(self, sub: EphemeralSubscription) -> None:
        """Called by a stopped ephemeral subscription."""
        if sub in self._ephemeral:
            self._ephemeral.remove(sub)

    async def publish_ephemeral(self, topic: str, event: Event) -> None:
        """XADD without creating the stream (dropped when nobody reads it), kept short."""
        stream = self.name_of(topic)
        fields = to_fields(encode(event, self.wire))
        await self._xadd(stream, ephemeral_args(stream, EPHEMERAL_MAXLEN, fields))


def _redact(url: str) -> str:
    """``host:port/db`` of a Redis URL, without credentials."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or "localhost"
        port = parts.port or 6379
    except ValueError:
        return repr(url)
    return f"{host}:{port}{parts.path or '/0'}"
