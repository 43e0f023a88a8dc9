"""The secrets API: ``await app.secrets.get("vault", "db-password")`` and ``get_many``.

Stores are the ones ``secrets:`` names (with their ``type``, ``allowed`` and ``denied``), the
built-in ``env``, ``file`` and ``dotenv`` under their own names, and plugins' stores. Lookups
run in a worker thread (a store may read files or call out). A value is returned and never kept,
logged or put in an error message: errors name the store and the secret only.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from mesh.config.secrets import SecretAccessDenied, SecretLookupError, SecretStore, builtin_stores, open_store
from mesh.errors import MeshError

if TYPE_CHECKING:
    from mesh.components import Registry
    from mesh.config import MeshConfig

__all__ = ["SecretAccessDenied", "SecretNotFound", "Secrets"]


class SecretNotFound(MeshError, KeyError):
    """A store has no such secret, or is not configured (the message names both, never a value)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class Secrets:
    """An App's secret stores (``app.secrets``)."""

    def __init__(self, config: MeshConfig, registry: Registry | None = None) -> None:
        self._factories: dict[str, Callable[[Mapping[str, Any]], SecretStore]] = {
            **builtin_stores(),
            **(registry.secret_stores if registry is not None else {}),
        }
        self._conf = {
            name: {"type": c.type, "allowed": c.allowed, "denied": c.denied, **c.settings}
            for name, c in config.secrets.items()
        }
        self._opened: dict[str, SecretStore] = {}

    @property
    def stores(self) -> list[str]:
        """The store names this app can read: configured ones and the built-in types."""
        return sorted({*self._conf, *builtin_stores()})

    def _store(self, name: str) -> SecretStore:
        store = self._opened.get(name)
        if store is None:
            conf = self._conf.get(name)
            if conf is None and name not in builtin_stores():
                raise SecretNotFound(f"no secret store {name!r} (configured: {', '.join(self.stores)})")
            found = open_store(name, conf or {}, self._factories)
            if found is None:
                kind = (conf or {}).get("type") or name
                raise SecretNotFound(f"secret store {name!r} has an unknown type {kind!r}")
            store = self._opened[name] = found
        return store

    def _read(self, store: str, name: str) -> str:
        getter = self._store(store)
        try:
            return getter(name)
        except SecretAccessDenied as exc:
            raise SecretAccessDenied(str(exc)) from None
        except SecretLookupError as exc:
            raise SecretNotFound(f"secret {name!r} from store {store!r}: {exc}") from None

    async def get(self, store: str, name: str) -> str:
        """The secret ``name`` from ``store``; :class:`SecretNotFound` or :class:`SecretAccessDenied`."""
        return await asyncio.to_thread(self._read, store, name)

    async def get_many(self, store: str, names: Iterable[str]) -> dict[str, str]:
        """Several secrets of one store, by name (all or an error)."""
        wanted = list(names)
        return await asyncio.to_thread(lambda: {n: self._read(store, n) for n in wanted})

    def __repr__(self) -> str:
        return f"Secrets(stores={self.stores!r})"
