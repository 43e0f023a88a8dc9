"""The options of each store type (``state: {<name>: {type: ..., <options>}}``)."""

from __future__ import annotations

import re
from typing import Any

from pydantic import field_validator

from mesh.components import ComponentOptions

__all__ = ["NatsKVOptions", "PostgresOptions", "RedisOptions", "SQLOptions", "SQLiteOptions", "StateOptions"]

IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,50}\Z")


def _duration(value: Any) -> float | None:
    if value is None:
        return None
    from mesh.config.models import parse_duration

    return parse_duration(value)


class StateOptions(ComponentOptions):
    """What every store takes."""

    url: str | None = None
    """Where the store lives (``postgresql://``, ``redis://``, ``nats://``, ``sqlite:///file.db``)."""
    ttl: float | None = None
    """Default time to live of a key written without ``ttl=`` (seconds, or ``30m``, ``1h``...)."""
    changes: str | None = None
    """The topic every committed set and delete is published on as a CloudEvent."""
    changes_data: bool = True
    """Put the new value in ``mesh.state.changed`` events (off: key and ETag only)."""
    shared: bool = False
    """Keys are not prefixed with the app id: every app sees the same keys."""
    key_prefix: str | None = None
    """Prefix keys with this instead of the app id."""
    sweep_interval: float = 30.0
    """Seconds between background removals of expired keys."""
    relay_lease: float = 10.0
    """Seconds the instance that relays the changes holds its lease: another takes over at most
    this long after it stops (or dies)."""

    @field_validator("ttl", mode="before")
    @classmethod
    def _ttl(cls, value: Any) -> float | None:
        return _duration(value)

    @field_validator("relay_lease", "sweep_interval", mode="before")
    @classmethod
    def _seconds(cls, value: Any) -> float:
        seconds = _duration(value)
        if seconds is None or seconds <= 0:
            raise ValueError("must be a positive duration")
        return seconds


class SQLOptions(StateOptions):
    """The SQL stores: one table of state and one of outbox rows (``<table>_outbox``)."""

    table: str = "mesh_state"

    @field_validator("table")
    @classmethod
    def _table(cls, value: str) -> str:
        if not IDENTIFIER.match(value):
            raise ValueError(f"table must be an SQL identifier ([A-Za-z_][A-Za-z0-9_]*), not {value!r}")
        return value


class SQLiteOptions(SQLOptions):
    """SQLite: ``url: sqlite:///path.db`` (one file, WAL)."""


class PostgresOptions(SQLOptions):
    """PostgreSQL (asyncpg, JSONB values)."""

    pool_size: int = 10


class RedisOptions(StateOptions):
    """Redis: one hash per key, Lua for check-and-set, the outbox a stream."""

    namespace: str | None = None
    """Prefix of every Redis key of this store (default ``mesh:state:<store name>``)."""


class NatsKVOptions(StateOptions):
    """NATS JetStream KV: the revision is the ETag, the bucket's watch feeds ``changes``."""

    bucket: str | None = None
    """The KV bucket (default ``mesh-state-<store name>``), created if missing."""
