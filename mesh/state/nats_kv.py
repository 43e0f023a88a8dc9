"""The NATS JetStream KV store (nats-py): the revision is the ETag, the bucket's watch the changes.

=============  ================================================================================
feature        on NATS KV
=============  ================================================================================
ETag           the entry's revision: ``update(last=rev)``, ``create``, ``delete(last=rev)``
TTL            no per-key TTL (a bucket-wide ``max_age`` only): FeatureNotSupported
transactions   none across keys: FeatureNotSupported (use postgres, sqlite or redis)
queries        none: FeatureNotSupported (use memory, sqlite or postgres)
changes        :meth:`watch` follows the bucket; the block publishes what it sees (no outbox)
=============  ================================================================================

Keys may use ``A-Z a-z 0-9 - _ / = .``; the app id is joined with ``.``.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, ClassVar

import nats
from nats.js.errors import BadRequestError, KeyNotFoundError, KeyWrongLastSequenceError, NotFoundError

from mesh.state.base import Backend, Features, Op, Row
from mesh.state.errors import ETagMismatch, StateError, StoreUnavailable, unsupported
from mesh.state.options import NatsKVOptions

__all__ = ["NatsKVStore"]

KEY = re.compile(r"^[-/_=.a-zA-Z0-9]+\Z")


class NatsKVStore(Backend):
    """A store in a JetStream KV bucket (see the module docstring)."""

    features: ClassVar[Features] = Features(ttl=False, transactions=False, query=False, outbox=False, watch=True)
    type: ClassVar[str] = "nats-kv"
    db_system: ClassVar[str] = "nats"
    separator: ClassVar[str] = "."

    def __init__(self, name: str, settings: NatsKVOptions) -> None:
        self.name = name
        self.url = settings.url or "nats://127.0.0.1:4222"
        self.bucket = settings.bucket or f"mesh-state-{name}"
        self._nc: Any = None
        self.kv: Any = None

    def key_problem(self, key: str) -> str | None:
        if not KEY.match(key) or key.startswith(".") or key.endswith(".") or ".." in key:
            return "NATS KV keys use A-Z a-z 0-9 - _ / = and single inner dots"
        return None

    async def open(self) -> None:
        if self._nc is not None:
            return
        try:
            self._nc = await nats.connect(self.url, connect_timeout=5, max_reconnect_attempts=-1,
                                          allow_reconnect=True)
        except (OSError, TimeoutError, nats.errors.NoServersError) as exc:
            raise StoreUnavailable(self.name, f"cannot connect to {self.url}: {exc}") from exc
        js = self._nc.jetstream()
        try:
            self.kv = await js.key_value(self.bucket)
        except (NotFoundError, BadRequestError):
            self.kv = await js.create_key_value(bucket=self.bucket, history=1)

    async def close(self) -> None:
        if self._nc is not None:
            await self._nc.close()
            self._nc = self.kv = None

    async def read(self, keys: Sequence[str], now: float) -> dict[str, Row]:
        out = {}
        for key in keys:
            try:
                entry = await self.kv.get(key)
            except KeyNotFoundError:
                continue
            if entry.value is not None:
                out[key] = Row(key, entry.value.decode(), str(entry.revision))
        return out

    async def write(self, ops: Sequence[Op], outbox: Sequence[tuple[str, str]], now: float) -> list[str]:
        if len(ops) != 1 or outbox:
            raise unsupported(self.type, "multi-key transactions", "use the postgres, sqlite or redis store")
        op = ops[0]
        if op.expires is not None:
            raise unsupported(self.type, "per-key TTL", "use the redis, postgres or sqlite store")
        try:
            last = None if op.etag is None else int(op.etag)
        except ValueError:
            raise ETagMismatch(self.name, op.key, op.etag) from None
        try:
            if op.kind == "set":
                data = (op.value or "null").encode()
                if op.create:
                    rev = await self.kv.create(op.key, data)
                elif last is not None:
                    rev = await self.kv.update(op.key, data, last=last)
                else:
                    rev = await self.kv.put(op.key, data)
                return [str(rev)]
            if last is not None:
                await self.kv.delete(op.key, last=last)
            else:
                await self.kv.delete(op.key)
            return [op.new_etag]
        except (KeyWrongLastSequenceError, BadRequestError) as exc:
            if isinstance(exc, BadRequestError) and "wrong last sequence" not in str(exc):
                raise StateError(self.name, str(exc), op.key) from exc
            raise ETagMismatch(self.name, op.key, op.etag) from exc

    async def watch(self, ready: Callable[[], None]) -> AsyncIterator[tuple[str, str | None, str]]:
        """``(key, JSON or None if deleted, revision)``: each key's latest entry, then every change."""
        watcher = await self.kv.watchall(include_history=False)
        ready()
        try:
            async for entry in watcher:
                if entry is None:
                    continue
                deleted = entry.operation in ("DEL", "PURGE")
                yield entry.key, None if deleted else entry.value.decode(), str(entry.revision)
        finally:
            await watcher.stop()

    async def destroy(self) -> None:
        await self._nc.jetstream().delete_key_value(self.bucket)
