"""The object ``app.state(name)`` returns: keys, JSON, ETags, TTL, transactions, changes, spans.

Everything here is written once for every backend:

==================  ==========================================================================
concern             behaviour
==================  ==========================================================================
keys                prefixed ``<app id><sep><key>`` unless ``shared``; empty, non-string and
                    over-long keys are :class:`InvalidKey` naming store and key
values              JSON (orjson); pydantic models in, ``get(key, Model)`` validates out
ETags               ``etag=`` is first-write-wins, none is last-write-wins, ``create=True`` only
                    writes a key that does not exist; a conflict is :class:`ETagMismatch` and
                    counts in ``mesh.state.etag_conflicts``
TTL                 ``ttl=`` (or the store's default) is stored as an absolute expiry
changes             with ``changes: <topic>`` each set/delete adds a ``mesh.state.changed`` /
                    ``mesh.state.deleted`` event to the same write (the outbox); the relay sends it
spans               one CLIENT span per call, OTel database conventions, once a real tracer
                    provider is set (until then no span object is made at all: speed)
==================  ==========================================================================
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import timedelta
from types import TracebackType
from typing import Any, TypeVar, overload

import orjson
from opentelemetry import metrics, trace
from pydantic import BaseModel, TypeAdapter, ValidationError

from mesh.codecs.data import json_dumps
from mesh.codecs.structured import to_structured
from mesh.errors import EncodeError
from mesh.event import Event
from mesh.state.base import Backend, Op, Page, Row, StateItem, new_etag
from mesh.state.errors import ETagMismatch, InvalidKey, InvalidValue, unsupported
from mesh.state.events import CHANGED, DELETED, EXT_ETAG, EXT_STORE, INTERNAL_PREFIX
from mesh.state.query import MISSING, encode_cursor, lookup, parse_path, parse_query
from mesh.telemetry import tracing_on

__all__ = ["StateStore", "Transaction"]

T = TypeVar("T")
_tracer: trace.Tracer | None = None
meter = metrics.get_meter("mesh.state")
etag_conflicts = meter.create_counter(
    "mesh.state.etag_conflicts", unit="{conflict}", description="writes refused because the ETag did not match"
)
_ADAPTERS: dict[Any, TypeAdapter[Any]] = {}


def sdk_tracer() -> trace.Tracer | None:
    """The ``mesh.state`` tracer once a real tracer provider is set; ``None`` while spans would be no-ops."""
    global _tracer
    if _tracer is None:
        if not tracing_on():
            return None
        _tracer = trace.get_tracer_provider().get_tracer("mesh.state")
    return _tracer


def _seconds(ttl: timedelta | float | None) -> float | None:
    if ttl is None:
        return None
    seconds = ttl.total_seconds() if isinstance(ttl, timedelta) else float(ttl)
    return seconds if seconds > 0 else None


class StateStore:
    """One configured store as an app uses it (see the module docstring)."""

    def __init__(
        self,
        name: str,
        backend: Backend,
        app_id: str,
        *,
        shared: bool = False,
        key_prefix: str | None = None,
        ttl: float | None = None,
        changes: str | None = None,
        changes_data: bool = True,
        notify: Callable[[], None] | None = None,
    ) -> None:
        self.name = name
        self.backend = backend
        self.app_id = app_id
        self.features = backend.features
        prefix = key_prefix if key_prefix is not None else ("" if shared else app_id)
        self.prefix = prefix + backend.separator if prefix else ""
        self.ttl = ttl
        self.changes = changes
        self.changes_data = changes_data
        self.source = f"/{app_id}/state/{name}"
        self._notify = notify or (lambda: None)
        self._attrs = {"db.system.name": backend.db_system, "db.namespace": name}
        self._op_attrs: dict[str, dict[str, str]] = {}
        self._key_problem = None if type(backend).key_problem is Backend.key_problem else backend.key_problem

    # -- helpers -------------------------------------------------------------------------------

    def full_key(self, key: str) -> str:
        """The stored key of ``key`` (prefix added), checked against the store's limits."""
        if not isinstance(key, str) or not key:
            raise InvalidKey(self.name, "a key must be a non-empty string", repr(key))
        full = self.prefix + key
        limit = self.backend.max_key
        if len(full) * 4 > limit and len(full.encode()) > limit:  # 4 bytes per character at most
            raise InvalidKey(self.name, f"longer than the store's limit of {limit} bytes", key)
        if self._key_problem is not None:
            problem = self._key_problem(full)
            if problem:
                raise InvalidKey(self.name, problem, key)
        return full

    def encode(self, key: str, value: Any) -> str:
        """A value as JSON text, or InvalidValue naming store and key."""
        try:
            return json_dumps(value).decode()
        except (EncodeError, TypeError, ValueError) as exc:
            raise InvalidValue(self.name, f"the value is not JSON-serialisable: {exc}", key) from exc

    def _decode(self, row: Row, type: Any) -> StateItem[Any]:
        key = row.key[len(self.prefix):]
        value = orjson.loads(row.value)
        if type is not None:
            adapter = _ADAPTERS.get(type)
            if adapter is None:
                adapter = _ADAPTERS[type] = TypeAdapter(type)
            try:
                value = adapter.validate_python(value)
            except ValidationError as exc:
                raise InvalidValue(self.name, f"the stored value is not a {type!r}: {exc}", key) from exc
        return StateItem(key, value, row.etag)

    def _attributes(self, op: str) -> dict[str, str]:
        attrs = self._op_attrs.get(op)
        if attrs is None:
            attrs = self._op_attrs[op] = {**self._attrs, "db.operation.name": op}
        return attrs

    def _span(self, tracer: trace.Tracer, op: str) -> AbstractContextManager[trace.Span]:
        return tracer.start_as_current_span(f"{op} {self.name}", kind=trace.SpanKind.CLIENT,
                                            attributes=self._attributes(op))

    def _conflict(self, exc: ETagMismatch, op: str) -> None:
        """Count a refused write and report its key without the prefix."""
        etag_conflicts.add(1, self._attributes(op))
        if exc.key is not None and exc.key.startswith(self.prefix):
            exc.key = exc.key[len(self.prefix):]

    async def _write(self, op: str, ops: Sequence[Op], events: Sequence[tuple[str, Event]] = ()) -> list[str]:
        """:meth:`commit` inside the call's span (if tracing), counting ETag conflicts."""
        try:
            tracer = sdk_tracer()
            if tracer is None:
                return await self.commit(ops, events)
            with self._span(tracer, op):
                return await self.commit(ops, events)
        except ETagMismatch as exc:
            self._conflict(exc, op)
            raise

    async def _read(self, op: str, keys: Sequence[str]) -> dict[str, Row]:
        tracer = sdk_tracer()
        if tracer is None:
            return await self.backend.read(keys, time.time())
        with self._span(tracer, op):
            return await self.backend.read(keys, time.time())

    def _change(self, op: Op) -> tuple[str, str]:
        key = op.key[len(self.prefix):]
        data: dict[str, Any] = {"key": key, "etag": op.new_etag}
        if op.kind == "set" and self.changes_data:
            data["value"] = orjson.Fragment(op.value or "null")
        event = Event(CHANGED if op.kind == "set" else DELETED, self.source, data, subject=key,
                      extensions={EXT_STORE: self.name, EXT_ETAG: op.new_etag, "partitionkey": key})
        assert self.changes is not None
        return self.changes, to_structured(event).decode()

    async def commit(self, ops: Sequence[Op], events: Sequence[tuple[str, Event]] = (),
                     changes: bool = True) -> list[str]:
        """Write ops (and their change events, and ``events``) in one transaction; the new ETags."""
        outbox = [(topic, to_structured(e).decode()) for topic, e in events]
        if changes and self.changes is not None and not self.features.watch:
            outbox += [self._change(op) for op in ops]
        if outbox and not self.features.outbox:
            raise unsupported(self.backend.type, "publishing from a transaction",
                                      "use a store with an outbox (postgres, sqlite, redis, memory)")
        etags = await self.backend.write(ops, outbox, time.time())
        if outbox:
            self._notify()
        return [op.new_etag for op in ops] if etags is None else list(etags)

    def op_set(self, key: str, value: Any, etag: str | None, ttl: timedelta | float | None, create: bool) -> Op:
        """The :class:`Op` of a set."""
        if (ttl is not None or self.ttl) and not self.features.ttl:
            raise unsupported(self.backend.type, "per-key TTL", "use the redis, postgres or sqlite store")
        if etag is not None and not isinstance(etag, str):
            raise InvalidKey(self.name, f"an etag is a string, not {etag!r}", key)
        full = self.full_key(key)
        seconds = _seconds(ttl) if ttl is not None else self.ttl
        expires = time.time() + seconds if seconds else None
        return Op("set", full, self.encode(key, value), etag, new_etag(), expires, create)

    # -- the API -------------------------------------------------------------------------------

    @overload
    async def get(self, key: str) -> StateItem[Any] | None: ...
    @overload
    async def get(self, key: str, type: type[T]) -> StateItem[T] | None: ...

    async def get(self, key: str, type: Any = None) -> StateItem[Any] | None:
        """The key's item (validated as ``type`` if given), or ``None`` if absent or expired."""
        full = self.full_key(key)
        row = (await self._read("get", (full,))).get(full)
        return None if row is None else self._decode(row, type)

    async def get_many(self, keys: Sequence[str], type: Any = None) -> list[StateItem[Any]]:
        """The items of the keys that exist, in the order asked."""
        fulls = [self.full_key(k) for k in keys]
        rows = await self._read("get_many", fulls)
        return [self._decode(rows[f], type) for f in fulls if f in rows]

    async def set(self, key: str, value: Any, *, etag: str | None = None,
                  ttl: timedelta | float | None = None, create: bool = False) -> str:
        """Store a value; returns its new ETag. ``etag``/``create`` make it first-write-wins."""
        return (await self._write("set", (self.op_set(key, value, etag, ttl, create),)))[0]

    async def delete(self, key: str, *, etag: str | None = None) -> None:
        """Remove a key (a no-op if absent, unless an ``etag`` is given: then ETagMismatch)."""
        await self._write("delete", (Op("delete", self.full_key(key), None, etag, new_etag()),))

    def transaction(self) -> Transaction:
        """``async with store.transaction() as tx``: sets, deletes and publishes, all or nothing."""
        if not self.features.transactions:
            raise unsupported(self.backend.type, "multi-key transactions",
                                      "use the postgres, sqlite or redis store")
        return Transaction(self)

    async def query(self, where: Mapping[str, Any] | None = None, *, order_by: Sequence[str] = (),
                    limit: int = 100, after: str | None = None, type: Any = None) -> Page[Any]:
        """Items matching a filter, ordered, one page at a time (keyset cursor in ``Page.next``)."""
        if not (self.features.query or self.features.index_query):
            raise unsupported(self.backend.type, "state queries", "use the memory, sqlite or postgres store")
        model = type if isinstance(type, builtins_type) and issubclass(type, BaseModel) else None
        q = parse_query(self.name, where, order_by, limit, after, self.prefix, model)
        tracer = sdk_tracer()
        if tracer is None:
            rows = await self.backend.query(q, time.time())
        else:
            with self._span(tracer, "query"):
                rows = await self.backend.query(q, time.time())
        items = [self._decode(r, type) for r in rows if not r.key.startswith(INTERNAL_PREFIX)]
        nxt = None
        if len(rows) == q.limit:
            last = rows[-1]
            doc = orjson.loads(last.value)
            values = [lookup(doc, p) for p, _ in q.order]
            nxt = encode_cursor([*(None if v is MISSING else v for v in values), last.key])
        return Page(items, nxt)

    async def ensure_index(self, path: str) -> None:
        """Index the value at the dotted ``path`` (SQL stores; a no-op elsewhere) for queries on it."""
        await self.backend.ensure_index(parse_path(self.name, path))

    async def lease(self, name: str, owner: str, seconds: float) -> bool:
        """Take or renew a lease held in this store (ETag-guarded); whether ``owner`` holds it."""
        full = f"{INTERNAL_PREFIX}{self.backend.separator}{name}"
        now = time.time()
        row = (await self.backend.read([full], now)).get(full)
        if row is not None:
            held = orjson.loads(row.value)
            if held.get("owner") != owner and held.get("until", 0) > now:
                return False
        value = orjson.dumps({"owner": owner, "until": now + seconds}).decode()
        op = Op("set", full, value, None if row is None else row.etag, new_etag(), None, row is None)
        try:
            await self.backend.write([op], [], time.time())
        except ETagMismatch:
            return False
        return True


builtins_type = type


class Transaction:
    """Writes collected inside ``async with``; committed on a clean exit, dropped on an error."""

    def __init__(self, store: StateStore) -> None:
        self.store = store
        self.ops: list[Op] = []
        self.events: list[tuple[str, Event]] = []
        self.etags: dict[str, str] = {}
        """The new ETag of each key set, once committed."""

    def set(self, key: str, value: Any, *, etag: str | None = None, ttl: timedelta | float | None = None,
            create: bool = False) -> None:
        """Add a set."""
        self.ops.append(self.store.op_set(key, value, etag, ttl, create))

    def delete(self, key: str, *, etag: str | None = None) -> None:
        """Add a delete."""
        self.ops.append(Op("delete", self.store.full_key(key), None, etag, new_etag()))

    def publish(self, topic: str, data: Any = None, *, type: str, **attributes: Any) -> Event:
        """Add an event, sent if and only if the transaction commits."""
        event = data if isinstance(data, Event) else Event(type, self.store.source, data, **attributes)
        self.events.append((topic, event))
        return event

    async def __aenter__(self) -> Transaction:
        return self

    async def __aexit__(self, et: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        if et is not None or not (self.ops or self.events):
            return
        await self.store._write("transaction", self.ops, self.events)
        p = len(self.store.prefix)
        self.etags = {op.key[p:]: op.new_etag for op in self.ops if op.kind == "set"}
