"""The SQLite archive: one file, one connection on a thread of its own (the standard ``sqlite3``).

Every call runs on one dedicated thread, so the event loop never blocks on disk and the
connection is never shared between threads. The file uses WAL with ``synchronous=FULL``: a
committed batch survives a crash of the process and of the machine, and readers (``mesh
replay``) work beside a writing app. Several processes may write to one file (``busy_timeout``
waits for the lock); for several hosts, use PostgreSQL.

Times are stored as integer microseconds since the epoch (UTC).
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from mesh.archive import Archived, ArchiveError, ArchiveQuery, ArchiveRow, ArchiveStore, decode_row
from mesh.archive.schema import tables
from mesh.event import now

__all__ = ["SQLiteArchive", "sqlite_path"]

T = TypeVar("T")
CHUNK = 500
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MICROSECOND = timedelta(microseconds=1)


def sqlite_path(url: str) -> str:
    """The file of a ``sqlite:///relative.db`` / ``sqlite:////abs.db`` URL (``:memory:`` kept)."""
    path = url.removeprefix("sqlite://")
    path = path[1:] if path.startswith("/") else path
    return path or ":memory:"


def _us(value: datetime) -> int:
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return (value - EPOCH) // MICROSECOND


def _dt(value: int) -> datetime:
    return EPOCH + value * MICROSECOND


def _close_quietly(future: asyncio.Future[sqlite3.Connection]) -> None:
    if not future.cancelled() and future.exception() is None:
        future.result().close()


class SQLiteArchive(ArchiveStore):
    """An archive in one SQLite file (see the module docstring)."""

    def __init__(self, url: str, table: str = "mesh_archive") -> None:
        self.url = url
        self.path = sqlite_path(url)
        self.table = table
        self._conn: sqlite3.Connection | None = None
        self._pool: ThreadPoolExecutor | None = None

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        pool, conn = self._pool, self._conn
        if pool is None or conn is None:
            raise ArchiveError(f"the archive {self.url} is not open")
        try:
            return await asyncio.get_running_loop().run_in_executor(pool, fn, conn)
        except sqlite3.Error as exc:
            raise ArchiveError(f"archive {self.path}: {type(exc).__name__}: {exc}") from exc

    async def open(self) -> None:
        if self._conn is not None:
            return
        pool = ThreadPoolExecutor(1, thread_name_prefix="mesh-archive-sqlite")
        future = asyncio.get_running_loop().run_in_executor(pool, self._connect)
        try:
            conn = await asyncio.shield(future)
        except asyncio.CancelledError:  # let the thread finish, then close what it opened
            future.add_done_callback(_close_quietly)
            pool.shutdown(wait=False)
            raise
        except (sqlite3.Error, OSError) as exc:
            pool.shutdown(wait=False)
            raise ArchiveError(f"cannot open the archive {self.path}: {exc}") from exc
        self._pool, self._conn = pool, conn

    def _connect(self) -> sqlite3.Connection:
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
        try:
            conn.execute("PRAGMA busy_timeout=30000")
            self._setup(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def _setup(self, conn: sqlite3.Connection) -> None:
        for attempt in range(50):  # switching to WAL needs a moment alone with the file
            try:
                if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                    conn.execute("PRAGMA journal_mode=WAL")
                break
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or attempt == 49:
                    raise
                time.sleep(0.1)
        conn.execute("PRAGMA synchronous=FULL")
        t = self.table
        schema = tables(t, serial="INTEGER PRIMARY KEY AUTOINCREMENT", timestamp="INTEGER", blob="BLOB")
        conn.executescript(f"BEGIN IMMEDIATE;{schema}COMMIT;")

    async def close(self) -> None:
        conn, pool = self._conn, self._pool
        self._conn = self._pool = None
        if pool is not None and conn is not None:
            await asyncio.get_running_loop().run_in_executor(pool, conn.close)
        if pool is not None:
            pool.shutdown(wait=True)

    # -- events --------------------------------------------------------------------------------

    async def write(self, rows: Sequence[ArchiveRow]) -> None:
        if not rows:
            return
        values = [
            (
                r.topic,
                r.source,
                r.event_id,
                r.redrive,
                r.type,
                r.subject,
                _us(r.time),
                _us(r.recorded),
                r.kind,
                r.app,
                r.group,
                r.errortype,
                r.body,
            )
            for r in rows
        ]
        sql = (
            f"INSERT OR IGNORE INTO {self.table} (topic, source, event_id, redrive, type, subject, time, recorded, "
            "kind, app, grp, errortype, event) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        )

        def insert(conn: sqlite3.Connection) -> None:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany(sql, values)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

        await self._run(insert)

    def _where(self, q: ArchiveQuery, paged: bool) -> tuple[str, list[Any]]:
        clauses: list[str] = ["topic = ?"]
        args: list[Any] = [q.topic]
        if q.since is not None:
            clauses.append("time >= ?")
            args.append(_us(q.since))
        if q.until is not None:
            clauses.append("time < ?")
            args.append(_us(q.until))
        for column, values in (("type", q.types), ("source", q.sources), ("subject", q.subjects)):
            if values:
                clauses.append(f"{column} IN ({', '.join('?' * len(values))})")
                args.extend(values)
        if q.keys:
            parts = []
            for source, event_id, redrive in q.keys:
                parts.append("(source = ? AND event_id = ? AND redrive = ?)")
                args.extend((source, event_id, redrive))
            clauses.append(f"({' OR '.join(parts)})")
        if paged and q.order == "time" and q.after is not None:
            clauses.append("(time > ? OR (time = ? AND seq > ?))")
            t = _us(q.after[0])
            args.extend((t, t, q.after[1]))
        if paged and q.order == "seq" and q.min_seq:
            clauses.append("seq > ?")
            args.append(q.min_seq)
        return " AND ".join(clauses), args

    async def read(self, query: ArchiveQuery) -> list[Archived]:
        where, args = self._where(query, paged=True)
        order = "time, seq" if query.order == "time" else "seq"
        sql = (
            f"SELECT seq, topic, source, event_id, redrive, type, time, recorded, kind, app, grp, event "
            f"FROM {self.table} WHERE {where} ORDER BY {order} LIMIT ?"
        )
        rows = await self._run(lambda conn: conn.execute(sql, [*args, query.limit]).fetchall())
        out = []
        for seq, topic, source, event_id, redrive, type_, at, recorded, kind, app, grp, body in rows:
            event, error = decode_row(seq, body)
            out.append(
                Archived(
                    seq, topic, source, event_id, redrive, type_, _dt(at), _dt(recorded), kind, app, grp, event, error
                )
            )
        return out

    async def count(self, query: ArchiveQuery) -> int:
        where, args = self._where(query, paged=False)
        sql = f"SELECT count(*) FROM {self.table} WHERE {where}"
        return int(await self._run(lambda conn: conn.execute(sql, args).fetchone()[0]))

    async def topics(self) -> list[str]:
        sql = f"SELECT DISTINCT topic FROM {self.table} ORDER BY topic"
        return [r[0] for r in await self._run(lambda conn: conn.execute(sql).fetchall())]

    async def delete(self, seqs: Sequence[int]) -> int:
        ids = list(seqs)

        def run(conn: sqlite3.Connection) -> int:
            gone = 0
            conn.execute("BEGIN IMMEDIATE")
            try:
                for i in range(0, len(ids), CHUNK):
                    chunk = ids[i : i + CHUNK]
                    sql = f"DELETE FROM {self.table} WHERE seq IN ({', '.join('?' * len(chunk))})"
                    gone += conn.execute(sql, chunk).rowcount
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return gone

        return await self._run(run)

    async def delete_older(self, before: datetime, topic: str | None = None) -> int:
        cutoff = _us(before)
        where = "recorded < ?" + (" AND topic = ?" if topic is not None else "")
        args: list[Any] = [cutoff] if topic is None else [cutoff, topic]
        sql = f"DELETE FROM {self.table} WHERE seq IN (SELECT seq FROM {self.table} WHERE {where} LIMIT 10000)"

        def run(conn: sqlite3.Connection) -> int:
            gone = 0
            while True:  # in chunks, so a writer never waits long for the lock
                n = conn.execute(sql, args).rowcount
                gone += n
                if n < 10000:
                    return gone

        return await self._run(run)

    # -- state: checkpoints and marks -----------------------------------------------------------

    async def get_state(self, kind: str, name: str) -> str | None:
        sql = f"SELECT value FROM {self.table}_state WHERE kind = ? AND name = ?"
        row = await self._run(lambda conn: conn.execute(sql, (kind, name)).fetchone())
        return None if row is None else str(row[0])

    async def put_state(self, kind: str, name: str, value: str) -> None:
        await self.put_states(kind, [(name, value)])

    async def put_states(self, kind: str, items: Sequence[tuple[str, str]]) -> None:
        stamp = _us(now())
        values = [(kind, name, value, stamp) for name, value in items]
        sql = f"INSERT OR REPLACE INTO {self.table}_state (kind, name, value, updated) VALUES (?, ?, ?, ?)"

        def run(conn: sqlite3.Connection) -> None:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany(sql, values)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

        await self._run(run)

    async def list_state(self, kind: str) -> dict[str, str]:
        sql = f"SELECT name, value FROM {self.table}_state WHERE kind = ?"
        return {r[0]: r[1] for r in await self._run(lambda conn: conn.execute(sql, (kind,)).fetchall())}

    async def delete_state(self, kind: str, name: str) -> None:
        sql = f"DELETE FROM {self.table}_state WHERE kind = ? AND name = ?"
        await self._run(lambda conn: conn.execute(sql, (kind, name)))

    async def execute(self, sql: str, *args: Any) -> None:
        """Run one statement (for tests and repairs)."""
        await self._run(lambda conn: conn.execute(sql, args))

    def __repr__(self) -> str:
        return f"SQLiteArchive({self.path!r}, table={self.table!r})"
