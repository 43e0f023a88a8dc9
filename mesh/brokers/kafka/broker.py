"""The Kafka adapter (aiokafka): topics, consumer groups, manual commits, a retry topic per group.

What it creates: a topic per mesh topic (``options.partitions``, ``options.replication_factor``)
and, per subscription, a retry topic ``_mesh.retry.<group>.<topic>``. The subscriptions of one group
share one Kafka consumer, one member of consumer group ``group`` reading all their topics
(:mod:`mesh.brokers.kafka.reader`; see :mod:`mesh.brokers.kafka.consumer` for commits, nacks
and the retry topic). Keyed events are partitioned by murmur2 of
``partitionkey`` as the Java client does, so order per key holds within a partition.

Delivery: at least once. Offsets are committed by hand, only below the lowest delivery not yet
acked in each partition; a consumer that dies loses nothing, its group resumes from the last
commit. See docs/brokers/kafka.md.
"""

from __future__ import annotations

import asyncio
import logging
import random
import weakref
from collections.abc import Sequence
from typing import Any, ClassVar

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from aiokafka.partitioner import DefaultPartitioner

from mesh.brokers.base import Broker, DeliveryHandler, Features, Subscription
from mesh.brokers.kafka.connection import KafkaConnection, parse_servers, reason, record_of
from mesh.brokers.kafka.consumer import KafkaDelivery, KafkaSubscription, ensure_topics
from mesh.brokers.kafka.ephemeral import EphemeralSubscription
from mesh.brokers.kafka.history import KafkaGroups, KafkaHistory
from mesh.brokers.kafka.options import KafkaOptions
from mesh.brokers.kafka.reader import GroupReader, wait_for_peers
from mesh.codecs.binary import encode
from mesh.codecs.bindings import KAFKA
from mesh.errors import BrokerError, ConfigError, MeshError, PublishError
from mesh.event import Event
from mesh.urls import mask_url

__all__ = ["KafkaBroker", "KafkaDelivery", "StickyPartitioner", "parse_servers"]

log = logging.getLogger("mesh.broker.kafka")

UNKEYED_RUN = 100
"""Unkeyed records sent to one partition before the partitioner moves on."""
_keyed = DefaultPartitioner()


class StickyPartitioner:
    """Keyed records: murmur2 of the key, as the Java client. Unkeyed: runs of records to one
    partition (like the Java client's sticky partitioner), so they batch well and a short burst
    stays in order, then on to another partition so the load spreads over time."""

    __slots__ = ("_count", "_pick", "_run")

    def __init__(self, run: int = UNKEYED_RUN) -> None:
        self._run = run
        self._count = 0
        self._pick = random.randrange(1 << 30)

    def __call__(self, key: bytes | None, all_partitions: list[int], available: list[int]) -> int:
        if key is not None:
            return _keyed(key, all_partitions, available)  # type: ignore[no-any-return]
        self._count += 1
        if self._count > self._run:
            self._count = 1
            self._pick = random.randrange(1 << 30)
        # skip a partition without a leader, else keep the sorted list (stable across calls)
        parts = sorted(available) if available and len(available) < len(all_partitions) else all_partitions
        return parts[self._pick % len(parts)]


class KafkaBroker(Broker):
    """Kafka through aiokafka; ``url`` is ``host:port[,host:port]`` (``kafka://`` optional).

    Options: see :class:`~mesh.brokers.kafka.options.KafkaOptions`. The broker composes its
    parts around one :class:`~mesh.brokers.kafka.connection.KafkaConnection`: subscriptions
    (:mod:`.consumer`), ephemeral subscriptions (:mod:`.ephemeral`), ``history`` and ``groups``
    (:mod:`.history`).
    """

    type: ClassVar[str] = "kafka"
    binding = KAFKA
    options_model = KafkaOptions
    features: ClassVar[Features] = Features(
        name="kafka",
        persistent=True,
        consumer_groups=True,
        order_by_key=True,
        history=True,
        history_by_time=True,
        native_delay=False,
        native_request_reply=False,
        headers=True,
        redelivery_count=False,
        group_delivery=True,
        ephemeral=True,
    )
    settings: KafkaOptions
    # Members of one group in this process, to wait for a rebalance a new member causes.
    _members: ClassVar[dict[tuple[int, str, str], weakref.WeakSet[GroupReader]]] = {}

    tls_supported = True
    auth_fields = frozenset({"mechanism", "username", "password"})

    def __init__(self, url: str | None = None, **kwargs: Any) -> None:
        super().__init__(url, **kwargs)
        if self.auth is not None and (self.auth.username is None or self.auth.mechanism == "EXTERNAL"):
            why = "kafka takes SASL PLAIN or SCRAM-SHA-256/512 with a username (mutual TLS needs no auth)"
            raise ConfigError([("broker.auth", why)])
        conn = KafkaConnection(
            url, self.settings, self.wire, self.namespace, self.client_id, tls=self.tls, auth=self.auth
        )
        self.connection = conn
        """The clients and shared helpers the parts take."""
        self.address = conn.address
        """The bootstrap address as shown (credentials masked)."""
        self.history = KafkaHistory(conn)
        self.groups = KafkaGroups(conn)
        self._known = conn.known  # the connection's set: read on every publish
        self._producer: AIOKafkaProducer | None = None  # the connection's, kept here for publish
        self._subs: list[KafkaSubscription] = []
        self._readers: list[GroupReader] = []
        self._made: dict[str, int] = {}  # readers made per group (the suffix of static member ids)
        self._ephemeral: list[EphemeralSubscription] = []

    def __repr__(self) -> str:
        return f"{type(self).__name__}(url={mask_url(self.url)!r})"

    # -- connection ------------------------------------------------------------------------------

    async def connect(self) -> None:
        if self._producer is None:
            self._producer = await self.connection.open(StickyPartitioner())

    async def close(self) -> None:
        ephemeral, self._ephemeral = self._ephemeral, []
        for eph in ephemeral:
            await eph.stop()
        subs, self._subs = self._subs, []
        await asyncio.gather(*(sub.stop() for sub in subs))  # together: their members leave once
        for reader in list(self._readers):
            await reader.close()
        self._producer = None
        await self.connection.close()

    # -- topology --------------------------------------------------------------------------------

    async def ensure_topic(self, topic: str) -> None:
        await self.connection.ensure(self.name_of(topic), self.settings.partitions)

    def retry_topic(self, topic: str, group: str) -> str:
        """The retry topic of one group's subscription to a topic (under the reserved prefix)."""
        return self.connection.retry_topic(topic, group)

    # -- publish and subscribe -------------------------------------------------------------------

    async def _ensure(self, topic: str) -> str:
        """The Kafka topic of ``topic``, created on first use (a PublishError if it cannot be)."""
        name = self.name_of(topic)
        if name not in self._known:
            try:
                await self.connection.ensure(name, self.settings.partitions)
            except BrokerError as exc:
                raise PublishError(str(exc)) from exc
        return name

    async def publish(self, topic: str, event: Event) -> None:
        name = await self._ensure(topic)
        # inline, not connection.record_of: the hot path (same steps, no tuple per event)
        msg = encode(event, self.wire)
        headers = [(k, v.encode() if type(v) is str else v) for k, v in msg.headers.items()]
        if msg.content_type is not None:
            headers.append(("content-type", msg.content_type.encode()))
        producer = self._producer
        if producer is None:
            raise PublishError("the kafka broker is not connected: call connect() first")
        try:
            key = None if msg.key is None else msg.key.encode()
            await (await producer.send(name, msg.body, key=key, headers=headers))
        except KafkaError as exc:
            raise PublishError(f"kafka did not take the event for {name!r}: {reason(exc)}") from exc

    async def publish_many(self, topic: str, events: Sequence[Event]) -> dict[int, Exception]:
        """Hand every record to the producer (it batches per partition), then await the acks."""
        name = await self._ensure(topic)
        producer = self._producer
        if producer is None:
            raise PublishError("the kafka broker is not connected: call connect() first")
        failed: dict[int, Exception] = {}
        sent: list[tuple[int, asyncio.Future[Any]]] = []
        for index, event in enumerate(events):
            try:
                msg = encode(event, self.wire)
            except MeshError as exc:
                failed[index] = exc
                continue
            headers = [(k, v.encode() if type(v) is str else v) for k, v in msg.headers.items()]
            if msg.content_type is not None:
                headers.append(("content-type", msg.content_type.encode()))
            key = None if msg.key is None else msg.key.encode()
            try:  # waits only while the producer's buffer is full
                sent.append((index, await producer.send(name, msg.body, key=key, headers=headers)))
            except KafkaError as exc:
                failed[index] = PublishError(f"kafka did not take the event for {name!r}: {reason(exc)}")
                failed[index].__cause__ = exc
        for index, future in sent:
            try:
                await future
            except KafkaError as exc:
                failed[index] = PublishError(f"kafka did not take the event for {name!r}: {reason(exc)}")
                failed[index].__cause__ = exc
        return failed

    async def subscribe(
        self, topic: str, group: str, handler: DeliveryHandler, *, concurrency: int = 1
    ) -> Subscription:
        await ensure_topics(self.connection, topic, group)
        reader = self._reader_for(topic, group)
        sub = KafkaSubscription(self.connection, reader, topic, group, handler, concurrency, self._forget)
        await reader.add(sub)
        self._subs.append(sub)
        limit = self.settings.join_timeout
        if not await sub.wait_assigned(limit):
            if reader.failed:  # the fetch loop itself ended: that is an error
                await sub.stop(drain=False)
                raise BrokerError(f"kafka group {group!r} assigned no partitions of {sub.name!r} within {limit:g}s")
            # more members than partitions: this one idles until a rebalance gives it some
            log.warning(
                "kafka group %s has given this member no partition of %s within %gs; it consumes once a "
                "rebalance assigns it some",
                group,
                sub.name,
                limit,
            )
        await wait_for_peers(reader, self._members.get(self._group_key(group), weakref.WeakSet()), limit)
        return sub

    def _reader_for(self, topic: str, group: str) -> GroupReader:
        """The member of ``group`` that can read ``topic`` too, or a new one."""
        name = self.name_of(topic)
        for reader in self._readers:
            if reader.group == group and reader.has_room(name):
                return reader
        made = self._made.get(group, 0)
        self._made[group] = made + 1
        instance = self.settings.group_instance_id
        if instance is not None and made:
            instance = f"{instance}-{made}"
        reader = GroupReader(self.connection, group, instance, self._forget_reader)
        self._readers.append(reader)
        self._members.setdefault(self._group_key(group), weakref.WeakSet()).add(reader)
        return reader

    def _group_key(self, group: str) -> tuple[int, str, str]:
        return (id(asyncio.get_running_loop()), ",".join(self.connection.servers), group)

    def _forget(self, sub: KafkaSubscription) -> None:
        """Drop a stopped subscription from the broker's books."""
        if sub in self._subs:
            self._subs.remove(sub)

    def _forget_reader(self, reader: GroupReader) -> None:
        """Drop a member that left its group."""
        if reader in self._readers:
            self._readers.remove(reader)
        key = self._group_key(reader.group)
        members = self._members.get(key)
        if members is not None:
            members.discard(reader)
            if not members:
                del self._members[key]

    # -- ephemeral destinations (invocation replies and requests, presence) ---------------------

    async def subscribe_ephemeral(
        self,
        topic: str,
        handler: DeliveryHandler,
        *,
        group: str | None = None,
        exclusive: bool = False,
        concurrency: int = 1,
    ) -> Subscription:
        """With a group, an ordinary subscription (Kafka has no lighter shared consumer). Without,
        a group-less consumer of every partition from the end (see :mod:`.ephemeral`); the mesh
        creates the topic with one partition and deletes an exclusive one at stop."""
        if group is not None:
            return await self.subscribe(topic, group, handler, concurrency=concurrency)
        await self.connection.ensure(self.name_of(topic), 1)
        sub = EphemeralSubscription(self.connection, topic, handler, concurrency, exclusive, self._forget_ephemeral)
        await sub.start()
        self._ephemeral.append(sub)
        return sub

    def _forget_ephemeral(self, sub: EphemeralSubscription) -> None:
        if sub in self._ephemeral:
            self._ephemeral.remove(sub)

    async def publish_ephemeral(self, topic: str, event: Event) -> None:
        """Send to an existing topic; a topic that does not exist (its reader is gone) is never
        created: the event is dropped. Bounded by ``connect_timeout``."""
        conn = self.connection
        name = self.name_of(topic)
        if not await conn.exists(name):
            log.debug("kafka topic %s does not exist: dropped %s", name, event.type)
            return
        value, key, headers = record_of(event, self.wire)
        try:
            async with asyncio.timeout(self.settings.connect_timeout):
                await conn.send(name, value, key, headers)
        except (PublishError, TimeoutError) as exc:
            if not await conn.exists(name, fresh=True):  # deleted since this client last saw it: dropped
                log.debug("kafka topic %s is gone: dropped %s", name, event.type)
                return
            raise PublishError(f"kafka did not take the record for {name!r}: {exc}") from exc
