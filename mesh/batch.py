"""Batches: what :meth:`App.publish_many` returns and how a batch subscription collects.

=====================  ==========================================================================
type                   what
=====================  ==========================================================================
``PublishResult``      the outcome of one ``publish_many``: the events as sent, in input order,
                       and ``failed`` (like Dapr's bulk publish ``failedEntries``)
``FailedEntry``        one event the broker did not take: its index in the input, the event,
                       the error
``BatchPolicy``        ``@app.subscribe(topic, batch=BatchPolicy(max_size, max_wait))``: hand the
                       handler up to ``max_size`` events, waiting at most ``max_wait`` for a
                       batch to fill
=====================  ==========================================================================

A batch is a delivery convenience, not a transaction: every event is still acked, retried or
dead-lettered on its own (see :mod:`mesh.pipeline.batch`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from mesh.errors import ConfigError, PublishError
from mesh.event import Event

__all__ = ["MAX_BATCH_SIZE", "BatchPolicy", "FailedEntry", "PublishResult"]

MAX_BATCH_SIZE = 10_000
"""The largest ``max_size`` a batch subscription takes (every item is a delivery in flight)."""
MAX_BATCH_WAIT = timedelta(minutes=5)
"""The longest ``max_wait``: a batch holds its first delivery unacked that long."""


@dataclass(frozen=True, slots=True)
class FailedEntry:
    """One event of a ``publish_many`` the broker did not take (or a plugin refused)."""

    index: int
    """Its position in the items given to ``publish_many``."""
    event: Event
    error: Exception


@dataclass(frozen=True, slots=True)
class PublishResult:
    """The outcome of :meth:`App.publish_many`: every event, and the ones that failed."""

    events: list[Event]
    """The events in input order, as sent (with the extensions plugins added)."""
    failed: list[FailedEntry] = field(default_factory=list)
    """The events the broker did not take, in input order (empty when all were taken)."""

    @property
    def ok(self) -> bool:
        """Whether the broker took every event."""
        return not self.failed

    def raise_for_failures(self) -> None:
        """Raise :class:`~mesh.errors.PublishError` naming the failed entries, if any."""
        if not self.failed:
            return
        first = self.failed[0]
        raise PublishError(
            f"{len(self.failed)} of {len(self.events)} event(s) were not published; "
            f"the first, index {first.index} (id {first.event.id}): {first.error}"
        ) from first.error


@dataclass(frozen=True, slots=True)
class BatchPolicy:
    """How a batch subscription collects: up to ``max_size`` events, ``max_wait`` at most.

    A batch is handed to the handler as soon as it holds ``max_size`` events, or ``max_wait``
    after its first event arrived, whichever comes first. ``max_wait`` is a ``timedelta`` or
    seconds. The subscription keeps ``max_size`` x ``concurrency`` deliveries in flight, so
    ``concurrency`` batches can be handled at once (ordered brokers then finish out of order).
    """

    max_size: int = 100
    max_wait: timedelta | float = timedelta(milliseconds=50)

    def __post_init__(self) -> None:
        problems: list[tuple[str, str]] = []
        size = self.max_size
        if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= MAX_BATCH_SIZE:
            problems.append(("batch.max_size", f"must be an int from 1 to {MAX_BATCH_SIZE}, got {size!r}"))
        wait = self.max_wait
        if isinstance(wait, bool) or not isinstance(wait, timedelta | int | float):
            problems.append(("batch.max_wait", f"must be a timedelta or seconds, got {wait!r}"))
        else:
            seconds = wait.total_seconds() if isinstance(wait, timedelta) else float(wait)
            if not 0 <= seconds <= MAX_BATCH_WAIT.total_seconds():  # also refuses nan
                problems.append(
                    ("batch.max_wait", f"must be from 0 to {MAX_BATCH_WAIT.total_seconds():g} seconds, got {wait!r}")
                )
        if problems:
            raise ConfigError(problems)

    @property
    def seconds(self) -> float:
        """``max_wait`` in seconds."""
        wait = self.max_wait
        return wait.total_seconds() if isinstance(wait, timedelta) else float(wait)
