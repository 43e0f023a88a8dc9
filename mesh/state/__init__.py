"""State: key/value stores with ETags, TTL, transactions and queries, every change a CloudEvent.

==========  =====  ===  ============  =======  ===============================  ==========
store       ETag   TTL  transactions  queries  changes                          extra
==========  =====  ===  ============  =======  ===============================  ==========
memory      yes    yes  yes           yes      outbox (in process)              -
sqlite      yes    yes  yes           yes      outbox table, same transaction   -
postgres    yes    yes  yes           yes      outbox table, same transaction   postgres
redis       yes    yes  yes (Lua)     no       outbox stream, same script       redis
nats-kv     rev    no   no            no       the bucket's watch               nats
==========  =====  ===  ============  =======  ===============================  ==========

``app.state(name)`` returns a :class:`~mesh.state.handle.StateStore`; the backends sit behind
:class:`~mesh.state.base.Backend` and are imported only when a config names them.
"""

from __future__ import annotations

from mesh.components import ComponentInfo, Registry
from mesh.state.base import Backend, Features, Page, StateItem
from mesh.state.errors import (
    ETagMismatch,
    InvalidKey,
    InvalidQuery,
    InvalidValue,
    StateError,
    StoreNotFound,
    StoreUnavailable,
)
from mesh.state.events import CHANGED, DELETED, EXT_ETAG, EXT_STORE
from mesh.state.handle import StateStore, Transaction

__all__ = [
    "BUILTIN_STATE_STORES",
    "CHANGED",
    "DELETED",
    "EXT_ETAG",
    "EXT_STORE",
    "Backend",
    "ETagMismatch",
    "Features",
    "InvalidKey",
    "InvalidQuery",
    "InvalidValue",
    "Page",
    "StateError",
    "StateItem",
    "StateStore",
    "StoreNotFound",
    "StoreUnavailable",
    "Transaction",
    "register",
]

BUILTIN_STATE_STORES: tuple[ComponentInfo, ...] = (
    ComponentInfo(kind="state", type="memory", target="mesh.state.memory:MemoryStore",
                  options="mesh.state.options:StateOptions", summary="in-process store for development and tests"),
    ComponentInfo(kind="state", type="sqlite", target="mesh.state.sqlite:SQLiteStore",
                  options="mesh.state.options:SQLiteOptions", summary="one SQLite file (stdlib sqlite3)"),
    ComponentInfo(kind="state", type="postgres", target="mesh.state.postgres:PostgresStore",
                  options="mesh.state.options:PostgresOptions", extra="postgres", client="asyncpg",
                  summary="PostgreSQL, JSONB values (asyncpg)"),
    ComponentInfo(kind="state", type="redis", target="mesh.state.redis:RedisStore",
                  options="mesh.state.options:RedisOptions", extra="redis", client="redis",
                  summary="Redis, Lua check-and-set (redis-py)"),
    ComponentInfo(kind="state", type="nats-kv", target="mesh.state.nats_kv:NatsKVStore",
                  options="mesh.state.options:NatsKVOptions", extra="nats", client="nats",
                  summary="NATS JetStream KV, revisions as ETags (nats-py)"),
)
"""The state store types every App knows; plugins add more with ``registry.add(ComponentInfo(kind="state"...))``."""


def register(registry: Registry) -> None:
    """Add the built-in store types to a registry that has none yet (plugins' entries are kept)."""
    known = set(registry.types("state"))
    for info in BUILTIN_STATE_STORES:
        if info.type not in known:
            registry.add(info)
