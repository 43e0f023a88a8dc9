"""Replay and dead-letter redrive: send past events again, from the archive or the broker's history.

The ``mesh replay`` and ``mesh dlq`` commands are a thin layer over this API::

    from mesh import App
    from mesh.replay import EventFilter, ReplaySpec, Target, Window, open_tools, parse_when

    async with open_tools(App("ops", config="mesh.yaml")) as tools:
        spec = ReplaySpec(
            topic="orders",
            name="rebill-2026-11-20",
            window=Window(parse_when("2026-11-20T10:00Z"), parse_when("2026-11-20T12:00Z")),
            filter=EventFilter(types=("shop.order.created",)),
            target=Target.group("billing"),
            rate=500,
        )
        print((await tools.replayer.dry_run(spec)).by_type)   # counts by type, nothing sent
        await tools.replayer.run(spec)                        # checkpoint after every batch
        await tools.replayer.resume("rebill-2026-11-20")      # after an interruption

        dlq = tools.dead_letters("orders.dlq")
        summary = await dlq.summary()                          # by error type, oldest and newest
        await dlq.redrive(filter=EventFilter(where=(("mesherrortype", "TimeoutError"),)), canary=10, rate=100)
        await dlq.purge(older_than=parse_when("7d"))

See ``docs/replay.md`` for what each step guarantees.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from mesh.archive import ArchiveStore, archive_settings, open_archive
from mesh.replay.checkpoint import ArchiveState, FileState, StateStore
from mesh.replay.dlq import DeadLetterEntry, DeadLetters, DeadLetterSummary, RedriveResult, redriven
from mesh.replay.engine import ProgressSink, Replayer, ReplayResult, ReplaySpec, new_name
from mesh.replay.errors import (
    BadReplayInput,
    CanaryFailed,
    NothingToReplay,
    ReplayError,
    ReplayExists,
    UnknownGroup,
    UnknownTopic,
)
from mesh.replay.filters import DEAD_LETTER_ALIASES, EventFilter, Window, parse_rate, parse_when, parse_where
from mesh.replay.targets import Target

if TYPE_CHECKING:
    from mesh.app import App

__all__ = [
    "DEAD_LETTER_ALIASES",
    "BadReplayInput",
    "CanaryFailed",
    "DeadLetterEntry",
    "DeadLetterSummary",
    "DeadLetters",
    "EventFilter",
    "NothingToReplay",
    "ProgressSink",
    "RedriveResult",
    "ReplayError",
    "ReplayExists",
    "ReplayResult",
    "ReplaySpec",
    "Replayer",
    "Target",
    "Tools",
    "UnknownGroup",
    "UnknownTopic",
    "Window",
    "new_name",
    "open_tools",
    "parse_rate",
    "parse_when",
    "parse_where",
    "redriven",
]


@dataclass
class Tools:
    """A started App with its archive (if configured) and state store, ready for replay and redrive."""

    app: App
    archive: ArchiveStore | None
    state: StateStore
    progress: ProgressSink | None = None

    @property
    def replayer(self) -> Replayer:
        """A :class:`Replayer` on this app, archive and state."""
        return Replayer(self.app.runtime, archive=self.archive, state=self.state, progress=self.progress)

    def dead_letters(self, topic: str, source: Literal["archive", "broker"] | None = None) -> DeadLetters:
        """Operations on the dead-letter topic ``topic``."""
        return DeadLetters(
            self.app.runtime, topic, archive=self.archive, state=self.state, source=source, progress=self.progress
        )


@asynccontextmanager
async def open_tools(
    app: App,
    *,
    archive_url: str | None = None,
    state_dir: str | None = None,
    progress: ProgressSink | None = None,
) -> AsyncIterator[Tools]:
    """Start ``app`` (its broker) and open the archive of its config (or ``archive_url``).

    State (checkpoints, dead-letter marks) goes to the archive, else to files in ``state_dir``
    (default: :func:`mesh.replay.checkpoint.default_state_dir`).
    """
    settings = archive_settings(app.config, recording=False)
    url = archive_url or (settings.url if settings is not None else None)
    store = open_archive(url, settings.table if settings is not None else "mesh_archive") if url else None
    if store is not None:
        await store.open()
    try:
        state: StateStore = ArchiveState(store) if store is not None else FileState(state_dir)
        async with app:
            yield Tools(app, store, state, progress)
    finally:
        if store is not None:
            await store.close()
