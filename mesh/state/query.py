"""State queries: the filter shape, ordering and keyset cursors, checked once and run three ways.

=====================================  ==================================================
``where``                              meaning
=====================================  ==================================================
``{"status": "open"}``                 equality (``None`` matches null or missing)
``{"total": {"gt": 100}}``             ``gt``, ``gte``, ``lt``, ``lte``, ``ne``, ``eq``, ``in``
``{"a": 1, "b": 2}``                   all of them (and)
``{"or": [{...}, {...}]}``             any of them; ``{"and": [...]}`` all of them
``{"customer.address.city": "Oslo"}``  dotted paths into the JSON value
=====================================  ==================================================

``order_by=["-updated", "name"]`` sorts (``-`` descending), the key breaking ties; a missing field
never matches a comparison. Paths are identifiers (``[A-Za-z_][A-Za-z0-9_]*``) joined by dots, so
they are written into SQL as literals an operator can index, e.g. SQLite
``CREATE INDEX ON t (json_extract(value, '$.status'))``, PostgreSQL ``CREATE INDEX ON t ((value #> '{status}'))``.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from mesh.state.errors import InvalidQuery

__all__ = ["Cond", "Node", "Query", "compile_sql", "decode_cursor", "encode_cursor", "matches", "parse_query",
           "sort_key"]

SEGMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z")
OPERATORS = frozenset({"eq", "ne", "gt", "gte", "lt", "lte", "in"})
MISSING: Any = object()


@dataclass(frozen=True, slots=True)
class Cond:
    """One comparison of the value at ``path``."""

    path: tuple[str, ...]
    op: str
    value: Any


@dataclass(frozen=True, slots=True)
class Node:
    """``and`` / ``or`` of conditions and nodes."""

    kind: str
    items: tuple[Cond | Node, ...]


@dataclass(frozen=True, slots=True)
class Query:
    """A parsed query: filter, ordering, page size, cursor, and the key prefix it is confined to."""

    where: Cond | Node | None
    order: tuple[tuple[tuple[str, ...], bool], ...] = ()
    limit: int = 100
    after: tuple[Any, ...] | None = None
    prefix: str = ""
    params: list[Any] = field(default_factory=list)


def parse_path(store: str, path: Any, model: type[BaseModel] | None = None) -> tuple[str, ...]:
    """Split and check a dotted path (against ``model``'s fields when given)."""
    if not isinstance(path, str) or not path:
        raise InvalidQuery(store, f"a field path must be a non-empty string, not {path!r}")
    parts = tuple(path.split("."))
    for part in parts:
        if not SEGMENT.match(part):
            raise InvalidQuery(store, f"bad field path {path!r}: each part must match [A-Za-z_][A-Za-z0-9_]*")
    current: Any = model
    for part in parts:
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            break
        fields = {(f.alias or name): f for name, f in current.model_fields.items()}
        if part not in fields:
            raise InvalidQuery(store, f"field path {path!r} does not exist in {current.__name__}")
        current = fields[part].annotation
    return parts


def _scalar(store: str, value: Any, where: str) -> Any:
    if value is None or isinstance(value, str | int | float | bool):
        return value
    raise InvalidQuery(store, f"{where}: compare with a string, number, boolean or null, not {value!r}")


def _parse(store: str, where: Any, model: type[BaseModel] | None) -> Cond | Node:
    if not isinstance(where, Mapping):
        raise InvalidQuery(store, f"a filter must be a mapping, not {where!r}")
    items: list[Cond | Node] = []
    for name, spec in where.items():
        if name in ("and", "or"):
            if not isinstance(spec, Sequence) or isinstance(spec, str) or not spec:
                raise InvalidQuery(store, f"{name!r} takes a non-empty list of filters")
            items.append(Node(name, tuple(_parse(store, s, model) for s in spec)))
            continue
        path = parse_path(store, name, model)
        if isinstance(spec, Mapping):
            if not spec:
                raise InvalidQuery(store, f"{name!r}: an empty operator mapping")
            for op, value in spec.items():
                if op not in OPERATORS:
                    raise InvalidQuery(store, f"{name!r}: unknown operator {op!r} (one of {sorted(OPERATORS)})")
                if op == "in":
                    if not isinstance(value, Sequence) or isinstance(value, str):
                        raise InvalidQuery(store, f"{name!r}: 'in' takes a list")
                    value = tuple(_scalar(store, v, name) for v in value)
                else:
                    value = _scalar(store, value, name)
                items.append(Cond(path, op, value))
        else:
            items.append(Cond(path, "eq", _scalar(store, spec, name)))
    if not items:
        raise InvalidQuery(store, "an empty filter (leave 'where' out to match everything)")
    return items[0] if len(items) == 1 else Node("and", tuple(items))


def encode_cursor(values: Sequence[Any]) -> str:
    """An opaque cursor for the sort values (and key) of the last row of a page."""
    return base64.urlsafe_b64encode(json.dumps(list(values), separators=(",", ":")).encode()).decode()


def decode_cursor(store: str, cursor: str, width: int) -> tuple[Any, ...]:
    """The sort values of a cursor from :func:`encode_cursor`."""
    try:
        values = json.loads(base64.urlsafe_b64decode(cursor.encode()))
    except (ValueError, TypeError) as exc:
        raise InvalidQuery(store, f"not a cursor from this store: {cursor!r}") from exc
    if not isinstance(values, list) or len(values) != width:
        raise InvalidQuery(store, f"the cursor does not fit this ordering: {cursor!r}")
    return tuple(values)


def parse_query(
    store: str,
    where: Mapping[str, Any] | None,
    order_by: Sequence[str] = (),
    limit: int = 100,
    after: str | None = None,
    prefix: str = "",
    model: type[BaseModel] | None = None,
) -> Query:
    """Check a query's parts and build the :class:`Query` a backend runs."""
    if isinstance(order_by, str):
        order_by = [order_by]
    order = tuple((parse_path(store, o.removeprefix("-"), model), o.startswith("-")) for o in order_by)
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= 10_000:
        raise InvalidQuery(store, f"limit must be an integer from 1 to 10000, not {limit!r}")
    cursor = None if after is None else decode_cursor(store, after, len(order) + 1)
    node = None if where is None else _parse(store, where, model)
    return Query(node, order, limit, cursor, prefix)


# -- in Python (the memory store) ------------------------------------------------------------


def lookup(doc: Any, path: tuple[str, ...]) -> Any:
    """The value at ``path`` in a decoded JSON document, or MISSING."""
    for part in path:
        if not isinstance(doc, dict) or part not in doc:
            return MISSING
        doc = doc[part]
    return doc


_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "eq": lambda a, b: a == b and isinstance(a, bool) == isinstance(b, bool),
    "ne": lambda a, b: a != b,
    "gt": lambda a, b: a > b,
    "gte": lambda a, b: a >= b,
    "lt": lambda a, b: a < b,
    "lte": lambda a, b: a <= b,
    "in": lambda a, b: a in b,
}


def matches(node: Cond | Node | None, doc: Any) -> bool:
    """Whether a decoded JSON value matches a parsed filter."""
    if node is None:
        return True
    if isinstance(node, Node):
        test = all if node.kind == "and" else any
        return test(matches(n, doc) for n in node.items)
    value = lookup(doc, node.path)
    if node.op == "eq" and node.value is None:
        return value is MISSING or value is None
    if value is MISSING or value is None:
        return False
    try:
        return bool(_COMPARE[node.op](value, node.value))
    except TypeError:
        return False


def sort_key(q: Query, key: str, doc: Any) -> tuple[Any, ...]:
    """The values a row is ordered by (the key last)."""
    return (*(lookup(doc, path) for path, _ in q.order), key)


# -- in SQL (SQLite and PostgreSQL) -----------------------------------------------------------


class _Sql:
    def __init__(self, dialect: str) -> None:
        self.dialect = dialect
        self.params: list[Any] = []

    def param(self, value: Any, cast: str = "") -> str:
        if self.dialect == "postgres":
            self.params.append(value)
            return f"${len(self.params)}{cast}"
        self.params.append(value)
        return "?"

    def expr(self, path: tuple[str, ...]) -> str:
        if self.dialect == "postgres":
            return f"(value #> '{{{','.join(path)}}}')"
        return f"json_extract(value, '$.{'.'.join(path)}')"

    def lit(self, value: Any) -> str:
        if self.dialect == "postgres":
            return self.param(json.dumps(value), "::jsonb")
        return self.param(value)

    def cond(self, node: Cond | Node) -> str:
        if isinstance(node, Node):
            return "(" + f" {node.kind.upper()} ".join(self.cond(n) for n in node.items) + ")"
        e = self.expr(node.path)
        if node.op == "eq" and node.value is None:
            null = f" OR {e} = 'null'::jsonb" if self.dialect == "postgres" else ""
            return f"({e} IS NULL{null})"
        if node.op == "in":
            if not node.value:
                return "FALSE"
            return f"{e} IN (" + ", ".join(self.lit(v) for v in node.value) + ")"
        sym = {"eq": "=", "ne": "<>", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}[node.op]
        return f"{e} {sym} {self.lit(node.value)}"


def compile_sql(q: Query, dialect: str, now_param: Any) -> tuple[str, str, list[Any]]:
    """``(where, order by, params)`` SQL for a query on a table with ``key``, ``value``, ``expires``."""
    sql = _Sql(dialect)
    parts = [f"(expires IS NULL OR expires > {sql.param(now_param)})"]
    if q.prefix:
        fn = "starts_with(key, {})" if dialect == "postgres" else f"substr(key, 1, {len(q.prefix)}) = {{}}"
        parts.append(fn.format(sql.param(q.prefix)))
    if q.where is not None:
        parts.append(sql.cond(q.where))
    exprs = [(sql.expr(path), desc) for path, desc in q.order] + [("key", False)]
    if q.after is not None:
        ors = []
        for i, (e, desc) in enumerate(exprs):
            pairs = zip(exprs[:i], q.after, strict=False)
            eqs = [f"{ex} = {sql.lit(v) if ex != 'key' else sql.param(v)}" for (ex, _), v in pairs]
            v = q.after[i]
            rhs = sql.param(v) if e == "key" else sql.lit(v)
            ors.append("(" + " AND ".join([*eqs, f"{e} {'<' if desc else '>'} {rhs}"]) + ")")
        parts.append("(" + " OR ".join(ors) + ")")
    order = ", ".join(f"{e} {'DESC' if desc else 'ASC'}" for e, desc in exprs)
    return " AND ".join(parts), order, sql.params
