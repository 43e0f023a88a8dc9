"""Key stores: keys with an expiry, for plugins that remember what they saw (idempotency).

=========  ===================================================  ==============================
store      where                                                shared between instances
=========  ===================================================  ==============================
memory     an in-process LRU with expiry, bounded to max_keys   no
redis      ``SET key 1 PX ttl`` under a prefix                  yes (every instance, one URL)
=========  ===================================================  ==============================

>>> import asyncio
>>> store = MemoryKeyStore(max_keys=2)
>>> asyncio.run(store.remember("a", ttl=60)); asyncio.run(store.seen("a"))
True
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Any, Protocol

from mesh.errors import BrokerError, ComponentNotInstalled
from mesh.urls import mask_url

__all__ = ["KeyStore", "MemoryKeyStore", "RedisKeyStore", "open_key_store"]


class KeyStore(Protocol):
    """Where remembered keys live."""

    async def seen(self, key: str) -> bool:
        """Whether the key was remembered and has not expired."""
        ...

    async def remember(self, key: str, ttl: float) -> None:
        """Remember the key for ``ttl`` seconds."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


class MemoryKeyStore:
    """In-process record with expiry, bounded to ``max_keys`` (oldest dropped first)."""

    def __init__(self, max_keys: int = 100_000) -> None:
        self._keys: OrderedDict[str, float] = OrderedDict()
        self._max = max_keys

    async def seen(self, key: str) -> bool:
        """Whether the key is recorded and not expired."""
        expires = self._keys.get(key)
        if expires is None:
            return False
        if expires < time.monotonic():
            del self._keys[key]
            return False
        return True

    async def remember(self, key: str, ttl: float) -> None:
        """Record the key for ``ttl`` seconds."""
        self._keys[key] = time.monotonic() + ttl
        self._keys.move_to_end(key)
        while len(self._keys) > self._max:
            self._keys.popitem(last=False)

    async def close(self) -> None:
        """Nothing to release."""


class RedisKeyStore:
    """Keys with an expiry in Redis, shared by every instance that names the same URL and prefix."""

    def __init__(self, url: str = "redis://127.0.0.1:6379/0", *, prefix: str = "_mesh.idem:") -> None:
        try:
            from redis.asyncio import Redis
        except ImportError as exc:
            raise ComponentNotInstalled("key store", "redis", "redis") from exc
        self._client: Any = Redis.from_url(url)
        self._prefix = prefix
        self._where = mask_url(url)

    async def seen(self, key: str) -> bool:
        """Whether the key is recorded and not expired."""
        from redis.exceptions import RedisError

        try:
            return bool(await self._client.exists(self._prefix + key))
        except RedisError as exc:
            raise BrokerError(f"redis key store at {self._where}: {exc}") from exc

    async def remember(self, key: str, ttl: float) -> None:
        """Record the key for ``ttl`` seconds."""
        from redis.exceptions import RedisError

        try:
            await self._client.set(self._prefix + key, b"1", px=max(1, int(ttl * 1000)))
        except RedisError as exc:
            raise BrokerError(f"redis key store at {self._where}: {exc}") from exc

    async def close(self) -> None:
        """Close the connections."""
        await self._client.aclose()


def open_key_store(kind: str, *, url: str = "", prefix: str = "_mesh.idem:", max_keys: int = 100_000) -> KeyStore:
    """A key store of the given kind (``memory`` or ``redis``)."""
    if kind == "redis":
        return RedisKeyStore(url, prefix=prefix)
    return MemoryKeyStore(max_keys)
