"""Trip expressions of circuit breakers: ``consecutive_failures >= 5``, ``failure_ratio > 0.5 and requests >= 20``.

Grammar (whitespace free; ``and`` binds tighter than ``or``; no parentheses)::

    expr  := term ("or" term)*
    term  := cmp ("and" cmp)*
    cmp   := NAME OP NUMBER
    OP    := >= | > | <= | < | == | !=

========================  =====================================================================
name                      value (counted since the breaker closed, or over ``interval``)
========================  =====================================================================
``consecutive_failures``  failures in a row (Dapr's ``consecutiveFailures`` is accepted too)
``failures``              failures (Dapr's ``totalFailures``)
``requests``              calls or deliveries that ended, failed or not
``failure_ratio``         ``failures / requests`` (0 when there were none), from 0 to 1
========================  =====================================================================

Pure: parsing gives a :class:`Trip` that evaluates a :class:`Counts`; a bad expression raises
``ValueError`` saying where it broke (the config reports it with its path and line).
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["NAMES", "Counts", "Trip", "parse_trip"]

NAMES = {
    "consecutive_failures": "consecutive_failures",
    "consecutivefailures": "consecutive_failures",
    "failures": "failures",
    "totalfailures": "failures",
    "total_failures": "failures",
    "requests": "requests",
    "failure_ratio": "failure_ratio",
    "failureratio": "failure_ratio",
}
_OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    ">": operator.gt,
    "<=": operator.le,
    "<": operator.lt,
    "==": operator.eq,
    "!=": operator.ne,
}
_TOKEN = re.compile(
    r"\s*(?:(?P<num>\d+(?:\.\d+)?)|(?P<op>>=|<=|==|!=|>|<)|(?P<name>[A-Za-z_][A-Za-z_0-9]*)|(?P<bad>\S))"
)


@dataclass(frozen=True, slots=True)
class Counts:
    """What a breaker has seen: the inputs of a trip expression."""

    consecutive_failures: int = 0
    failures: int = 0
    requests: int = 0

    @property
    def failure_ratio(self) -> float:
        """Failures per request (0 with no requests)."""
        return self.failures / self.requests if self.requests else 0.0

    def value(self, name: str) -> float:
        """The value of a (canonical) name."""
        return float(getattr(self, name))


@dataclass(frozen=True, slots=True)
class Trip:
    """A parsed trip expression: a disjunction of conjunctions of comparisons."""

    text: str
    clauses: tuple[tuple[tuple[str, str, float], ...], ...]

    def __call__(self, counts: Counts) -> bool:
        """Whether the breaker trips on ``counts``."""
        return any(all(_OPS[op](counts.value(name), number) for name, op, number in clause) for clause in self.clauses)


def _tokens(text: str) -> list[tuple[str, str, int]]:
    out: list[tuple[str, str, int]] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:  # only trailing whitespace is left
            break
        kind = m.lastgroup
        assert kind is not None
        if kind == "bad":
            raise ValueError(f"unexpected {m.group(kind)!r} at column {m.start(kind) + 1}")
        out.append((kind, m.group(kind), m.start(kind) + 1))
        pos = m.end()
    return out


def parse_trip(text: str) -> Trip:
    """Parse a trip expression (see the module docstring); ``ValueError`` says what is wrong."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError("a trip expression is empty (e.g. 'consecutive_failures >= 5')")
    tokens = _tokens(text)
    clauses: list[tuple[tuple[str, str, float], ...]] = []
    current: list[tuple[str, str, float]] = []
    i = 0
    while True:
        if i + 3 > len(tokens):
            where = f"column {tokens[i][2]}" if i < len(tokens) else "the end"
            raise ValueError(f"incomplete comparison starting at {where} (expected NAME OP NUMBER)")
        (k1, name, col1), (k2, op, col2), (k3, number, col3) = tokens[i : i + 3]
        if k1 != "name" or name.lower() not in NAMES:
            known = ", ".join(sorted(set(NAMES.values())))
            raise ValueError(f"unknown name {name!r} at column {col1} (one of: {known})")
        if k2 != "op":
            raise ValueError(f"expected a comparison (>=, >, <=, <, ==, !=) at column {col2}, found {op!r}")
        if k3 != "num":
            raise ValueError(f"expected a number at column {col3}, found {number!r}")
        canonical = NAMES[name.lower()]
        value = float(number)
        if canonical == "failure_ratio" and value > 1:
            raise ValueError(f"failure_ratio is between 0 and 1, not {number} (column {col3})")
        current.append((canonical, op, value))
        i += 3
        if i == len(tokens):
            clauses.append(tuple(current))
            return Trip(text.strip(), tuple(clauses))
        kind, word, col = tokens[i]
        if kind != "name" or word.lower() not in ("and", "or"):
            raise ValueError(f"expected 'and' or 'or' at column {col}, found {word!r}")
        if word.lower() == "or":
            clauses.append(tuple(current))
            current = []
        i += 1
