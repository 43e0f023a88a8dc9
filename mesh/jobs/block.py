"""The jobs block as an App runs it: the user API (``app.jobs``) and one scheduler per instance.

=========================  ====================================================================
situation                  behaviour
=========================  ====================================================================
``jobs.store`` names one   that store of the ``state:`` section (opened by the state block,
                           so this block starts after it and stops before it)
``jobs.store`` unset       the embedded SQLite file ``jobs.url`` (``.mesh/jobs.db``), opened
                           when the app has ``@app.job`` handlers, the file exists, or on the
                           first ``schedule``/``deliver_at``: an app that never uses jobs
                           touches no file
store without a query      :class:`~mesh.errors.FeatureNotSupported` (NATS KV) at start or
or transactions            schedule time, naming memory, sqlite, postgres and redis (Redis
                           answers the due-time query from a sorted set: ``ensure_index``)
=========================  ====================================================================

Other blocks schedule through the jobs block too: cron bindings (:meth:`JobsBlock.schedule`) and
actor reminders (:meth:`JobsBlock.add`, topic jobs on ``_mesh.reminder.<app>``).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import orjson

from mesh.codecs.data import json_dumps
from mesh.codecs.structured import to_structured
from mesh.errors import EncodeError, MeshError
from mesh.event import Event
from mesh.extensions import JOB_PREFIX
from mesh.jobs.config import JobsConfig
from mesh.jobs.errors import InvalidSchedule
from mesh.jobs.model import Job, check_name
from mesh.jobs.scheduler import Scheduler
from mesh.jobs.store import JobStore
from mesh.state.block import StateBlock, build_store
from mesh.state.handle import StateStore

if TYPE_CHECKING:
    from mesh.runtime import Runtime

__all__ = ["JobsBlock"]

log = logging.getLogger("mesh.jobs")

Seconds = timedelta | float | int


def _seconds(job: str, what: str, value: Seconds | None) -> float | None:
    if value is None:
        return None
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


def _epoch(job: str, what: str, value: datetime | float | None) -> float | None:
    if value is None or isinstance(value, int | float):
        return value
    if value.tzinfo is None:
        raise InvalidSchedule(job, f"{what} must be a timezone-aware datetime (e.g. datetime(..., tzinfo=UTC))")
    return value.timestamp()


def sqlite_file(url: str) -> Path:
    """The path of a ``sqlite:///`` URL."""
    from mesh.archive.sqlite import sqlite_path

    return Path(sqlite_path(url))


class JobsBlock:
    """The jobs of one app: schedule, cancel, get, list, trigger; fired by every instance."""

    def __init__(self, runtime: Runtime, state: StateBlock, config: JobsConfig | Mapping[str, Any] | None = None
                 ) -> None:
        self.runtime = runtime
        self.state = state
        self.config = config if isinstance(config, JobsConfig) else JobsConfig.model_validate(config or {})
        self.handlers: set[str] = set()
        """Job names with an ``@app.job`` handler in this app."""
        self.topic = JOB_PREFIX + runtime.id
        """Where fired jobs for ``@app.job`` handlers travel (consumed by the app's group)."""
        self.store: JobStore | None = None
        self.scheduler: Scheduler | None = None
        self._local: dict[str, Callable[[Event], Awaitable[None]]] = {}
        self._own: StateStore | None = None
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self.started = False

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the jobs store (if used yet) and start firing."""
        self.started = True
        if self.config.store is not None or self.handlers or sqlite_file(self.config.url).exists():
            await self._open()

    async def _open(self) -> JobStore:
        async with self._lock:
            if self.store is not None:
                return self.store
            if not self.started:
                raise MeshError(f"start {self.runtime.id} (async with app) before scheduling jobs")
            if self.config.store is not None:
                handle = self.state.store(self.config.store)
            else:
                handle, _ = build_store("jobs", {"type": "sqlite", "url": self.config.url, "table": "mesh_jobs"},
                                        self.runtime.registry, self.runtime.id)
                await handle.backend.open()
                self._own = handle
            store = JobStore(handle)
            await store.prepare()
            self.store = store
            self.scheduler = Scheduler(store, self.config, self.runtime.instance_id, self._send,
                                       self.runtime.source, self.topic)
            self._task = asyncio.get_running_loop().create_task(self.scheduler.run(), name="mesh-jobs")
            return store

    def local(self, topic: str, receive: Callable[[Event], Awaitable[None]]) -> None:
        """Fire jobs aimed at ``topic`` by awaiting ``receive(event)`` in the firing instance instead
        of publishing them (the mesh's own receivers: actor reminders). ``receive`` raising counts as
        a failed fire: retried ``retries`` times with ``backoff``, then dropped with an ERROR line."""
        self._local[topic] = receive

    async def _send(self, topic: str, event: Event) -> Event:
        receive = self._local.get(topic)
        if receive is None:
            return await self.runtime.send(topic, event)
        await receive(event)
        return event

    async def stop(self) -> None:
        """Stop firing (claims not yet fired are given back) and close the embedded store."""
        self.started = False
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self.scheduler is not None:
            await self.scheduler.stop()
        if self._own is not None:
            await self._own.backend.close()
            self._own = None
        self.store = self.scheduler = None

    # -- the API -------------------------------------------------------------------------------

    async def schedule(
        self,
        name: str,
        *,
        cron: str | None = None,
        tz: str | None = None,
        every: Seconds | None = None,
        at: datetime | float | None = None,
        repeats: int | None = None,
        ttl: Seconds | None = None,
        until: datetime | float | None = None,
        jitter: Seconds = 0.0,
        misfire: Literal["fire_once", "skip"] = "fire_once",
        retries: int = 3,
        backoff: Seconds = 1.0,
        topic: str | None = None,
        type: str | None = None,
        data: Any = None,
        target: Literal["topic", "handler"] | None = None,
        replace: bool = False,
    ) -> Job:
        """Schedule ``name`` (cron + tz, ``every``, or one-shot ``at``) to publish on ``topic`` or
        call its ``@app.job`` handler; every bad input raises here, never at fire time."""
        check_name(name)
        if name.startswith("_"):
            raise InvalidSchedule(name, "names starting with '_' are the mesh's own (delayed publishes)")
        if misfire not in ("fire_once", "skip"):
            raise InvalidSchedule(name, f"misfire is 'fire_once' or 'skip', not {misfire!r}")
        target = target or ("topic" if topic else "handler")
        if target == "handler" and name not in self.handlers:
            raise InvalidSchedule(name, "give topic=, or register an @app.job handler of this name")
        if topic is not None:
            from mesh.names import InvalidName, check_topic

            try:
                check_topic(topic, namespace=self.runtime.config.broker.namespace)
            except InvalidName as exc:
                raise InvalidSchedule(name, str(exc)) from None
        try:
            data = orjson.loads(json_dumps(data)) if data is not None else None
        except (EncodeError, TypeError, ValueError) as exc:
            raise InvalidSchedule(name, f"data is not JSON-serialisable: {exc}") from exc
        now = time.time()
        ttl_s = _seconds(name, "ttl", ttl)
        end = _epoch(name, "until", until)
        if ttl_s is not None:
            end = min(end, now + ttl_s) if end is not None else now + ttl_s
        if (isinstance(every, int | float) and not isinstance(every, bool)) or isinstance(every, timedelta):
            every_s = _seconds(name, "every", every)
        elif every is None:
            every_s = None
        else:
            raise InvalidSchedule(name, f"every is a timedelta or seconds, not {every!r}")
        job = Job(name=name, cron=cron, tz=tz, every=every_s, at=_epoch(name, "at", at), repeats=repeats,
                  until=end, jitter=_seconds(name, "jitter", jitter) or 0.0, misfire=misfire, retries=retries,
                  backoff=_seconds(name, "backoff", backoff) or 0.0, target=target, topic=topic,
                  type=type or "mesh.job.fired", data=data, created=now)
        return await self.add(job, replace=replace)

    async def add(self, job: Job, *, replace: bool = False) -> Job:
        """Store a ready :class:`Job` (checked) and wake this instance's scheduler."""
        from mesh.jobs.model import check

        check_name(job.name)
        job.created = job.created or time.time()
        check(job)  # before opening anything: bad input fails the same with or without a store
        store = await self._open()
        job = await store.add(job, replace=replace)
        if self.scheduler is not None:
            self.scheduler.wake.set()
        return job

    async def deliver(self, topic: str, event: Event, at: datetime | float) -> Event:
        """Publish ``event`` on ``topic`` at ``at`` (a one-shot job; a past time sends at once)."""
        key = hashlib.sha256(f"{event.source}\0{event.id}".encode()).hexdigest()[:24]
        job = Job(name=f"_publish.{key}", at=_epoch(key, "deliver_at", at), target="event", topic=topic,
                  event=to_structured(event).decode(), type=event.type)
        await self.add(job)
        return event

    async def cancel(self, name: str) -> None:
        """Remove a job (JobNotFound if it is not scheduled); a fire already under way may still land."""
        await (await self._open()).cancel(name)

    async def get(self, name: str) -> Job | None:
        """The job named ``name``, or ``None``."""
        held = await (await self._open()).get(name)
        return None if held is None else held.job

    async def list(self) -> AsyncIterator[Job]:
        """Every job of this app, by name."""
        async for job in (await self._open()).list():
            yield job

    async def trigger(self, name: str) -> Job:
        """Fire ``name`` once now, besides its schedule (any running instance fires it)."""
        job = await (await self._open()).trigger(name)
        if self.scheduler is not None:
            self.scheduler.wake.set()
        return job
