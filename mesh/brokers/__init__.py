"""Broker adapters behind one contract (:mod:`mesh.brokers.base`), one registry entry per type.

=========  =====================================  ========  =========  ==================
type       adapter                                 extra     binding    messaging.system
=========  =====================================  ========  =========  ==================
memory     :mod:`mesh.brokers.memory`              (none)    (objects)  memory
kafka      :mod:`mesh.brokers.kafka`               kafka     KAFKA      kafka
rabbitmq   :mod:`mesh.brokers.rabbitmq`            rabbitmq  AMQP       rabbitmq
nats       :mod:`mesh.brokers.nats` (core)         nats      NATS       nats
jetstream  :mod:`mesh.brokers.nats` (JetStream)    nats      NATS       nats
redis      :mod:`mesh.brokers.redis`               redis     REDIS      redis
=========  =====================================  ========  =========  ==================

Adapters are imported on first use, so ``import mesh`` loads no broker client; a missing client
library raises :class:`~mesh.errors.BrokerNotInstalled` naming the extra to install. A plugin adds
a broker type with ``registry.add_broker(BrokerInfo(...))`` in ``mesh_register_components``.
"""

from __future__ import annotations

from typing import Any

from mesh.brokers.base import Broker, BrokerOptions, Delivery, DeliveryHandler, Features, Subscription
from mesh.codecs.bindings import AMQP, KAFKA, NATS, REDIS
from mesh.components import BrokerInfo, Registry

__all__ = [
    "BUILTIN_BROKERS",
    "Broker",
    "BrokerInfo",
    "BrokerOptions",
    "Delivery",
    "DeliveryHandler",
    "Features",
    "Subscription",
    "broker_class",
    "create_broker",
]

BUILTIN_BROKERS: tuple[BrokerInfo, ...] = (
    BrokerInfo(
        type="memory",
        target="mesh.brokers.memory:MemoryBroker",
        options="mesh.brokers.memory:MemoryOptions",
        messaging_system="memory",
        summary="in-process broker for development and tests",
    ),
    BrokerInfo(
        type="kafka",
        target="mesh.brokers.kafka.broker:KafkaBroker",
        options="mesh.brokers.kafka.options:KafkaOptions",
        extra="kafka",
        client="aiokafka",
        binding=KAFKA,
        messaging_system="kafka",
        summary="Apache Kafka (aiokafka)",
    ),
    BrokerInfo(
        type="rabbitmq",
        target="mesh.brokers.rabbitmq.broker:RabbitMQBroker",
        options="mesh.brokers.rabbitmq.options:RabbitMQOptions",
        extra="rabbitmq",
        client="aio_pika",
        binding=AMQP,
        messaging_system="rabbitmq",
        summary="RabbitMQ over AMQP 0-9-1 (aio-pika)",
    ),
    BrokerInfo(
        type="nats",
        target="mesh.brokers.nats.core:NatsBroker",
        options="mesh.brokers.nats.options:NatsOptions",
        extra="nats",
        client="nats",
        binding=NATS,
        messaging_system="nats",
        summary="core NATS (nats-py): fast, no persistence",
    ),
    BrokerInfo(
        type="jetstream",
        target="mesh.brokers.nats.jetstream:JetStreamBroker",
        options="mesh.brokers.nats.options:JetStreamOptions",
        extra="nats",
        client="nats",
        binding=NATS,
        messaging_system="nats",
        summary="NATS JetStream (nats-py): streams and durable consumers",
    ),
    BrokerInfo(
        type="redis",
        target="mesh.brokers.redis.broker:RedisBroker",
        options="mesh.brokers.redis.options:RedisOptions",
        extra="redis",
        client="redis",
        binding=REDIS,
        messaging_system="redis",
        summary="Redis Streams (redis-py)",
    ),
)
"""The broker types every App knows; plugins add more through the registry."""


def broker_class(kind: str, registry: Registry | None = None) -> type[Broker]:
    """The adapter class (or factory) of a broker type, imported now."""
    cls: type[Broker] = (registry or Registry()).load("broker", kind)
    return cls


def create_broker(kind: str, url: str | None = None, *, registry: Registry | None = None, **kwargs: Any) -> Broker:
    """A new, unconnected broker of the given type (``memory``, ``kafka``, ...)."""
    broker: Broker = broker_class(kind, registry)(url, **kwargs)
    return broker
