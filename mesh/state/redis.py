"""The Redis store (redis-py): one hash per key, one Lua script per write, the outbox a stream.

=================  ===========================================================================
piece              how
=================  ===========================================================================
row                hash ``<ns>:k:<key>`` with fields ``v`` (JSON) and ``e`` (ETag)
TTL                ``PEXPIREAT`` on the hash: Redis itself hides and removes it at expiry
write              a Lua script checks every ETag first, then applies every op and ``XADD`` s
                   the outbox rows to ``<ns>:outbox``: Redis runs it atomically (a plain set
                   with nothing to check and no outbox row runs a shorter script: speed)
index              ``ensure_index(path)`` adds the path to the set ``<ns>:indexes``; the same
                   write script then keeps a sorted set ``<ns>:idx:<path>`` (member the key,
                   score the number at the path; no number, a delete: no member). Keys with a
                   TTL are also kept in ``<ns>:exp`` so ``purge`` drops them from the indexes
queries            partial: a range (``gt``/``gte``/``lt``/``lte``/``eq`` on a number) on one
                   indexed path, ordered by it ascending, other conditions checked on the rows
                   read; limit and keyset cursor as elsewhere. Any other shape raises
                   FeatureNotSupported (use memory, sqlite or postgres)
=================  ===========================================================================

``Features.query`` stays off (the contract's arbitrary filters are not answered);
``Features.index_query`` says the indexed range is. Scores are written as ``%.17g`` so a
float survives the trip exactly (Lua's default number format keeps 14 digits).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import orjson
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from mesh.state.base import Backend, Features, Op, OutboxRow, Row
from mesh.state.errors import ETagMismatch, StateError, StoreUnavailable, unsupported
from mesh.state.options import RedisOptions
from mesh.state.query import Cond, Node, Query, matches

__all__ = ["RedisStore"]

INDEX = """
local function reindex(ns, idx, key, value, expires)
  if #idx == 0 then return end
  local doc = nil
  if value then
    local ok, d = pcall(cjson.decode, value)
    if ok then doc = d end
  end
  for _, path in ipairs(idx) do
    local v = doc
    for part in string.gmatch(path, '[^.]+') do
      if type(v) ~= 'table' then v = nil break end
      v = v[part]
    end
    if type(v) == 'number' and v == v then
      redis.call('ZADD', ns .. ':idx:' .. path, string.format('%.17g', v), key)
    else
      redis.call('ZREM', ns .. ':idx:' .. path, key)
    end
  end
  if value and expires ~= '0' then
    redis.call('ZADD', ns .. ':exp', expires, key)
  else
    redis.call('ZREM', ns .. ':exp', key)
  end
end
"""
"""Keep every index (and the expiry set) of one key in step with its new value (``false``: deleted)."""

WRITE = INDEX + """
local n = tonumber(ARGV[1])
local reg = KEYS[n + 2]
local ns = string.sub(reg, 1, -9)
for i = 1, n do
  local a = 2 + (i - 1) * 6
  local cur = redis.call('HGET', KEYS[i], 'e')
  if ARGV[a + 5] == '1' and cur then return i end
  if ARGV[a + 2] ~= '' and cur ~= ARGV[a + 2] then return i end
end
local idx = redis.call('SMEMBERS', reg)
local skip = #ns + 4
for i = 1, n do
  local a = 2 + (i - 1) * 6
  if ARGV[a] == 'set' then
    redis.call('HSET', KEYS[i], 'v', ARGV[a + 1], 'e', ARGV[a + 3])
    if ARGV[a + 4] ~= '0' then redis.call('PEXPIREAT', KEYS[i], ARGV[a + 4]) else redis.call('PERSIST', KEYS[i]) end
    reindex(ns, idx, string.sub(KEYS[i], skip), ARGV[a + 1], ARGV[a + 4])
  else
    redis.call('DEL', KEYS[i])
    reindex(ns, idx, string.sub(KEYS[i], skip), false, '0')
  end
end
local o = 2 + n * 6
while ARGV[o] do
  redis.call('XADD', KEYS[n + 1], '*', 't', ARGV[o], 'b', ARGV[o + 1])
  o = o + 2
end
return 0
"""

SET = INDEX + """
redis.call('HSET', KEYS[1], 'v', ARGV[1], 'e', ARGV[2])
if ARGV[3] ~= '0' then redis.call('PEXPIREAT', KEYS[1], ARGV[3]) else redis.call('PERSIST', KEYS[1]) end
local ns = string.sub(KEYS[2], 1, -9)
reindex(ns, redis.call('SMEMBERS', KEYS[2]), string.sub(KEYS[1], #ns + 4), ARGV[1], ARGV[3])
return 0
"""
"""A plain set (no ETag, no create, no outbox): the same effect as WRITE with a third of the arguments."""

BACKFILL = INDEX + """
local ns = string.sub(KEYS[1], 1, -9)
local idx = redis.call('SMEMBERS', KEYS[1])
for i = 2, #KEYS do
  local v = redis.call('HGET', KEYS[i], 'v')
  if v then
    local ttl = redis.call('PEXPIRETIME', KEYS[i])
    reindex(ns, idx, string.sub(KEYS[i], #ns + 4), v, ttl > 0 and tostring(ttl) or '0')
  end
end
return 0
"""
"""Index rows written before their path was registered (``ensure_index`` of a new path)."""

PURGE = """
local ns = string.sub(KEYS[1], 1, -9)
local idx = redis.call('SMEMBERS', KEYS[1])
local gone = 0
for _, key in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))) do
  if redis.call('EXISTS', ns .. ':k:' .. key) == 0 then
    for _, path in ipairs(idx) do redis.call('ZREM', ns .. ':idx:' .. path, key) end
    redis.call('ZREM', KEYS[2], key)
    gone = gone + 1
  end
end
return gone
"""
"""Drop expired keys (Redis already removed their hashes) from every index and the expiry set."""

RANGE_OPS = frozenset({"gt", "gte", "lt", "lte", "eq"})


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _conds(node: Cond | Node | None) -> list[Cond] | None:
    """The conditions of a plain ``and`` of comparisons, or ``None`` for any other shape."""
    if node is None:
        return []
    if isinstance(node, Cond):
        return [node]
    if node.kind != "and":
        return None
    out: list[Cond] = []
    for item in node.items:
        sub = _conds(item)
        if sub is None:
            return None
        out += sub
    return out


class RedisStore(Backend):
    """A store in Redis (see the module docstring)."""

    features: ClassVar[Features] = Features(query=False, index_query=True)
    """A range on one ``ensure_index`` ed numeric path, ordered by it, is answered from its sorted set."""
    type: ClassVar[str] = "redis"
    db_system: ClassVar[str] = "redis"

    def __init__(self, name: str, settings: RedisOptions) -> None:
        self.name = name
        self.url = settings.url or "redis://127.0.0.1:6379/0"
        self.ns = settings.namespace or f"mesh:state:{name}"
        self.stream = f"{self.ns}:outbox"
        self.registry = f"{self.ns}:indexes"
        self.expiring = f"{self.ns}:exp"
        self._indexes: set[str] = set()
        self._r: Any = None
        self._write: Any = None
        self._set: Any = None
        self._backfill: Any = None
        self._purge: Any = None

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
        self._backfill = r.register_script(BACKFILL)
        self._purge = r.register_script(PURGE)

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
                await self._set(keys=[self.rkey(op.key), self.registry],
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
            failed = await self._write(keys=[*(self.rkey(op.key) for op in ops), self.stream, self.registry], args=args)
        except (RedisConnectionError, RedisTimeoutError) as exc:
            raise StoreUnavailable(self.name, f"{self.url}: {exc}") from exc
        except RedisError as exc:
            raise StateError(self.name, f"{type(exc).__name__}: {exc}", ops[0].key if ops else None) from exc
        if failed:
            op = ops[int(failed) - 1]
            raise ETagMismatch(self.name, op.key, op.etag)

    async def ensure_index(self, path: tuple[str, ...]) -> None:
        """Register ``path`` (once per namespace; rows already stored are indexed then)."""
        name = ".".join(path)
        try:
            if await self._r.sadd(self.registry, name):
                batch: list[str] = []
                async for key in self._r.scan_iter(match=f"{self.ns}:k:*", count=500):
                    batch.append(key)
                    if len(batch) == 200:
                        await self._backfill(keys=[self.registry, *batch])
                        batch = []
                if batch:
                    await self._backfill(keys=[self.registry, *batch])
        except RedisError as exc:
            raise StoreUnavailable(self.name, f"{self.url}: {exc}") from exc
        self._indexes.add(name)

    def _plan(self, q: Query) -> tuple[str, float, bool, float, bool]:
        """``(path, low, low open, high, high open)`` of an indexed range query, or FeatureNotSupported."""
        conds = _conds(q.where)
        if conds is None or len(q.order) != 1 or q.order[0][1] or ".".join(q.order[0][0]) not in self._indexes:
            raise unsupported(self.type, "this state query (only a range on one ensure_index'ed number, "
                              "ordered by it ascending)", "use the memory, sqlite or postgres store")
        path = q.order[0][0]
        lo, lo_open, hi, hi_open, ranged = float("-inf"), False, float("inf"), False, False
        for c in conds:
            if c.path != path:
                continue
            if c.op not in RANGE_OPS or not _number(c.value):
                raise unsupported(self.type, f"a {c.op!r} on an indexed path (only number ranges)",
                                  "use the memory, sqlite or postgres store")
            ranged = True
            v = float(c.value)
            if c.op in ("gt", "gte", "eq") and (v > lo or (v == lo and c.op == "gt")):
                lo, lo_open = v, c.op == "gt"
            if c.op in ("lt", "lte", "eq") and (v < hi or (v == hi and c.op == "lt")):
                hi, hi_open = v, c.op == "lt"
        if not ranged:
            raise unsupported(self.type, "an ordered state query without a range on its indexed path",
                              "add a range on it, or use the memory, sqlite or postgres store")
        return ".".join(path), lo, lo_open, hi, hi_open

    async def query(self, q: Query, now: float) -> list[Row]:
        """Rows of an indexed range, from its sorted set (see the module docstring)."""
        if len(q.order) == 1 and ".".join(q.order[0][0]) not in self._indexes:
            try:  # another process may have registered it
                self._indexes = set(await self._r.smembers(self.registry))
            except RedisError as exc:
                raise StoreUnavailable(self.name, f"{self.url}: {exc}") from exc
        path, lo, lo_open, hi, hi_open = self._plan(q)
        after: tuple[float, str] | None = None
        if q.after is not None:
            if not _number(q.after[0]) or not isinstance(q.after[1], str):
                return []
            after = (float(q.after[0]), q.after[1])
            if after[0] > lo or (after[0] == lo and not lo_open):
                lo, lo_open = after[0], False
        low = "-inf" if lo == float("-inf") else f"{'(' if lo_open else ''}{lo!r}"
        high = "+inf" if hi == float("inf") else f"{'(' if hi_open else ''}{hi!r}"
        size = min(max(q.limit * 2, 64), 2000)
        out: list[Row] = []
        offset = 0
        try:
            while len(out) < q.limit:
                batch = await self._r.zrange(f"{self.ns}:idx:{path}", low, high, byscore=True, offset=offset,
                                             num=size, withscores=True)
                offset += len(batch)
                keys = [m for m, s in batch if m.startswith(q.prefix) and (after is None or (s, m) > after)]
                if keys:
                    async with self._r.pipeline(transaction=False) as p:
                        for key in keys:
                            p.hmget(self.rkey(key), "v", "e")
                        found = await p.execute()
                    for key, (v, e) in zip(keys, found, strict=True):
                        if v is not None and matches(q.where, orjson.loads(v)):
                            out.append(Row(key, v, e))
                if len(batch) < size:
                    break
        except RedisError as exc:
            raise StoreUnavailable(self.name, f"{self.url}: {exc}") from exc
        return out[:q.limit]

    async def purge(self, now: float) -> int:
        """Drop expired keys from the indexes (Redis removed the rows themselves at expiry)."""
        gone = 0
        while True:
            n = int(await self._purge(keys=[self.registry, self.expiring], args=[int(now * 1000), 500]))
            gone += n
            if n < 500:
                return gone

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
