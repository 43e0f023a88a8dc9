"""The event archive: events recorded to SQLite (default) or PostgreSQL, for replay and redrive.

The ``archive`` plugin (:mod:`mesh_plugins.archive`) records what apps publish and consume
through a :class:`~mesh.archive.recorder.Recorder`; :mod:`mesh.replay` reads it back. Both go
through an :class:`ArchiveStore`: :class:`~mesh.archive.sqlite.SQLiteArchive` (one file, the
default) or :class:`~mesh.archive.postgres.PostgresArchive` (several apps sharing one archive).

One row per event *per topic*: the CloudEvents identity (``source`` + ``id``) on a topic is
recorded once, whoever saw it first (its publisher or a consumer) and however often it was
redelivered or replayed. A dead letter that comes back to its dead-letter topic after a redrive
is a new row (the ``redrive`` column is its ``meshredrive`` count). The row keeps the whole event
as structured JSON (attributes and data) and, as indexed columns, the topic, type, source,
subject, the event's time and the time it was recorded.

>>> ArchiveSettings.model_validate({"url": "sqlite:///:memory:", "retention": "7d"}).retention
604800.0
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from mesh.codecs.data import format_time
from mesh.codecs.structured import from_structured, to_structured
from mesh.config import MeshConfig, parse_duration, plugin_settings
from mesh.errors import ConfigError, DecodeError, MeshError
from mesh.event import Event
from mesh.extensions import ERROR_TYPE

__all__ = [
    "ArchiveError",
    "ArchiveQuery",
    "ArchiveRow",
    "ArchiveSettings",
    "ArchiveStore",
    "Archived",
    "archive_settings",
    "open_archive",
]

PLUGIN = "archive"
DEAD_LETTER_MARK = ERROR_TYPE
"""The extension that makes an event a dead letter (set by the deadletter plugin)."""
_TABLE = re.compile(r"^[a-z_][a-z0-9_]{0,40}$")


class ArchiveError(MeshError):
    """The archive cannot be opened, read or written."""


class ArchiveSettings(BaseModel):
    """``plugins.config.archive``: where to record, what, and for how long."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    """The plugin records only when this section is present and ``enabled`` is true."""
    url: str = "sqlite:///mesh-archive.db"
    """``sqlite:///relative.db``, ``sqlite:////abs/path.db`` or ``postgresql://user@host/db``."""
    table: str = "mesh_archive"
    """Table of events; checkpoints and dead-letter marks go to ``<table>_state``."""
    record: tuple[Literal["published", "consumed"], ...] = ("published", "consumed")
    """Record events this app publishes, consumes (handed to a handler), or both."""
    topics: tuple[str, ...] = ("*",)
    """Topics recorded (globs). Internal ``_mesh.`` destinations never are."""
    exclude: tuple[str, ...] = ()
    """Topics not recorded (globs), even if ``topics`` matches."""
    dead_letters: bool = True
    """Record every dead letter this app writes, whatever ``topics`` says (needed by ``mesh dlq``)."""
    durable: bool = False
    """Publishes return, and consumed deliveries are acked, only once their row is committed."""
    wait_timeout: float = 30.0
    """Longest a durable record waits for its commit; then the publish (or delivery) fails and is
    retried as any failure is, while the row stays buffered (it is written once the database is back)."""
    batch_size: int = Field(500, ge=1, le=100_000)
    """Most rows written in one transaction."""
    flush_interval: float = 0.2
    """Longest time an event waits in the buffer before its batch is written (seconds or '200ms')."""
    max_buffer: int = Field(100_000, ge=1)
    """Events held while the database is slow or down; then ``when_full`` applies."""
    when_full: Literal["wait", "drop"] = "wait"
    """``wait``: publishing waits for room (nothing is lost); ``drop``: the event is not recorded (logged)."""
    retention: float | None = 30 * 86400.0
    """Rows older than this (by recording time) are deleted; ``null`` keeps them forever."""
    retention_interval: float = 3600.0
    """How often the retention sweep runs."""

    _durations = field_validator("flush_interval", "retention_interval", "wait_timeout", mode="before")(
        lambda v: parse_duration(v)
    )

    @field_validator("retention", mode="before")
    @classmethod
    def _retention(cls, value: Any) -> float | None:
        return None if value is None else parse_duration(value)

    @field_validator("table")
    @classmethod
    def _table(cls, value: str) -> str:
        if not _TABLE.match(value):
            raise ValueError("a table name is 1-41 lower-case letters, digits or '_', not starting with a digit")
        return value

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.startswith(("sqlite://", "postgresql://", "postgres://")):
            raise ValueError("use sqlite:///path.db or postgresql://user@host:port/database")
        return value


def archive_settings(config: MeshConfig, *, recording: bool = True) -> ArchiveSettings | None:
    """The archive settings of a config, or ``None`` when it configures no archive.

    With ``recording`` (the plugin's view), an archive whose plugin is disabled or that has
    ``enabled: false`` counts as none; the replay tools read a configured archive regardless.
    """
    if PLUGIN not in config.plugins.config:
        return None
    settings = plugin_settings(ArchiveSettings, config, PLUGIN)
    if recording and (not settings.enabled or PLUGIN in config.plugins.disable):
        return None
    return settings


@dataclass(frozen=True, slots=True)
class ArchiveRow:
    """One event to record, ready for the database (serialised off the hot path by the recorder)."""

    topic: str
    source: str
    event_id: str
    redrive: int
    type: str
    subject: str | None
    time: datetime
    recorded: datetime
    kind: str
    app: str
    group: str | None
    errortype: str | None
    body: bytes

    @classmethod
    def of(
        cls, topic: str, event: Event, *, kind: str, app: str, recorded: datetime, group: str | None = None
    ) -> ArchiveRow:
        """The row of an event seen on ``topic`` (raises EncodeError for data that cannot be JSON)."""
        ext = event.extensions
        errortype = ext.get(DEAD_LETTER_MARK)
        redrive = 0
        if errortype is not None:  # only dead letters are told apart by their redrive count
            try:
                redrive = int(str(ext.get("meshredrive", 0)))
            except ValueError:
                redrive = 0
        return cls(
            topic,
            event.source,
            event.id,
            redrive,
            event.type,
            event.subject,
            event.time or recorded,
            recorded,
            kind,
            app,
            group,
            None if errortype is None else str(errortype),
            to_structured(event),
        )


@dataclass(frozen=True, slots=True)
class Archived:
    """One row read back: the event, or (for a corrupt row) ``error`` saying why it cannot be read."""

    seq: int
    topic: str
    source: str
    event_id: str
    redrive: int
    type: str
    time: datetime
    recorded: datetime
    kind: str
    app: str
    group: str | None
    event: Event | None
    error: str | None = None

    @property
    def cursor(self) -> dict[str, Any]:
        """The replay position just after this row (rows are read in ``(time, seq)`` order)."""
        return {"time": format_time(self.time), "seq": self.seq}


def decode_row(seq: int, body: bytes | str | None) -> tuple[Event | None, str | None]:
    """The event of a row's JSON, or the reason it cannot be read."""
    if body is None:
        return None, f"row {seq}: no event stored"
    try:
        return from_structured(body), None
    except DecodeError as exc:
        return None, f"row {seq}: {exc}"
    except Exception as exc:  # a corrupt row is reported, never fatal
        return None, f"row {seq}: {type(exc).__name__}: {exc}"


@dataclass(frozen=True, slots=True)
class ArchiveQuery:
    """A page of events on one topic in a time window, in ``(time, seq)`` order.

    ``types``, ``sources`` and ``subjects`` are exact values pushed down to the database (an empty
    tuple means any); globs and extension filters are applied by :mod:`mesh.replay.filters`.
    """

    topic: str
    since: datetime | None = None
    until: datetime | None = None
    types: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()
    subjects: tuple[str, ...] = ()
    after: tuple[datetime, int] | None = None
    limit: int = 500
    order: Literal["time", "seq"] = "time"
    min_seq: int = 0
    """With ``order='seq'``: rows with a larger ``seq`` only (new rows since a point)."""
    keys: tuple[tuple[str, str, int], ...] = field(default=())
    """Only these ``(source, id, redrive)`` identities (the canary check)."""


class ArchiveStore(ABC):
    """Where archived events live; every method is safe to call from the event loop."""

    url: str
    table: str

    @abstractmethod
    async def open(self) -> None:
        """Connect and create the tables and indexes if missing."""

    @abstractmethod
    async def close(self) -> None:
        """Release the connection(s)."""

    @abstractmethod
    async def write(self, rows: Sequence[ArchiveRow]) -> None:
        """Insert rows in one transaction; a row whose identity is recorded already is skipped."""

    @abstractmethod
    async def read(self, query: ArchiveQuery) -> list[Archived]:
        """One page of rows (see :class:`ArchiveQuery`)."""

    @abstractmethod
    async def count(self, query: ArchiveQuery) -> int:
        """How many rows the query's filters match (ignoring ``after`` and ``limit``)."""

    @abstractmethod
    async def topics(self) -> list[str]:
        """Every topic with at least one row."""

    @abstractmethod
    async def delete(self, seqs: Sequence[int]) -> int:
        """Delete rows by ``seq``; returns how many went."""

    @abstractmethod
    async def delete_older(self, before: datetime, topic: str | None = None) -> int:
        """Delete rows recorded before ``before`` (of one topic, or all); returns how many went."""

    @abstractmethod
    async def get_state(self, kind: str, name: str) -> str | None:
        """A stored value (checkpoints, dead-letter marks), or ``None``."""

    @abstractmethod
    async def put_state(self, kind: str, name: str, value: str) -> None:
        """Store a value (replacing the old one) durably."""

    @abstractmethod
    async def put_states(self, kind: str, items: Sequence[tuple[str, str]]) -> None:
        """Store several values of one kind in one transaction."""

    @abstractmethod
    async def list_state(self, kind: str) -> dict[str, str]:
        """Every value of one kind, by name."""

    @abstractmethod
    async def delete_state(self, kind: str, name: str) -> None:
        """Forget a value."""

    @abstractmethod
    async def execute(self, sql: str, *args: Any) -> None:
        """Run one statement in the store's dialect (for repairs and tests)."""

    async def __aenter__(self) -> ArchiveStore:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def open_archive(url: str, table: str = "mesh_archive") -> ArchiveStore:
    """An (unopened) store for a ``sqlite://`` or ``postgresql://`` URL."""
    if not _TABLE.match(table):
        raise ConfigError([("plugins.config.archive.table", f"invalid table name {table!r}")])
    if url.startswith("sqlite://"):
        from mesh.archive.sqlite import SQLiteArchive

        return SQLiteArchive(url, table)
    if url.startswith(("postgresql://", "postgres://")):
        try:
            from mesh.archive.postgres import PostgresArchive
        except ImportError:
            raise ConfigError(
                [
                    (
                        "plugins.config.archive.url",
                        "a PostgreSQL archive needs asyncpg: pip install 'event-mesh[postgres]'",
                    )
                ]
            ) from None
        return PostgresArchive(url, table)
    raise ConfigError(
        [("plugins.config.archive.url", f"unsupported archive URL {url!r}: use sqlite:// or postgresql://")]
    )
