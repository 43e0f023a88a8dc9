"""The PostgreSQL store (asyncpg): values as JSONB, ETag checks in the statements themselves.

============================  =============================================================
write                         statement (one per op; several, or with outbox rows: one
                              transaction)
============================  =============================================================
set                           ``INSERT .. ON CONFLICT DO UPDATE`` (last write wins)
set with ``etag``             ``UPDATE .. WHERE etag = $e AND not expired`` (0 rows: mismatch)
set with ``create``           ``INSERT .. ON CONFLICT DO UPDATE .. WHERE expired`` (0: mismatch)
delete (with ``etag``)        ``DELETE .. WHERE key (AND etag = $e AND not expired)``
============================  =============================================================

The outbox is the table ``<table>_outbox`` (``bigserial`` sequence); a row lock on the key makes
the second writer of a key append its change after the first one's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import asyncpg

from mesh.state.base import Backend, Features, Op, OutboxRow, Row
from mesh.state.errors import ETagMismatch, StateError, StoreUnavailable
from mesh.state.options import PostgresOptions
from mesh.state.query import Query, compile_sql

__all__ = ["PostgresStore"]


def _count(status: str) -> int:
    return int(status.rsplit(" ", 1)[-1])


class PostgresStore(Backend):
    """A store in one PostgreSQL table (see the module docstring)."""

    features: ClassVar[Features] = Features()
    type: ClassVar[str] = "postgres"
    db_system: ClassVar[str] = "postgresql"

    def __init__(self, name: str, settings: PostgresOptions) -> None:
        self.name = name
        self.url = settings.url or "postgresql://127.0.0.1:5432/postgres"
        self.t = t = settings.table
        self.pool_size = settings.pool_size
        self._pool: Any = None
        live = "(expires IS NULL OR expires > $2)"
        self.sql_get = f"SELECT key, value::text, etag FROM {t} WHERE key = $1 AND {live}"
        self.sql_many = f"SELECT key, value::text, etag FROM {t} WHERE key = ANY($1::text[]) AND {live}"
        self.sql_upsert = (f"INSERT INTO {t} (key, value, etag, expires) VALUES ($1, $2::jsonb, $3, $4) "
                           "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, etag = EXCLUDED.etag, "
                           "expires = EXCLUDED.expires")
        self.sql_create = (f"INSERT INTO {t} AS t (key, value, etag, expires) VALUES ($1, $2::jsonb, $3, $4) "
                           "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, etag = EXCLUDED.etag, "
                           "expires = EXCLUDED.expires WHERE t.expires IS NOT NULL AND t.expires <= $5")
        self.sql_update = (f"UPDATE {t} SET value = $2::jsonb, etag = $3, expires = $4 "
                           "WHERE key = $1 AND etag = $5 AND (expires IS NULL OR expires > $6)")
        self.sql_delete = f"DELETE FROM {t} WHERE key = $1"
        self.sql_delete_etag = f"DELETE FROM {t} WHERE key = $1 AND etag = $2 AND (expires IS NULL OR expires > $3)"
        self.sql_outbox = f"INSERT INTO {t}_outbox (topic, body) VALUES ($1, $2)"

    async def open(self) -> None:
        if self._pool is not None:
            return
        try:
            self._pool = await asyncpg.create_pool(self.url, min_size=1, max_size=self.pool_size, timeout=5)
        except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
            raise StoreUnavailable(self.name, f"cannot connect to {self.url}: {exc}") from exc
        t = self.t
        async with self._pool.acquire() as c:
            await c.execute(f"CREATE TABLE IF NOT EXISTS {t} (key text PRIMARY KEY, value jsonb NOT NULL, "
                            "etag text NOT NULL, expires double precision)")
            await c.execute(f"CREATE INDEX IF NOT EXISTS {t}_expires ON {t} (expires) WHERE expires IS NOT NULL")
            await c.execute(f"CREATE TABLE IF NOT EXISTS {t}_outbox (seq bigserial PRIMARY KEY, "
                            "topic text NOT NULL, body text NOT NULL)")

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def read(self, keys: Sequence[str], now: float) -> dict[str, Row]:
        if len(keys) == 1:
            rows = await self._pool.fetch(self.sql_get, keys[0], now)
        else:
            rows = await self._pool.fetch(self.sql_many, list(keys), now)
        return {r[0]: Row(r[0], r[1], r[2]) for r in rows}

    async def _apply(self, c: Any, op: Op, now: float) -> None:
        if op.kind == "set":
            if op.etag is not None:
                n = _count(await c.execute(self.sql_update, op.key, op.value, op.new_etag, op.expires, op.etag, now))
            elif op.create:
                n = _count(await c.execute(self.sql_create, op.key, op.value, op.new_etag, op.expires, now))
            else:
                await c.execute(self.sql_upsert, op.key, op.value, op.new_etag, op.expires)
                return
        elif op.etag is not None:
            n = _count(await c.execute(self.sql_delete_etag, op.key, op.etag, now))
        else:
            await c.execute(self.sql_delete, op.key)
            return
        if n == 0:
            raise ETagMismatch(self.name, op.key, op.etag)

    async def write(self, ops: Sequence[Op], outbox: Sequence[tuple[str, str]], now: float) -> None:
        try:
            async with self._pool.acquire() as c:
                if len(ops) == 1 and not outbox:
                    await self._apply(c, ops[0], now)
                    return
                async with c.transaction():
                    for op in ops:
                        await self._apply(c, op, now)
                    if outbox:
                        await c.executemany(self.sql_outbox, outbox)
        except asyncpg.PostgresError as exc:
            raise StateError(self.name, f"{type(exc).__name__}: {exc}", ops[0].key if ops else None) from exc
        except OSError as exc:
            raise StoreUnavailable(self.name, f"lost {self.url}: {exc}") from exc

    async def query(self, q: Query, now: float) -> list[Row]:
        where, order, params = compile_sql(q, "postgres", now)
        sql = f"SELECT key, value::text, etag FROM {self.t} WHERE {where} ORDER BY {order} LIMIT {q.limit}"
        rows = await self._pool.fetch(sql, *params)
        return [Row(r[0], r[1], r[2]) for r in rows]

    async def outbox_read(self, limit: int) -> list[OutboxRow]:
        rows = await self._pool.fetch(f"SELECT seq, topic, body FROM {self.t}_outbox ORDER BY seq LIMIT {int(limit)}")
        return [OutboxRow(r[0], r[1], r[2]) for r in rows]

    async def outbox_ack(self, rows: Sequence[OutboxRow]) -> None:
        await self._pool.execute(f"DELETE FROM {self.t}_outbox WHERE seq = ANY($1::bigint[])", [r.seq for r in rows])

    async def purge(self, now: float) -> int:
        return _count(await self._pool.execute(f"DELETE FROM {self.t} WHERE expires <= $1", now))

    async def ensure_index(self, path: tuple[str, ...]) -> None:
        expr = f"(value #> '{{{','.join(path)}}}')"
        sql = f"CREATE INDEX IF NOT EXISTS {self.t}_ix_{'_'.join(path)} ON {self.t} ({expr})"
        try:
            await self._pool.execute(sql)
        except (asyncpg.UniqueViolationError, asyncpg.DuplicateTableError):
            pass  # another process created it at the same moment

    async def destroy(self) -> None:
        await self._pool.execute(f"DROP TABLE IF EXISTS {self.t}, {self.t}_outbox")
