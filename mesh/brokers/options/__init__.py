"""Validated ``broker.options`` per broker type: pure pydantic models, no client imports.

Each adapter validates its own options with its model (``Model.model_validate(options)``); the
config loader uses the same models so a mistyped option is reported with its path in the file.
"""

from __future__ import annotations

import importlib

from pydantic import BaseModel, ConfigDict

__all__ = ["BrokerOptions", "options_model"]


class BrokerOptions(BaseModel):
    """Base of every broker's options: unknown keys are errors, values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


_MODELS = {
    "memory": ("mesh.brokers.options.memory", "MemoryOptions"),
    "kafka": ("mesh.brokers.options.kafka", "KafkaOptions"),
    "rabbitmq": ("mesh.brokers.options.rabbitmq", "RabbitMQOptions"),
    "nats": ("mesh.brokers.options.nats", "NatsOptions"),
    "jetstream": ("mesh.brokers.options.nats", "JetStreamOptions"),
    "redis": ("mesh.brokers.options.redis", "RedisOptions"),
}


def options_model(broker_type: str) -> type[BrokerOptions]:
    """The options model of a broker type."""
    module, name = _MODELS[broker_type]
    model: type[BrokerOptions] = getattr(importlib.import_module(module), name)
    return model
