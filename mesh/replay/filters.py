"""Which events a replay takes: a time window, attribute filters, and the parsers the CLI uses.

The window applies to the event's ``time`` attribute (when it happened); an event without one
uses the time the broker or the archive took it. It is half open: ``since <= time < until``.

>>> f = EventFilter(types=("shop.order.*",), where=(("tenant", "acme"),))
>>> from mesh.event import Event
>>> f.matches(Event("shop.order.created", "/s", extensions={"tenant": "acme"}))
True
>>> parse_rate("500/s"), parse_rate("60/m")
(500.0, 1.0)
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from mesh.codecs.data import canonical, format_time
from mesh.config import parse_duration
from mesh.event import READ_NAME, Event, now
from mesh.replay.errors import BadReplayInput

__all__ = [
    "DEAD_LETTER_ALIASES",
    "EventFilter",
    "Window",
    "parse_rate",
    "parse_when",
    "parse_where",
]

DEAD_LETTER_ALIASES = {
    "error": "mesherrortype",
    "reason": "mesherror",
    "group": "meshgroup",
    "topic": "meshtopic",
    "attempts": "meshattempts",
    "redrive": "meshredrive",
}
"""Short names for the failure extensions in ``mesh dlq ... --where`` (``error=TimeoutError``)."""

_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(?:/\s*(s|sec|second|m|min|minute|h|hour))?\s*$")
_PER = {None: 1.0, "s": 1.0, "sec": 1.0, "second": 1.0, "m": 60.0, "min": 60.0, "minute": 60.0}
_PER |= {"h": 3600.0, "hour": 3600.0}
_GLOB = re.compile(r"[*?\[]")


def _is_glob(value: str) -> bool:
    return bool(_GLOB.search(value))


def parse_rate(text: str | float | None) -> float | None:
    """Events per second from ``500/s``, ``100/m``, ``10/h`` or a plain number (``None``: no limit)."""
    if text is None:
        return None
    if isinstance(text, int | float):
        rate = float(text)
    else:
        m = _RATE.match(text)
        if not m:
            raise BadReplayInput(f"not a rate: {text!r} (use e.g. 500/s, 100/m or 10/h)")
        rate = float(m.group(1)) / _PER[m.group(2)]
    if rate <= 0:
        raise BadReplayInput(f"a rate must be above zero, not {text!r}")
    return rate


def parse_when(text: str | datetime, *, reference: datetime | None = None) -> datetime:
    """A point in time from RFC 3339 (``2026-11-20T10:00Z``; no offset means UTC), ``now``, or a
    duration meaning that long ago (``2h``, ``7d``)."""
    if isinstance(text, datetime):
        return text if text.tzinfo else text.replace(tzinfo=UTC)
    value = text.strip()
    base = reference or now()
    if value.lower() == "now":
        return base
    try:
        return base - timedelta(seconds=parse_duration(value))
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise BadReplayInput(
            f"not a time: {text!r} (use RFC 3339 like 2026-11-20T10:00Z, 'now', or an age like 2h or 7d)"
        ) from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def parse_where(items: Iterable[str], aliases: Mapping[str, str] | None = None) -> tuple[tuple[str, str], ...]:
    """``name=value`` items (value may be a glob) to ``(attribute, value)`` pairs, aliases resolved."""
    out = []
    for item in items:
        name, sep, value = item.partition("=")
        name = name.strip().lower()
        if not sep or not name:
            raise BadReplayInput(f"--where takes name=value, not {item!r}")
        name = (aliases or {}).get(name, name)
        if not READ_NAME.match(name):
            raise BadReplayInput(f"--where {item!r}: {name!r} is not a CloudEvents attribute name")
        out.append((name, value))
    return tuple(out)


@dataclass(frozen=True, slots=True)
class Window:
    """``since <= time < until`` (either end open when ``None``)."""

    since: datetime | None = None
    until: datetime | None = None

    def __post_init__(self) -> None:
        for end in (self.since, self.until):
            if end is not None and end.tzinfo is None:
                raise BadReplayInput("window ends must be timezone-aware")
        if self.since is not None and self.until is not None and self.since >= self.until:
            raise BadReplayInput(
                f"empty window: --since {format_time(self.since)} is not before --until {format_time(self.until)}"
            )

    def contains(self, when: datetime) -> bool:
        """Whether a time is inside the window."""
        return (self.since is None or when >= self.since) and (self.until is None or when < self.until)

    def describe(self) -> str:
        """The window in words, for messages."""
        since = format_time(self.since) if self.since else "the beginning"
        until = format_time(self.until) if self.until else "now"
        return f"from {since} until {until}"

    def to_json(self) -> dict[str, Any]:
        return {
            "since": format_time(self.since) if self.since else None,
            "until": format_time(self.until) if self.until else None,
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> Window:
        since, until = doc.get("since"), doc.get("until")
        return cls(parse_when(since) if since else None, parse_when(until) if until else None)


def _match(pattern: str, value: Any) -> bool:
    if value is None:
        return False
    text = value if isinstance(value, str) else canonical(value)
    return fnmatch.fnmatchcase(text, pattern) if _is_glob(pattern) else text == pattern


@dataclass(frozen=True, slots=True)
class EventFilter:
    """Attribute filters, each a tuple of values or globs: an event must match one value of every
    non-empty tuple. ``where`` pairs may name any attribute or extension; pairs with the same name
    are alternatives, different names must all match."""

    types: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()
    subjects: tuple[str, ...] = ()
    where: tuple[tuple[str, str], ...] = ()

    def matches(self, event: Event) -> bool:
        """Whether the event passes every filter."""
        if self.types and not any(_match(p, event.type) for p in self.types):
            return False
        if self.sources and not any(_match(p, event.source) for p in self.sources):
            return False
        if self.subjects and not any(_match(p, event.subject) for p in self.subjects):
            return False
        for name, patterns in self.where_by_name().items():
            value = event.get(name)
            if not any(_match(p, value) for p in patterns):
                return False
        return True

    def where_by_name(self) -> dict[str, list[str]]:
        """``where`` grouped by attribute name."""
        out: dict[str, list[str]] = {}
        for name, value in self.where:
            out.setdefault(name, []).append(value)
        return out

    @staticmethod
    def exact(values: tuple[str, ...]) -> tuple[str, ...]:
        """The values when none is a glob (a database can filter on them), else ``()``."""
        return () if any(_is_glob(v) for v in values) else values

    def describe(self) -> str:
        """The filters in words, for messages."""
        parts = [f"type={'|'.join(self.types)}"] if self.types else []
        parts += [f"source={'|'.join(self.sources)}"] if self.sources else []
        parts += [f"subject={'|'.join(self.subjects)}"] if self.subjects else []
        parts += [f"{name}={value}" for name, value in self.where]
        return ", ".join(parts) or "no filter"

    def to_json(self) -> dict[str, Any]:
        return {
            "types": list(self.types),
            "sources": list(self.sources),
            "subjects": list(self.subjects),
            "where": [list(pair) for pair in self.where],
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> EventFilter:
        return cls(
            tuple(doc.get("types", ())),
            tuple(doc.get("sources", ())),
            tuple(doc.get("subjects", ())),
            tuple((str(n), str(v)) for n, v in doc.get("where", ())),
        )
