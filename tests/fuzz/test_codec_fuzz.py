"""For any input, the entry point returns an event or raises DecodeError; whatever it returns can
be encoded again (the invariant of tests/fuzz, checked per binding and content mode)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mesh.codecs import (
    WireMessage,
    decode,
    from_binary,
    from_dict,
    from_structured,
    to_binary,
    to_structured,
    wrap_legacy,
)
from mesh.codecs.binary import Binding, is_cloudevent
from mesh.codecs.bindings import REDIS
from mesh.codecs.redis import from_fields, lossy, to_fields
from mesh.codecs.stub import STUB_OVERHEAD, oversize_stub, undecodable_stub
from mesh.errors import DecodeError
from mesh.event import Event
from tests.fuzz.strategies import (
    BINDINGS,
    FUZZ,
    bodies,
    content_types,
    events,
    header_names,
    json_values,
    keys,
    odd_values,
    structured_docs,
    wire_messages,
)

pytestmark = pytest.mark.parametrize("name", sorted(BINDINGS))


def accepted(read: Any, *args: Any) -> Event | None:
    """Run one entry point: an event, or None for a DecodeError that no safety net produced."""
    try:
        event = read(*args)
    except DecodeError as exc:
        refused(exc)
        return None
    assert isinstance(event, Event)
    return event


def refused(error: DecodeError) -> None:
    """A DecodeError made by a check, not by a reader's safety net, with its raw parts as text."""
    assert not error.reason.startswith("unreadable message"), error.reason  # a case no check foresaw
    assert isinstance(error.raw, bytes)
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in error.headers.items())


def encodes_again(event: Event, binding: Binding) -> None:
    """What the pipeline does next: re-encode in both modes and add the dead-letter extensions."""
    msg = to_binary(event, binding)
    assert all(isinstance(v, str | bytes) for v in msg.headers.values())
    assert accepted(decode, msg, binding) is not None
    assert accepted(from_structured, to_structured(event)) is not None
    letter = event.with_extensions(mesherrortype="X", mesherror="why", meshtopic="t", meshattempts=1)
    to_binary(letter, binding)
    to_structured(letter)


@FUZZ
@given(data=st.data())
def test_decode_any_message(name: str, data: st.DataObject) -> None:
    binding = BINDINGS[name]
    msg = data.draw(wire_messages(binding))
    for b in (binding, binding.in_mode("structured")):
        event = accepted(decode, msg, b, "orders", "orders:0:1")
        if event is not None:
            encodes_again(event, binding)
    assert isinstance(is_cloudevent(msg, binding), bool)


@FUZZ
@given(data=st.data())
def test_from_binary_any_message(name: str, data: st.DataObject) -> None:
    binding = BINDINGS[name]
    event = accepted(from_binary, data.draw(wire_messages(binding)), binding)
    if event is not None:
        encodes_again(event, binding)


@FUZZ
@given(body=bodies, headers=st.dictionaries(header_names, odd_values, max_size=3), ct=content_types, key=keys)
def test_wrap_legacy_any_message(name: str, body: bytes, headers: dict[Any, Any], ct: Any, key: Any) -> None:
    event = accepted(wrap_legacy, WireMessage(body, headers, key, ct), "orders", None)
    if event is not None:
        encodes_again(event, BINDINGS[name])


@FUZZ
@given(doc=structured_docs(), as_text=st.booleans())
def test_from_structured_any_document(name: str, doc: Any, as_text: bool) -> None:
    text = json.dumps(doc)
    event = accepted(from_structured, text if as_text else text.encode())
    if event is not None:
        encodes_again(event, BINDINGS[name])


@FUZZ
@given(body=bodies)
def test_from_structured_any_bytes(name: str, body: bytes) -> None:
    event = accepted(from_structured, body)
    if event is not None:
        encodes_again(event, BINDINGS[name])


@FUZZ
@given(
    doc=structured_docs() | json_values | st.dictionaries(st.text(max_size=4) | st.integers(), odd_values),
    deep=st.booleans(),
)
def test_from_dict_any_value(name: str, doc: Any, deep: bool) -> None:
    if isinstance(doc, dict) and deep:
        doc = {**doc, "ext": {"deep": json.loads(b"[" * 300 + b"]" * 300)}}
    event = accepted(from_dict, doc)
    if event is not None:
        encodes_again(event, BINDINGS[name])


redis_fields = st.dictionaries(
    st.sampled_from([b"data", b"event", b"content-type", b"ce_specversion", b"ce_id", b"ce_source", b"ce_type"])
    | st.binary(max_size=8)
    | st.text(max_size=8),
    st.binary(max_size=16) | st.sampled_from([b"1.0", b"x", b"application/json"]) | odd_values,
    max_size=6,
)


@FUZZ
@given(fields=redis_fields, event=events)
def test_redis_fields_any_entry(name: str, fields: dict[Any, Any], event: Event) -> None:
    if name != "redis":
        return  # the Redis field reader has one binding
    good = dict(zip(*[iter(to_fields(to_binary(event, REDIS)))] * 2, strict=True))
    for entry in (fields, {**good, **fields}):
        try:
            msg = from_fields(entry)
        except DecodeError as exc:
            refused(exc)
            assert isinstance(lossy(entry), WireMessage)
            continue
        decoded = accepted(decode, msg, REDIS, "orders", "1-0")
        if decoded is not None:
            encodes_again(decoded, REDIS)
            again = from_fields(dict(zip(*[iter(to_fields(to_binary(decoded, REDIS)))] * 2, strict=True)))
            assert accepted(decode, again, REDIS) is not None


def encoded_sizes(event: Event, binding: Binding) -> tuple[int, int]:
    """The stub's size as binary (body + header names and values) and structured messages."""
    msg = to_binary(event, binding)
    header_bytes = sum(len(k.encode()) + len(v if isinstance(v, bytes) else v.encode()) for k, v in msg.headers.items())
    ct = len((msg.content_type or "").encode())
    return len(msg.body) + header_bytes + ct, len(to_structured(event))


@FUZZ
@given(data=st.data(), reason=st.text(max_size=2000), limit=st.integers(1024, 40_000), big=st.booleans())
def test_undecodable_stub_always_encodes_within_its_bound(
    name: str, data: st.DataObject, reason: str, limit: int, big: bool
) -> None:
    binding = BINDINGS[name]
    raw = data.draw(st.none() | wire_messages(binding))
    if raw is not None and big:
        raw = raw._replace(body=data.draw(st.binary(min_size=1, max_size=64)) * 1000)
        raw = raw._replace(headers={**raw.headers, **{f"h{i}": "\x00" * 500 for i in range(40)}})
    stub = undecodable_stub(raw, reason, limit)
    for size in encoded_sizes(stub, binding):
        assert size <= max(limit, STUB_OVERHEAD)
    encodes_again(stub, binding)


@FUZZ
@given(event=events, reason=st.text(max_size=2000), limit=st.integers(1024, 40_000), grow=st.integers(0, 60_000))
def test_oversize_stub_always_encodes_within_its_bound(
    name: str, event: Event, reason: str, limit: int, grow: int
) -> None:
    binding = BINDINGS[name]
    if grow:
        event = event.replace(data=b"\x01" * grow, datacontenttype="application/octet-stream")
    stub = oversize_stub(event, reason, limit)
    assert stub.data["size"] == (grow or stub.data["size"])
    for size in encoded_sizes(stub, binding):
        assert size <= max(limit, STUB_OVERHEAD)
    encodes_again(stub, binding)
