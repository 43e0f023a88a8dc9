"""Built-in idempotency plugin: drop redeliveries of an event a group already handled.

At-least-once delivery plus this plugin gives an exactly-once *effect* for handlers that opt in::

    subscriptions:
      payments: {idempotent: true}          # or defaults: {idempotent: true} for every topic
    plugins:
      config:
        idempotency: {store: memory, window: 1h, max_keys: 100000}
        # or {store: redis, url: redis://127.0.0.1:6379/0} to share the record between instances

The key is the group, the event's ``source`` and ``id`` (the CloudEvents identity). An event is
recorded only after its handler succeeded, so a failure is retried as usual; a second delivery
of a recorded event within ``window`` is acked without calling the handler. Two deliveries of one
event that run at the same moment on two instances may both run (the record is written after
success): keep handlers safe for that rare case, or use a store with a lock of your own.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from mesh.config import MeshConfig, parse_duration, plugin_settings
from mesh.hooks import hookimpl
from mesh.keystores import KeyStore, open_key_store
from mesh.runtime import Runtime
from mesh.types import Context, Handle, HandlerLayer, SubscriptionInfo

name = "idempotency"


class Settings(BaseModel):
    """``plugins.config.idempotency``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    store: Literal["memory", "redis"] = "memory"
    url: str = "redis://127.0.0.1:6379/0"
    """Redis URL, for ``store: redis``."""
    window: float = 3600.0
    """How long an event is remembered (seconds or '1h', '7d')."""
    max_keys: int = Field(100_000, ge=1)
    """Memory store: most events remembered (oldest forgotten first)."""
    prefix: str = "_mesh.idem:"
    """Redis store: key prefix."""

    _duration = field_validator("window", mode="before")(lambda v: parse_duration(v))


def _open_store(settings: Settings) -> KeyStore:
    return open_key_store(settings.store, url=settings.url, prefix=settings.prefix, max_keys=settings.max_keys)


@hookimpl
def mesh_configure(runtime: Runtime, config: MeshConfig) -> None:
    wanted = bool(config.defaults.idempotent) or any(s.idempotent for s in config.subscriptions.values())
    if wanted:
        settings = plugin_settings(Settings, config, name)
        store = _open_store(settings)
        runtime.plugin_state[name] = (settings, store)
        close = getattr(store, "close", None)
        if close is not None:
            runtime.on_stop(close)


@hookimpl
def mesh_handler_layers(runtime: Runtime, subscription: SubscriptionInfo) -> HandlerLayer | None:
    if not subscription.config.idempotent or name not in runtime.plugin_state:
        return None
    settings, store = runtime.plugin_state[name]
    group, ttl = subscription.group, settings.window

    def layer(next_: Handle) -> Handle:
        async def handle(ctx: Context) -> Any:
            event = ctx.event
            assert event is not None
            key = f"{group}:{event.source}:{event.id}"
            if await store.seen(key):
                ctx.state["duplicate"] = True
                return None
            result = await next_(ctx)
            await store.remember(key, ttl)
            return result

        return handle

    return layer
