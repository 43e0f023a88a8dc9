"""Durable reminders behind a small scheduler interface, with a stand-in until the jobs block lands.

The actors block only needs :class:`Scheduler` (``schedule(name, at|every, target, data)`` and
``cancel(name)``; the target is ``("actor", type, id, reminder name)``). :class:`StoreScheduler`
is the stand-in: a due list in the actor state store, read by every instance hosting actors
every ``actors.reminder_poll`` seconds; the instance that owns an actor (by placement) fires its
due reminders as turns (``on_reminder``), then moves the entry to its next time or removes it.

==============================  =============================================================
question                        answer (stand-in)
==============================  =============================================================
where                           ``_reminders||<bucket>`` keys (8 buckets by name), ETag-guarded
survives a full restart         yes: it is in the store; the next owner fires it
fires twice?                    at least once: a crash between the turn and the update fires
                                it again; ``on_reminder`` should be idempotent
a failing ``on_reminder``       tried again after 5 polls
when jobs lands                 replace :class:`StoreScheduler` by the jobs client (same
                                interface) and let its firing call ``Host.fire_reminder``
==============================  =============================================================
"""

from __future__ import annotations

import hashlib
import os
import time
from datetime import datetime, timedelta
from typing import Any, Protocol

from mesh.state.errors import ETagMismatch
from mesh.state.handle import StateStore

__all__ = ["BUCKETS", "Due", "Reminders", "Scheduler", "StoreScheduler"]

BUCKETS = 8


class Scheduler(Protocol):
    """What the actors block needs of a scheduler (the jobs block's interface)."""

    async def schedule(self, name: str, *, at: datetime | None = None, every: timedelta | None = None,
                       target: tuple[str, str, str, str], data: Any = None) -> None:
        """Fire ``target`` with ``data`` at ``at`` (default: now + ``every``), then every ``every``."""

    async def cancel(self, name: str) -> None:
        """Remove a schedule (a no-op if there is none)."""


class Due:
    """One due entry of the stand-in's list."""

    __slots__ = ("at", "data", "every", "name", "target", "version")

    def __init__(self, name: str, doc: dict[str, Any]) -> None:
        self.name = name
        self.at = float(doc["at"])
        self.every = None if doc.get("every") is None else float(doc["every"])
        self.target = tuple(doc["target"])
        self.data = doc.get("data")
        self.version = str(doc.get("v", ""))


def _bucket(name: str) -> str:
    n = int.from_bytes(hashlib.blake2b(name.encode(), digest_size=2).digest(), "big") % BUCKETS
    return f"_reminders||{n}"


class StoreScheduler:
    """The stand-in scheduler: a due list in a state store (see the module docstring)."""

    def __init__(self, store: StateStore) -> None:
        self.store = store

    async def _update(self, bucket: str, change: Any) -> None:
        while True:
            item = await self.store.get(bucket)
            entries: dict[str, Any] = dict(item.value) if item is not None else {}
            if not change(entries):
                return
            try:
                if entries:
                    await self.store.set(bucket, entries, etag=None if item is None else item.etag,
                                         create=item is None)
                elif item is not None:
                    await self.store.delete(bucket, etag=item.etag)
                return
            except ETagMismatch:
                continue

    async def schedule(self, name: str, *, at: datetime | None = None, every: timedelta | None = None,
                       target: tuple[str, str, str, str], data: Any = None) -> None:
        """Add or replace a reminder."""
        period = every.total_seconds() if every is not None else None
        when = at.timestamp() if at is not None else time.time() + (period or 0.0)
        doc = {"at": when, "every": period, "target": list(target), "data": data, "v": os.urandom(4).hex()}

        def put(entries: dict[str, Any]) -> bool:
            entries[name] = doc
            return True

        await self._update(_bucket(name), put)

    async def cancel(self, name: str) -> None:
        """Remove a reminder."""
        await self._update(_bucket(name), lambda entries: entries.pop(name, None) is not None)

    async def due(self, now: float) -> list[Due]:
        """Every entry due at ``now``, oldest first."""
        items = await self.store.get_many([f"_reminders||{n}" for n in range(BUCKETS)])
        out = [Due(name, doc) for item in items for name, doc in item.value.items() if float(doc["at"]) <= now]
        return sorted(out, key=lambda d: d.at)

    async def fired(self, due: Due, ok: bool, retry_after: float) -> None:
        """Move a fired entry to its next time, remove it, or (``ok`` false) postpone it."""

        def move(entries: dict[str, Any]) -> bool:
            doc = entries.get(due.name)
            if doc is None or str(doc.get("v", "")) != due.version:
                return False  # set again or cancelled meanwhile
            if not ok:
                entries[due.name] = {**doc, "at": time.time() + retry_after}
            elif due.every:
                entries[due.name] = {**doc, "at": max(due.at + due.every, time.time())}
            else:
                del entries[due.name]
            return True

        await self._update(_bucket(due.name), move)


class Reminders:
    """The actor-facing side: reminder names per actor, on a :class:`Scheduler`."""

    def __init__(self, scheduler: Scheduler) -> None:
        self.scheduler = scheduler

    @staticmethod
    def name(actor_type: str, actor_id: str, reminder: str) -> str:
        """The schedule name of one actor's reminder."""
        return f"actor||{actor_type}||{actor_id}||{reminder}"

    async def set(self, actor_type: str, actor_id: str, reminder: str, due: float, period: float | None,
                  data: Any) -> None:
        """Set (or replace) a reminder of an actor."""
        at = datetime.fromtimestamp(time.time() + due).astimezone()
        every = timedelta(seconds=period) if period else None
        await self.scheduler.schedule(self.name(actor_type, actor_id, reminder), at=at, every=every,
                                      target=("actor", actor_type, actor_id, reminder), data=data)

    async def cancel(self, actor_type: str, actor_id: str, reminder: str) -> None:
        """Remove a reminder of an actor."""
        await self.scheduler.cancel(self.name(actor_type, actor_id, reminder))
