"""Settling a delivery: exactly one of handled, retried, dead-lettered or parked.

==========================  ==============================================================
what happened               what the pipeline does
==========================  ==============================================================
handler returned            ack (``handled``)
no handler matched          ack (``skipped``)
handler raised              ask ``mesh_retry_decision``: nack with a delay (``retry``), or
                            dead-letter (no plugin decides: dead-letter)
dead-letter                 write the event plus why to the dead-letter destination, *then*
                            ack (``dead_letter``); the write failing comes back later
                            (``returned``), never lost
dead-letter write refused   for a reason that cannot go away (too large, not encodable):
                            write a bounded stub instead (attributes, truncated body,
                            size, digest, reason)
still failing after         park: give the delivery back with ``PARK_DELAY`` (5 min), one
``DEAD_LETTER_ATTEMPTS``    ERROR line and the ``parked`` outcome (``mesh.events.parked``);
                            it comes back after the delay (where the broker holds the
                            delay; an in-process wait ends with the process, and the broker
                            then redelivers: see docs/operating.md, Parked deliveries)
==========================  ==============================================================

Invariant: dead-lettering writes first and acks after, so nothing is lost if the write fails,
and no delivery can loop faster than once per ``FALLBACK_REDELIVERY`` seconds.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from datetime import datetime

from mesh.codecs.stub import oversize_stub, undecodable_stub
from mesh.errors import DeadLetter, EncodeError, EventError, PluginError
from mesh.event import Event, now
from mesh.extensions import DEAD_LETTER_EXTENSIONS
from mesh.logs import log_dead_letter, log_handler_failure, one_line
from mesh.pipeline.stepping import own_task
from mesh.types import Context, Decision, Handle

__all__ = ["FALLBACK_REDELIVERY", "FailureMemory", "dead_letter", "failed", "outcome", "settling"]

log = logging.getLogger("mesh.pipeline")

FALLBACK_REDELIVERY = 30.0
"""Seconds before a delivery comes back when it could be neither handled nor dead-lettered."""
DEAD_LETTER_ATTEMPTS = 5
"""Failed dead-letter writes of one delivery (in this process) before it is parked."""
PARK_DELAY = 300.0
"""Seconds a parked delivery is held back before the broker offers it again."""


def settling(handle: Handle) -> Handle:
    """Run the handler pipeline, then settle the delivery: ack, or retry / dead-letter on failure."""

    async def process(ctx: Context) -> None:
        try:
            await handle(ctx)
        except asyncio.CancelledError:  # the app stopped past its drain timeout: give it back
            if not ctx.delivery.done:
                try:
                    await ctx.delivery.nack()
                except Exception:  # the connection is going: the broker redelivers what was not acked
                    log.debug("could not give back a cancelled delivery on %s", ctx.topic, exc_info=True)
            raise
        except Exception as exc:
            ctx.error = exc
            await own_task()  # a batch item stepped by hand: retrying or dead-lettering does I/O
            await failed(ctx, exc)
            return
        if not ctx.delivery.taskless_ack:
            await own_task()
        await ctx.delivery.ack()
        ctx.outcome = "handled"
        if ctx.runtime.outcome_hooks:
            outcome(ctx, "handled", None)

    return process


def outcome(ctx: Context, what: str, error: BaseException | None) -> None:
    """Tell plugins how a delivery was settled (``mesh_delivery_outcome``); never raises."""
    ctx.outcome = what
    try:
        ctx.runtime.hooks.delivery_outcome(ctx, what, error)
    except PluginError:
        log.exception("a plugin failed in mesh_delivery_outcome")


def _settled(ctx: Context, what: str, error: BaseException | None) -> None:
    ctx.outcome = what
    if ctx.runtime.outcome_hooks:
        outcome(ctx, what, error)


class FailureMemory:
    """When each event first failed in each group, and how often its dead-lettering failed,
    as far as this process saw (bounded LRU)."""

    def __init__(self, size: int = 10_000) -> None:
        self._seen: OrderedDict[tuple[str, str, str], datetime] = OrderedDict()
        self._dead_letter_failures: OrderedDict[tuple[str, str, str], int] = OrderedDict()
        self._size = size

    @staticmethod
    def _key(ctx: Context) -> tuple[str, str, str]:
        event = ctx.event
        if event is not None:
            return (ctx.group, event.source, event.id)
        raw = ctx.delivery.raw
        return (ctx.group, "<undecodable>", str(hash(raw.body)) if raw is not None else str(id(ctx.delivery)))

    def first(self, ctx: Context) -> datetime:
        """The first failure time of the context's event, recording now if it is new."""
        key = self._key(ctx)
        seen = self._seen.get(key)
        if seen is None:
            seen = self._seen[key] = now()
            if len(self._seen) > self._size:
                self._seen.popitem(last=False)
        return seen

    def dead_letter_failed(self, ctx: Context) -> int:
        """Count one more failed dead-letter write of this delivery; returns the count so far."""
        key = self._key(ctx)
        count = self._dead_letter_failures.pop(key, 0) + 1
        self._dead_letter_failures[key] = count
        if len(self._dead_letter_failures) > self._size:
            self._dead_letter_failures.popitem(last=False)
        return count

    def forget(self, ctx: Context) -> None:
        """Drop the records once the event left the group (handled, dead-lettered or parked)."""
        key = self._key(ctx)
        self._seen.pop(key, None)
        self._dead_letter_failures.pop(key, None)


async def failed(ctx: Context, exc: BaseException) -> None:
    """A handler failed: retry or dead-letter as the plugins decide (dead-letter if none does)."""
    runtime = ctx.runtime
    ctx.first_failure = runtime.failures.first(ctx)
    try:
        decision = runtime.hooks.retry_decision(ctx, exc)
    except PluginError:
        log.exception("retry decision failed; the delivery comes back in %ss", FALLBACK_REDELIVERY)
        await ctx.delivery.nack(delay=FALLBACK_REDELIVERY)
        _settled(ctx, "returned", exc)
        return
    if decision is None:
        decision = Decision.dead_letter(str(exc))
    event_id = ctx.event.id if ctx.event is not None else "?"
    if decision.action == "retry":
        step = f"retried in {decision.delay:.3g}s" if decision.delay else "retried"
        log_handler_failure(ctx.topic, ctx.group, event_id, ctx.attempt, exc, next_step=step)
        await ctx.delivery.nack(delay=decision.delay or None)
        _settled(ctx, "retry", exc)
        return
    log_handler_failure(ctx.topic, ctx.group, event_id, ctx.attempt, exc, next_step="dead-lettering")
    if not isinstance(exc, DeadLetter):
        reason, cause = decision.reason or str(exc), exc
        exc = DeadLetter(reason)
        exc.__cause__ = cause
    await dead_letter(ctx, exc)


async def dead_letter(ctx: Context, error: BaseException | None) -> None:
    """Write to the dead-letter destination, then ack; if the write fails, the delivery comes back.

    A write refused for a reason that cannot go away (the event is over ``max_event_bytes`` or
    cannot be encoded) is replaced by a bounded stub. A delivery whose dead-lettering failed
    ``DEAD_LETTER_ATTEMPTS`` times in this process is parked (see the module docstring).
    """
    runtime = ctx.runtime
    target: str | None = None
    event: Event | None = None
    try:
        target = runtime.hooks.dead_letter_target(ctx, error)
        if target is None:
            raise _NoDestination(f"no dead-letter destination for {ctx.topic} (is the deadletter plugin disabled?)")
        event = runtime.hooks.dead_letter_event(ctx, error, target)
        if event is None:
            event = ctx.event
        if event is None:
            raise RuntimeError("no plugin made a dead-letter event for an undecodable message")
        try:
            await runtime.send(target, event)
        except (EncodeError, EventError) as refused:  # cannot go away: write a bounded stub instead
            event = _stub(ctx, event, error, refused)
            await runtime.send(target, event)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        await _dead_letter_failed(ctx, error, exc)
        return
    await ctx.delivery.ack()
    runtime.failures.forget(ctx)
    log_dead_letter(ctx.topic, ctx.group, ctx.event.id if ctx.event is not None else event.id, target, _reason(error))
    _settled(ctx, "dead_letter", error)
    try:
        runtime.hooks.event_dead_lettered(ctx, event, target)
    except PluginError:
        log.exception("a plugin failed after dead-lettering to %s", target)


def _reason(error: BaseException | None) -> str:
    if isinstance(error, DeadLetter):
        return error.reason
    return one_line(error) if error is not None else "dead-lettered"


class _NoDestination(Exception):
    pass


async def _dead_letter_failed(ctx: Context, error: BaseException | None, exc: Exception) -> None:
    failures = ctx.runtime.failures.dead_letter_failed(ctx)
    event = ctx.event
    what = f"event {event.id} from {event.source}" if event is not None else "an undecodable message"
    if failures >= DEAD_LETTER_ATTEMPTS:
        log.error(
            "PARKED %s on %s (group %s): dead-lettering failed %d times (%s); it is held back for %ss "
            "(docs/operating.md, Parked deliveries)",
            what,
            ctx.topic,
            ctx.group,
            failures,
            exc,
            PARK_DELAY,
        )
        await ctx.delivery.nack(delay=PARK_DELAY)
        ctx.runtime.failures.forget(ctx)
        _settled(ctx, "parked", error)
        return
    delay = FALLBACK_REDELIVERY if isinstance(exc, _NoDestination) else min(FALLBACK_REDELIVERY, 2.0 ** (failures - 1))
    if isinstance(exc, _NoDestination):
        log.error("%s: the delivery comes back in %ss", exc, delay)
    else:
        log.error("dead-lettering %s from %s failed (%s); the delivery comes back in %ss", what, ctx.topic, exc, delay)
    await ctx.delivery.nack(delay=delay)
    _settled(ctx, "returned", error)


def _stub(ctx: Context, event: Event, error: BaseException | None, refused: Exception) -> Event:
    """A bounded, always-encodable stand-in for a dead letter that cannot be written as it is, with
    the dead-letter extensions the plugins put on the refused one."""
    reason = f"{error if error is not None else 'dead-lettered'}; the dead letter itself was refused: {refused}"
    limit = ctx.runtime.config.max_event_bytes
    if ctx.event is None:
        stub = undecodable_stub(ctx.delivery.raw, reason, limit)
    else:
        stub = oversize_stub(event, reason, limit)
    failure = {k: v for k, v in event.extensions.items() if k in DEAD_LETTER_EXTENSIONS}
    return stub.with_extensions(**failure) if failure else stub
