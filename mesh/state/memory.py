"""The in-process store: a dict, for development and tests (nothing survives the process).

Every call runs without an ``await`` inside, so each write is atomic on the event loop;
the outbox is a list the relay drains like any other store's.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any, ClassVar

import orjson

from mesh.state.base import Backend, Features, Op, OutboxRow, Row
from mesh.state.errors import ETagMismatch
from mesh.state.query import Query, matches, sort_key

__all__ = ["MemoryStore"]


class _Sortable:
    """Orders mixed values the way the SQL stores roughly do: missing/null first, then by type."""

    __slots__ = ("desc", "v")

    def __init__(self, v: Any, desc: bool) -> None:
        self.v, self.desc = v, desc

    def _k(self) -> tuple[int, Any]:
        v = self.v
        if v is None or not isinstance(v, int | float | str | bool):
            return (0, 0)
        return (1, v) if isinstance(v, int | float) else (2, v)

    def __lt__(self, other: _Sortable) -> bool:
        a, b = self._k(), other._k()
        return bool(a > b) if self.desc else bool(a < b)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Sortable) and self._k() == other._k()

    __hash__ = None  # type: ignore[assignment]


_SEQ = itertools.count(1)
_SHARED: dict[str, tuple[dict[str, tuple[str, str, float | None]], list[OutboxRow]]] = {}
"""Memory stores with a ``url`` share their rows within the process (two blocks, one store)."""


class MemoryStore(Backend):
    """A store in a dict (see the module docstring)."""

    features: ClassVar[Features] = Features()
    type: ClassVar[str] = "memory"
    db_system: ClassVar[str] = "memory"

    def __init__(self, name: str = "memory", settings: Any = None) -> None:
        self.name = name
        url = getattr(settings, "url", None)
        shared = _SHARED.setdefault(url, ({}, [])) if url else ({}, [])
        self.rows: dict[str, tuple[str, str, float | None]] = shared[0]
        self.outbox: list[OutboxRow] = shared[1]
        self._seq = _SEQ

    async def open(self) -> None:
        """Nothing to open."""

    async def close(self) -> None:
        """Nothing to close."""

    def _live(self, key: str, now: float) -> tuple[str, str, float | None] | None:
        row = self.rows.get(key)
        if row is not None and row[2] is not None and row[2] <= now:
            return None
        return row

    async def read(self, keys: Sequence[str], now: float) -> dict[str, Row]:
        out = {}
        for key in keys:
            row = self._live(key, now)
            if row is not None:
                out[key] = Row(key, row[0], row[1])
        return out

    async def write(self, ops: Sequence[Op], outbox: Sequence[tuple[str, str]], now: float) -> None:
        staged: dict[str, tuple[str, str, float | None] | None] = {}
        for op in ops:
            cur = staged[op.key] if op.key in staged else self._live(op.key, now)
            if (op.create and cur is not None) or (op.etag is not None and (cur is None or cur[1] != op.etag)):
                raise ETagMismatch(self.name, op.key, op.etag)
            staged[op.key] = (op.value or "null", op.new_etag, op.expires) if op.kind == "set" else None
        for key, row in staged.items():
            if row is None:
                self.rows.pop(key, None)
            else:
                self.rows[key] = row
        self.outbox += [OutboxRow(next(self._seq), topic, body) for topic, body in outbox]

    async def query(self, q: Query, now: float) -> list[Row]:
        found = []
        for key in list(self.rows):
            row = self._live(key, now)
            if row is None or not key.startswith(q.prefix):
                continue
            doc = orjson.loads(row[0])
            if matches(q.where, doc):
                found.append((self._order(q, sort_key(q, key, doc)), Row(key, row[0], row[1])))
        if q.after is not None:
            cursor = self._order(q, q.after)
            found = [f for f in found if cursor < f[0]]
        found.sort(key=lambda f: f[0])
        return [r for _, r in found[: q.limit]]

    @staticmethod
    def _order(q: Query, values: Sequence[Any]) -> tuple[Any, ...]:
        dirs = [desc for _, desc in q.order] + [False]
        return tuple(_Sortable(v, d) for v, d in zip(values, dirs, strict=True))

    async def outbox_read(self, limit: int) -> list[OutboxRow]:
        return self.outbox[:limit]

    async def outbox_ack(self, rows: Sequence[OutboxRow]) -> None:
        done = {r.seq for r in rows}
        self.outbox[:] = [r for r in self.outbox if r.seq not in done]

    async def purge(self, now: float) -> int:
        dead = [k for k, r in self.rows.items() if r[2] is not None and r[2] <= now]
        for k in dead:
            del self.rows[k]
        return len(dead)

    async def destroy(self) -> None:
        self.rows.clear()
        self.outbox.clear()
