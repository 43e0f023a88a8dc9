"""Redis Streams adapter (redis.asyncio): a stream per topic, a consumer group per mesh group.

Names: the stream key is the topic (namespace applied); a mesh group is a Redis
consumer group; the subscriptions of one group share a reader (:mod:`.reader`: one XREADGROUP
for up to a thousand streams), which is one consumer in each of their groups, named
``<client_id>-<random>`` (or the ``consumer_name`` option, ``-1``, ``-2`` ... for further
readers). Delayed redeliveries of a group live in the sorted set
``<namespace>_mesh.delay:{<stream>}:<group>`` (the hash tag keeps it in the stream's slot).

Binding (``schemas/redis-binding.md``): binary mode writes fields ``ce_<attr>``,
``content-type`` and ``data``; structured mode one ``event`` field. Both are read; an entry with
neither ``ce_specversion`` nor a lone ``event`` field is a legacy entry and is wrapped.

The broker composes the parts around one :class:`~.connection.RedisConnection`:

=======================  =====================================================================
part                     module
=======================  =====================================================================
client, publish          :mod:`.connection` (concurrent XADDs coalesced into pipelines)
subscriptions            :mod:`.consumer` (acks, nacks, delays, give-back), read by
                         :mod:`.reader` (XREADGROUP over many streams, batched take-overs)
ephemeral subscriptions  :mod:`.ephemeral` (XREAD without a group; XADD NOMKSTREAM)
``broker.history``       :mod:`.history` (XRANGE by id or time)
``broker.groups``        :mod:`.groups` (an entry marked ``_mesh.group``)
=======================  =====================================================================
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from typing import Any, ClassVar

from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from mesh.brokers.base import Broker, DeliveryHandler, Features, Subscription
from mesh.brokers.redis.connection import RedisConnection
from mesh.brokers.redis.consumer import RedisConsumer, RedisDelivery
from mesh.brokers.redis.ephemeral import EphemeralSubscription, ephemeral_args
from mesh.brokers.redis.groups import RedisGroups
from mesh.brokers.redis.history import RedisHistory
from mesh.brokers.redis.options import RedisOptions
from mesh.brokers.redis.reader import GroupReader
from mesh.codecs.binary import encode
from mesh.codecs.bindings import REDIS
from mesh.codecs.redis import to_fields
from mesh.errors import BrokerError, MeshError
from mesh.event import Event

__all__ = ["RedisBroker", "RedisDelivery"]


class RedisBroker(Broker):
    """Redis Streams (``redis://host:port/db``); see the module docstring and docs/brokers/redis.md."""

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

    tls_supported = True
    auth_fields = frozenset({"username", "password"})

    def __init__(self, url: str | None = None, **kwargs: Any) -> None:
        super().__init__(url, **kwargs)
        self.settings: RedisOptions
        conn = RedisConnection(
            url,
            self.settings,
            namespace=self.namespace,
            wire=self.wire,
            client_id=self.client_id,
            tls=self.tls,
            auth=self.auth,
        )
        self.connection = conn
        """What the parts share: the client, the script, settings and names (:mod:`.connection`)."""
        self.history = RedisHistory(conn)
        self.groups = RedisGroups(conn)
        self._xadd = conn.xadd
        self._trim = conn.trim
        self._subs: list[RedisConsumer] = []
        self._readers: list[GroupReader] = []
        self._made: dict[str, int] = {}  # readers made per group (the suffix of stable names)
        self._ephemeral: list[EphemeralSubscription] = []

    @property
    def address(self) -> str:
        """Where the broker is, its secrets masked: ``redis://user:***@host:port/db``."""
        return self.connection.address

    @property
    def client(self) -> Redis:
        """The connected client (raises :class:`BrokerError` before ``connect()``)."""
        return self.connection.require_client()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(url={self.address!r})"

    async def connect(self) -> None:
        await self.connection.open()

    async def close(self) -> None:
        ephemeral, self._ephemeral = self._ephemeral, []
        for eph in ephemeral:
            await eph.stop()
        subs, self._subs = self._subs, []
        await asyncio.gather(*(sub.stop() for sub in subs))  # together: they share their readers' reads
        await self.connection.close()  # publishes riding a pipeline finish first

    def _forget(self, sub: RedisConsumer) -> None:
        if sub in self._subs:
            self._subs.remove(sub)

    async def publish(self, topic: str, event: Event) -> None:
        msg = encode(event, self.wire)
        stream = self.name_of(topic)
        await self._xadd(stream, ["XADD", stream, *self._trim, "*", *to_fields(msg)])

    async def publish_many(self, topic: str, events: Sequence[Event]) -> dict[int, Exception]:
        """Every XADD in one pipeline (``PIPELINE_MAX`` per round trip), in order."""
        stream = self.name_of(topic)
        head = ["XADD", stream, *self._trim, "*"]
        commands: list[list[Any]] = []
        failed: dict[int, Exception] = {}
        where: list[int] = []
        for index, event in enumerate(events):
            try:
                commands.append([*head, *to_fields(encode(event, self.wire))])
            except MeshError as exc:
                failed[index] = exc
                continue
            where.append(index)
        if commands:
            conn = self.connection
            if not conn.connected:
                raise conn.not_connected()
            for position, error in (await conn.xadd_many(commands)).items():
                failed[where[position]] = error
        return failed

    async def ensure_topic(self, topic: str) -> None:
        await self.connection.ensure_stream(self.name_of(topic))

    async def subscribe(
        self, topic: str, group: str, handler: DeliveryHandler, *, concurrency: int = 1
    ) -> Subscription:
        conn = self.connection
        if not conn.connected:
            raise conn.not_connected()
        stream = self.name_of(topic)
        start = "0" if self.settings.initial_offset == "earliest" else "$"
        try:  # coalesced: many subscriptions starting together create their groups in one pipeline
            await conn.call("XGROUP", "CREATE", stream, group, start, "MKSTREAM")
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise BrokerError(f"cannot create group {group!r} on stream {stream!r}: {exc}") from exc
        except (RedisError, OSError, BrokerError) as exc:
            raise BrokerError(f"cannot subscribe to {stream!r} on redis at {self.address}: {exc}") from exc
        sub = RedisConsumer(conn, self._reader_for(stream, group), topic, handler, concurrency, self._forget)
        self._subs.append(sub)
        return sub

    def _reader_for(self, stream: str, group: str) -> GroupReader:
        """The reader of ``group`` with room for ``stream``, or a new one (a consumer name of its own)."""
        mine = [r for r in self._readers if r.group == group]
        for reader in mine:
            if reader.has_room(stream):
                return reader
        name = self.settings.consumer_name
        if name is None:
            name = f"{self.client_id}-{uuid.uuid4().hex[:12]}"
        elif mine:
            name = f"{name}-{self._made[group]}"  # a stable name per reader, in the order they are made
        self._made[group] = self._made.get(group, 0) + 1
        reader = GroupReader(self.connection, group, name, self._forget_reader)
        self._readers.append(reader)
        return reader

    def _forget_reader(self, reader: GroupReader) -> None:
        if reader in self._readers:
            self._readers.remove(reader)

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
        """With a group, an ordinary consumer group (ephemeral publishes trim the stream to about
        ``EPHEMERAL_MAXLEN``); without, XREAD from the current end (see :mod:`.ephemeral`)."""
        if group is not None:
            return await self.subscribe(topic, group, handler, concurrency=concurrency)
        conn = self.connection
        if not conn.connected:
            raise conn.not_connected()
        sub = EphemeralSubscription(conn, topic, handler, concurrency, exclusive, self._forget_ephemeral)
        try:
            await sub.start()
        except (RedisError, OSError) as exc:
            raise BrokerError(f"cannot read {sub.stream!r} on redis at {self.address}: {exc}") from exc
        self._ephemeral.append(sub)
        return sub

    def _forget_ephemeral(self, sub: EphemeralSubscription) -> None:
        if sub in self._ephemeral:
            self._ephemeral.remove(sub)

    async def publish_ephemeral(self, topic: str, event: Event) -> None:
        """XADD without creating the stream (dropped when nobody reads it), kept short."""
        stream = self.name_of(topic)
        fields = to_fields(encode(event, self.wire))
        await self._xadd(stream, ephemeral_args(stream, fields))
