"""The Redis store (redis-py): one hash per key, one Lua script per write, the outbox a stream.

=================  ===========================================================================
piece              how
=================  ===========================================================================
row                hash ``<ns>:k:<key>`` with fields ``v`` (JSON) and ``e`` (ETag)
TTL                ``PEXPIREAT`` on the hash: Redis itself hides and removes it at expiry
write              a Lua script checks every ETag first, then applies every op and ``XADD`` s
                   the outbox rows to ``<ns>:outbox``: Redis runs it atomically (a plain set
                   with nothing to check and no outbox row runs a shorter script: speed)
queries            not supported (use memory, sqlite or postgres)
=================  ===========================================================================
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from mesh.state.base import Backend, Features, Op, OutboxRow, Row
from mesh.state.errors import ETagMismatch, StateError, StoreUnavailable
from mesh.state.options import RedisOptions

__all__ = ["RedisStore"]

WRITE = """
local n = tonumber(ARGV[1])
for i = 1, n do
  local a = 2 + (i - 1) * 6
  local cur = redis.call('HGET', KEYS[i], 'e')
  if ARGV[a + 5] == '1' and cur then return i end
  if ARGV[a + 2] ~= '' and cur ~= ARGV[a + 2] then return i end
end
for i = 1, n do
  local a = 2 + (i - 1) * 6
  if ARGV[a] == 'set' then
    redis.call('HSET', KEYS[i], 'v', ARGV[a + 1], 'e', ARGV[a + 3])
    if ARGV[a + 4] ~= '0' then redis.call('PEXPIREAT', KEYS[i], ARGV[a + 4]) else redis.call('PERSIST', KEYS[i]) end
  else
    redis.call('DEL', KEYS[i])
  end
end
local o = 2 + n * 6
while ARGV[o] do
  redis.call('XADD', KEYS[n + 1], '*', 't', ARGV[o], 'b', ARGV[o + 1])
  o = o + 2
end
return 0
"""

SET = """
redis.call('HSET', KEYS[1], 'v', ARGV[1], 'e', ARGV[2])
if ARGV[3] ~= '0' then redis.call('PEXPIREAT', KEYS[1], ARGV[3]) else redis.call('PERSIST', KEYS[1]) end
return 0
"""
"""A plain set (no ETag, no create, no outbox): the same effect as WRITE with a third of the arguments."""


class RedisStore(Backend):
    """A store in Redis (see the module docstring)."""

    features: ClassVar[Features] = Features(query=False)
    type: ClassVar[str] = "redis"
    db_system: ClassVar[str] = "redis"

    def __init__(self, name: str, settings: RedisOptions) -> None:
        self.name = name
        self.url = settings.url or "redis://127.0.0.1:6379/0"
        self.ns = settings.namespace or f"mesh:state:{name}"
        self.stream = f"{self.ns}:outbox"
        self._r: Any = None
        self._write: Any = None
        self._set: Any = None

    def rkey(self, key: str) -> str:
        """The Redis key of a store key."""
        return f"{self.ns}:k:{key}"

    async def open(self) -> None:
        if self._r is not None:
            return
        r = aioredis.from_url(self.url, decode_responses=True, socket_connect_timeout=5)
        try:
            await r.ping()
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            await r.aclose()
            raise StoreUnavailable(self.name, f"cannot connect to {self.url}: {exc}") from exc
        self._r = r
        self._write = r.register_script(WRITE)
        self._set = r.register_script(SET)

    async def close(self) -> None:
        if self._r is not None:
            await self._r.aclose()
            self._r = None

    async def read(self, keys: Sequence[str], now: float) -> dict[str, Row]:
        try:
            if len(keys) == 1:
                found = [await self._r.hmget(self.rkey(keys[0]), "v", "e")]
            else:
                async with self._r.pipeline(transaction=False) as p:
                    for key in keys:
                        p.hmget(self.rkey(key), "v", "e")
                    found = await p.execute()
        except RedisError as exc:
            raise StoreUnavailable(self.name, f"{self.url}: {exc}") from exc
        return {k: Row(k, v, e) for k, (v, e) in zip(keys, found, strict=True) if v is not None}

    async def write(self, ops: Sequence[Op], outbox: Sequence[tuple[str, str]], now: float) -> None:
        if len(ops) == 1 and not outbox and ops[0].kind == "set" and ops[0].etag is None and not ops[0].create:
            op = ops[0]
            try:
                await self._set(keys=[self.rkey(op.key)],
                                args=[op.value or "", op.new_etag, int(op.expires * 1000) if op.expires else 0])
            except (RedisConnectionError, RedisTimeoutError) as exc:
                raise StoreUnavailable(self.name, f"{self.url}: {exc}") from exc
            except RedisError as exc:
                raise StateError(self.name, f"{type(exc).__name__}: {exc}", op.key) from exc
            return
        args: list[Any] = [len(ops)]
        for op in ops:
            expires = int(op.expires * 1000) if op.expires else 0
            args += [op.kind, op.value or "", op.etag or "", op.new_etag, expires, "1" if op.create else "0"]
        for topic, body in outbox:
            args += [topic, body]
        try:
            failed = await self._write(keys=[*(self.rkey(op.key) for op in ops), self.stream], args=args)
        except (RedisConnectionError, RedisTimeoutError) as exc:
            raise StoreUnavailable(self.name, f"{self.url}: {exc}") from exc
        except RedisError as exc:
            raise StateError(self.name, f"{type(exc).__name__}: {exc}", ops[0].key if ops else None) from exc
        if failed:
            op = ops[int(failed) - 1]
            raise ETagMismatch(self.name, op.key, op.etag)

    async def outbox_read(self, limit: int) -> list[OutboxRow]:
        rows = await self._r.xrange(self.stream, "-", "+", count=limit)
        return [OutboxRow(i, f["t"], f["b"]) for i, f in rows]

    async def outbox_ack(self, rows: Sequence[OutboxRow]) -> None:
        if rows:
            await self._r.xdel(self.stream, *(r.seq for r in rows))

    async def destroy(self) -> None:
        keys = [k async for k in self._r.scan_iter(match=f"{self.ns}:*", count=500)]
        for i in range(0, len(keys), 500):
            await self._r.delete(*keys[i:i + 500])
