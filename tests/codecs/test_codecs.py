"""Codecs: round trips (property-based), canonical strings, liberal reading, bad input."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mesh import Event
from mesh.codecs import (
    LEGACY_TYPE,
    WireMessage,
    decode,
    from_binary,
    from_structured,
    to_binary,
    to_structured,
    to_structured_message,
)
from mesh.codecs.bindings import AMQP, KAFKA, NATS, REDIS
from mesh.codecs.data import format_time
from mesh.errors import DecodeError, EncodeError

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
ext_names = st.from_regex(r"\A[a-z][a-z0-9]{0,19}\Z").filter(
    lambda n: (
        n not in {"data", "id", "source", "type", "subject", "time", "specversion", "dataschema", "datacontenttype"}
    )
)
events = st.builds(
    lambda data, ext, subject, ms: Event(
        type="test.prop",
        source="/prop",
        data=data,
        subject=subject,
        extensions=ext,
        time=datetime(2026, 1, 1, tzinfo=UTC).replace(microsecond=ms),
    ),
    data=st.one_of(
        st.dictionaries(st.text(max_size=8), json_values, max_size=5), st.binary(max_size=40), st.text(max_size=40)
    ),
    ext=st.dictionaries(ext_names, st.text(min_size=0, max_size=10), max_size=4),
    subject=st.none() | st.text(min_size=1, max_size=10),
    ms=st.integers(0, 999_999),
)


@settings(max_examples=150, deadline=None)
@given(events)
def test_structured_round_trip(event: Event) -> None:
    assert from_structured(to_structured(event)) == event


@settings(max_examples=150, deadline=None)
@given(events, st.sampled_from([KAFKA, AMQP, NATS, REDIS]))
def test_binary_round_trip(event: Event, binding) -> None:  # type: ignore[no-untyped-def]
    assert decode(to_binary(event, binding), binding) == event


def test_binary_writes_canonical_strings() -> None:
    when = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
    e = Event(type="t", source="/s", id="1", extensions={"flag": True, "count": 3, "at": when, "raw": b"\x01"})
    h = to_binary(e, KAFKA).headers
    assert (h["ce_flag"], h["ce_count"], h["ce_at"], h["ce_raw"]) == ("true", "3", "2026-11-20T10:00:00Z", "AQ==")


def test_partition_key_becomes_the_message_key() -> None:
    e = Event(type="t", source="/s", extensions={"partitionkey": "A1"})
    assert to_binary(e, KAFKA).key == "A1" and to_structured_message(e).key == "A1"


def test_content_mode_structured_is_selectable() -> None:
    msg = to_structured_message(Event(type="t", source="/s", data={"a": 1}))
    assert msg.content_type == "application/cloudevents+json" and msg.headers == {}
    assert KAFKA.in_mode("structured").content_mode == "structured"
    assert decode(msg, KAFKA).data == {"a": 1}


def test_amqp_reads_every_listed_prefix() -> None:
    for prefix in ("ce-", "cloudEvents_", "cloudEvents:"):
        msg = WireMessage(
            b'{"a":1}',
            {f"{prefix}specversion": "1.0", f"{prefix}id": "1", f"{prefix}source": "/s", f"{prefix}type": "t"},
            None,
            "application/json",
        )
        assert decode(msg, AMQP).type == "t", prefix


def test_legacy_json_and_bytes_are_wrapped() -> None:
    j = decode(WireMessage(b'{"order": 1}'), KAFKA, "orders", "orders:0:7")
    assert (j.type, j.source, j.id, j.data) == (LEGACY_TYPE, "/mesh/legacy/orders", "orders:0:7", {"order": 1})
    b = decode(WireMessage(b"\x00\x01 not json"), KAFKA, "orders")
    assert b.type == LEGACY_TYPE and b.data == b"\x00\x01 not json"
    t = decode(WireMessage(b"hello", {}, None, "text/plain"), KAFKA, "orders")
    assert t.data == "hello"


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        (
            WireMessage(
                b"{",
                {"ce_specversion": "1.0", "ce_id": "1", "ce_source": "/s", "ce_type": "t"},
                None,
                "application/json",
            ),
            "invalid JSON",
        ),
        (WireMessage(b"", {"ce_specversion": "1.0", "ce_source": "/s", "ce_type": "t"}), "missing required"),
        (WireMessage(b"", {"ce_specversion": "0.3", "ce_id": "1", "ce_source": "/s", "ce_type": "t"}), "specversion"),
        (WireMessage(b"", {"ce_specversion": b"1.0", "ce_id": b"\xff", "ce_source": "/s", "ce_type": "t"}), "UTF-8"),
        (
            WireMessage(
                b"", {"ce_specversion": "1.0", "ce_id": "1", "ce_source": "/s", "ce_type": "t", "ce_time": "yesterday"}
            ),
            "RFC 3339",
        ),
        (
            WireMessage(
                b"\xff\xfe",
                {"ce_specversion": "1.0", "ce_id": "1", "ce_source": "/s", "ce_type": "t"},
                None,
                "text/plain",
            ),
            "UTF-8",
        ),
        (WireMessage(b"[1]", {}, None, "application/cloudevents+json"), "JSON object"),
        (WireMessage(b'{"specversion": "1.0"}', {}, None, "application/cloudevents+json"), "missing"),
        (WireMessage(b"{oops", {}, None, "application/cloudevents+json"), "invalid JSON"),
        (WireMessage(b"[]", {}, None, "application/cloudevents-batch+json"), "batch"),
    ],
)
def test_bad_input_raises_decode_error_with_raw_bytes(message: WireMessage, reason: str) -> None:
    with pytest.raises(DecodeError, match=reason) as info:
        decode(message, KAFKA, "orders")
    assert info.value.raw == message.body


def test_unserialisable_data_is_a_clear_error() -> None:
    with pytest.raises(EncodeError, match="cannot be serialised"):
        to_binary(Event(type="t", source="/s", data={"x": object()}), KAFKA)


def test_structured_reads_foreign_extension_names_of_any_length() -> None:
    doc = b'{"specversion":"1.0","id":"1","source":"/s","type":"t","averyveryverylongextensionname":"x","n":3}'
    e = from_structured(doc)
    assert e.extensions == {"averyveryverylongextensionname": "x", "n": 3}


def test_structured_bytes_travel_as_data_base64() -> None:
    body = to_structured(Event(type="t", source="/s", data=b"\x00\x01"))
    assert b'"data_base64":"' + base64.b64encode(b"\x00\x01") + b'"' in body


def test_from_binary_prefers_the_transport_content_type() -> None:
    msg = WireMessage(
        b"hi",
        {
            "ce_specversion": "1.0",
            "ce_id": "1",
            "ce_source": "/s",
            "ce_type": "t",
            "ce_datacontenttype": "application/json",
        },
        None,
        "text/plain",
    )
    assert from_binary(msg, KAFKA).data == "hi"


def test_trace_context_travels_as_plain_w3c_headers() -> None:
    tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    msg = to_binary(Event(type="t", source="/s", extensions={"traceparent": tp, "tracestate": "a=b"}), NATS)
    assert msg.headers["traceparent"] == tp and msg.headers["tracestate"] == "a=b"
    assert "ce-traceparent" not in msg.headers
    assert decode(msg, NATS).extensions == {"traceparent": tp, "tracestate": "a=b"}
    prefixed = WireMessage(
        b"", {"ce_specversion": "1.0", "ce_id": "1", "ce_source": "/s", "ce_type": "t", "ce_traceparent": tp}
    )
    assert decode(prefixed, KAFKA).extensions["traceparent"] == tp


def test_typed_header_values_are_read_in_canonical_form() -> None:
    when = datetime(2026, 1, 1, tzinfo=UTC)
    msg = WireMessage(
        b"",
        {
            "ce-specversion": "1.0",
            "ce-id": "1",
            "ce-source": "/s",
            "ce-type": "t",
            "ce-n": 3,
            "ce-ok": True,
            "ce-at": when,
        },
    )  # type: ignore[dict-item]
    assert decode(msg, AMQP).extensions == {"n": "3", "ok": "true", "at": "2026-01-01T00:00:00Z"}


def test_from_binary_falls_back_to_the_datacontenttype_attribute() -> None:
    msg = WireMessage(
        b'{"a": 1}',
        {
            "ce_specversion": "1.0",
            "ce_id": "1",
            "ce_source": "/s",
            "ce_type": "t",
            "ce_datacontenttype": "application/json",
        },
    )
    assert from_binary(msg, KAFKA).data == {"a": 1}


@settings(max_examples=500)
@given(
    st.datetimes(min_value=datetime(1970, 1, 2), timezones=st.sampled_from([UTC, timezone(timedelta(hours=-5))])),
    st.booleans(),
)
def test_time_text_is_isoformat_with_z_whatever_second_came_before(value: datetime, same_second: bool) -> None:
    before = value.replace(microsecond=0) if same_second else value - timedelta(seconds=1)
    format_time(before)  # primes (or not) the remembered second
    text = value.isoformat()
    assert format_time(value) == (text[:-6] + "Z" if text.endswith("+00:00") else text)
