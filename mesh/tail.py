"""``mesh tail``: watch a topic live, without joining any group, and optionally from a while ago.

The live part is an ephemeral subscription (no group is joined, nothing durable is left behind,
the apps' groups never see a difference). ``--since`` first prints what the broker's log (or the
archive) holds from that time on, then goes on live; an event seen in both is printed once.

========== ======================================== ===========================================
broker     live view                                ``--since`` from
========== ======================================== ===========================================
memory     a throw-away group from the end          the topic log
kafka      a group-less consumer from the end       the log (``offsets_for_times``)
rabbitmq   an exclusive auto-delete queue bound     a stream topic (``stream_topics``), else
           to the topic's exchange                  the archive
nats       a core subscription on the subject       the archive
jetstream  a core subscription on the subject       the stream
redis      ``XREAD`` from the stream's end          the stream (``XRANGE``)
========== ======================================== ===========================================

Filters are those of ``mesh replay`` (:class:`~mesh.replay.filters.EventFilter`). Ctrl-C ends it
with exit status 0.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import datetime
from typing import Any

from mesh.archive import ArchiveStore
from mesh.brokers.base import Broker, Delivery, DeliveryHandler, Subscription
from mesh.brokers.capabilities import keeps_history
from mesh.errors import FeatureNotSupported
from mesh.event import Event
from mesh.replay.filters import EventFilter, Window
from mesh.replay.sources import ArchiveSource, BrokerSource, Source

__all__ = ["history_source", "subscribe_tap", "tail", "tail_command"]


async def subscribe_tap(broker: Broker, topic: str, handler: DeliveryHandler) -> Subscription:
    """An ephemeral, group-less subscription that sees what ordinary :meth:`Broker.publish` sends.

    RabbitMQ keeps ephemeral traffic on its own exchange, so there the tap is an exclusive queue
    bound to the topic's exchange instead; every other adapter's ephemeral subscription reads the
    topic itself."""
    if broker.type == "rabbitmq":
        from mesh.tail_rabbitmq import subscribe_rabbitmq_tap

        return await subscribe_rabbitmq_tap(broker, topic, handler)
    return await broker.subscribe_ephemeral(topic, handler)


def history_source(broker: Broker, topic: str, archive: ArchiveStore | None) -> Source:
    """Where ``--since`` reads from: the broker's log of ``topic``, else the archive."""
    if keeps_history(broker, topic):
        return BrokerSource(broker)
    if archive is not None:
        return ArchiveSource(archive)
    raise FeatureNotSupported(
        broker.type,
        f"--since on {topic!r} (the broker keeps no log of it)",
        "record events with the archive plugin (plugins.config.archive) or tail without --since",
    )


async def tail(
    broker: Broker,
    topic: str,
    emit: Callable[[Event], Any],
    *,
    filter: EventFilter | None = None,
    since: datetime | None = None,
    archive: ArchiveStore | None = None,
    stop: asyncio.Event | None = None,
    live: asyncio.Event | None = None,
) -> int:
    """Call ``emit`` for each matching event of ``topic`` (from ``since``, then live) until
    ``stop`` is set; returns how many were emitted. ``live`` is set once the live view is on."""
    filter = filter or EventFilter()
    stop = stop or asyncio.Event()
    arrived: asyncio.Queue[Event] = asyncio.Queue()

    async def on(delivery: Delivery) -> None:
        await delivery.ack()
        if delivery.event is not None:
            arrived.put_nowait(delivery.event)

    sub = await subscribe_tap(broker, topic, on)  # first: nothing falls between history and live
    count = 0
    seen: set[tuple[str, str]] = set()
    try:
        if since is not None:
            window = Window(since, None)
            async for page in history_source(broker, topic, archive).records(topic, window, filter, None, 500):
                for record in page:
                    event = record.event
                    if event is None or not window.contains(record.time()) or not filter.matches(event):
                        continue
                    seen.add((event.source, event.id))
                    emit(event)
                    count += 1
        if live is not None:
            live.set()
        waiter = asyncio.ensure_future(stop.wait())
        try:
            while not stop.is_set():
                getter = asyncio.ensure_future(arrived.get())
                await asyncio.wait({getter, waiter}, return_when=asyncio.FIRST_COMPLETED)
                if not getter.done():
                    getter.cancel()
                    break
                event = getter.result()
                if seen and (event.source, event.id) in seen:
                    continue
                if filter.matches(event):
                    emit(event)
                    count += 1
        finally:
            waiter.cancel()
    finally:
        with contextlib.suppress(Exception):
            await sub.stop(drain=False)
    return count


# -- the command ---------------------------------------------------------------------------------


def _line(event: Event) -> str:
    """One event as a short line: time, type, source, subject, id and the data."""
    import orjson

    from mesh.codecs.data import format_time

    data = event.data
    if hasattr(data, "model_dump"):
        data = data.model_dump(mode="json")
    if isinstance(data, bytes):
        shown = f"<{len(data)} bytes>"
    else:
        try:
            shown = orjson.dumps(data).decode()
        except TypeError:
            shown = repr(data)
    if len(shown) > 200:
        shown = shown[:197] + "..."
    when = format_time(event.time) if event.time else "-"
    subject = f" [{event.subject}]" if event.subject else ""
    return f"{when}  {event.type}  {event.source}{subject}  id={event.id}  {shown}"


def _json(event: Event) -> str:
    from mesh.codecs.structured import to_structured

    return to_structured(event).decode()


def _command() -> Any:
    import click

    @click.command("tail")
    @click.argument("topic")
    @click.option("--type", "types", multiple=True, help="CloudEvent type (glob allowed); repeat for several.")
    @click.option("--source", "sources", multiple=True, help="CloudEvent source (glob allowed).")
    @click.option("--subject", "subjects", multiple=True, help="CloudEvent subject (glob allowed).")
    @click.option("--where", "where", multiple=True, metavar="ATTR=VALUE", help="Any attribute or extension.")
    @click.option("--since", help="Show events from this long ago (10m) or time (RFC 3339) first.")
    @click.option("--output", "-o", type=click.Choice(["text", "json"]), default="text", show_default=True,
                  help="json: one structured CloudEvent per line.")
    @click.option("--archive", "archive_url", metavar="URL", help="Archive for --since (default: from the config).")
    @click.option("--config", "-c", "config", type=click.Path(dir_okay=False), help="Config file.")
    def tail_cmd(
        topic: str,
        types: tuple[str, ...],
        sources: tuple[str, ...],
        subjects: tuple[str, ...],
        where: tuple[str, ...],
        since: str | None,
        output: str,
        archive_url: str | None,
        config: str | None,
    ) -> None:
        """Print TOPIC's events as they arrive (joining no group); Ctrl-C ends it."""
        import signal
        import sys

        from mesh.app import App
        from mesh.archive import archive_settings, open_archive
        from mesh.cli_config import choose_config
        from mesh.errors import MeshError
        from mesh.replay.filters import parse_when, parse_where

        write = _json if output == "json" else _line

        def emit(event: Event) -> None:
            click.echo(write(event))
            sys.stdout.flush()

        async def main() -> int:
            path = choose_config(config)
            app = App("mesh-tail", config=None if path is None else str(path))
            settings = archive_settings(app.config, recording=False)
            url = archive_url or (settings.url if settings is not None else None)
            store = open_archive(url, settings.table if settings else "mesh_archive") if url and since else None
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            live = asyncio.Event()
            async def say_live() -> None:
                await live.wait()
                click.echo(f"mesh: tailing {topic} on {app.config.broker.type}; Ctrl-C ends", err=True)
            try:
                if store is not None:
                    await store.open()
                async with app:
                    announce = asyncio.ensure_future(say_live())
                    try:
                        filt = EventFilter(types, sources, subjects, parse_where(where))
                        when = parse_when(since) if since else None
                        return await tail(
                            app.broker, topic, emit, filter=filt, since=when, archive=store, stop=stop, live=live
                        )
                    finally:
                        announce.cancel()
            finally:
                if store is not None:
                    await store.close()
                for sig in (signal.SIGINT, signal.SIGTERM):
                    loop.remove_signal_handler(sig)

        try:
            count = asyncio.run(main())
        except MeshError as exc:
            raise click.ClickException(str(exc)) from exc
        click.echo(f"mesh: {count} event(s) shown", err=True)

    return tail_cmd


tail_command = _command()
"""The ``mesh tail`` click command (mounted by :mod:`mesh.cli`)."""
