"""Hypothesis strategies for hostile wire messages: valid events, then mutated as a careless
producer or an attacker would (typed and null header values, odd names and cases, big integers,
deep nesting, content types of any type)."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from mesh.codecs import WireMessage, to_binary, to_structured
from mesh.codecs.binary import Binding
from mesh.codecs.bindings import AMQP, KAFKA, NATS, REDIS
from mesh.event import Event

BINDINGS: dict[str, Binding] = {"kafka": KAFKA, "amqp": AMQP, "nats": NATS, "redis": REDIS}

FUZZ = settings(
    max_examples=int(os.environ.get("MESH_FUZZ_EXAMPLES", "50")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
"""The fuzz tests' settings: CI-sized by default, ``MESH_FUZZ_EXAMPLES`` for a long campaign."""

ATTRS = ("specversion", "id", "source", "type", "time", "subject", "datacontenttype", "dataschema", "data")
PREFIXES = ("ce_", "ce-", "CE_", "Ce-", "cloudEvents_", "cloudEvents:", "")
CONTENT_TYPES = (
    "application/json",
    "application/cloudevents+json",
    "application/cloudevents-batch+json",
    "text/plain",
    "application/octet-stream",
    "application/vnd.x+json; charset=utf-8",
    "",
)


def deep(depth: int) -> bytes:
    """A JSON array nested ``depth`` levels."""
    return b"[" * depth + b"]" * depth


big_ints = st.one_of(
    st.integers(-(2**64), 2**65),
    st.sampled_from([2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**63), -(2**63) - 1, 10**30]),
)
json_values = st.recursive(
    st.none() | st.booleans() | big_ints | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=10,
)
odd_values: st.SearchStrategy[Any] = st.one_of(
    st.none(),
    st.text(max_size=16),
    st.binary(max_size=16),
    big_ints,
    st.booleans(),
    st.datetimes(),
    st.datetimes(timezones=st.just(UTC)),
    st.floats(),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    st.sampled_from(["1.0", "", "0.3", "2026-01-01T00:00:00Z", "yesterday", "x" * 300]),
)
header_names: st.SearchStrategy[Any] = st.one_of(
    st.builds(lambda p, a: p + a, st.sampled_from(PREFIXES), st.sampled_from(ATTRS)),
    st.builds(lambda p, a: p + a, st.sampled_from(PREFIXES), st.text(max_size=8)),
    st.builds(lambda p, a: p + a.upper(), st.sampled_from(PREFIXES), st.sampled_from(ATTRS)),
    st.sampled_from(["traceparent", "tracestate", "content-type"]),
    st.binary(max_size=8),
    st.integers(),
)
bodies: st.SearchStrategy[bytes] = st.one_of(
    st.binary(max_size=64),
    st.builds(lambda v: _json(v), json_values),
    st.builds(deep, st.sampled_from([1, 252, 253, 254, 255, 256, 1024, 1100])),
    st.sampled_from([b"18446744073709551616", b'{"a": -9223372036854775809}', b'"\\ud800"', b"\xff\xfe", b"null"]),
)
content_types: st.SearchStrategy[Any] = st.one_of(
    st.none(), st.sampled_from(CONTENT_TYPES), st.text(max_size=12), st.binary(max_size=8), st.integers(), st.just([])
)
keys: st.SearchStrategy[Any] = st.one_of(st.none(), st.text(max_size=8), st.binary(max_size=8), st.integers())


def _json(value: Any) -> bytes:
    import json

    return json.dumps(value).encode()


events = st.builds(
    lambda data, ext, subject: Event(
        type="fuzz.t", source="/fuzz", data=data, subject=subject, extensions=ext, time=datetime(2026, 1, 1, tzinfo=UTC)
    ),
    data=st.one_of(
        st.none(),
        st.dictionaries(st.text(max_size=6), st.integers(-(2**63), 2**63) | st.text(max_size=6), max_size=3),
        st.binary(max_size=32),
        st.text(max_size=32),
    ),
    ext=st.dictionaries(st.from_regex(r"\Ax[a-z0-9]{0,8}\Z"), st.text(max_size=8) | st.integers(0, 99), max_size=3),
    subject=st.none() | st.text(min_size=1, max_size=8),
)


@st.composite
def wire_messages(draw: st.DrawFn, binding: Binding) -> WireMessage:
    """A message near a valid one: a real encoding with headers changed, added or removed."""
    start = draw(st.sampled_from(["binary", "structured", "empty"]))
    event = draw(events)
    if start == "binary":
        msg = to_binary(event, binding)
        headers: dict[Any, Any] = dict(msg.headers)
        body, content_type, key = msg.body, msg.content_type, msg.key
    elif start == "structured":
        headers, body, content_type, key = {}, to_structured(event), "application/cloudevents+json", event.partitionkey
    else:
        headers, body, content_type, key = {}, b"", None, None
    for name in draw(st.lists(st.sampled_from(sorted(headers, key=str)), max_size=2, unique=True)) if headers else []:
        del headers[name]
    headers.update(draw(st.dictionaries(header_names, odd_values, max_size=4)))
    if draw(st.booleans()):
        body = draw(bodies)
    if draw(st.integers(0, 3)) == 0:
        content_type = draw(content_types)
    if draw(st.integers(0, 5)) == 0:
        key = draw(keys)
    return WireMessage(body, headers, key, content_type)


@st.composite
def structured_docs(draw: st.DrawFn) -> Any:
    """A structured event's object, then mutated: members replaced by odd JSON values."""
    doc: dict[str, Any] = {"specversion": "1.0", "id": "1", "source": "/s", "type": "t"}
    names = st.sampled_from((*ATTRS, "data_base64", "ext", "Bad", "x_y")) | st.text(max_size=6)
    doc.update(
        draw(st.dictionaries(names, json_values | st.sampled_from(["text/plain", "application/json"]), max_size=4))
    )
    for name in draw(st.lists(st.sampled_from(sorted(doc)), max_size=1, unique=True)):
        del doc[name]
    return doc
