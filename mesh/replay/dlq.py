"""Dead-letter operations: list, show, redrive and purge what is on a dead-letter topic.

A dead-letter topic is read like any replay source: from the archive (every broker; dead letters
are always recorded by apps running the archive plugin) or from the broker's history. What was
redriven or purged is marked in the state store (:mod:`mesh.replay.checkpoint`), so ``list`` and
``redrive`` see only what is pending, and a redrive that stopped half way simply runs again.
Purging deletes archive rows; a broker's log keeps its records until its own retention, hidden by
the marks.

Redrive sends each pending dead letter back to the topic it failed on (``meshtopic``) or to a
chosen topic. The redriven event keeps its id, data and trace context, loses the failure
extensions (:data:`mesh.extensions.DEAD_LETTER_EXTENSIONS`) and carries ``meshredrive``
(how often it was redriven) and ``meshreplay`` (the redrive's name). If it fails again it goes
back to the dead-letter topic with its ``meshredrive``; one redriven ``max_redrives`` times is
not redriven again (raise the limit to force it), so nothing loops for ever.

The canary: the first ``canary`` events are sent alone; the redrive goes on only if none of them
is back on the dead-letter topic within ``canary_wait`` seconds. Choose a wait longer than the
consumers' retries take (attempts x backoff): an event comes back only after its retries.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from mesh import extensions as ext
from mesh.archive import ArchiveStore
from mesh.codecs.data import format_time
from mesh.event import Event, now
from mesh.replay.checkpoint import ArchiveState, FileState, StateStore
from mesh.replay.engine import MAX_REPORTED, ProgressSink, RateLimiter, new_name
from mesh.replay.errors import BadReplayInput, CanaryFailed, NothingToReplay, ReplayError, UnknownTopic
from mesh.replay.filters import EventFilter, Window
from mesh.replay.sources import ArchiveSource, BrokerSource, Key, Record, Source, key_of
from mesh.replay.targets import Sender, Target

if TYPE_CHECKING:
    from mesh.runtime import Runtime

__all__ = ["DeadLetterEntry", "DeadLetterSummary", "DeadLetters", "ErrorStats", "RedriveResult", "redriven"]

FAILURE_EXTENSIONS: tuple[str, ...] = ext.DEAD_LETTER_EXTENSIONS
UNDECODABLE_TYPE: str = ext.UNDECODABLE_TYPE
PURGED = "~purged"
"""State name recording the last purge of archive rows (not a mark of one dead letter)."""
REMOVED = (*FAILURE_EXTENSIONS, ext.RAW_HEADERS)
"""Extensions a redriven event loses."""


def redriven(event: Event, name: str) -> Event:
    """The event to send again: failure extensions gone, ``meshredrive`` + 1, ``meshreplay`` = name."""
    _, _, count = key_of(event)
    return event.without_extensions(*REMOVED).with_extensions(meshredrive=count + 1, meshreplay=name)


def _mark(key: Key) -> str:
    source, event_id, redrive = key
    return f"{redrive} {source} {event_id}"


@dataclass
class ErrorStats:
    """Dead letters of one error type."""

    count: int = 0
    oldest: datetime | None = None
    newest: datetime | None = None

    def add(self, when: datetime) -> None:
        self.count += 1
        self.oldest = when if self.oldest is None or when < self.oldest else self.oldest
        self.newest = when if self.newest is None or when > self.newest else self.newest


@dataclass
class DeadLetterSummary:
    """``mesh dlq list`` (:meth:`DeadLetters.summary`): pending dead letters by error type."""

    topic: str
    source: str
    total: int = 0
    by_error: dict[str, ErrorStats] = field(default_factory=dict)
    by_origin: Counter[str] = field(default_factory=Counter)
    done: int = 0
    """Dead letters on the topic already redriven or purged (not counted in ``total``)."""
    corrupt: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class DeadLetterEntry:
    """One dead letter, for ``mesh dlq show``."""

    event: Event
    when: datetime
    ref: str
    state: str
    """``pending``, or how it was settled (``redriven by NAME at TIME``, ``purged at TIME``)."""


@dataclass
class RedriveResult:
    """What a redrive did."""

    name: str
    dry_run: bool = False
    sent: int = 0
    canary: int = 0
    by_error: Counter[str] = field(default_factory=Counter)
    by_destination: Counter[str] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)
    corrupt: list[str] = field(default_factory=list)


class DeadLetters:
    """Operations on one dead-letter topic, through a started :class:`~mesh.Runtime`.

    ``source`` is ``archive`` or ``broker`` (default: the archive when one is given).
    """

    def __init__(
        self,
        runtime: Runtime,
        topic: str,
        *,
        archive: ArchiveStore | None = None,
        state: StateStore | None = None,
        source: Literal["archive", "broker"] | None = None,
        progress: ProgressSink | None = None,
    ) -> None:
        self.runtime = runtime
        self.topic = topic
        self.archive = archive
        self.state = state or (ArchiveState(archive) if archive is not None else FileState())
        kind = source or ("archive" if archive is not None else "broker")
        if kind == "archive":
            if archive is None:
                raise ReplayError("no archive is configured: add plugins.config.archive or use --from broker")
            self.source: Source = ArchiveSource(archive)
        else:
            self.source = BrokerSource(runtime.broker)
        self.progress = progress
        self._kind = f"dlq:{topic}"

    async def _check(self) -> None:
        if not await self.source.exists(self.topic) and not await self.state.all(self._kind):
            known = [t for t in (await self.source.topics() or []) if t.endswith(".dlq")]
            hint = f" (dead-letter topics it has: {', '.join(known[:15])})" if known else ""
            raise UnknownTopic(
                f"unknown dead-letter topic {self.topic!r}: {self.source.describe()} has nothing on it{hint}"
            )

    async def _entries(
        self, window: Window, filter: EventFilter, marks: dict[str, dict[str, Any]] | None
    ) -> AsyncIterator[tuple[Record, Event, Key, dict[str, Any] | None]]:
        """Every readable dead letter in the window passing the filter, with its mark (if any)."""
        async for page in self.source.records(self.topic, Window(), filter, None, 500):
            for record in page:
                event = record.event
                if event is None:
                    yield record, _UNREADABLE, ("", record.ref, 0), None
                    continue
                if not window.contains(record.when) or not filter.matches(event):
                    continue
                key = key_of(event)
                yield record, event, key, None if marks is None else marks.get(_mark(key))

    # -- list, show ------------------------------------------------------------------------------

    async def summary(self, window: Window | None = None, filter: EventFilter | None = None) -> DeadLetterSummary:
        """Pending dead letters by error type, with the oldest and newest of each (by dead-letter time)."""
        await self._check()
        marks = await self.state.all(self._kind)
        summary = DeadLetterSummary(self.topic, self.source.describe())
        async for record, event, _, mark in self._entries(window or Window(), filter or EventFilter(), marks):
            if event is _UNREADABLE:
                if len(summary.corrupt) < MAX_REPORTED:
                    summary.corrupt.append(record.error or record.ref)
                continue
            if mark is not None:
                summary.done += 1
                continue
            error = str(event.extensions.get("mesherrortype", "unknown"))
            summary.by_error.setdefault(error, ErrorStats()).add(record.when)
            summary.by_origin[str(event.extensions.get("meshtopic", "?"))] += 1
            summary.total += 1
        return summary

    async def show(self, event_id: str) -> list[DeadLetterEntry]:
        """Every dead letter with this id (several if it failed again after a redrive)."""
        await self._check()
        marks = await self.state.all(self._kind)
        out = []
        async for record, event, _key, mark in self._entries(Window(), EventFilter(), marks):
            if event is _UNREADABLE or event.id != event_id:
                continue
            out.append(DeadLetterEntry(event, record.when, record.ref, _state(mark)))
        return out

    async def entries(
        self, window: Window | None = None, filter: EventFilter | None = None, *, pending_only: bool = True
    ) -> list[DeadLetterEntry]:
        """The readable dead letters in ``window`` passing ``filter``, newest first (pending ones only
        by default); the same walk as :meth:`summary`, :meth:`show` and :meth:`redrive`."""
        await self._check()
        marks = await self.state.all(self._kind)
        out: list[DeadLetterEntry] = []
        async for record, event, _key, mark in self._entries(window or Window(), filter or EventFilter(), marks):
            if record.event is None or (pending_only and mark is not None):
                continue
            out.append(DeadLetterEntry(event, record.when, record.ref, _state(mark)))
        out.sort(key=lambda e: e.when, reverse=True)
        return out

    # -- redrive ---------------------------------------------------------------------------------

    async def redrive(
        self,
        *,
        to: str | None = None,
        window: Window | None = None,
        filter: EventFilter | None = None,
        canary: int = 10,
        canary_wait: float = 10.0,
        rate: float | None = None,
        max_redrives: int = 3,
        name: str | None = None,
        batch: int = 100,
        dry_run: bool = False,
    ) -> RedriveResult:
        """Send pending dead letters back (see the module docstring); raises CanaryFailed or NothingToReplay."""
        if canary < 0 or max_redrives < 1 or batch < 1:
            raise BadReplayInput("--canary must be >= 0, --max-redrives and --batch >= 1")
        await self._check()
        name = name or new_name("redrive")
        started = now()
        marks = await self.state.all(self._kind)
        sender = Sender(self.runtime, Target.origin(to), self.topic)
        result = RedriveResult(name, dry_run=dry_run)
        limiter = RateLimiter(rate)
        pending: list[tuple[Event, Key, str]] = []
        canary_left = canary
        if self.progress is not None:
            self.progress.start(f"redriving {self.topic} -> {Target.origin(to).describe(self.topic)}", None)
        try:
            async for record, event, key, mark in self._entries(window or Window(), filter or EventFilter(), marks):
                if event is _UNREADABLE:
                    result.skipped["unreadable record"] += 1
                    if len(result.corrupt) < MAX_REPORTED:
                        result.corrupt.append(record.error or record.ref)
                    continue
                reason = self._skip(record, event, key, mark, sender, started, max_redrives)
                if reason is not None:
                    result.skipped[reason] += 1
                    continue
                destination = sender.destination(event)
                assert destination is not None
                result.by_error[str(event.extensions.get("mesherrortype", "unknown"))] += 1
                result.by_destination[destination] += 1
                if dry_run:
                    result.sent += 1
                    continue
                pending.append((event, key, destination))
                if canary_left and len(pending) >= canary_left:
                    sent_at = now()  # before sending: a fast consumer fails them again at once
                    await self._send(pending, sender, limiter, result, name)
                    result.canary = len(pending)
                    await self._canary(pending, canary_wait, sent_at)
                    pending, canary_left = [], 0
                elif not canary_left and len(pending) >= batch:
                    await self._send(pending, sender, limiter, result, name)
                    pending = []
            if pending:
                sent_at = now()
                await self._send(pending, sender, limiter, result, name)
                if canary_left:  # fewer events than the canary: they were the canary
                    result.canary = len(pending)
                    await self._canary(pending, canary_wait, sent_at)
        finally:
            if self.progress is not None:
                self.progress.finish()
        if result.sent == 0:
            reasons = ", ".join(f"{n} {why}" for why, n in result.skipped.items())
            raise NothingToReplay(
                f"nothing to redrive on {self.topic!r}" + (f": {reasons}" if reasons else ": no pending dead letters")
            )
        return result

    def _skip(
        self,
        record: Record,
        event: Event,
        key: Key,
        mark: dict[str, Any] | None,
        sender: Sender,
        started: datetime,
        max_redrives: int,
    ) -> str | None:
        if mark is not None:
            return "already " + str(mark.get("state", "settled"))
        if record.when >= started:
            return "dead-lettered during this redrive"
        if event.type == UNDECODABLE_TYPE:
            return "undecodable message (raw bytes: see mesh dlq show)"
        if key[2] >= max_redrives:
            return f"redriven {max_redrives} times already (raise --max-redrives to force)"
        if sender.destination(event) is None:
            return "without an original topic (meshtopic): use --to"
        return None

    async def _send(
        self,
        items: list[tuple[Event, Key, str]],
        sender: Sender,
        limiter: RateLimiter,
        result: RedriveResult,
        name: str,
    ) -> None:
        """Send a batch in order, then mark it redriven."""
        for event, _, destination in items:
            await limiter.acquire()
            await sender.send(redriven(event, name), destination)
            result.sent += 1
            if self.progress is not None:
                self.progress.advance(1, 1)
        at = format_time(now())
        await self.state.put_many(
            self._kind, [(_mark(key), {"state": "redriven", "by": name, "at": at}) for _, key, _ in items]
        )

    async def _canary(self, items: list[tuple[Event, Key, str]], wait: float, sent_at: datetime) -> None:
        """Wait ``wait`` seconds; fail as soon as a canary event sent at ``sent_at`` is back on the
        dead-letter topic."""
        returned_keys = [(source, event_id, redrive + 1) for _, (source, event_id, redrive), _ in items]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while True:
            back = await self.source.find(self.topic, returned_keys, sent_at)
            if back:
                ids = sorted(event_id for _, event_id, _ in back)
                raise CanaryFailed(
                    f"canary failed: {len(back)} of {len(items)} redriven events came back to {self.topic!r} within "
                    f"{wait:g}s ({', '.join(ids[:5])}{', ...' if len(ids) > 5 else ''}); the rest was not redriven. "
                    f"Fix the consumer, then redrive again (`mesh dlq list {self.topic}` shows why they failed)",
                    ids,
                )
            if loop.time() >= deadline:
                return
            await asyncio.sleep(min(0.5, max(0.05, deadline - loop.time())))

    # -- purge -----------------------------------------------------------------------------------

    async def purge(
        self,
        *,
        older_than: datetime,
        filter: EventFilter | None = None,
        dry_run: bool = False,
        confirm: Callable[[int], bool] | None = None,
    ) -> int:
        """Remove pending dead letters dead-lettered before ``older_than``; returns how many.

        ``confirm(n)`` is asked before anything is removed (return ``False`` to remove nothing).
        Archive rows are deleted; records in a broker's log are marked purged (hidden).
        """
        await self._check()
        marks = await self.state.all(self._kind)
        chosen: list[tuple[Record, Key]] = []
        async for record, event, key, mark in self._entries(Window(until=older_than), filter or EventFilter(), marks):
            if event is _UNREADABLE or mark is not None:
                continue
            chosen.append((record, key))
        if dry_run or not chosen or (confirm is not None and not confirm(len(chosen))):
            return len(chosen) if dry_run else 0
        if isinstance(self.source, ArchiveSource):
            seqs = [r.seq for r, _ in chosen if r.seq is not None]
            gone = await self.source.store.delete(seqs)
            # remembered, so the topic stays known once its last dead letter is gone
            await self.state.put(self._kind, PURGED, {"state": "purged", "count": gone, "at": format_time(now())})
            return gone
        at = format_time(now())
        await self.state.put_many(self._kind, [(_mark(key), {"state": "purged", "at": at}) for _, key in chosen])
        return len(chosen)


_UNREADABLE = Event("mesh.replay.unreadable", "/mesh/replay", id="unreadable")
"""Stands for a record that could not be read, in :meth:`DeadLetters._entries`."""


def _state(mark: dict[str, Any] | None) -> str:
    if mark is None:
        return "pending"
    state = str(mark.get("state", "settled"))
    by = f" by {mark['by']}" if mark.get("by") else ""
    return f"{state}{by} at {mark.get('at', '?')}"
