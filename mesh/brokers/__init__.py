"""Broker adapters behind one contract (:mod:`mesh.brokers.base`).

Adapters are imported on first use, so ``import mesh`` loads no broker client. A missing client
library raises :class:`~mesh.errors.BrokerNotInstalled` naming the extra to install.
"""

from __future__ import annotations

import importlib
from typing import Any

from mesh.brokers.base import Broker, Delivery, DeliveryHandler, Features, Subscription
from mesh.errors import BrokerNotInstalled, ConfigError

__all__ = [
    "BROKER_TYPES",
    "Broker",
    "Delivery",
    "DeliveryHandler",
    "Features",
    "Subscription",
    "broker_class",
    "create_broker",
]

# type -> (module, class, extra, client import name)
BROKER_TYPES: dict[str, tuple[str, str, str, str | None]] = {
    "memory": ("mesh.brokers.memory", "MemoryBroker", "", None),
    "kafka": ("mesh.brokers.kafka", "KafkaBroker", "kafka", "aiokafka"),
    "rabbitmq": ("mesh.brokers.rabbitmq", "RabbitMQBroker", "rabbitmq", "aio_pika"),
    "nats": ("mesh.brokers.nats", "NatsBroker", "nats", "nats"),
    "jetstream": ("mesh.brokers.jetstream", "JetStreamBroker", "nats", "nats"),
    "redis": ("mesh.brokers.redis", "RedisBroker", "redis", "redis"),
}


def broker_class(kind: str) -> type[Broker]:
    """The adapter class for a broker type, imported now."""
    try:
        module_name, class_name, extra, client = BROKER_TYPES[kind]
    except KeyError:
        known = ", ".join(BROKER_TYPES)
        raise ConfigError([("broker.type", f"unknown broker type {kind!r} (one of: {known})")]) from None
    if client is not None:
        try:
            importlib.import_module(client)
        except ImportError as exc:
            raise BrokerNotInstalled(kind, extra) from exc
    cls: type[Broker] = getattr(importlib.import_module(module_name), class_name)
    return cls


def create_broker(kind: str, url: str | None = None, **kwargs: Any) -> Broker:
    """A new, unconnected broker of the given type (``memory``, ``kafka``, ...)."""
    return broker_class(kind)(url, **kwargs)
