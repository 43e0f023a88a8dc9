"""Jobs kept in a state store: one key per job, a due-time index, batched ETag-checked writes.

==================  ===========================================================================
piece               how
==================  ===========================================================================
a job               key ``job.<name>``, value the :class:`~mesh.jobs.model.Job` as JSON
due-time index      the value's ``due`` field, indexed (``ensure_index``: an SQL index, a
                    Redis sorted set) and read with
                    ``query(where={"kind": ..., "due": {"lte": t}}, order_by=["due"])``
claims, updates     one transaction per batch, each row checked against the ETag it was read
                    with; a row someone else wrote first is dropped and the rest retried
==================  ===========================================================================

The store needs transactions, ETags and queries: memory, sqlite and postgres answer any query;
Redis answers only a range on an indexed number (``index_query``), so there ``list`` walks the
due-time index and sorts by name in memory. Other stores (NATS KV) raise
:class:`~mesh.errors.FeatureNotSupported` naming the ones that work.
"""

from __future__ import annotations

import builtins
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from mesh.errors import FeatureNotSupported
from mesh.jobs.errors import InvalidSchedule, JobExists, JobNotFound
from mesh.jobs.model import KIND, Job, check, check_name, first_time, with_jitter
from mesh.state.base import Page
from mesh.state.errors import ETagMismatch
from mesh.state.handle import StateStore

__all__ = ["Held", "JobStore"]

PREFIX = "job."


@dataclass(slots=True)
class Held:
    """A job as read (or written) with the ETag it has in the store."""

    job: Job
    etag: str


def index_only(store: StateStore) -> bool:
    """Whether the store answers only range queries on an indexed path (Redis), not any query."""
    return not store.features.query and store.features.index_query


def check_store(store: StateStore) -> None:
    """Raise FeatureNotSupported unless the store can hold jobs."""
    f = store.features
    if not (f.transactions and (f.query or index_only(store)) and f.etag):
        raise FeatureNotSupported(store.backend.type, "jobs (they need transactions and a due-time query)",
                                  "name a memory, sqlite, postgres or redis store in jobs.store")


class JobStore:
    """The jobs of one app in one state store (see the module docstring)."""

    def __init__(self, store: StateStore) -> None:
        check_store(store)
        self.store = store
        self.index_only = index_only(store)

    async def prepare(self) -> None:
        """Create the due-time index (SQL stores)."""
        await self.store.ensure_index("due")

    async def add(self, job: Job, *, replace: bool = False) -> Job:
        """Validate and write a new job (its first time computed); JobExists unless ``replace``."""
        check_name(job.name)
        job.job = job.job or job.name
        job.created = job.created or time.time()
        check(job)
        first = first_time(job)
        if first is None:
            raise InvalidSchedule(job.name, "it would never fire (its end is before its first time)")
        job.next = first
        job.fire = job.due = with_jitter(job, first)
        try:
            await self.store.set(PREFIX + job.name, job.model_dump(mode="json"), create=not replace)
        except ETagMismatch:
            raise JobExists(job.name) from None
        return job

    async def get(self, name: str) -> Held | None:
        """The job and its ETag, or ``None``."""
        item = await self.store.get(PREFIX + check_name(name), Job)
        return None if item is None else Held(item.value, item.etag)

    async def cancel(self, name: str) -> None:
        """Remove a job; JobNotFound if there is none."""
        if await self.get(name) is None:
            raise JobNotFound(name)
        await self.store.delete(PREFIX + name)

    async def _query(self, where: dict[str, Any], order_by: builtins.list[str], limit: int,
                     after: str | None = None) -> Page[Job]:
        """``store.query`` typed to Job (on Redis the indexed range it answers)."""
        return await self.store.query(where, order_by=order_by, limit=limit, after=after, type=Job)

    async def list(self, page: int = 500) -> AsyncIterator[Job]:
        """Every job, by name."""
        if self.index_only:
            jobs: builtins.list[Job] = []
            cursor: str | None = None
            while True:
                found = await self._query({"kind": KIND, "due": {"gte": float("-inf")}}, ["due"], page, cursor)
                jobs += [i.value for i in found.items]
                if found.next is None:
                    break
                cursor = found.next
            for job in sorted(jobs, key=lambda j: j.name):
                yield job
            return
        after: str | None = None
        while True:
            result = await self.store.query({"kind": KIND}, order_by=["name"], limit=page, after=after, type=Job)
            for item in result.items:
                yield item.value
            if result.next is None:
                return
            after = result.next

    async def trigger(self, name: str) -> Job:
        """Add a one-shot copy of ``name`` due now that fires under its name; JobNotFound if none."""
        held = await self.get(name)
        if held is None:
            raise JobNotFound(name)
        now = time.time()
        copy = held.job.model_copy(update={
            "name": f"{name}~{int(now * 1000)}", "job": held.job.job or name, "cron": None, "tz": None,
            "every": None, "at": now, "repeats": None, "until": None, "jitter": 0.0, "created": now, "count": 0,
            "attempt": 0, "owner": None, "last": None})
        return await self.add(copy)

    async def due(self, before: float, limit: int) -> builtins.list[Held]:
        """Jobs whose ``due`` is at or before ``before``, soonest first."""
        page = await self._query({"kind": KIND, "due": {"lte": before}}, ["due"], limit)
        return [Held(i.value, i.etag) for i in page.items]

    async def write(self, rows: Sequence[tuple[Held, Job | None]]) -> builtins.list[Held]:
        """Write each (read job, new value or ``None`` to delete) in one transaction, ETag-checked.

        Rows someone else changed since they were read are left out (retried without them);
        returns the rows written, with their new ETags (deleted ones are left out).
        """
        pending = {PREFIX + held.job.name: (held, new) for held, new in rows}
        while pending:
            try:
                async with self.store.transaction() as tx:
                    for key, (held, new) in pending.items():
                        if new is None:
                            tx.delete(key, etag=held.etag)
                        else:
                            tx.set(key, new.model_dump(mode="json"), etag=held.etag)
            except ETagMismatch as exc:
                if exc.key not in pending:
                    raise
                del pending[exc.key]
                continue
            return [Held(new, tx.etags[key]) for key, (_, new) in pending.items() if new is not None]
        return []

