"""The PostgreSQL archive (asyncpg): one archive shared by several apps and hosts.

The table and indexes are created on first use under an advisory lock, so apps starting at the
same moment do not race on the DDL. Inserts are one ``executemany`` per batch with ``ON CONFLICT
DO NOTHING`` on the event's identity, so two apps recording the same event (its publisher and a
consumer) leave one row. The event is kept as the bytes of its structured JSON (``bytea``):
exactly what was seen, even data JSONB would refuse; times are ``timestamptz``.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg

from mesh.archive import Archived, ArchiveError, ArchiveQuery, ArchiveRow, ArchiveStore, decode_row
from mesh.archive.schema import tables

__all__ = ["PostgresArchive"]


class PostgresArchive(ArchiveStore):
    """An archive in a PostgreSQL table (see the module docstring)."""

    def __init__(self, url: str, table: str = "mesh_archive", *, max_connections: int = 4) -> None:
        self.url = url
        self.table = table
        self._max = max_connections
        self._pool: asyncpg.Pool | None = None

    @property
    def address(self) -> str:
        """The URL without its password."""
        head, sep, tail = self.url.rpartition("@")
        if not sep:
            return self.url
        scheme, _, userinfo = head.partition("://")
        return f"{scheme}://{userinfo.split(':', 1)[0]}@{tail}"

    def _pool_or_raise(self) -> asyncpg.Pool:
        if self._pool is None:
            raise ArchiveError(f"the archive {self.address} is not open")
        return self._pool

    async def open(self) -> None:
        if self._pool is not None:
            return
        try:
            pool = await asyncpg.create_pool(self.url, min_size=1, max_size=self._max, timeout=10)
        except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
            raise ArchiveError(f"cannot open the archive {self.address}: {type(exc).__name__}: {exc}") from exc
        t = self.table
        ddl = tables(
            t, serial="BIGSERIAL PRIMARY KEY", timestamp="TIMESTAMPTZ", blob="BYTEA", updated_default="DEFAULT now()"
        )
        try:
            async with pool.acquire() as conn, conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", zlib.crc32(t.encode()))
                await conn.execute(ddl)
        except (OSError, asyncpg.PostgresError) as exc:
            await pool.close()
            raise ArchiveError(f"cannot create the archive tables in {self.address}: {exc}") from exc
        self._pool = pool

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    async def _execute(self, sql: str, *args: Any) -> str:
        try:
            return str(await self._pool_or_raise().execute(sql, *args))
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise ArchiveError(f"archive {self.address}: {type(exc).__name__}: {exc}") from exc

    async def _fetch(self, sql: str, *args: Any) -> list[Any]:
        try:
            return list(await self._pool_or_raise().fetch(sql, *args))
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise ArchiveError(f"archive {self.address}: {type(exc).__name__}: {exc}") from exc

    # -- events --------------------------------------------------------------------------------

    async def write(self, rows: Sequence[ArchiveRow]) -> None:
        if not rows:
            return
        sql = (
            f"INSERT INTO {self.table} (topic, source, event_id, redrive, type, subject, time, recorded, kind, app, "
            "grp, errortype, event) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) "
            "ON CONFLICT (topic, source, event_id, redrive) DO NOTHING"
        )
        values = [
            (
                r.topic,
                r.source,
                r.event_id,
                r.redrive,
                r.type,
                r.subject,
                r.time,
                r.recorded,
                r.kind,
                r.app,
                r.group,
                r.errortype,
                r.body,
            )
            for r in rows
        ]
        try:
            async with self._pool_or_raise().acquire() as conn, conn.transaction():
                await conn.executemany(sql, values)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise ArchiveError(f"archive {self.address}: {type(exc).__name__}: {exc}") from exc

    def _where(self, q: ArchiveQuery, paged: bool) -> tuple[str, list[Any]]:
        args: list[Any] = [q.topic]

        def arg(value: Any) -> str:
            args.append(value)
            return f"${len(args)}"

        clauses = ["topic = $1"]
        if q.since is not None:
            clauses.append(f"time >= {arg(q.since)}")
        if q.until is not None:
            clauses.append(f"time < {arg(q.until)}")
        for column, values in (("type", q.types), ("source", q.sources), ("subject", q.subjects)):
            if values:
                clauses.append(f"{column} = ANY({arg(list(values))}::text[])")
        if q.keys:
            parts = [
                f"(source = {arg(source)} AND event_id = {arg(event_id)} AND redrive = {arg(redrive)})"
                for source, event_id, redrive in q.keys
            ]
            clauses.append(f"({' OR '.join(parts)})")
        if paged and q.order == "time" and q.after is not None:
            clauses.append(f"(time, seq) > ({arg(q.after[0])}, {arg(q.after[1])})")
        if paged and q.order == "seq" and q.min_seq:
            clauses.append(f"seq > {arg(q.min_seq)}")
        return " AND ".join(clauses), args

    async def read(self, query: ArchiveQuery) -> list[Archived]:
        where, args = self._where(query, paged=True)
        order = "time, seq" if query.order == "time" else "seq"
        args.append(query.limit)
        sql = (
            f"SELECT seq, topic, source, event_id, redrive, type, time, recorded, kind, app, grp, event "
            f"FROM {self.table} WHERE {where} ORDER BY {order} LIMIT ${len(args)}"
        )
        out = []
        for r in await self._fetch(sql, *args):
            body = r["event"]
            event, error = decode_row(r["seq"], None if body is None else bytes(body))
            out.append(
                Archived(
                    r["seq"],
                    r["topic"],
                    r["source"],
                    r["event_id"],
                    r["redrive"],
                    r["type"],
                    r["time"],
                    r["recorded"],
                    r["kind"],
                    r["app"],
                    r["grp"],
                    event,
                    error,
                )
            )
        return out

    async def count(self, query: ArchiveQuery) -> int:
        where, args = self._where(query, paged=False)
        rows = await self._fetch(f"SELECT count(*) AS n FROM {self.table} WHERE {where}", *args)
        return int(rows[0]["n"])

    async def topics(self) -> list[str]:
        return [r["topic"] for r in await self._fetch(f"SELECT DISTINCT topic FROM {self.table} ORDER BY topic")]

    async def delete(self, seqs: Sequence[int]) -> int:
        if not seqs:
            return 0
        status = await self._execute(f"DELETE FROM {self.table} WHERE seq = ANY($1::bigint[])", list(seqs))
        return int(status.split()[-1])

    async def delete_older(self, before: datetime, topic: str | None = None) -> int:
        where = "recorded < $1" + (" AND topic = $2" if topic is not None else "")
        args: list[Any] = [before] if topic is None else [before, topic]
        sql = f"DELETE FROM {self.table} WHERE seq IN (SELECT seq FROM {self.table} WHERE {where} LIMIT 10000)"
        gone = 0
        while True:  # in chunks: short transactions
            n = int((await self._execute(sql, *args)).split()[-1])
            gone += n
            if n < 10000:
                return gone

    # -- state ---------------------------------------------------------------------------------

    async def get_state(self, kind: str, name: str) -> str | None:
        rows = await self._fetch(f"SELECT value FROM {self.table}_state WHERE kind = $1 AND name = $2", kind, name)
        return None if not rows else str(rows[0]["value"])

    async def put_state(self, kind: str, name: str, value: str) -> None:
        await self.put_states(kind, [(name, value)])

    async def put_states(self, kind: str, items: Sequence[tuple[str, str]]) -> None:
        if not items:
            return
        sql = (
            f"INSERT INTO {self.table}_state (kind, name, value, updated) VALUES ($1, $2, $3, now()) "
            "ON CONFLICT (kind, name) DO UPDATE SET value = EXCLUDED.value, updated = now()"
        )
        try:
            async with self._pool_or_raise().acquire() as conn, conn.transaction():
                await conn.executemany(sql, [(kind, name, value) for name, value in items])
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise ArchiveError(f"archive {self.address}: {type(exc).__name__}: {exc}") from exc

    async def list_state(self, kind: str) -> dict[str, str]:
        rows = await self._fetch(f"SELECT name, value FROM {self.table}_state WHERE kind = $1", kind)
        return {r["name"]: r["value"] for r in rows}

    async def delete_state(self, kind: str, name: str) -> None:
        await self._execute(f"DELETE FROM {self.table}_state WHERE kind = $1 AND name = $2", kind, name)

    async def execute(self, sql: str, *args: Any) -> None:
        """Run one statement (for tests and repairs)."""
        await self._execute(sql, *args)

    def __repr__(self) -> str:
        return f"PostgresArchive({self.address!r}, table={self.table!r})"
