"""``mesh replay`` and ``mesh dlq``: a thin layer over :mod:`mesh.replay`.

Every error is one line and exit status 1 (2 for malformed arguments); nothing is sent when a
check fails. Output goes to stdout, the progress bar and warnings to stderr.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any, Literal, TypeVar

import click

from mesh.codecs.data import format_time
from mesh.errors import MeshError
from mesh.replay import (
    DEAD_LETTER_ALIASES,
    BadReplayInput,
    EventFilter,
    ReplayResult,
    ReplaySpec,
    Target,
    Tools,
    Window,
    new_name,
    open_tools,
    parse_rate,
    parse_when,
    parse_where,
)
from mesh.replay import dlq_output as view
from mesh.replay.dlq import DeadLetterEntry, DeadLetterSummary
from mesh.replay.targets import Sender

__all__ = ["dlq", "replay"]

T = TypeVar("T")
SOURCES = click.Choice(["auto", "archive", "broker"])
APP_ID = "mesh-replay"


@contextmanager
def _errors() -> Iterator[None]:
    try:
        yield
    except BadReplayInput as exc:
        raise click.UsageError(str(exc)) from exc
    except MeshError as exc:
        raise click.ClickException(str(exc)) from exc


class _Bar:
    """A rich progress bar on stderr."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("read {task.completed:,.0f}{task.fields[of]}"),
            TextColumn("sent {task.fields[sent]:,}"),
            TimeElapsedColumn(),
            console=Console(stderr=True),
        )
        self._task: Any = None
        self._sent = 0

    def start(self, description: str, total: int | None) -> None:
        self._progress.start()
        of = f" of ~{total:,}" if total is not None else ""
        self._task = self._progress.add_task(description, total=total, of=of, sent=0)

    def advance(self, read: int, sent: int) -> None:
        self._sent += sent
        self._progress.update(self._task, advance=read, sent=self._sent)

    def finish(self) -> None:
        self._progress.stop()


def _run(
    config: str | None,
    archive: str | None,
    state_dir: str | None,
    progress: bool | None,
    work: Callable[[Tools], Awaitable[T]],
) -> T:
    from mesh.app import App
    from mesh.cli_config import choose_config, memory_fallback_warning

    path = choose_config(config)
    if path is None:
        ctx = click.get_current_context(silent=True)
        memory_fallback_warning(ctx.command_path.removeprefix("mesh ") if ctx else "replay")
    config = None if path is None else str(path)
    show = sys.stderr.isatty() if progress is None else progress

    async def main() -> T:
        app = App(APP_ID, config=config)
        async with open_tools(app, archive_url=archive, state_dir=state_dir, progress=_Bar() if show else None) as t:
            return await work(t)

    with _errors():
        return asyncio.run(main())


def _duration(option: str, text: str) -> float:
    from mesh.config import parse_duration

    try:
        return parse_duration(text)
    except ValueError as exc:
        raise BadReplayInput(f"{option}: {exc}") from None


def _source(choice: str) -> Literal["archive", "broker"] | None:
    return None if choice == "auto" else ("archive" if choice == "archive" else "broker")


def _common(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Options every command has: the config, the archive and where state lives."""
    fn = click.option("--state-dir", type=click.Path(file_okay=False), help="Checkpoints without an archive.")(fn)
    fn = click.option("--archive", "archive", metavar="URL", help="Archive URL (default: from the config).")(fn)
    return click.option("--config", "-c", "config", type=click.Path(dir_okay=False), help="Config file.")(fn)


def _warn_corrupt(corrupt: list[str], count: int) -> None:
    if count:
        click.echo(f"warning: {count} unreadable records skipped:", err=True)
        for line in corrupt:
            click.echo(f"  {line}", err=True)


# -- mesh replay ---------------------------------------------------------------------------------


@click.command()
@click.option("--topic", "-t", help="Topic whose events to replay.")
@click.option("--since", help="Start of the window: RFC 3339 (2026-11-20T10:00Z) or an age (2h).")
@click.option("--until", help="End of the window (default: now).")
@click.option("--all", "everything", is_flag=True, help="No start: replay the whole history.")
@click.option("--type", "types", multiple=True, help="CloudEvent type (glob allowed); repeat for several.")
@click.option("--source", "sources", multiple=True, help="CloudEvent source (glob allowed).")
@click.option("--subject", "subjects", multiple=True, help="CloudEvent subject (glob allowed).")
@click.option("--where", "where", multiple=True, metavar="ATTR=VALUE", help="Any attribute or extension.")
@click.option("--to-group", help="Deliver to this subscription group of the topic only.")
@click.option("--to-topic", help="Publish to this topic instead.")
@click.option("--from", "origin", type=SOURCES, default="auto", show_default=True, help="Archive or broker history.")
@click.option("--rate", help="Most events per second: 500/s, 100/m.")
@click.option("--batch", type=click.IntRange(1, 100_000), default=100, show_default=True, help="Events per checkpoint.")
@click.option("--seek-margin", default="5m", show_default=True, help="Broker logs: read this much around the window.")
@click.option("--name", help="Replay name (checkpoint key, meshreplay value); default generated.")
@click.option("--dry-run", is_flag=True, help="Count matching events by type; send nothing.")
@click.option("--resume", metavar="NAME", help="Go on with an interrupted replay from its checkpoint.")
@click.option("--list", "list_", is_flag=True, help="List saved replays and their progress.")
@click.option("--progress/--no-progress", default=None, help="Progress bar (default: when stderr is a terminal).")
@_common
def replay(
    topic: str | None,
    since: str | None,
    until: str | None,
    everything: bool,
    types: tuple[str, ...],
    sources: tuple[str, ...],
    subjects: tuple[str, ...],
    where: tuple[str, ...],
    to_group: str | None,
    to_topic: str | None,
    origin: str,
    rate: str | None,
    batch: int,
    seek_margin: str,
    name: str | None,
    dry_run: bool,
    resume: str | None,
    list_: bool,
    progress: bool | None,
    config: str | None,
    archive: str | None,
    state_dir: str | None,
) -> None:
    """Send past events of a topic again, to the topic, another topic or one group only.

    \b
    mesh replay --topic orders --since 2026-11-20T10:00Z --until 2026-11-20T12:00Z \\
        --type shop.order.created --to-group billing --dry-run
    mesh replay ... --rate 500/s --name rebill      # checkpoint after every batch
    mesh replay --resume rebill                     # after an interruption
    """
    if list_:
        _run(config, archive, state_dir, False, _print_replays)
        return
    if resume:
        if topic or since or until or types or sources or subjects or where or to_group or to_topic or dry_run:
            raise click.UsageError("--resume takes the replay's saved settings: give only --rate or --progress")
        rate_value = parse_rate(rate) if rate else None
        result = _run(
            config,
            archive,
            state_dir,
            progress,
            lambda t: t.replayer.resume(resume, rate=rate_value if rate else "saved"),
        )
        _report(result, None)
        return
    if not topic:
        raise click.UsageError("give --topic (or --resume NAME, or --list)")
    if to_group and to_topic:
        raise click.UsageError("--to-group and --to-topic exclude each other")
    if not since and not everything:
        raise click.UsageError("give --since (a time, or an age like 2h) or --all for the whole history")
    with _errors():
        start = parse_when(since) if since else None
        window = Window(start, parse_when(until) if until else parse_when("now"))
        target = Target.group(to_group) if to_group else Target.topic(to_topic) if to_topic else Target.original()
        spec = ReplaySpec(  # validated now; the source is settled once the archive is known
            topic,
            name=name or new_name(),
            window=window,
            filter=EventFilter(types, sources, subjects, parse_where(where)),
            target=target,
            batch=batch,
            rate=parse_rate(rate),
            seek_margin=_duration("--seek-margin", seek_margin),
        )

    async def work(t: Tools) -> ReplayResult:
        chosen = _source(origin) or ("archive" if t.archive is not None else "broker")
        final = ReplaySpec.from_json({**spec.to_json(), "source": chosen})
        replayer = t.replayer
        if final.target.kind == "group":  # the dry run refuses an unknown group too, checked as the run does
            await replayer.check_topic(replayer.source(final.source, final.seek_margin), final.topic)
            await Sender(t.app.runtime, final.target, final.topic).check()
        if dry_run:
            return await replayer.dry_run(final)
        click.echo(f"replay {final.name}: if interrupted, go on with: mesh replay --resume {final.name}", err=True)
        return await replayer.run(final)

    result = _run(config, archive, state_dir, progress, work)
    _report(result, spec)


def _report(result: ReplayResult, spec: ReplaySpec | None) -> None:
    _warn_corrupt(result.corrupt, result.corrupt_count)
    for why, n in result.skipped.items():
        click.echo(f"note: {n} events left out ({why})", err=True)
    if result.dry_run:
        assert spec is not None
        click.echo(
            f"dry run: {result.matched} events on {spec.topic} {spec.window.describe()} "
            f"would go to {spec.target.describe(spec.topic)}"
        )
        width = max((len(t) for t in result.by_type), default=4)
        for type_, n in sorted(result.by_type.items(), key=lambda kv: (-kv[1], kv[0])):
            click.echo(f"  {type_:<{width}}  {n:>8,}")
        return
    if result.resumed and result.sent_now == 0 and result.finished and not result.batches:
        click.echo(f"replay {result.name} had already finished ({result.delivered} events sent)")
        return
    how = "resumed and finished" if result.resumed else "finished"
    click.echo(
        f"replay {result.name} {how}: {result.sent_now} events sent now, {result.delivered} in all "
        f"({result.batches} batches)"
    )


async def _print_replays(t: Tools) -> None:
    saved = await t.replayer.checkpoints()
    if not saved:
        click.echo(f"no saved replays ({t.state.describe()})")
        return
    for name, doc in sorted(saved.items(), key=lambda kv: str(kv[1].get("started", ""))):
        spec = doc.get("spec", {})
        state = "finished" if doc.get("done") else "unfinished"
        click.echo(
            f"{name}  {state}  {doc.get('delivered', 0)} sent  topic {spec.get('topic')}  "
            f"started {doc.get('started')}  updated {doc.get('updated')}"
        )


# -- mesh dlq ------------------------------------------------------------------------------------


@click.group()
def dlq() -> None:
    """Inspect, redrive and purge dead letters (TOPIC is the dead-letter topic, e.g. orders.dlq).

    \b
    mesh dlq list orders.dlq --ids             # each pending one: id, time, error, topic
    mesh dlq show orders.dlq                   # the newest; --skip 1 for the next, --id ID for one
    mesh dlq show orders.dlq --id ID --output json
    mesh dlq redrive orders.dlq --where error=TimeoutError --canary 10 --rate 100/s
    mesh dlq purge orders.dlq --older-than 7d

    --where takes any attribute; error, reason, group, topic, attempts and redrive stand for
    mesherrortype, mesherror, meshgroup, meshtopic, meshattempts and meshredrive.
    """


def _dlq_selection(since: str | None, until: str | None, where: tuple[str, ...]) -> tuple[Window, EventFilter]:
    """The dead-lettered-at window and the --where filter of a dlq command."""
    window = Window(parse_when(since) if since else None, parse_when(until) if until else None)
    return window, EventFilter(where=parse_where(where, DEAD_LETTER_ALIASES))


def _dlq_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    fn = click.option("--where", "where", multiple=True, metavar="ATTR=VALUE", help="error=TimeoutError, ...")(fn)
    fn = click.option("--from", "origin", type=SOURCES, default="auto", show_default=True, help="Where to read.")(fn)
    return _common(fn)


OUTPUT = click.Choice(["text", "json"])


def _output(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--output", "-o", "output", type=OUTPUT, default="text", show_default=True, help="json: one JSON document."
    )(fn)


@dlq.command("list")
@click.argument("topic")
@click.option("--since", help="Dead-lettered at or after (time or age).")
@click.option("--until", help="Dead-lettered before (time or age).")
@click.option("--ids", is_flag=True, help="Also list each one, newest first: id, time, error, topic.")
@click.option("--limit", type=click.IntRange(1), default=50, show_default=True, help="Most dead letters --ids lists.")
@_output
@_dlq_options
def dlq_list(
    topic: str,
    since: str | None,
    until: str | None,
    ids: bool,
    limit: int,
    output: str,
    where: tuple[str, ...],
    origin: str,
    config: str | None,
    archive: str | None,
    state_dir: str | None,
) -> None:
    """Pending dead letters of TOPIC by error type, with the oldest and newest (--ids: each one)."""
    with _errors():
        window, filter = _dlq_selection(since, until, where)

    async def work(t: Tools) -> tuple[DeadLetterSummary, list[DeadLetterEntry]]:
        dead_letters = t.dead_letters(topic, _source(origin))
        summary = await dead_letters.summary(window, filter)
        return summary, (await view.list_entries(dead_letters, window, filter) if ids else [])

    summary, entries = _run(config, archive, state_dir, False, work)
    if output == "json":
        doc = view.summary_doc(summary)
        if ids:
            doc["dead_letters"] = [view.row(e) for e in entries[:limit]]
        click.echo(view.dumps(doc))
        return
    _warn_corrupt(summary.corrupt, len(summary.corrupt))
    view.print_summary(summary)
    if ids and summary.total:
        click.echo()
        view.print_table(view.console(), entries[:limit])
        if len(entries) > limit:
            click.echo(f"  ... {len(entries) - limit} older not shown (--limit {len(entries)} shows all)")


@dlq.command("show")
@click.argument("topic")
@click.option("--id", "event_id", help="The event id (default: page through the pending ones, newest first).")
@click.option("--skip", type=click.IntRange(0), default=0, show_default=True, help="Without --id: skip the newest N.")
@click.option("--limit", type=click.IntRange(1), default=1, show_default=True, help="Without --id: show N.")
@_output
@_dlq_options
def dlq_show(
    topic: str,
    event_id: str | None,
    skip: int,
    limit: int,
    output: str,
    where: tuple[str, ...],
    origin: str,
    config: str | None,
    archive: str | None,
    state_dir: str | None,
) -> None:
    """Print dead letters: the one(s) with --id, else the newest pending (--skip N --limit M to page)."""
    with _errors():
        _, filter = _dlq_selection(None, None, where)

    async def work(t: Tools) -> list[DeadLetterEntry]:
        dead_letters = t.dead_letters(topic, _source(origin))
        if event_id is not None:
            return [e for e in await dead_letters.show(event_id) if filter.matches(e.event)]
        return await view.list_entries(dead_letters, Window(), filter)

    entries = _run(config, archive, state_dir, False, work)
    if event_id is not None and not entries:
        raise click.ClickException(f"no dead letter with id {event_id!r} on {topic!r}")
    page = entries if event_id is not None else entries[skip : skip + limit]
    if output == "json":
        doc: dict[str, Any] = {"topic": topic, "dead_letters": [view.entry_doc(e) for e in page]}
        if event_id is None:
            doc |= {"pending": len(entries), "skip": skip}
        click.echo(view.dumps(doc))
        return
    if not page:
        beyond = f" after skipping {skip}" if entries else ""
        click.echo(f"{topic}: no pending dead letters{beyond} ({len(entries)} pending)")
        return
    view.print_entries(view.console(), page, first=skip + 1, of=None if event_id is not None else len(entries))
    if event_id is None and skip + len(page) < len(entries):
        more = f" --limit {limit}" if limit > 1 else ""
        click.echo(f"next: mesh dlq show {topic} --skip {skip + len(page)}{more}")


@dlq.command("redrive")
@click.argument("topic")
@click.option("--to", "to", help="Send every event to this topic (default: each one's original topic).")
@click.option("--since", help="Dead-lettered at or after (time or age).")
@click.option("--until", help="Dead-lettered before (time or age).")
@click.option("--canary", type=click.IntRange(0), default=10, show_default=True, help="Events sent first, alone.")
@click.option("--canary-wait", default="10s", show_default=True, help="How long canary events must stay away.")
@click.option("--rate", help="Most events per second: 100/s.")
@click.option(
    "--max-redrives", type=click.IntRange(1), default=3, show_default=True, help="Skip events redriven this often."
)
@click.option("--batch", type=click.IntRange(1, 100_000), default=100, show_default=True, help="Events per mark.")
@click.option("--name", help="Redrive name (meshreplay value); default generated.")
@click.option("--dry-run", is_flag=True, help="Count what would be redriven; send nothing.")
@click.option("--progress/--no-progress", default=None, help="Progress (default: when stderr is a terminal).")
@_dlq_options
def dlq_redrive(
    topic: str,
    to: str | None,
    since: str | None,
    until: str | None,
    canary: int,
    canary_wait: str,
    rate: str | None,
    max_redrives: int,
    batch: int,
    name: str | None,
    dry_run: bool,
    progress: bool | None,
    where: tuple[str, ...],
    origin: str,
    config: str | None,
    archive: str | None,
    state_dir: str | None,
) -> None:
    """Send pending dead letters of TOPIC back, canary first, at a rate."""
    with _errors():
        window, filter = _dlq_selection(since, until, where)
        per_second = parse_rate(rate)
        wait = _duration("--canary-wait", canary_wait)
        target = Target.origin(to)  # checks the name

    def work(t: Tools) -> Any:
        return t.dead_letters(topic, _source(origin)).redrive(
            to=target.name,
            window=window,
            filter=filter,
            canary=canary,
            canary_wait=wait,
            rate=per_second,
            max_redrives=max_redrives,
            name=name,
            batch=batch,
            dry_run=dry_run,
        )

    result = _run(config, archive, state_dir, progress, work)
    _warn_corrupt(result.corrupt, len(result.corrupt))
    for why, n in result.skipped.items():
        click.echo(f"note: {n} dead letters left out ({why})", err=True)
    destinations = ", ".join(f"{t} ({n})" for t, n in result.by_destination.most_common())
    if dry_run:
        click.echo(f"dry run: {result.sent} dead letters on {topic} would be redriven to {destinations}")
    else:
        canary_note = f", canary of {result.canary} passed" if result.canary else ""
        click.echo(f"redrive {result.name}: {result.sent} dead letters sent to {destinations}{canary_note}")
    for error, n in result.by_error.most_common():
        click.echo(f"  {error}: {n}")


@dlq.command("purge")
@click.argument("topic")
@click.option("--older-than", required=True, help="Dead-lettered more than this long ago (7d, 12h) or before a time.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.option("--dry-run", is_flag=True, help="Count what would be purged.")
@_dlq_options
def dlq_purge(
    topic: str,
    older_than: str,
    yes: bool,
    dry_run: bool,
    where: tuple[str, ...],
    origin: str,
    config: str | None,
    archive: str | None,
    state_dir: str | None,
) -> None:
    """Delete pending dead letters of TOPIC dead-lettered before --older-than (asks first)."""
    with _errors():
        cutoff = parse_when(older_than)
        _, filter = _dlq_selection(None, None, where)
    when = format_time(cutoff)

    def confirm(n: int) -> bool:
        return yes or click.confirm(f"Delete {n} dead letters from {topic} dead-lettered before {when}?", abort=True)

    count = _run(
        config,
        archive,
        state_dir,
        False,
        lambda t: t.dead_letters(topic, _source(origin)).purge(
            older_than=cutoff, filter=filter, dry_run=dry_run, confirm=confirm
        ),
    )
    if dry_run:
        click.echo(f"dry run: {count} dead letters on {topic} dead-lettered before {when} would be purged")
    elif count:
        click.echo(f"purged {count} dead letters from {topic} (dead-lettered before {when})")
    else:
        click.echo(f"nothing purged from {topic} (dead-lettered before {when})")
