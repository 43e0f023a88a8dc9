"""State store speed: get / set / transaction ops/s per store, next to the raw client doing the same.

    python -m benchmarks.state [--n 2000] [--rounds 3] [--stores sqlite,postgres,redis,nats-kv,memory]
    python -m benchmarks.state --stores postgres --profile get      # cProfile of the store's get

One coroutine, sequential calls (latency-bound, like one request handler). ``raw`` is the client
library alone doing the nearest equivalent (sqlite3 on one thread, asyncpg, redis-py, nats-py
KV). Store and raw client are measured in alternation, ``--rounds`` times, and the best round of
each is kept, so a load spike on a shared machine does not land on one side only. ``outbox`` is
the cost per write of ``changes:`` (set with the change row vs without).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import sqlite3
import tempfile
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from mesh.components import Registry
from mesh.state.block import build_store
from mesh.state.handle import StateStore

PG = os.environ.get("MESH_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS = os.environ.get("MESH_BENCH_REDIS", "redis://127.0.0.1:6379/0")
NATS = os.environ.get("MESH_BENCH_NATS", "nats://127.0.0.1:4222")
VALUE = {"id": "c-42", "total": 120, "status": "open", "items": [{"sku": "espresso", "qty": 2}]}
TAG = os.urandom(3).hex()


async def rate(n: int, fn: Callable[[int], Awaitable[Any]]) -> float:
    """Calls per second of ``fn(i)`` for i in range(n)."""
    for i in range(min(50, n)):
        await fn(i)
    t = time.perf_counter()
    for i in range(n):
        await fn(i)
    return n / (time.perf_counter() - t)


def config(kind: str, tmp: str, **extra: Any) -> dict[str, Any]:
    """A fresh config for one store type."""
    name = f"bench_{TAG}_{os.urandom(2).hex()}"
    base: dict[str, Any] = {
        "memory": {"type": "memory"},
        "sqlite": {"type": "sqlite", "url": f"sqlite:///{tmp}/{name}.db"},
        "postgres": {"type": "postgres", "url": PG, "table": name},
        "redis": {"type": "redis", "url": REDIS, "namespace": f"bench:{name}"},
        "nats-kv": {"type": "nats-kv", "url": NATS, "bucket": name.replace("_", "-")},
    }[kind]
    return {**base, **extra}


async def open_store(kind: str, tmp: str, **extra: Any) -> StateStore:
    """An open store handle."""
    store, _ = build_store("bench", config(kind, tmp, **extra), Registry(), "bench")
    await store.backend.open()
    return store


RawOps = tuple[Callable[[int], Awaitable[Any]], Callable[[int], Awaitable[Any]], Callable[[], Awaitable[None]]]


async def open_raw(kind: str, tmp: str) -> RawOps | None:
    """(get, set, close) of the bare client on the same data shape, or ``None`` (memory)."""
    import json

    body = json.dumps(VALUE)
    if kind == "sqlite":
        pool = ThreadPoolExecutor(1)
        loop = asyncio.get_running_loop()
        conn = await loop.run_in_executor(
            pool, lambda: sqlite3.connect(f"{tmp}/raw.db", check_same_thread=False, isolation_level=None))
        for stmt in ("PRAGMA journal_mode=WAL", "PRAGMA synchronous=FULL",
                     "CREATE TABLE IF NOT EXISTS kv (k TEXT PRIMARY KEY, v TEXT)"):
            await loop.run_in_executor(pool, conn.execute, stmt)
        upsert = "INSERT OR REPLACE INTO kv VALUES (?, ?)"

        def sput(i: int) -> Any:
            return loop.run_in_executor(pool, conn.execute, upsert, (f"k{i % 100}", body))

        async def sget(i: int) -> Any:
            return await loop.run_in_executor(
                pool, lambda: conn.execute("SELECT v FROM kv WHERE k = ?", (f"k{i % 100}",)).fetchone())

        async def sclose() -> None:
            await loop.run_in_executor(pool, conn.close)
            pool.shutdown()
        return sget, sput, sclose
    if kind == "postgres":
        import asyncpg

        pg = await asyncpg.create_pool(PG, min_size=1, max_size=2)
        t = f"raw_{TAG}"
        await pg.execute(f"CREATE TABLE IF NOT EXISTS {t} (k text PRIMARY KEY, v jsonb)")
        sql = f"INSERT INTO {t} VALUES ($1, $2::jsonb) ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v"

        async def pclose() -> None:
            await pg.execute(f"DROP TABLE {t}")
            await pg.close()
        return (lambda i: pg.fetchrow(f"SELECT v::text FROM {t} WHERE k = $1", f"k{i % 100}"),
                lambda i: pg.execute(sql, f"k{i % 100}", body), pclose)
    if kind == "redis":
        import redis.asyncio as aioredis

        r = aioredis.from_url(REDIS, decode_responses=True)

        async def rclose() -> None:
            await r.delete(*[f"bench:raw:{TAG}:{i}" for i in range(100)])
            await r.aclose()
        return (lambda i: r.get(f"bench:raw:{TAG}:{i % 100}"),
                lambda i: r.set(f"bench:raw:{TAG}:{i % 100}", body), rclose)
    if kind == "nats-kv":
        import nats

        nc = await nats.connect(NATS)
        kv = await nc.jetstream().create_key_value(bucket=f"raw-{TAG}")

        async def nclose() -> None:
            await nc.jetstream().delete_key_value(f"raw-{TAG}")
            await nc.close()
        return lambda i: kv.get(f"k{i % 100}"), lambda i: kv.put(f"k{i % 100}", body.encode()), nclose
    return None


async def measure(kind: str, n: int, tmp: str, rounds: int = 3) -> dict[str, Any]:
    """One row: the store's get/set/transaction rates, the raw client's, and the outbox cost.

    Store and raw client alternate, ``rounds`` times; each figure is the best of its rounds.
    """
    store = await open_store(kind, tmp)
    changes = await open_store(kind, tmp, changes="bench.changes") if store.features.outbox else None
    raw = await open_raw(kind, tmp)
    best: dict[str, float] = {}

    def keep(name: str, value: float) -> None:
        best[name] = max(best.get(name, 0.0), value)

    async def tx(i: int) -> None:
        async with store.transaction() as t:
            t.set(f"k{i % 100}", VALUE)
            t.set(f"j{i % 100}", VALUE)

    async def change(i: int) -> None:
        assert changes is not None
        await changes.set(f"k{i % 100}", VALUE)

    try:
        for _ in range(rounds):
            keep("set", await rate(n, lambda i: store.set(f"k{i % 100}", VALUE)))
            if raw is not None:
                keep("raw_set", await rate(n, raw[1]))
            keep("get", await rate(n, lambda i: store.get(f"k{i % 100}")))
            if raw is not None:
                keep("raw_get", await rate(n, raw[0]))
            if store.features.transactions:
                keep("tx", await rate(n // 2, tx))
            if changes is not None:
                keep("changes_set", await rate(n, change))
                await changes.backend.outbox_ack(await changes.backend.outbox_read(n + 100))
    finally:
        for s in (store, changes):
            if s is not None:
                await s.backend.destroy()
                await s.backend.close()
        if raw is not None:
            await raw[2]()
    outbox = (1 / best["changes_set"] - 1 / best["set"]) * 1e6 if "changes_set" in best else None
    return {"store": kind, "get": best["get"], "set": best["set"], "tx": best.get("tx"),
            "raw": (best["raw_get"], best["raw_set"]) if raw is not None else None, "outbox_us": outbox}


async def profile(kind: str, op: str, n: int, tmp: str, top: int = 25) -> None:
    """Print a cProfile of ``n`` store calls of ``op`` (get or set), sorted by own time."""
    store = await open_store(kind, tmp)
    try:
        for i in range(100):
            await store.set(f"k{i}", VALUE)
        calls: dict[str, Callable[[int], Awaitable[Any]]] = {
            "get": lambda i: store.get(f"k{i % 100}"), "set": lambda i: store.set(f"k{i % 100}", VALUE)}
        fn = calls[op]
        await rate(200, fn)
        prof = cProfile.Profile()
        prof.enable()
        r = await rate(n, fn)
        prof.disable()
        print(f"{kind} {op}: {r:,.0f}/s under the profiler")
        pstats.Stats(prof).sort_stats("tottime").print_stats(top)
    finally:
        await store.backend.destroy()
        await store.backend.close()


def main(argv: list[str] | None = None) -> None:
    """Print the table."""
    parser = argparse.ArgumentParser(description="state store speed vs the raw clients")
    parser.add_argument("--n", type=int, default=2000, help="calls per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="alternations of store and raw client (best kept)")
    parser.add_argument("--stores", default="memory,sqlite,postgres,redis,nats-kv")
    parser.add_argument("--profile", choices=["get", "set"], default=None,
                        help="print a cProfile of this store call instead of the table")
    args = parser.parse_args(argv)
    if args.profile:
        with tempfile.TemporaryDirectory() as tmp:
            for kind in args.stores.split(","):
                asyncio.run(profile(kind, args.profile, args.n, tmp))
        return
    print(f"{'store':<10}{'get/s':>10}{'raw get/s':>11}{'ratio':>7}{'set/s':>10}{'raw set/s':>11}{'ratio':>7}"
          f"{'tx/s':>9}{'outbox us/write':>17}")
    with tempfile.TemporaryDirectory() as tmp:
        for kind in args.stores.split(","):
            row = asyncio.run(measure(kind, args.n, tmp, args.rounds))
            rg, rs = row["raw"] or (None, None)
            def cell(v: float | None, w: int) -> str:
                return f"{v:>{w},.0f}" if v is not None else f"{'-':>{w}}"
            def ratio(a: float, b: float | None) -> str:
                return f"{a / b:>6.2f}x" if b else f"{'-':>7}"
            print(f"{kind:<10}{cell(row['get'], 10)}{cell(rg, 11)}{ratio(row['get'], rg)}{cell(row['set'], 10)}"
                  f"{cell(rs, 11)}{ratio(row['set'], rs)}{cell(row['tx'], 9)}"
                  f"{cell(row['outbox_us'], 17)}")


if __name__ == "__main__":
    main()
