"""Trip expressions and durations: parsed or refused with a clear message, never anything else."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mesh.config import parse_duration
from mesh.resiliency.trip import Counts, parse_trip

names = st.sampled_from(["consecutive_failures", "failures", "requests", "failure_ratio", "consecutiveFailures",
                         "totalFailures"])
ops = st.sampled_from([">=", ">", "<=", "<", "==", "!="])
numbers = st.integers(0, 1000)


@st.composite
def expressions(draw: st.DrawFn) -> tuple[str, list[list[tuple[str, str, int]]]]:
    clauses = draw(st.lists(st.lists(st.tuples(names, ops, numbers), min_size=1, max_size=3), min_size=1, max_size=3))
    fixed = [[(n, o, min(v, 1) if n == "failure_ratio" else v) for n, o, v in c] for c in clauses]
    text = " or ".join(" and ".join(f"{n} {o} {v}" for n, o, v in c) for c in fixed)
    return text, fixed


@given(expr=expressions(), c=st.integers(0, 50), f=st.integers(0, 50), r=st.integers(0, 100))
def test_a_valid_expression_parses_and_evaluates_as_python_would(
    expr: tuple[str, list[list[tuple[str, str, int]]]], c: int, f: int, r: int
) -> None:
    text, clauses = expr
    counts = Counts(c, f, r)
    canonical = {"consecutiveFailures": "consecutive_failures", "totalFailures": "failures"}
    env = {"consecutive_failures": c, "failures": f, "requests": r, "failure_ratio": counts.failure_ratio}
    expected = any(all(eval(f"{env[canonical.get(n, n)]!r} {o} {v}") for n, o, v in cl) for cl in clauses)
    assert parse_trip(text)(counts) is expected


@given(st.text(max_size=40))
def test_any_text_parses_or_raises_value_error(text: str) -> None:
    try:
        message = "parsed" if parse_trip(text).clauses else ""
    except ValueError as exc:
        message = str(exc)
    assert message


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("consecutive_failures >=", "incomplete comparison"),
        ("latency > 5", "unknown name 'latency' at column 1"),
        ("requests >= 10 and", "incomplete comparison starting at the end"),
        ("requests = 10", "unexpected '=' at column 10"),
        ("failure_ratio > 5", "between 0 and 1"),
        ("requests >= 10 xor failures > 1", "expected 'and' or 'or' at column 16"),
    ],
)
def test_a_broken_expression_says_where(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_trip(text)


@given(st.floats(0, 1e6, allow_nan=False), st.sampled_from(["ms", "s", "m", "h", "d", ""]))
def test_durations_in_every_unit(value: float, unit: str) -> None:
    factor = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "": 1}[unit]
    text = f"{value:.3f}{unit}"
    assert parse_duration(text) == pytest.approx(float(f"{value:.3f}") * factor)


@given(st.text(max_size=12))
def test_a_duration_parses_or_says_what_it_wants(text: str) -> None:
    try:
        message = "parsed" if parse_duration(text) >= 0 else ""
    except ValueError as exc:
        message = str(exc)
    assert message == "parsed" or "not a duration" in message
