"""The state block's errors (to join the tree in :mod:`mesh.errors`).

::

    MeshError
    └── StateError                          a state call failed; names the store (and the key)
        ├── ETagMismatch                    someone else wrote first (or the key is gone)
        ├── InvalidKey (ValueError)         empty, not a string, over the store's limit, bad characters
        ├── InvalidValue (TypeError)        the value is not JSON-serialisable / not the asked type
        ├── InvalidQuery (ValueError)       a filter, order or cursor the parser cannot read
        ├── StoreNotFound (KeyError)        no store of that name is configured
        └── StoreUnavailable (ConnectionError)  the store's server does not answer

Nothing is half-written when one of these is raised: every write is one transaction.
"""

from __future__ import annotations

__all__ = [
    "ETagMismatch",
    "InvalidKey",
    "InvalidQuery",
    "InvalidValue",
    "StateError",
    "StoreNotFound",
    "StoreUnavailable",
    "unsupported",
]

from mesh.errors import FeatureNotSupported, MeshError


def unsupported(store_type: str, feature: str, alternative: str) -> FeatureNotSupported:
    """``FeatureNotSupported`` worded for a store: "the nats-kv state store does not support ..."."""
    return FeatureNotSupported(store_type, feature, alternative, kind="state store")


class StateError(MeshError):
    """A state call failed; ``store`` and ``key`` say where."""

    def __init__(self, store: str, message: str, key: str | None = None) -> None:
        self.store = store
        self.key = key
        where = f"state store {store!r}" + (f", key {key!r}" if key is not None else "")
        super().__init__(f"{where}: {message}")


class ETagMismatch(StateError):
    """The ETag given is not the key's current one: someone else wrote first."""

    def __init__(self, store: str, key: str, etag: str | None = None) -> None:
        self.etag = etag
        super().__init__(store, f"etag {etag!r} does not match (written by someone else, or gone)", key)


class InvalidKey(StateError, ValueError):
    """The key cannot be stored as it is."""


class InvalidValue(StateError, TypeError):
    """The value is not JSON-serialisable, or the stored JSON is not the type asked for."""


class InvalidQuery(StateError, ValueError):
    """The filter, ordering or cursor cannot be read."""

    def __init__(self, store: str, message: str) -> None:
        super().__init__(store, message)


class StoreNotFound(StateError, KeyError):
    """No store of that name is configured."""

    def __init__(self, store: str, known: list[str]) -> None:
        super().__init__(store, f"no such store (configured: {', '.join(known) or 'none'})")

    def __str__(self) -> str:
        return str(self.args[0])


class StoreUnavailable(StateError, ConnectionError):
    """The store's server could not be reached."""
