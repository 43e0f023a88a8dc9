"""The replay engine: read a source, filter, send to a target at a rate, checkpoint every batch.

Order: events are sent in the order the source gives them (archive: by event time, then by when
they were recorded; broker logs: per partition or stream in log order), one at a time, so events
with one key keep their original order. Each event keeps its id, data and trace context and gets
``meshreplay = <replay name>``.

Checkpoints: after every batch the cursor just past its last event is saved with the replay's
settings. A replay stopped at any point (Ctrl-C, SIGKILL, a crash) resumes with
``resume=True`` (``mesh replay --resume NAME``) from the last saved cursor: every event of the
window is sent, and only the events of the batch that was in flight can be sent twice.
Idempotent consumers drop those (the id is kept).

Nothing is sent before the checks pass: the window is not empty, the source knows the topic and
the target group exists. If no event matches, nothing was sent and :class:`NothingToReplay`
says why (empty window, unknown attribute, or filters that match nothing).
"""

from __future__ import annotations

import asyncio
import os
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal, Protocol

from mesh.archive import ArchiveStore
from mesh.codecs.data import format_time
from mesh.event import now
from mesh.replay.checkpoint import ArchiveState, FileState, StateStore
from mesh.replay.errors import BadReplayInput, NothingToReplay, ReplayError, ReplayExists, UnknownTopic
from mesh.replay.filters import EventFilter, Window, parse_when
from mesh.replay.sources import SEEK_MARGIN, ArchiveSource, BrokerSource, Record, Source
from mesh.replay.targets import Sender, Target

if TYPE_CHECKING:
    from mesh.runtime import Runtime

__all__ = ["ProgressSink", "RateLimiter", "ReplayResult", "ReplaySpec", "Replayer", "new_name"]

CHECKPOINTS = "replay"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,99}$")
MAX_REPORTED = 20


def new_name(prefix: str = "replay") -> str:
    """A fresh replay name: ``replay-20261120T101500Z-1a2b``."""
    return f"{prefix}-{now().strftime('%Y%m%dT%H%M%SZ')}-{os.urandom(2).hex()}"


class ProgressSink(Protocol):
    """Told how a run advances (the CLI draws a progress bar)."""

    def start(self, description: str, total: int | None) -> None:
        """A run begins; ``total`` is about how many records will be read (``None``: unknown)."""

    def advance(self, read: int, sent: int) -> None:
        """Records read and events sent since the last call."""

    def finish(self) -> None:
        """The run ended (or failed)."""


class RateLimiter:
    """At most ``rate`` events per second, evenly spaced (a burst of 10 ms worth is allowed)."""

    def __init__(self, rate: float | None) -> None:
        self.rate = rate
        self._next = 0.0

    async def acquire(self) -> None:
        """Wait for the next slot."""
        if self.rate is None:
            return
        loop = asyncio.get_running_loop()
        current = loop.time()
        self._next = max(self._next, current)
        wait = self._next - current
        self._next += 1.0 / self.rate
        if wait > 0.01:
            await asyncio.sleep(wait)


@dataclass(frozen=True, slots=True)
class ReplaySpec:
    """What to replay: everything a checkpoint needs to resume it."""

    topic: str
    name: str = field(default_factory=new_name)
    source: Literal["archive", "broker"] = "archive"
    window: Window = field(default_factory=Window)
    filter: EventFilter = field(default_factory=EventFilter)
    target: Target = field(default_factory=Target.original)
    batch: int = 100
    """Events per checkpoint."""
    rate: float | None = None
    """Events per second (``None``: as fast as the target takes them)."""
    seek_margin: float = SEEK_MARGIN.total_seconds()
    """Broker history only: how much earlier than the window (and later) the log is read, for
    events whose ``time`` differs from when the broker took them (clock skew, back-dated events)."""

    def __post_init__(self) -> None:
        if not self.topic:
            raise BadReplayInput("a replay needs a topic")
        if not _NAME.match(self.name):
            raise BadReplayInput(
                f"invalid replay name {self.name!r}: 1-100 letters, digits, '.', '_', ':' or '-', starting with "
                "a letter or digit"
            )
        if self.batch < 1:
            raise BadReplayInput("--batch must be at least 1")
        if self.target.kind == "origin":
            raise BadReplayInput("the 'origin' target is for dead-letter redrive")
        if self.seek_margin < 0:
            raise BadReplayInput("--seek-margin must not be negative")

    def to_json(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "name": self.name,
            "source": self.source,
            "window": self.window.to_json(),
            "filter": self.filter.to_json(),
            "target": self.target.to_json(),
            "batch": self.batch,
            "rate": self.rate,
            "seek_margin": self.seek_margin,
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> ReplaySpec:
        return cls(
            topic=doc["topic"],
            name=doc["name"],
            source=doc.get("source", "archive"),
            window=Window.from_json(doc.get("window", {})),
            filter=EventFilter.from_json(doc.get("filter", {})),
            target=Target.from_json(doc.get("target", {})),
            batch=int(doc.get("batch", 100)),
            rate=doc.get("rate"),
            seek_margin=float(doc.get("seek_margin", SEEK_MARGIN.total_seconds())),
        )


@dataclass
class ReplayResult:
    """What a run did (a dry run only counts)."""

    name: str
    dry_run: bool = False
    matched: int = 0
    """Events that passed the window and the filters in this run."""
    delivered: int = 0
    """Events sent, in this run and the runs it resumed."""
    sent_now: int = 0
    """Events sent by this run."""
    by_type: Counter[str] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)
    """Events left out and why (``replay copy``, ``undecodable``, ...)."""
    corrupt: list[str] = field(default_factory=list)
    """Records that could not be read (the first few), each with where it is and why."""
    corrupt_count: int = 0
    batches: int = 0
    resumed: bool = False
    finished: bool = False
    cursor: dict[str, Any] | None = None

    def note_corrupt(self, record: Record) -> None:
        self.corrupt_count += 1
        if len(self.corrupt) < MAX_REPORTED:
            self.corrupt.append(record.error or f"{record.ref}: unreadable")


class Replayer:
    """Runs replays through a started :class:`~mesh.Runtime` (its broker and plugins).

    ``archive`` is the store for ``source="archive"``; ``state`` keeps checkpoints (default: the
    archive's state table, else files, see :mod:`mesh.replay.checkpoint`).
    """

    def __init__(
        self,
        runtime: Runtime,
        *,
        archive: ArchiveStore | None = None,
        state: StateStore | None = None,
        progress: ProgressSink | None = None,
    ) -> None:
        self.runtime = runtime
        self.archive = archive
        self.state = state or (ArchiveState(archive) if archive is not None else FileState())
        self.progress = progress

    def source(self, kind: str, margin: float = SEEK_MARGIN.total_seconds()) -> Source:
        """The source of a kind (``archive`` or ``broker``)."""
        if kind == "archive":
            if self.archive is None:
                raise ReplayError(
                    "no archive is configured: add plugins.config.archive to the config (see docs/replay.md) "
                    "or read the broker's history with --from broker"
                )
            return ArchiveSource(self.archive)
        if kind == "broker":
            return BrokerSource(self.runtime.broker, margin=timedelta(seconds=margin))
        raise BadReplayInput(f"unknown source {kind!r}: archive or broker")

    async def check_topic(self, source: Source, topic: str) -> None:
        """Raise :class:`UnknownTopic` (listing the known ones when possible) unless the source has it."""
        if await source.exists(topic):
            return
        known = await source.topics()
        hint = ""
        if known:
            shown = ", ".join(known[:15]) + (", ..." if len(known) > 15 else "")
            hint = f" (it has: {shown})"
        elif known is not None:
            hint = " (it has no events at all: is the archive plugin on in the apps?)"
        raise UnknownTopic(f"unknown topic {topic!r}: {source.describe()} has no events for it{hint}")

    async def checkpoint(self, name: str) -> dict[str, Any] | None:
        """The saved checkpoint of a replay, if any."""
        return await self.state.get(CHECKPOINTS, name)

    async def checkpoints(self) -> dict[str, dict[str, Any]]:
        """Every saved checkpoint, by replay name."""
        return await self.state.all(CHECKPOINTS)

    async def dry_run(self, spec: ReplaySpec) -> ReplayResult:
        """Count what :meth:`run` would send, by type; send nothing, save nothing."""
        return await self._run(spec, None, dry_run=True)

    async def run(self, spec: ReplaySpec) -> ReplayResult:
        """Replay from the start of the window (the name must be new)."""
        saved = await self.checkpoint(spec.name)
        if saved is not None:
            state = "finished" if saved.get("done") else "unfinished"
            raise ReplayExists(
                f"a replay named {spec.name!r} exists ({state}, {saved.get('delivered', 0)} sent): "
                f"resume it with --resume {spec.name} or choose another --name"
            )
        return await self._run(spec, None, dry_run=False)

    async def resume(self, name: str, *, rate: float | Literal["saved"] | None = "saved") -> ReplayResult:
        """Go on with a replay from its last checkpoint (``rate`` may be changed)."""
        saved = await self.checkpoint(name)
        if saved is None:
            raise ReplayError(f"no replay named {name!r} to resume ({self.state.describe()})")
        spec = ReplaySpec.from_json(saved["spec"])
        if rate != "saved":
            spec = replace(spec, rate=rate)
        if saved.get("done"):
            return ReplayResult(
                name, delivered=int(saved.get("delivered", 0)), resumed=True, finished=True, cursor=saved.get("cursor")
            )
        return await self._run(spec, saved, dry_run=False)

    async def _run(self, spec: ReplaySpec, saved: dict[str, Any] | None, *, dry_run: bool) -> ReplayResult:
        source = self.source(spec.source, spec.seek_margin)
        await self.check_topic(source, spec.topic)
        sender = Sender(self.runtime, spec.target, spec.topic)
        await sender.check()  # sends nothing: a dry run refuses an unknown group as the real run does
        result = ReplayResult(spec.name, dry_run=dry_run, resumed=saved is not None)
        cursor = None if saved is None else saved.get("cursor")
        result.cursor = cursor
        result.delivered = 0 if saved is None else int(saved.get("delivered", 0))
        started = now() if saved is None else parse_when(str(saved.get("started") or format_time(now())))
        if not dry_run and saved is None:  # the name is taken from the start: a kill in batch one resumes
            await self._save(spec, result, started, done=False)
        limiter = RateLimiter(spec.rate)
        progress = self.progress
        if progress is not None:
            total = await source.count(spec.topic, spec.window, spec.filter) if cursor is None else None
            verb = "counting" if dry_run else "replaying"
            progress.start(f"{verb} {spec.topic} -> {spec.target.describe(spec.topic)}", total)
        seen_attrs = dict.fromkeys(spec.filter.where_by_name(), False)
        in_window = 0
        batch: list[Record] = []
        try:
            async for page in source.records(spec.topic, spec.window, spec.filter, cursor, spec.batch):
                for record in page:
                    event = record.event
                    if event is None:
                        result.note_corrupt(record)
                        continue
                    if not spec.window.contains(record.time()):
                        continue
                    in_window += 1
                    for name, seen in seen_attrs.items():
                        if not seen and event.get(name) is not None:
                            seen_attrs[name] = True
                    if "meshreplay" in event.extensions and source.kind != "archive":
                        result.skipped["earlier replay copy"] += 1
                        continue
                    if not spec.filter.matches(event):
                        continue
                    result.matched += 1
                    result.by_type[event.type] += 1
                    if dry_run:
                        continue
                    batch.append(record)
                    if len(batch) >= spec.batch:
                        await self._send(spec, sender, limiter, batch, result, started)
                        batch = []
                if progress is not None:
                    progress.advance(len(page), 0)
            if batch:
                await self._send(spec, sender, limiter, batch, result, started)
        finally:
            if progress is not None:
                progress.finish()
        if result.matched == 0 and saved is None:
            if not dry_run:
                await self.state.delete(CHECKPOINTS, spec.name)
            if in_window == 0:  # the database may have filtered: is the window itself empty?
                in_window = await source.count(spec.topic, spec.window, EventFilter()) or 0
                seen_attrs = {}
            raise NothingToReplay(self._why_nothing(spec, source, in_window, seen_attrs, result))
        result.finished = True
        if not dry_run:
            await self._save(spec, result, started, done=True)
        return result

    async def _send(
        self,
        spec: ReplaySpec,
        sender: Sender,
        limiter: RateLimiter,
        batch: list[Record],
        result: ReplayResult,
        started: datetime,
    ) -> None:
        """Send one batch in order, then save the checkpoint past its last event."""
        for record in batch:
            assert record.event is not None
            await limiter.acquire()
            await sender.send(record.event.with_extensions(meshreplay=spec.name))
            result.delivered += 1
            result.sent_now += 1
            if self.progress is not None:
                self.progress.advance(0, 1)
        result.cursor = batch[-1].cursor
        result.batches += 1
        await self._save(spec, result, started, done=False)

    async def _save(self, spec: ReplaySpec, result: ReplayResult, started: datetime, *, done: bool) -> None:
        await self.state.put(
            CHECKPOINTS,
            spec.name,
            {
                "spec": spec.to_json(),
                "cursor": result.cursor,
                "delivered": result.delivered,
                "done": done,
                "started": format_time(started),
                "updated": format_time(now()),
            },
        )

    @staticmethod
    def _why_nothing(
        spec: ReplaySpec, source: Source, in_window: int, seen_attrs: dict[str, bool], result: ReplayResult
    ) -> str:
        where = f"{spec.topic!r} in {source.describe()} {spec.window.describe()}"
        if in_window == 0:
            return f"nothing to replay: no events on {where}" + (
                f" ({result.corrupt_count} unreadable records skipped)" if result.corrupt_count else ""
            )
        missing = [name for name, seen in seen_attrs.items() if not seen]
        if missing:
            names = ", ".join(repr(n) for n in missing)
            return f"nothing to replay: none of the {in_window} events on {where} has the attribute {names}"
        copies = result.skipped.get("earlier replay copy", 0)
        extra = f" ({copies} earlier replay copies left out)" if copies else ""
        return f"nothing to replay: {in_window} events on {where}, none matches {spec.filter.describe()}{extra}"
