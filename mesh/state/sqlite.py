"""The SQLite store: one file, one connection on a thread of its own (the standard ``sqlite3``).

Like the SQLite archive, every call runs on one dedicated thread, so the loop never blocks on
disk. Writes run in ``BEGIN IMMEDIATE`` transactions (WAL, ``synchronous=FULL``): the ETag checks,
the rows and the outbox rows commit together. Several processes may share the file.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from mesh.archive.sqlite import sqlite_path
from mesh.state.base import Backend, Features, Op, OutboxRow, Row
from mesh.state.errors import ETagMismatch, StateError, StoreUnavailable
from mesh.state.options import SQLiteOptions
from mesh.state.query import Query, compile_sql

__all__ = ["SQLiteStore"]

T = TypeVar("T")


class SQLiteStore(Backend):
    """A store in one SQLite file (see the module docstring)."""

    features: ClassVar[Features] = Features()
    type: ClassVar[str] = "sqlite"
    db_system: ClassVar[str] = "sqlite"

    def __init__(self, name: str, settings: SQLiteOptions) -> None:
        self.name = name
        self.path = sqlite_path(settings.url or "sqlite:///mesh-state.db")
        self.t = settings.table
        self._conn: sqlite3.Connection | None = None
        self._pool: ThreadPoolExecutor | None = None
        t = self.t
        self.sql_get = f"SELECT key, value, etag FROM {t} WHERE key = ? AND (expires IS NULL OR expires > ?)"

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._pool is None or self._conn is None:
            raise StateError(self.name, "the store is not open")
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, self._conn)

    def _connect(self) -> sqlite3.Connection:
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        t = self.t
        conn.execute(f"CREATE TABLE IF NOT EXISTS {t} (key TEXT PRIMARY KEY, value TEXT NOT NULL, "
                     "etag TEXT NOT NULL, expires REAL)")
        conn.execute(f"CREATE INDEX IF NOT EXISTS {t}_expires ON {t} (expires) WHERE expires IS NOT NULL")
        conn.execute(f"CREATE TABLE IF NOT EXISTS {t}_outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, "
                     "topic TEXT NOT NULL, body TEXT NOT NULL)")
        return conn

    async def open(self) -> None:
        if self._conn is not None:
            return
        self._pool = ThreadPoolExecutor(1, thread_name_prefix=f"mesh-state-{self.name}")
        try:
            self._conn = await asyncio.get_running_loop().run_in_executor(self._pool, self._connect)
        except (sqlite3.Error, OSError) as exc:
            self._pool.shutdown(wait=False)
            self._pool = None
            raise StoreUnavailable(self.name, f"cannot open {self.path}: {exc}") from exc

    async def close(self) -> None:
        if self._conn is not None:
            await self._run(lambda c: c.close())
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        self._conn = self._pool = None

    async def read(self, keys: Sequence[str], now: float) -> dict[str, Row]:
        if len(keys) == 1:
            sql = self.sql_get
            args: list[Any] = [keys[0], now]
        else:
            marks = ",".join("?" * len(keys))
            sql = f"SELECT key, value, etag FROM {self.t} WHERE key IN ({marks}) AND (expires IS NULL OR expires > ?)"
            args = [*keys, now]
        rows = await self._run(lambda c: c.execute(sql, args).fetchall())
        return {k: Row(k, v, e) for k, v, e in rows}

    def _write(self, c: sqlite3.Connection, ops: Sequence[Op], outbox: Sequence[tuple[str, str]], now: float) -> None:
        t = self.t
        c.execute("BEGIN IMMEDIATE")
        try:
            for op in ops:
                if op.etag is not None or op.create:
                    cur = c.execute(f"SELECT etag FROM {t} WHERE key = ? AND (expires IS NULL OR expires > ?)",
                                    (op.key, now)).fetchone()
                    if (op.create and cur is not None) or (op.etag is not None and (cur is None or cur[0] != op.etag)):
                        raise ETagMismatch(self.name, op.key, op.etag)
                if op.kind == "set":
                    c.execute(f"INSERT INTO {t} (key, value, etag, expires) VALUES (?, ?, ?, ?) ON CONFLICT(key) "
                              "DO UPDATE SET value = excluded.value, etag = excluded.etag, expires = excluded.expires",
                              (op.key, op.value, op.new_etag, op.expires))
                else:
                    c.execute(f"DELETE FROM {t} WHERE key = ?", (op.key,))
            if outbox:
                c.executemany(f"INSERT INTO {t}_outbox (topic, body) VALUES (?, ?)", outbox)
            c.execute("COMMIT")
        except BaseException:
            c.execute("ROLLBACK")
            raise

    async def write(self, ops: Sequence[Op], outbox: Sequence[tuple[str, str]], now: float) -> None:
        try:
            await self._run(lambda c: self._write(c, ops, outbox, now))
        except sqlite3.Error as exc:
            raise StateError(self.name, f"{type(exc).__name__}: {exc}", ops[0].key if ops else None) from exc

    async def query(self, q: Query, now: float) -> list[Row]:
        where, order, params = compile_sql(q, "sqlite", now)
        sql = f"SELECT key, value, etag FROM {self.t} WHERE {where} ORDER BY {order} LIMIT {q.limit}"
        rows = await self._run(lambda c: c.execute(sql, params).fetchall())
        return [Row(k, v, e) for k, v, e in rows]

    async def outbox_read(self, limit: int) -> list[OutboxRow]:
        sql = f"SELECT seq, topic, body FROM {self.t}_outbox ORDER BY seq LIMIT {int(limit)}"
        rows = await self._run(lambda c: c.execute(sql).fetchall())
        return [OutboxRow(s, t, b) for s, t, b in rows]

    async def outbox_ack(self, rows: Sequence[OutboxRow]) -> None:
        seqs = [(r.seq,) for r in rows]
        await self._run(lambda c: c.executemany(f"DELETE FROM {self.t}_outbox WHERE seq = ?", seqs))

    async def purge(self, now: float) -> int:
        sql = f"DELETE FROM {self.t} WHERE expires IS NOT NULL AND expires <= ?"
        return await self._run(lambda c: c.execute(sql, (now,)).rowcount)

    async def ensure_index(self, path: tuple[str, ...]) -> None:
        expr = f"json_extract(value, '$.{'.'.join(path)}')"
        sql = f"CREATE INDEX IF NOT EXISTS {self.t}_ix_{'_'.join(path)} ON {self.t} ({expr})"
        await self._run(lambda c: c.execute(sql))

    async def destroy(self) -> None:
        await self._run(lambda c: (c.execute(f"DROP TABLE IF EXISTS {self.t}"),
                                   c.execute(f"DROP TABLE IF EXISTS {self.t}_outbox")))
