"""Where replayed events come from: the archive (every broker) or the broker's own history.

A :class:`Source` yields batches of :class:`Record` in replay order (per key in original order)
from a cursor, pushing down what it can of the window and filters; the engine applies both
exactly. Broker logs are sought by the time the broker took a message, which may differ from the
event's ``time``: readers start :data:`SEEK_MARGIN` early and may stop that much late.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from mesh.archive import ArchiveQuery, ArchiveStore
from mesh.brokers.base import Broker
from mesh.brokers.capabilities import Cursor, HistoryReader, history_reader
from mesh.event import Event
from mesh.replay.filters import EventFilter, Window, parse_when

__all__ = ["SEEK_MARGIN", "ArchiveSource", "BrokerSource", "Key", "Record", "Source", "key_of"]

SEEK_MARGIN = timedelta(minutes=5)
"""How much earlier (and later) than the window a broker log is read, for clock skew between
producers' event times and the broker's."""

Key = tuple[str, str, int]
"""``(source, id, redrive)``: one dead letter (or one event when redrive is 0)."""


def key_of(event: Event) -> Key:
    """The identity of an event and how often it was redriven."""
    try:
        redrive = int(str(event.extensions.get("meshredrive", 0)))
    except ValueError:
        redrive = 0
    return (event.source, event.id, redrive)


@dataclass(frozen=True, slots=True)
class Record:
    """One event read from a source, or why it could not be read."""

    event: Event | None
    when: datetime
    """When the archive recorded it, or the broker took it."""
    cursor: Cursor
    """Where reading resumes after this record."""
    ref: str
    """Where it is, for messages (``row 12``, ``offset 3:41``)."""
    error: str | None = None
    seq: int | None = None
    """The archive row, if it came from the archive."""

    def time(self) -> datetime:
        """The event's time, else when it was taken: what the window applies to."""
        event = self.event
        return event.time if event is not None and event.time is not None else self.when


class Source(ABC):
    """A readable history of topics."""

    kind: str
    """``archive`` or the broker type."""

    @abstractmethod
    async def exists(self, topic: str) -> bool:
        """Whether the source knows the topic."""

    async def topics(self) -> list[str] | None:
        """The topics it knows, for a helpful message (``None`` when it cannot list them)."""
        return None

    @abstractmethod
    def records(
        self, topic: str, window: Window, filter: EventFilter, cursor: Cursor | None, batch: int
    ) -> AsyncIterator[list[Record]]:
        """Batches of records from ``cursor`` (or the window's start) to the end of the window."""

    async def count(self, topic: str, window: Window, filter: EventFilter) -> int | None:
        """About how many records :meth:`records` will read (``None`` when unknown)."""
        return None

    @abstractmethod
    async def find(self, topic: str, keys: Iterable[Key], since: datetime) -> set[Key]:
        """Which of ``keys`` are on the topic, taken at or after ``since`` (the canary check)."""

    def describe(self) -> str:
        return self.kind


class ArchiveSource(Source):
    """The archive: rows in ``(time, seq)`` order; type, source and subject filtered by the database."""

    kind = "archive"

    def __init__(self, store: ArchiveStore) -> None:
        self.store = store

    async def exists(self, topic: str) -> bool:
        return await self.store.count(ArchiveQuery(topic)) > 0

    async def topics(self) -> list[str] | None:
        return await self.store.topics()

    def _query(self, topic: str, window: Window, filter: EventFilter, batch: int) -> ArchiveQuery:
        return ArchiveQuery(
            topic,
            window.since,
            window.until,
            types=EventFilter.exact(filter.types),
            sources=EventFilter.exact(filter.sources),
            subjects=EventFilter.exact(filter.subjects),
            limit=batch,
        )

    async def records(
        self, topic: str, window: Window, filter: EventFilter, cursor: Cursor | None, batch: int
    ) -> AsyncIterator[list[Record]]:
        base = self._query(topic, window, filter, batch)
        after = None if cursor is None else (parse_when(str(cursor["time"])), int(cursor["seq"]))
        while True:
            rows = await self.store.read(
                ArchiveQuery(base.topic, base.since, base.until, base.types, base.sources, base.subjects, after, batch)
            )
            if not rows:
                return
            yield [Record(r.event, r.recorded, r.cursor, f"row {r.seq}", r.error, r.seq) for r in rows]
            if len(rows) < batch:
                return
            after = (rows[-1].time, rows[-1].seq)

    async def count(self, topic: str, window: Window, filter: EventFilter) -> int | None:
        return await self.store.count(self._query(topic, window, filter, 1))

    async def find(self, topic: str, keys: Iterable[Key], since: datetime) -> set[Key]:
        wanted = tuple(keys)
        found: set[Key] = set()
        for i in range(0, len(wanted), 200):
            rows = await self.store.read(ArchiveQuery(topic, keys=wanted[i : i + 200], limit=1000, order="seq"))
            found |= {(r.source, r.event_id, r.redrive) for r in rows if r.recorded >= since}
        return found


class BrokerSource(Source):
    """The broker's own log of the topic (see :mod:`mesh.brokers.capabilities`).

    A broker keeping no log at all is refused here; one keeping a log of some topics only
    (RabbitMQ's stream queues) is refused per topic, by :meth:`exists` and :meth:`records`.
    Both raise FeatureNotSupported naming the archive.
    """

    def __init__(self, broker: Broker, *, margin: timedelta = SEEK_MARGIN) -> None:
        history_reader(broker)  # FeatureNotSupported names the archive
        self.broker = broker
        self.kind = broker.type
        self.margin = margin

    def reader(self, topic: str) -> HistoryReader:
        """The broker's reader of ``topic``'s log, or FeatureNotSupported naming the archive."""
        return history_reader(self.broker, topic)

    async def exists(self, topic: str) -> bool:
        return await self.reader(topic).topic_exists(topic)

    async def records(
        self, topic: str, window: Window, filter: EventFilter, cursor: Cursor | None, batch: int
    ) -> AsyncIterator[list[Record]]:
        since = None if window.since is None else window.since - self.margin
        until = None if window.until is None else window.until + self.margin
        reader = self.reader(topic)
        async for page in reader.read_history(topic, since=since, until=until, cursor=cursor, batch=batch):
            yield [Record(r.event, r.time, r.cursor, _ref(r.cursor), r.error) for r in page]

    async def find(self, topic: str, keys: Iterable[Key], since: datetime) -> set[Key]:
        wanted = set(keys)
        found: set[Key] = set()
        async for page in self.reader(topic).read_history(topic, since=since - timedelta(seconds=1)):
            for r in page:
                if r.event is not None and r.time >= since - timedelta(seconds=1):
                    key = key_of(r.event)
                    if key in wanted:
                        found.add(key)
        return found

    def describe(self) -> str:
        return f"the {self.kind} broker's history"


def _ref(cursor: Cursor) -> str:
    return "position " + ",".join(f"{k}={v}" for k, v in cursor.items())
