"""The one consumer a broker's subscriptions of a group share: one member, one fetch loop, all topics.

An app consuming a thousand topics is one member of its group, not a thousand: a
:class:`GroupReader` owns one ``AIOKafkaConsumer`` subscribed to every topic (and retry topic) of
its subscriptions, fetches for all of them and hands each record to the subscription of its
topic (:meth:`~.consumer.KafkaSubscription.take`), whose own worker runs the handler:

=========================  ===================================================================
what                       how
=========================  ===================================================================
a subscription starts      its topics join the consumer's subscription; changes made together
                           (an app starting its subscriptions at once) are one rejoin
a subscription stops       its partitions are paused and committed; its topics leave the
                           subscription (a rebalance), the last one leaves the group
a busy handler             its subscription's partitions are paused (the others keep flowing)
                           until its queue is empty
a partition without a      (``initial_offset: latest``) its start, the end, is resolved and
commit                     committed before its subscription counts as assigned, see
                           :meth:`GroupReader.assigned`
a gap in a partition's     held until the missing records appear (``gap_wait_ms``, see
offsets                    :mod:`.gaps`), so a broker that shows a later batch first loses none
commits                    every acked offset of every subscription in one commit, every
                           ``commit_interval_ms`` and when idle; a rebalance commits what it
                           takes away
static membership          ``group_instance_id`` (``-1``, ``-2`` ... for further readers)
=========================  ===================================================================

Two subscriptions to one topic and group in one broker are two members: they get two readers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections.abc import Callable, Iterable
from typing import Any

from aiokafka import ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError

from mesh.brokers.kafka.connection import KafkaConnection, quietly, reason
from mesh.brokers.kafka.consumer import POLL_MS, KafkaSubscription
from mesh.brokers.kafka.gaps import GapCheck
from mesh.errors import BrokerConnectionError
from mesh.logs import log_connection_lost, log_reconnected

__all__ = ["RESUBSCRIBE_DELAY", "GroupReader", "wait_for_peers"]

log = logging.getLogger("mesh.broker.kafka")

RESUBSCRIBE_DELAY = 0.05
"""Seconds the reader waits after a subscription comes or goes before it changes the consumer's
topics, so subscriptions starting or stopping together cost one rejoin."""

_GONE = (KafkaError, AssertionError)
"""What aiokafka raises for a partition no longer assigned (``IllegalStateError``, or an assert
while it has no assignment at all): "nothing to do" for pause, resume and commit."""


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    """Tells the reader when the group takes partitions away and hands them out."""

    def __init__(self, reader: GroupReader) -> None:
        self._reader = reader

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self._reader.revoked(revoked)

    async def on_partitions_assigned(self, assigned: Any) -> None:
        await self._reader.assigned(assigned)


class GroupReader:
    """One member of ``group`` reading the topics of many subscriptions (see the module docstring).

    ``on_idle`` is called with the reader once its last subscription left and it left the group.
    """

    def __init__(
        self,
        conn: KafkaConnection,
        group: str,
        instance_id: str | None,
        on_idle: Callable[[GroupReader], None],
    ) -> None:
        o = conn.settings
        self.group = group
        self._conn = conn
        self._consumer = conn.consumer(
            group_id=group,
            group_instance_id=instance_id,
            enable_auto_commit=False,
            auto_offset_reset=o.initial_offset,
            fetch_max_wait_ms=o.fetch_max_wait_ms,
            max_poll_records=o.max_poll_records,
            session_timeout_ms=o.session_timeout_ms,
            heartbeat_interval_ms=o.heartbeat_interval_ms,
            max_poll_interval_ms=o.max_poll_interval_ms,
            rebalance_timeout_ms=o.rebalance_timeout_ms,
        )
        self._gaps = GapCheck.of(self._consumer, o.gap_wait_ms)
        self._on_idle = on_idle
        self.lanes: dict[str, KafkaSubscription] = {}
        """Subscriptions by the Kafka topics they read (their topic and their retry topic)."""
        self._started: asyncio.Task[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._resubscribe: asyncio.TimerHandle | None = None
        self._changing: asyncio.Task[None] | None = None
        self._assigned = asyncio.Event()
        self._closed = False
        self._lost = False
        self._commit_every = o.commit_interval_ms / 1000
        self._last_commit = 0.0
        self._pin = o.initial_offset == "latest"
        self._pinned: set[TopicPartition] = set()
        """Partitions whose start this member committed (:meth:`_pin_start`)."""

    # -- membership ------------------------------------------------------------------------------

    def has_room(self, topic: str) -> bool:
        """Whether a subscription to ``topic`` can join (this reader does not read it yet)."""
        return not self._closed and topic not in self.lanes

    async def add(self, sub: KafkaSubscription) -> None:
        """Start the consumer if needed; read ``sub``'s topics from the next rejoin on."""
        for name in sub.topics:
            self.lanes[name] = sub
        if self._started is None:
            self._started = asyncio.get_running_loop().create_task(self._start())
        try:
            await asyncio.shield(self._started)
        except BaseException:
            for name in sub.topics:
                self.lanes.pop(name, None)
            raise
        self._schedule(0.0)

    async def _start(self) -> None:
        conn, o = self._conn, self._conn.settings
        try:
            async with asyncio.timeout(o.connect_timeout):
                await self._consumer.start()  # connects only: it is not subscribed yet
        except (KafkaError, OSError, TimeoutError) as exc:
            self._closed = True
            await quietly(self._consumer.stop())
            self._on_idle(self)
            raise BrokerConnectionError("kafka", conn.address, reason(exc, o.connect_timeout)) from exc
        self._task = asyncio.get_running_loop().create_task(self._loop(), name=f"mesh-kafka:{self.group}")

    def _schedule(self, delay: float) -> None:
        if self._resubscribe is not None:
            self._resubscribe.cancel()
        self._resubscribe = asyncio.get_running_loop().call_later(
            max(delay, RESUBSCRIBE_DELAY), self._update_subscription
        )

    def _update_subscription(self) -> None:
        self._resubscribe = None
        if not self._closed and self.lanes and set(self.lanes) != self._consumer.subscription():
            self._changing = asyncio.get_running_loop().create_task(self._change_topics())

    async def _change_topics(self) -> None:
        """Commit what was acked, then read the topics of the current subscriptions: once the
        consumer's topics change, the rebalance that follows can no longer commit (aiokafka
        refuses offsets of a subscription without an assignment)."""
        await self.commit_all()
        topics = set(self.lanes)
        if not self._closed and topics and topics != self._consumer.subscription():
            self._consumer.subscribe(sorted(topics), listener=_Listener(self))  # rejoins in the background

    def pause(self, tps: Iterable[TopicPartition]) -> None:
        """Stop fetching these partitions (a busy or stopping subscription, a retry not yet due)."""
        with contextlib.suppress(*_GONE):
            self._consumer.pause(*tps)

    def resume(self, tps: Iterable[TopicPartition]) -> None:
        """Fetch these partitions again."""
        with contextlib.suppress(*_GONE):
            self._consumer.resume(*tps)

    def seek(self, tp: TopicPartition, offset: int) -> None:
        """Fetch ``tp`` from ``offset`` next."""
        self._consumer.seek(tp, offset)
        self._gaps.forget([tp])

    @property
    def failed(self) -> bool:
        """Whether the fetch loop ended (an error, not a stop)."""
        return self._task is not None and self._task.done() and not self._closed

    @property
    def is_assigned(self) -> asyncio.Event:
        """Set while the group has given this member its partitions (cleared during a rebalance)."""
        return self._assigned

    @property
    def running(self) -> bool:
        """Whether the member still consumes."""
        return not self._closed

    async def remove(self, sub: KafkaSubscription) -> None:
        """``sub`` stopped (its offsets committed): its topics leave; the last one ends the member."""
        for name in sub.topics:
            if self.lanes.get(name) is sub:
                del self.lanes[name]
        if self.lanes:
            self._schedule(RESUBSCRIBE_DELAY)
            return
        await self.close()

    async def close(self) -> None:
        """Leave the group (uncommitted records go back to it)."""
        if self._closed:
            return
        self._closed = True
        if self._resubscribe is not None:
            self._resubscribe.cancel()
        if self._changing is not None:
            self._changing.cancel()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.commit_all()
        await quietly(self._consumer.stop())
        self._on_idle(self)

    # -- the fetch loop --------------------------------------------------------------------------

    async def _loop(self) -> None:
        consumer = self._consumer
        admit = self._gaps.admit
        loop = asyncio.get_running_loop()
        while not self._closed:
            if not consumer.subscription():
                await asyncio.sleep(POLL_MS / 1000)  # the first topics are on their way
                continue
            try:
                batch = await consumer.getmany(timeout_ms=POLL_MS)
            except KafkaError as exc:
                if not self._lost:  # one line per outage, then one when fetching works again
                    self._lost = True
                    log_connection_lost("kafka", self._conn.address, f"fetch for group {self.group} failed: {exc}")
                await asyncio.sleep(0.5)
                continue
            except Exception:  # keep consuming whatever the client throws
                log.exception("kafka fetch for group %s failed unexpectedly, retrying", self.group)
                await asyncio.sleep(0.5)
                continue
            if self._lost:
                self._lost = False
                log_reconnected("kafka", self._conn.address)
            lanes = self.lanes
            for tp, records in batch.items():
                sub = lanes.get(tp.topic)
                if sub is not None:
                    sub.take(tp, admit(tp, records))
            if not batch or loop.time() - self._last_commit >= self._commit_every:
                await self.commit_all()

    # -- commits and rebalances ------------------------------------------------------------------

    async def commit(self, offsets: dict[TopicPartition, int]) -> bool:
        """Commit ``offsets``; False (logged) when Kafka refused (the records come again later)."""
        if not offsets:
            return True
        try:
            await self._consumer.commit(offsets)
        except _GONE as exc:
            log.info("kafka commit for group %s failed (redelivered later): %s", self.group, exc)
            return False
        return True

    async def commit_all(self) -> None:
        """Commit what every subscription acked since the last commit, in one request."""
        self._last_commit = asyncio.get_running_loop().time()
        subs = {id(sub): sub for sub in self.lanes.values()}.values()
        offsets: dict[TopicPartition, int] = {}
        for sub in subs:
            offsets.update(sub.committable())
        if offsets and await self.commit(offsets):
            for sub in subs:
                sub.committed(offsets)

    async def revoked(self, revoked: Any) -> None:
        """A rebalance takes partitions away: each subscription commits and forgets its own."""
        self._assigned.clear()
        self._gaps.forget(list(revoked))
        by_sub: dict[int, tuple[KafkaSubscription, list[TopicPartition]]] = {}
        for tp in revoked:
            sub = self.lanes.get(tp.topic)
            if sub is not None:
                by_sub.setdefault(id(sub), (sub, []))[1].append(tp)
        for sub, tps in by_sub.values():
            await sub.revoked(tps)

    async def assigned(self, assigned: Any) -> None:
        """The group handed out partitions: each subscription tracks its own from scratch.

        With ``initial_offset: latest``, partitions first seen get their start resolved and
        committed first (:meth:`_pin_start`): an event published once ``subscribe`` returned is
        read, and a rebalance before the first commit does not move the start on to the new end.
        """
        subscribed = self._consumer.subscription()
        self._gaps.forget(list(assigned))
        if not await self._pin_start(list(assigned)):
            return  # the subscription changed meanwhile: the next assignment follows
        by_sub: dict[int, tuple[KafkaSubscription, list[TopicPartition]]] = {}
        for sub in self.lanes.values():
            if sub.name in subscribed:
                by_sub.setdefault(id(sub), (sub, []))
        for tp in assigned:
            owner = self.lanes.get(tp.topic)
            if owner is not None:
                by_sub.setdefault(id(owner), (owner, []))[1].append(tp)
        for lane, tps in by_sub.values():
            lane.assigned(tps)
        self._assigned.set()

    async def _pin_start(self, assigned: list[TopicPartition]) -> bool:
        """Resolve and commit where the ``assigned`` partitions this member has not seen yet
        start (only with ``initial_offset: latest``); False when they were taken away meanwhile.

        aiokafka resolves a partition without a commit at its first fetch, after the caller of
        ``subscribe`` may have published, and again at every rebalance. Every assigned partition
        stays paused until its subscription tracks it (:meth:`assigned` does that next, without
        waiting in between), so no record fetched meanwhile is dropped. A start not resolved
        within ``join_timeout`` is left to aiokafka (logged).
        """
        fresh = [tp for tp in assigned if tp not in self._pinned]
        if not self._pin or not fresh:
            return True
        consumer = self._consumer
        self.pause(assigned)
        try:
            async with asyncio.timeout(self._conn.settings.join_timeout):
                starts = {tp: await consumer.position(tp) for tp in fresh}  # one reset resolves them all
            for tp, start in starts.items():
                self._gaps.expect(tp, start)  # a gap in the very first records is held too
            if await self.commit(starts):
                self._pinned.update(fresh)
        except _GONE:
            return False
        except TimeoutError:
            log.warning("kafka group %s: the start of %d new partitions is not known yet", self.group, len(fresh))
        finally:
            self.resume(assigned)
        return True


async def wait_for_peers(reader: GroupReader, members: weakref.WeakSet[GroupReader], limit: float) -> None:
    """A new member makes the group rebalance: wait until this process's other members of the
    group have their partitions back, so a group is ready when ``subscribe`` returns. (Every
    member revoked before this one got its assignment, so none is missed.)"""
    peers = [m.is_assigned.wait() for m in members if m is not reader and m.running]
    if peers:
        try:
            await asyncio.wait_for(asyncio.gather(*peers), limit)
        except TimeoutError:
            log.warning("kafka group %s: other members got no partitions within %gs", reader.group, limit)
