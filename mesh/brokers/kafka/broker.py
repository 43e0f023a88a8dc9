"""The Kafka adapter (aiokafka): topics, consumer groups, manual commits, a retry topic per group.

What it creates: a topic per mesh topic (``options.partitions``, ``options.replication_factor``)
and, per subscription, a retry topic ``_mesh.retry.<group>.<topic>``. A subscription is one
Kafka consumer in consumer group ``group`` reading both (see :mod:`mesh.brokers.kafka.consumer`
for commits, nacks and the retry topic). Keyed events are partitioned by murmur2 of
``partitionkey`` as the Java client does, so order per key holds within a partition.

Delivery: at least once. Offsets are committed by hand, only below the lowest delivery not yet
acked in each partition; a consumer that dies loses nothing, its group resumes from the last
commit. See docs/brokers/kafka.md.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import re
import weakref
from collections.abc import Mapping
from types import ModuleType
from typing import Any, ClassVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, for_code
from aiokafka.helpers import create_ssl_context
from aiokafka.partitioner import DefaultPartitioner
from pydantic import ValidationError

from mesh.brokers.base import RESERVED_PREFIX, Broker, DeliveryHandler, Features, Subscription
from mesh.brokers.capabilities import DelegatedHistory
from mesh.brokers.kafka import history as _replay
from mesh.brokers.kafka.consumer import KafkaDelivery, KafkaSubscription, quietly, reason
from mesh.brokers.kafka.ephemeral import EphemeralSubscription
from mesh.brokers.kafka.options import KafkaOptions
from mesh.codecs.binary import encode
from mesh.codecs.bindings import KAFKA
from mesh.errors import BrokerConnectionError, BrokerError, ConfigError, PublishError
from mesh.event import Event

__all__ = ["KafkaBroker", "KafkaDelivery", "StickyPartitioner", "parse_servers"]

log = logging.getLogger("mesh.broker.kafka")

TOPIC_EXISTS = 36
"""Kafka's error code for creating a topic that exists (fine: ensure means 'exists after')."""
UNKEYED_RUN = 100
"""Unkeyed records sent to one partition before the partitioner moves on."""
ABSENT_RECHECK = 1.0
"""Seconds an ephemeral publish trusts that a topic does not exist before asking again."""
_keyed = DefaultPartitioner()
_ILLEGAL = re.compile(r"[^A-Za-z0-9._-]")


def parse_servers(url: str | None) -> list[str]:
    """``host:port[,host:port]`` (optionally ``kafka://``-prefixed) to a bootstrap list."""
    text = (url or "127.0.0.1:9092").strip()
    servers = []
    for item in text.split(","):
        item = item.strip()
        if item[:8].lower() == "kafka://":
            item = item[8:]
        item = item.rstrip("/")
        host, sep, port = item.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536 or "/" in host:
            raise ValueError(f"{item!r} is not host:port")
        servers.append(item)
    return servers


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


class KafkaBroker(DelegatedHistory, Broker):
    """Kafka through aiokafka; ``url`` is ``host:port[,host:port]`` (``kafka://`` optional).

    Options: see :class:`~mesh.brokers.kafka.options.KafkaOptions`.
    """

    _replay: ClassVar[ModuleType] = _replay  # the replay capabilities live in mesh.brokers.kafka.history

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
    # Members of one group in this process, to wait for a rebalance a new member causes.
    _members: ClassVar[dict[tuple[int, str, str], weakref.WeakSet[KafkaSubscription]]] = {}

    def __init__(self, url: str | None = None, **kwargs: Any) -> None:
        super().__init__(url, **kwargs)
        try:
            self.opts = KafkaOptions.model_validate(self.options)
        except ValidationError as exc:
            raise ConfigError(
                [("broker.options." + ".".join(map(str, e["loc"])), e["msg"]) for e in exc.errors()]
            ) from None
        self.address = url or "127.0.0.1:9092"
        self._servers: list[str] = []
        self._producer: AIOKafkaProducer | None = None
        self._admin: AIOKafkaAdminClient | None = None
        self._known: set[str] = set()
        self._create_lock = asyncio.Lock()
        self._subs: list[KafkaSubscription] = []
        self._ephemeral: list[EphemeralSubscription] = []
        self._absent: dict[str, float] = {}

    # -- connection ------------------------------------------------------------------------------

    def _client_config(self) -> dict[str, Any]:
        o = self.opts
        config: dict[str, Any] = {
            "bootstrap_servers": self._servers,
            "client_id": o.client_id or self.client_id,
            "request_timeout_ms": o.request_timeout_ms,
            "security_protocol": o.security_protocol,
        }
        if o.security_protocol.startswith("SASL"):
            config["sasl_mechanism"] = o.sasl_mechanism
            config["sasl_plain_username"] = o.sasl_username
            config["sasl_plain_password"] = o.sasl_password.get_secret_value() if o.sasl_password else None
        if o.security_protocol.endswith("SSL"):
            config["ssl_context"] = create_ssl_context(
                cafile=o.ssl_cafile, certfile=o.ssl_certfile, keyfile=o.ssl_keyfile
            )
        return config

    async def connect(self) -> None:
        if self._producer is not None:
            return
        try:
            self._servers = parse_servers(self.url)
        except ValueError as exc:
            raise BrokerConnectionError("kafka", self.address, f"bad url: {exc}") from None
        o = self.opts
        common = self._client_config()
        try:
            producer = AIOKafkaProducer(
                **common,
                acks=o.acks,
                compression_type=None if o.compression == "none" else o.compression,
                linger_ms=o.linger_ms,
                max_batch_size=o.max_batch_size,
                max_request_size=o.max_request_size,
                enable_idempotence=False,
                partitioner=StickyPartitioner(),
            )
        except RuntimeError as exc:  # a compression library is missing
            raise ConfigError([("broker.options.compression", str(exc))]) from None
        admin = AIOKafkaAdminClient(**common)
        try:
            async with asyncio.timeout(o.connect_timeout):
                await producer.start()
                await admin.start()
        except (KafkaError, OSError, TimeoutError) as exc:
            await quietly(producer.stop())
            await quietly(admin.close())
            raise BrokerConnectionError("kafka", self.address, reason(exc, o.connect_timeout)) from exc
        self._producer, self._admin = producer, admin

    async def close(self) -> None:
        ephemeral, self._ephemeral = self._ephemeral, []
        for eph in ephemeral:
            await eph.stop()
        subs, self._subs = self._subs, []
        for sub in subs:
            await sub.stop()
        producer, admin = self._producer, self._admin
        self._producer = self._admin = None
        if producer is not None:
            await quietly(producer.stop())
        if admin is not None:
            await quietly(admin.close())

    # -- topology --------------------------------------------------------------------------------

    async def ensure_topic(self, topic: str) -> None:
        await self._ensure(self.name_of(topic), self.opts.partitions, {})

    async def _ensure(self, name: str, partitions: int, config: Mapping[str, str]) -> None:
        if name in self._known:
            return
        admin = self._admin
        if admin is None:
            raise BrokerError("the kafka broker is not connected: call connect() first")
        async with self._create_lock:
            if name in self._known:
                return
            o = self.opts
            configs = {**o.topic_config, **config}
            topic = NewTopic(name, partitions, o.replication_factor, topic_configs=configs)
            try:
                response = await admin.create_topics([topic], timeout_ms=o.request_timeout_ms)
            except KafkaError as exc:
                raise BrokerError(f"cannot create kafka topic {name!r}: {reason(exc)}") from exc
            for item in response.topic_errors:
                code = item[1]
                if code not in (0, TOPIC_EXISTS):
                    detail = item[2] if len(item) > 2 and item[2] else for_code(code).__name__
                    raise BrokerError(f"cannot create kafka topic {name!r}: {detail}")
            self._known.add(name)

    def retry_topic(self, topic: str, group: str) -> str:
        """The retry topic of one group's subscription to a topic (under the reserved prefix)."""
        raw = self.name_of(f"{RESERVED_PREFIX}retry.{group}.{topic}")
        name = _ILLEGAL.sub("_", raw)
        if name != raw or len(name) > 200:  # keep distinct names distinct, within Kafka's 249
            name = f"{name[:200]}.{hashlib.sha1(raw.encode()).hexdigest()[:12]}"
        return name

    # -- publish and subscribe -------------------------------------------------------------------

    async def publish(self, topic: str, event: Event) -> None:
        name = self.name_of(topic)
        if name not in self._known:
            try:
                await self._ensure(name, self.opts.partitions, {})
            except BrokerError as exc:
                raise PublishError(str(exc)) from exc
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

    async def send(self, name: str, value: bytes | None, key: bytes | None, headers: list[Any]) -> None:
        """Write one record to a broker-side topic; returns once the cluster has it."""
        producer = self._producer
        if producer is None:
            raise PublishError("the kafka broker is not connected: call connect() first")
        try:
            await (await producer.send(name, value, key=key, headers=headers))
        except KafkaError as exc:
            raise PublishError(f"kafka did not take the record for {name!r}: {reason(exc)}") from exc

    async def subscribe(
        self, topic: str, group: str, handler: DeliveryHandler, *, concurrency: int = 1
    ) -> Subscription:
        o = self.opts
        name = self.name_of(topic)
        retry = self.retry_topic(topic, group)
        await self._ensure(name, o.partitions, {})
        retry_config = {} if o.retry_retention_ms is None else {"retention.ms": str(o.retry_retention_ms)}
        await self._ensure(retry, o.retry_partitions or o.partitions, retry_config)
        consumer = AIOKafkaConsumer(
            **self._client_config(),
            group_id=group,
            group_instance_id=f"{o.group_instance_id}-{topic}" if o.group_instance_id else None,
            enable_auto_commit=False,
            auto_offset_reset=o.initial_offset,
            fetch_max_wait_ms=o.fetch_max_wait_ms,
            max_poll_records=o.max_poll_records,
            session_timeout_ms=o.session_timeout_ms,
            heartbeat_interval_ms=o.heartbeat_interval_ms,
            max_poll_interval_ms=o.max_poll_interval_ms,
            rebalance_timeout_ms=o.rebalance_timeout_ms,
        )
        sub = KafkaSubscription(self, topic, group, retry, consumer, handler, concurrency)
        await sub.start(name, o.join_timeout, o.connect_timeout)
        self._subs.append(sub)
        members = self._members.setdefault(self._group_key(group), weakref.WeakSet())
        members.add(sub)
        await self._wait_for_peers(sub, members, o.join_timeout)
        return sub

    def _group_key(self, group: str) -> tuple[int, str, str]:
        return (id(asyncio.get_running_loop()), ",".join(self._servers), group)

    @staticmethod
    async def _wait_for_peers(
        sub: KafkaSubscription, members: weakref.WeakSet[KafkaSubscription], limit: float
    ) -> None:
        """A new member makes the group rebalance: wait until this process's other members of
        the group have their partitions back, so a group is ready when ``subscribe`` returns.
        (Every member revoked before this one got its assignment, so none is missed.)"""
        peers = [m.is_assigned.wait() for m in members if m is not sub and m.running]
        if peers:
            try:
                await asyncio.wait_for(asyncio.gather(*peers), limit)
            except TimeoutError:
                log.warning("kafka group %s: other members got no partitions within %gs", sub.group, limit)

    def forget(self, sub: KafkaSubscription) -> None:
        """Drop a stopped subscription from the broker's books."""
        if sub in self._subs:
            self._subs.remove(sub)
        key = self._group_key(sub.group)
        members = self._members.get(key)
        if members is not None:
            members.discard(sub)
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
        a group-less consumer of every partition from the end (see :mod:`._kafka_ephemeral`); the
        mesh creates the topic with one partition and deletes an exclusive one at stop."""
        if group is not None:
            return await self.subscribe(topic, group, handler, concurrency=concurrency)
        name = self.name_of(topic)
        await self._ensure(name, 1, {})
        o = self.opts
        consumer = AIOKafkaConsumer(
            **self._client_config(),
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="latest",
            fetch_max_wait_ms=o.ephemeral_fetch_max_wait_ms,
            max_poll_records=o.max_poll_records,
        )
        sub = EphemeralSubscription(self, topic, name, consumer, handler, concurrency, exclusive)
        await sub.start(o.connect_timeout)
        self._ephemeral.append(sub)
        return sub

    async def forget_ephemeral(self, sub: EphemeralSubscription) -> None:
        """Called by a stopped ephemeral subscription: an exclusive topic is deleted."""
        if sub in self._ephemeral:
            self._ephemeral.remove(sub)
        if not sub.exclusive:
            return
        self._known.discard(sub.name)
        self._absent[sub.name] = asyncio.get_running_loop().time()  # this client's metadata still has it
        admin = self._admin
        if admin is not None:
            try:
                async with asyncio.timeout(self.opts.connect_timeout):
                    await admin.delete_topics([sub.name], timeout_ms=self.opts.request_timeout_ms)
            except (KafkaError, OSError, TimeoutError) as exc:
                log.warning("could not delete the kafka topic %s: %s", sub.name, reason(exc))

    async def publish_ephemeral(self, topic: str, event: Event) -> None:
        """Send to an existing topic; a topic that does not exist (its reader is gone) is never
        created: the event is dropped. Bounded by ``connect_timeout``."""
        name = self.name_of(topic)
        if not await self._exists(name):
            log.debug("kafka topic %s does not exist: dropped %s", name, event.type)
            return
        msg = encode(event, self.wire)
        headers = [(k, v.encode() if type(v) is str else v) for k, v in msg.headers.items()]
        if msg.content_type is not None:
            headers.append(("content-type", msg.content_type.encode()))
        key = None if msg.key is None else msg.key.encode()
        try:
            async with asyncio.timeout(self.opts.connect_timeout):
                await self.send(name, msg.body, key, headers)
        except (PublishError, TimeoutError) as exc:
            if not await self._exists(name, fresh=True):  # deleted since this client last saw it: dropped
                log.debug("kafka topic %s is gone: dropped %s", name, event.type)
                return
            raise PublishError(f"kafka did not take the record for {name!r}: {exc}") from exc

    async def _exists(self, name: str, fresh: bool = False) -> bool:
        """Whether a topic exists, asking the cluster at most once a second per missing name
        (with the admin API: a metadata request naming the topic could create it where
        auto-creation is on); ``fresh`` asks now."""
        if name in self._known and not fresh:
            return True
        producer = self._producer
        if producer is None:
            raise PublishError("the kafka broker is not connected: call connect() first")
        loop = asyncio.get_running_loop()
        if not fresh:
            if producer.client.cluster.partitions_for_topic(name) is not None and name not in self._absent:
                return True
            checked = self._absent.get(name)
            if checked is not None and loop.time() - checked < ABSENT_RECHECK:
                return False
        admin = self._admin
        try:
            names = set(await admin.list_topics()) if admin is not None else set()
        except KafkaError as exc:
            raise PublishError(f"kafka: cannot list topics: {reason(exc)}") from exc
        if name in names:
            self._absent.pop(name, None)
            return True
        if len(self._absent) > 10_000:
            self._absent.clear()
        self._absent[name] = loop.time()
        return False
