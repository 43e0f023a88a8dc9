"""PostgreSQL bindings (asyncpg): ``postgres-in`` (LISTEN/NOTIFY) and ``postgres-out`` (exec, query).

=============================================  ===========================================
NOTIFY payload                                 event
=============================================  ===========================================
a JSON object with ``specversion``             the CloudEvent it is (structured)
other JSON                                     wrapped: data = the JSON, ``subject`` = channel
not JSON                                       wrapped: data = the text (``text/plain``)
a CloudEvent that does not decode              wrapped as JSON data (counted as ``wrapped``)
over 8000 bytes                                refused by PostgreSQL at the sender's NOTIFY
                                               ("payload string too long"): notify a row id
                                               and read the row instead
=============================================  ===========================================

NOTIFY is not stored: notifications sent while no listener is connected are lost (PostgreSQL's
rule). Once received, a notification is published in arrival order and tried again until the
broker confirms or the binding stops. A lost connection is re-established (LISTEN again).

``postgres-out``: ``exec`` returns ``{"status": "INSERT 0 1", "rows": 1}``, ``query`` a list
of rows as dicts; both take ``{"sql": ..., "params": [...]}``. With ``from_topic``, the event data
are the parameters of the configured ``sql`` (a list, or ``{"params": [...]}``), or, without
``sql``, ``{sql, params}`` itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, ClassVar

import asyncpg
import orjson
from opentelemetry.trace import SpanKind

from mesh.bindings.base import BindingError, BindingFeatures, InputBinding, OutputBinding, json_by_default, span
from mesh.bindings.options import PostgresInOptions, PostgresOutOptions
from mesh.codecs import from_dict
from mesh.errors import DecodeError, InvalidEvent
from mesh.event import Event

__all__ = ["PostgresIn", "PostgresOut"]

log = logging.getLogger("mesh.bindings")


class PostgresIn(InputBinding[PostgresInOptions]):
    """LISTEN on a channel; each NOTIFY becomes an event (see the module docstring)."""

    type = "postgres-in"
    features = BindingFeatures(
        direction="input",
        delivery="NOTIFY is not stored (lost while disconnected); received ones retried until confirmed",
    )

    def __init__(self, name: str, options: PostgresInOptions, runtime: Any) -> None:
        super().__init__(name, options, runtime)
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._conn: Any = None
        self._lost = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def _listen(self) -> None:
        conn = await asyncpg.connect(self.options.url)
        await conn.add_listener(self.options.channel, self._notified)
        conn.add_termination_listener(lambda _conn: self._lost.set())
        self._conn = conn
        self._lost.clear()
        self.state = "running"

    def _notified(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        self._queue.put_nowait(payload)

    async def start(self) -> None:
        """Connect and LISTEN (raises if the first connection fails)."""
        try:
            await self._listen()
        except (OSError, asyncpg.PostgresError) as exc:
            raise BindingError(f"postgres-in {self.name!r}: cannot LISTEN: {exc}") from exc
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._publish_loop(), name=f"binding {self.name}"),
            loop.create_task(self._keep_connected(), name=f"binding {self.name} connection"),
        ]

    async def _keep_connected(self) -> None:
        while True:
            await self._lost.wait()
            self.state = "reconnecting"
            delay = 0.2
            while True:
                try:
                    await self._listen()
                    break
                except (OSError, asyncpg.PostgresError) as exc:
                    self.state = f"reconnecting: {exc}"
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 5.0)

    async def _publish_loop(self) -> None:
        attributes = {"db.system": "postgresql", "messaging.destination.name": self.options.channel}
        while True:
            payload = await self._queue.get()
            self.stats.add("received")
            event = self._event(payload)
            delay = 0.1
            while True:
                with span(f"process {self.options.channel}", SpanKind.CONSUMER, attributes):
                    try:
                        await self.emit(event)
                        break
                    except Exception as exc:
                        log.warning("postgres-in %s: publish failed (%s); trying again", self.name, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    def _event(self, payload: str) -> Event:
        channel = self.options.channel
        try:
            data = orjson.loads(payload)
        except orjson.JSONDecodeError:
            self.stats.add("wrapped")
            return self.wrap(payload, subject=channel, datacontenttype="text/plain")
        if isinstance(data, dict) and "specversion" in data:
            try:
                return json_by_default(from_dict(data))
            except (DecodeError, InvalidEvent) as exc:
                log.info("postgres-in %s: a notification is no valid CloudEvent (%s); wrapped", self.name, exc)
        self.stats.add("wrapped")
        return self.wrap(data, subject=channel, datacontenttype="application/json")

    async def stop(self) -> None:
        """Stop listening and publishing (notifications not yet published are dropped with the queue)."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close(timeout=5)


class PostgresOut(OutputBinding[PostgresOutOptions]):
    """``exec`` and ``query`` on a connection pool."""

    type = "postgres-out"
    features = BindingFeatures(
        direction="output",
        operations=frozenset({"exec", "query"}),
        delivery="returns after the statement committed (autocommit); errors raise",
    )
    default_operation: ClassVar[str] = "exec"

    def __init__(self, name: str, options: PostgresOutOptions, runtime: Any) -> None:
        super().__init__(name, options, runtime)
        self._pool: Any = None
        self._lock = asyncio.Lock()

    async def _get_pool(self) -> Any:
        async with self._lock:
            if self._pool is None:
                try:
                    self._pool = await asyncpg.create_pool(
                        self.options.url, min_size=1, max_size=self.options.pool_size
                    )
                except (OSError, asyncpg.PostgresError) as exc:
                    raise BindingError(f"postgres-out {self.name!r}: cannot connect: {exc}") from exc
            return self._pool

    async def start(self) -> None:
        """Open the pool."""
        await self._get_pool()

    async def close(self) -> None:
        """Close the pool."""
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    async def call(self, operation: str, data: Any, metadata: dict[str, Any]) -> Any:
        """``exec`` or ``query`` with ``{"sql": ..., "params": [...]}``."""
        sql, params = self._statement(data, metadata.get("event"))
        pool = await self._get_pool()
        attributes = {"db.system": "postgresql", "db.operation.name": operation}
        with span(operation, SpanKind.CLIENT, attributes):
            try:
                if operation == "query":
                    rows = await pool.fetch(sql, *params)
                    return [dict(row) for row in rows]
                status: str = await pool.execute(sql, *params)
            except asyncpg.PostgresError as exc:
                raise BindingError(f"postgres-out {self.name!r}: {type(exc).__name__}: {exc}") from exc
            except OSError as exc:
                raise BindingError(f"postgres-out {self.name!r}: connection failed: {exc}") from exc
        tail = status.rsplit(" ", 1)[-1]
        return {"status": status, "rows": int(tail) if tail.isdigit() else 0}

    def _statement(self, data: Any, event: Any) -> tuple[str, list[Any]]:
        if isinstance(event, Event) and self.options.sql:
            params = data.get("params", []) if isinstance(data, dict) else data
            return self.options.sql, list(params or [])
        if not isinstance(data, dict) or not isinstance(data.get("sql"), str):
            raise BindingError(f"postgres-out {self.name!r}: data must be {{'sql': ..., 'params': [...]}}")
        params = data.get("params") or []
        if not isinstance(params, list | tuple):
            raise BindingError(f"postgres-out {self.name!r}: 'params' must be a list")
        return data["sql"], list(params)
