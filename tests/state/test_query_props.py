"""Property tests: the filter parser and key validation accept what they should and fail cleanly otherwise."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from mesh.state.errors import InvalidKey, InvalidQuery
from mesh.state.handle import StateStore
from mesh.state.memory import MemoryStore
from mesh.state.query import Cond, Node, matches, parse_query

segment = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,8}", fullmatch=True).filter(lambda s: s not in ("and", "or"))
path = st.lists(segment, min_size=1, max_size=3).map(".".join)
scalar = st.one_of(st.none(), st.booleans(), st.integers(-1000, 1000), st.text(max_size=5))
op = st.sampled_from(["eq", "ne", "gt", "gte", "lt", "lte"])
leaf = st.dictionaries(path, st.one_of(scalar, st.dictionaries(op, scalar, min_size=1)), min_size=1, max_size=3)
where = st.recursive(leaf, lambda inner: st.dictionaries(st.sampled_from(["and", "or"]),
                                                         st.lists(inner, min_size=1, max_size=3), min_size=1),
                     max_leaves=6)
json_doc = st.recursive(scalar, lambda inner: st.dictionaries(segment, inner, max_size=3), max_leaves=8)


@given(where, json_doc)
def test_valid_filters_parse_and_evaluate(w: dict[str, Any], doc: Any) -> None:
    q = parse_query("s", w)
    assert isinstance(q.where, Cond | Node)
    assert matches(q.where, doc) in (True, False)


@given(st.one_of(st.text(max_size=6).filter(lambda s: not s or "." in s or not s[0].isalpha()), st.integers()))
def test_bad_paths_are_invalid_query(bad: Any) -> None:
    try:
        parse_query("s", {bad: 1} if isinstance(bad, str) else {"a": {bad: 1}})
    except InvalidQuery as exc:
        assert "'s'" in str(exc)  # noqa: PT017 - either outcome is allowed
    # some generated names are valid paths: those simply parse


@given(st.text(max_size=1500))
def test_keys_are_accepted_or_invalid_key(key: str) -> None:
    store = StateStore("s", MemoryStore("s"), "app")
    try:
        full = store.full_key(key)
    except InvalidKey as exc:
        assert exc.store == "s" and (not key or len(("app||" + key).encode()) > 1024)  # noqa: PT017
    else:
        assert full == "app||" + key and key


@given(st.integers(-50, 50), st.integers(-50, 50))
def test_comparisons_match_python(value: int, bound: int) -> None:
    for name, fn in {"gt": int.__gt__, "lte": int.__le__, "ne": int.__ne__}.items():
        q = parse_query("s", {"n": {name: bound}})
        assert matches(q.where, {"n": value}) == fn(value, bound)
    assert not matches(parse_query("s", {"n": {"gt": bound}}).where, {"m": value})  # missing never matches
