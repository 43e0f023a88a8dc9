"""Parsers and filters of replay (no broker), and the doctests of the replay and archive modules."""

from __future__ import annotations

import doctest
import importlib
from datetime import UTC, datetime, timedelta

import pytest

from mesh.event import Event, now
from mesh.replay import DEAD_LETTER_ALIASES, BadReplayInput, EventFilter, Window, parse_rate, parse_when, parse_where


def test_rates() -> None:
    assert parse_rate("500/s") == 500 and parse_rate("120/m") == 2 and parse_rate("3600/h") == 1
    assert parse_rate("7") == 7 and parse_rate(2.5) == 2.5 and parse_rate(None) is None
    for bad in ("fast", "0/s", "-1", "5/d"):
        with pytest.raises(BadReplayInput):
            parse_rate(bad)


def test_times() -> None:
    assert parse_when("2026-11-20T10:00Z") == datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
    assert parse_when("2026-11-20T10:00") == datetime(2026, 11, 20, 10, 0, tzinfo=UTC), "no offset: UTC"
    assert parse_when("2026-11-20T11:00+01:00") == datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
    ref = now()
    assert parse_when("2h", reference=ref) == ref - timedelta(hours=2)
    assert parse_when("now", reference=ref) == ref
    with pytest.raises(BadReplayInput, match="not a time"):
        parse_when("last tuesday")


def test_where_and_aliases() -> None:
    assert parse_where(["tenant=acme", "Type=a=b"]) == (("tenant", "acme"), ("type", "a=b"))
    assert parse_where(["error=TimeoutError"], DEAD_LETTER_ALIASES) == (("mesherrortype", "TimeoutError"),)
    for bad in ("tenant", "=x", "bad name=1"):
        with pytest.raises(BadReplayInput):
            parse_where([bad])


def test_window() -> None:
    t = now()
    w = Window(t, t + timedelta(seconds=1))
    assert w.contains(t) and not w.contains(t + timedelta(seconds=1)), "half open"
    assert Window().contains(t)
    with pytest.raises(BadReplayInput, match="empty window"):
        Window(t, t)
    assert Window.from_json(w.to_json()) == w


def test_filter_values_globs_and_canonical_forms() -> None:
    e = Event("shop.order.created", "/shop", subject="A1", extensions={"tries": 3, "vip": True})
    assert EventFilter(types=("shop.*",), subjects=("A1",)).matches(e)
    assert not EventFilter(sources=("/billing",)).matches(e)
    assert EventFilter(where=(("tries", "3"), ("vip", "true"))).matches(e), "compared as canonical strings"
    assert not EventFilter(where=(("missing", "*"),)).matches(e), "an absent attribute matches nothing"
    assert EventFilter.exact(("a", "b")) == ("a", "b") and EventFilter.exact(("a*",)) == ()
    f = EventFilter(("t",), ("/s",), ("x",), (("k", "v"),))
    assert EventFilter.from_json(f.to_json()) == f


@pytest.mark.parametrize("module", ["mesh.replay.filters", "mesh.archive"])
def test_docstring_examples_run(module: str) -> None:
    result = doctest.testmod(importlib.import_module(module))
    assert result.failed == 0 and result.attempted > 0
