"""The store contract: what a backend implements, in five calls, and the records they exchange.

A backend stores JSON text under string keys with an ETag and an optional expiry; everything
user-facing (key prefixes, JSON and pydantic, change events, spans, leases) is written once in
:mod:`mesh.state.handle` above this seam.

=================  ===========================================================================
call               contract
=================  ===========================================================================
``read(keys)``     the live rows (expired ones read as absent at once)
``write(ops, ob)`` every op and outbox row commits together or none does; an ETag that does not
                   match raises :class:`~mesh.state.errors.ETagMismatch` naming the key
``query(q)``       rows matching a :class:`~mesh.state.query.Query` (``Features.query``)
``outbox_*``       the change rows written by ``write``, oldest first, removed once published
``purge()``        remove expired rows (the background sweep)
=================  ===========================================================================
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

from mesh.state.errors import unsupported

if TYPE_CHECKING:
    from mesh.state.query import Query

__all__ = ["Backend", "Features", "Op", "OutboxRow", "Page", "Row", "StateItem", "new_etag"]

T = TypeVar("T")


def new_etag() -> str:
    """A fresh ETag: 16 random hex digits."""
    return os.urandom(8).hex()


@dataclass(frozen=True, slots=True)
class Features:
    """What a store can do; the contract suite skips what is off, calls raise FeatureNotSupported."""

    etag: bool = True
    """Optimistic concurrency: ``set``/``delete`` with ``etag=`` fail if someone wrote first."""
    ttl: bool = True
    """Per-key expiry: an expired key reads as absent at once and is removed in the background."""
    transactions: bool = True
    """Several sets, deletes and publishes commit together or not at all."""
    query: bool = True
    """Filters on the JSON value, ordering and keyset pagination."""
    index_query: bool = False
    """Only a range on one ``ensure_index``'ed numeric path, ordered by it ascending (Redis): other
    query shapes raise FeatureNotSupported."""
    outbox: bool = True
    """Change rows are written in the same transaction as the state (a relay publishes them)."""
    watch: bool = False
    """The store's own change feed publishes the changes (NATS KV); no outbox."""


@dataclass(frozen=True, slots=True)
class Row:
    """One stored row as a backend returns it: full key, JSON text, ETag."""

    key: str
    value: str
    etag: str


@dataclass(frozen=True, slots=True)
class StateItem(Generic[T]):
    """A key, its value, and the ETag to write it back with."""

    key: str
    value: T
    etag: str


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of a query; pass ``next`` as ``after=`` for the following page (``None``: done)."""

    items: list[StateItem[T]]
    next: str | None


@dataclass(frozen=True, slots=True)
class Op:
    """One write: ``set`` (value is JSON text) or ``delete``, checked against ``etag`` if given.

    ``create`` means the key must not exist (the first writer wins); ``new_etag`` is the ETag the
    row gets (chosen before the write so the change event can carry it).
    """

    kind: str
    key: str
    value: str | None = None
    etag: str | None = None
    new_etag: str = ""
    expires: float | None = None
    create: bool = False


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """One event waiting in the outbox: its sequence number, topic and structured-JSON body."""

    seq: Any
    topic: str
    body: str


class Backend(ABC):
    """What a store type implements (see the module docstring)."""

    features: ClassVar[Features]
    type: ClassVar[str]
    db_system: ClassVar[str] = "other_sql"
    """OpenTelemetry ``db.system.name`` for spans."""
    max_key: ClassVar[int] = 1024
    """Longest key in UTF-8 bytes, with the prefix."""
    separator: ClassVar[str] = "||"
    """Between the app id and the key (Dapr's scheme)."""

    name: str = ""

    def key_problem(self, key: str) -> str | None:
        """Why the full key cannot be stored here, or ``None``."""
        return None

    @abstractmethod
    async def open(self) -> None:
        """Connect (and create tables, buckets) or raise StoreUnavailable."""

    @abstractmethod
    async def close(self) -> None:
        """Disconnect."""

    @abstractmethod
    async def read(self, keys: Sequence[str], now: float) -> dict[str, Row]:
        """The live rows of ``keys`` (absent and expired ones left out)."""

    @abstractmethod
    async def write(self, ops: Sequence[Op], outbox: Sequence[tuple[str, str]], now: float) -> Sequence[str] | None:
        """Apply every op and append every ``(topic, body)`` outbox row in one transaction.

        Returns the new ETags when the store assigns them itself (NATS KV revisions), else ``None``
        (each row took its op's ``new_etag``).
        """

    async def query(self, q: Query, now: float) -> list[Row]:
        """Rows matching ``q`` in its order, at most ``q.limit`` (after its cursor)."""
        raise unsupported(self.type, "state queries", "use the memory, sqlite or postgres store")

    async def outbox_read(self, limit: int) -> list[OutboxRow]:
        """The oldest waiting outbox rows."""
        return []

    async def outbox_ack(self, rows: Sequence[OutboxRow]) -> None:  # noqa: B027 - optional
        """Remove published outbox rows."""

    async def purge(self, now: float) -> int:
        """Remove expired rows; how many went."""
        return 0

    async def ensure_index(self, path: tuple[str, ...]) -> None:  # noqa: B027 - optional
        """Index the value at ``path`` so range queries and ordering on it skip the scan (SQL stores)."""

    async def destroy(self) -> None:  # noqa: B027 - optional
        """Remove every table, key or bucket of this store (tests and benchmarks)."""
