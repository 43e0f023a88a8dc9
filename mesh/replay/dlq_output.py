"""What ``mesh dlq list`` and ``mesh dlq show`` print: rich tables for people, one JSON document for scripts.

| command | ``--output text`` (default) | ``--output json``: one document on stdout |
|---|---|---|
| ``list`` | counts by error type | ``topic source pending done by_error by_origin unreadable`` |
| ``list --ids`` | the counts, then a table of rows | the same plus ``dead_letters``: rows, newest first |
| ``show`` | attributes as a table, then the data | ``topic dead_letters`` (+ ``pending skip`` without ``--id``) |

A row is ``{"id", "source", "type", "deadlettered", "at", "error", "reason", "topic", "group",
"attempts", "redrive"}`` (absent extensions are ``null``). Times are RFC 3339 in JSON and UTC to
the second in tables. Text is never read as rich markup (an event's ``[data]`` prints as is), and
output that is not a terminal is 200 columns wide so that ids are never folded.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import click
import orjson
from rich.console import Console
from rich.table import Table
from rich.text import Text

from mesh import extensions as ext
from mesh.codecs.data import format_time
from mesh.codecs.structured import to_dict
from mesh.event import Event
from mesh.replay.dlq import DeadLetterEntry, DeadLetters, DeadLetterSummary
from mesh.replay.filters import EventFilter, Window

__all__ = [
    "console",
    "dumps",
    "entry_doc",
    "list_entries",
    "print_entries",
    "print_summary",
    "print_table",
    "row",
    "summary_doc",
]

PIPE_WIDTH = 200
"""Columns of tables written to a file or a pipe (a terminal's own width is used on a terminal)."""

SHOWN = (
    ("error type", ext.ERROR_TYPE),
    ("reason", ext.ERROR),
    ("topic", ext.TOPIC),
    ("group", ext.GROUP),
    ("attempts", ext.ATTEMPTS),
    ("first failure", ext.FIRST_FAIL),
    ("last failure", ext.LAST_FAIL),
)
"""The failure extensions, in the order ``show`` prints them, with their labels."""


def console() -> Console:
    """A console on stdout that reads no markup, and does not fold lines written to a pipe."""
    out = Console(highlight=False, markup=False, emoji=False)
    if not out.is_terminal:
        out = Console(highlight=False, markup=False, emoji=False, width=PIPE_WIDTH)
    return out


def _emit(out: Console, *renderables: Any) -> None:
    """Print through ``out``, without the spaces rich pads a table's last column with."""
    with out.capture() as captured:
        for renderable in renderables:
            out.print(renderable)
    click.echo("\n".join(line.rstrip() for line in captured.get().splitlines()))


async def list_entries(
    dead_letters: DeadLetters, window: Window, filter: EventFilter, *, pending_only: bool = True
) -> list[DeadLetterEntry]:
    """The readable dead letters in ``window`` passing ``filter``, newest first (:meth:`DeadLetters.entries`)."""
    return await dead_letters.entries(window, filter, pending_only=pending_only)


def _ext(event: Event, name: str) -> Any:
    value = event.extensions.get(name)
    return value.isoformat() if isinstance(value, datetime) else value


def _short_time(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def row(entry: DeadLetterEntry) -> dict[str, Any]:
    """One dead letter as a flat JSON object (a row of ``list --ids``)."""
    event = entry.event
    return {
        "id": event.id,
        "source": event.source,
        "type": event.type,
        "deadlettered": format_time(entry.when),
        "at": entry.ref,
        "error": _ext(event, ext.ERROR_TYPE),
        "reason": _ext(event, ext.ERROR),
        "topic": _ext(event, ext.TOPIC),
        "group": _ext(event, ext.GROUP),
        "attempts": _ext(event, ext.ATTEMPTS),
        "redrive": _ext(event, ext.REDRIVE),
    }


def entry_doc(entry: DeadLetterEntry) -> dict[str, Any]:
    """One dead letter as ``show`` writes it in JSON: its state, when, where, and the whole event."""
    return {
        "state": entry.state,
        "deadlettered": format_time(entry.when),
        "at": entry.ref,
        "event": to_dict(entry.event),
    }


def summary_doc(summary: DeadLetterSummary) -> dict[str, Any]:
    """The counts of ``list`` as a JSON object."""
    return {
        "topic": summary.topic,
        "source": summary.source,
        "pending": summary.total,
        "done": summary.done,
        "by_error": {
            error: {
                "count": stats.count,
                "oldest": format_time(stats.oldest) if stats.oldest else None,
                "newest": format_time(stats.newest) if stats.newest else None,
            }
            for error, stats in sorted(summary.by_error.items(), key=lambda kv: (-kv[1].count, kv[0]))
        },
        "by_origin": dict(summary.by_origin.most_common()),
        "unreadable": list(summary.corrupt),
    }


def print_summary(summary: DeadLetterSummary) -> None:
    """``list`` for people: pending dead letters by error type, oldest and newest, and where they failed."""
    done = f" ({summary.done} already redriven or purged)" if summary.done else ""
    if not summary.total:
        click.echo(f"{summary.topic} ({summary.source}): no pending dead letters{done}")
        return
    click.echo(f"{summary.topic} ({summary.source}): {summary.total} pending dead letters{done}")
    width = max(10, *(len(e) for e in summary.by_error))
    click.echo(f"  {'error type':<{width}}  {'count':>7}  {'oldest':<27}  newest")
    for error, stats in sorted(summary.by_error.items(), key=lambda kv: (-kv[1].count, kv[0])):
        oldest = format_time(stats.oldest) if stats.oldest else "?"
        newest = format_time(stats.newest) if stats.newest else "?"
        click.echo(f"  {error:<{width}}  {stats.count:>7,}  {oldest:<27}  {newest}")
    origins = ", ".join(f"{t} ({n})" for t, n in summary.by_origin.most_common())
    click.echo(f"  from: {origins}")


def dumps(doc: Mapping[str, Any]) -> str:
    """A JSON document, indented (what every ``--output json`` prints)."""
    return orjson.dumps(doc, option=orjson.OPT_INDENT_2, default=str).decode()


def print_table(out: Console, entries: list[DeadLetterEntry]) -> None:
    """The ``list --ids`` table: one dead letter a line, ids whole."""
    table = Table(box=None, pad_edge=False, header_style="bold")
    table.add_column("id", no_wrap=True)
    table.add_column("dead-lettered (UTC)", no_wrap=True)
    table.add_column("error", no_wrap=True)
    table.add_column("topic [group]", no_wrap=True)
    table.add_column("attempts", justify="right", no_wrap=True)
    table.add_column("reason", no_wrap=True, overflow="ellipsis", max_width=60)
    for entry in entries:
        r = row(entry)
        where = f"{r['topic'] or '?'} [{r['group']}]" if r["group"] else str(r["topic"] or "?")
        cells = [r["id"], _short_time(entry.when), r["error"] or "?", where, r["attempts"], r["reason"] or ""]
        table.add_row(*(Text("" if c is None else str(c)) for c in cells))
    _emit(out, table)


def print_entries(out: Console, entries: list[DeadLetterEntry], *, first: int, of: int | None) -> None:
    """``show`` for people: each dead letter's attributes and failure as a table, then its data.

    ``first`` is the 1-based position of the first entry among ``of`` (``None``: entries of one id).
    """
    for n, entry in enumerate(entries, start=first):
        event = entry.event
        title = f"dead letter {n} of {of} (newest first)" if of is not None else f"dead letter {event.id}"
        grid = Table.grid(padding=(0, 2))
        grid.add_column(style="bold", no_wrap=True)
        grid.add_column(overflow="fold")
        doc = to_dict(event)
        data = doc.pop("data", None)
        data_base64 = doc.pop("data_base64", None)
        lines: list[tuple[str, Any]] = [
            ("id", event.id),
            ("type", event.type),
            ("source", event.source),
            ("state", entry.state),
            ("dead-lettered", format_time(entry.when)),
            ("at", entry.ref),
        ]
        lines += [(label, _ext(event, name)) for label, name in SHOWN if name in event.extensions]
        taken = {"specversion", "id", "type", "source", *(name for _, name in SHOWN)}
        lines += [(name, value) for name, value in doc.items() if name not in taken]
        for label, value in lines:
            grid.add_row(Text(label), Text(value if isinstance(value, str) else orjson.dumps(value).decode()))
        parts: list[Any] = [Text(title, style="bold underline"), grid]
        if data is not None:
            shown = data if isinstance(data, str) else orjson.dumps(data, option=orjson.OPT_INDENT_2).decode()
            parts += [Text("data:", style="bold"), Text(shown)]
        elif data_base64 is not None:
            parts += [Text("data (base64):", style="bold"), Text(str(data_base64))]
        _emit(out, *parts, "")
