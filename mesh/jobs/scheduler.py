"""Firing: claim due jobs with ETag leases, fire each at (never before) its time, write the next.

==========================  ==================================================================
step                        what happens
==========================  ==================================================================
look (every poll interval)  read the jobs with ``due <= now + poll_interval`` from the index
                            (the next look is timed from the start of this one: no drift)
claim                       one transaction sets ``owner`` = this instance and ``due`` = fire
                            time + lease, each row checked against its ETag: of several
                            instances exactly one wins a job; the others' rows are dropped
fire                        at the fire time (slept to, checked against the clock: never
                            early), publish the event (topic, ``@app.job`` topic, stored event)
done                        write the next time (or delete a finished job), ETag-checked,
                            batched; the lease ends
instance dies holding it    its ``due`` (the lease's end) comes: another instance claims and
                            fires it (at-least-once: a fire whose completion was lost repeats)
publishing fails            retried ``retries`` times with doubling ``backoff`` (through the
                            index, so any instance may), then dropped with an ERROR line
app stops                   claims not yet fired are given back (due at their fire time)
==========================  ==================================================================
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable

from mesh.codecs.structured import from_structured
from mesh.event import Event, ExtensionValue
from mesh.extensions import JOB, JOB_TIME
from mesh.jobs.config import JobsConfig
from mesh.jobs.model import Job, as_datetime, on_due, with_jitter
from mesh.jobs.store import Held, JobStore

__all__ = ["Scheduler", "fire_event"]

log = logging.getLogger("mesh.jobs")

Send = Callable[[str, Event], Awaitable[Event]]


def fire_event(job: Job, scheduled: float, source: str, handler_topic: str) -> tuple[str, Event]:
    """The topic and CloudEvent of one fire of ``job`` for its ``scheduled`` time."""
    ext: dict[str, ExtensionValue] = {JOB: job.job, JOB_TIME: as_datetime(scheduled)}
    if job.target == "event":
        assert job.event is not None and job.topic is not None
        return job.topic, from_structured(job.event).with_extensions(**ext)
    digest = hashlib.sha256(f"{job.job}\0{scheduled!r}".encode()).hexdigest()[:32]
    event = Event(job.type, source, job.data, id=f"job-{digest}", extensions=ext)
    return (handler_topic if job.target == "handler" else job.topic or handler_topic), event


class Scheduler:
    """The firing loop of one instance over one :class:`JobStore` (see the module docstring)."""

    def __init__(self, jobs: JobStore, config: JobsConfig, owner: str, send: Send, source: str,
                 handler_topic: str) -> None:
        self.jobs = jobs
        self.config = config
        self.owner = owner
        self.send = send
        self.source = source
        self.handler_topic = handler_topic
        self.fired = 0
        """Fires this instance made (for tests and benchmarks)."""
        self.wake = asyncio.Event()
        self._held: dict[str, Held] = {}
        self._waiting: set[str] = set()
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._done: list[tuple[Held, Job | None]] = []
        self._flush = asyncio.Event()
        self._stopping = False

    async def run(self) -> None:
        """Look at the index every poll interval (or when woken) until cancelled."""
        flusher = asyncio.get_running_loop().create_task(self._flusher())
        try:
            while True:
                started = time.monotonic()
                more = False
                try:
                    more = await self._look()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.warning("jobs: looking for due jobs failed (retrying): %s: %s", type(exc).__name__, exc)
                if more:
                    continue
                pause = self.config.poll_interval - (time.monotonic() - started)
                if pause > 0 and not self.wake.is_set():
                    try:
                        async with asyncio.timeout(pause):
                            await self.wake.wait()
                    except TimeoutError:
                        pass
                self.wake.clear()
        finally:
            flusher.cancel()
            await asyncio.gather(flusher, return_exceptions=True)

    async def _look(self) -> bool:
        now = time.time()
        rows = await self.jobs.due(now + self.config.poll_interval, self.config.batch)
        claims: list[tuple[Held, Job | None]] = []
        before: dict[str, bool] = {}
        for held in rows:
            job = held.job
            if job.name in self._held or job.next is None:
                continue
            if job.owner is not None and job.due > now:
                continue  # another instance's lease, ending within this poll
            before[job.name] = job.owner is not None or job.attempt > 0
            claims.append((held, job.model_copy(update={"owner": self.owner,
                                                        "due": max(job.fire, now) + self.config.lease})))
        if not claims:
            return False
        for held in await self.jobs.write(claims):
            self._held[held.job.name] = held
            name = held.job.name
            task = asyncio.get_running_loop().create_task(self._handle(held, before[name]))
            self._tasks[name] = task
            task.add_done_callback(lambda _, n=name: self._tasks.pop(n, None))  # type: ignore[misc]
        return len(rows) == self.config.batch

    async def _handle(self, held: Held, claimed_before: bool) -> None:
        job = held.job
        name = job.name
        self._waiting.add(name)
        try:
            while (wait := job.fire - time.time()) > 0:  # noqa: ASYNC110 - a timer, re-checked: never early
                await asyncio.sleep(wait)
        except asyncio.CancelledError:
            self._done.append((held, job.model_copy(update={"owner": None, "due": job.fire})))
            raise
        finally:
            self._waiting.discard(name)
        now = time.time()
        decision = on_due(job, now, self.config.misfire_grace, claimed_before)
        if decision.misfire:
            log.info("jobs: %r missed %s (%s)", name, as_datetime(decision.scheduled).isoformat(), job.misfire)
        if decision.fire:
            topic, event = fire_event(job, decision.scheduled, self.source, self.handler_topic)
            try:
                await self.send(topic, event)
                self.fired += 1
            except Exception as exc:
                if job.attempt < job.retries:
                    delay = min(60.0, job.backoff * 2 ** job.attempt)
                    log.warning("jobs: %r could not be fired (try %d of %d again in %.1fs): %s", name,
                                job.attempt + 1, job.retries, delay, exc)
                    self._finish(held, job.model_copy(update={"owner": None, "attempt": job.attempt + 1,
                                                              "due": time.time() + delay}))
                    return
                log.error("jobs: %r could not be fired after %d tries; dropping its %s fire: %s", name,
                          job.attempt + 1, as_datetime(decision.scheduled).isoformat(), exc)
        if decision.next is None:
            self._finish(held, None)
            return
        fire = with_jitter(job, decision.next)
        self._finish(held, job.model_copy(update={
            "next": decision.next, "fire": fire, "due": fire, "owner": None, "attempt": 0,
            "count": job.count + (1 if decision.fire else 0), "last": now if decision.fire else job.last}))

    def _finish(self, held: Held, new: Job | None) -> None:
        self._done.append((held, new))
        self._flush.set()

    async def _flusher(self) -> None:
        while True:
            await self._flush.wait()
            self._flush.clear()
            await self._write_done()

    async def _write_done(self) -> None:
        done, self._done = self._done, []
        if not done:
            return
        try:
            await self.jobs.write(done)
        except Exception as exc:
            log.warning("jobs: writing %d fired job(s) failed; they fire again after their lease: %s",
                        len(done), exc)
        for held, _ in done:
            self._held.pop(held.job.name, None)
        if any(new is not None and new.due <= time.time() + self.config.poll_interval for _, new in done):
            self.wake.set()

    async def stop(self) -> None:
        """Give back claims not yet fired, let fires in flight finish (5 s), write what is done."""
        tasks = list(self._tasks.items())
        for name, task in tasks:
            if name in self._waiting:
                task.cancel()
        if tasks:
            await asyncio.wait([t for _, t in tasks], timeout=5)
        await self._write_done()
