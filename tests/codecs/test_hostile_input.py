"""Issue #12's minimal triggers, one test each: the readers return an event or raise DecodeError."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from mesh.codecs import WireMessage, decode, from_binary, from_dict, from_structured, to_binary, to_structured
from mesh.codecs.bindings import AMQP, KAFKA, NATS
from mesh.codecs.redis import from_fields, lossy
from mesh.codecs.stub import STUB_OVERHEAD, STUB_TYPE, oversize_stub, undecodable_stub
from mesh.errors import DecodeError
from mesh.event import Event

KAFKA_HEADERS = {"ce_specversion": "1.0", "ce_id": "1", "ce_source": "/s", "ce_type": "t"}
DOC = b'{"specversion":"1.0","id":"1","source":"/s","type":"t"'


def test_a_null_kafka_header_value_is_absent_not_the_text_none() -> None:
    event = decode(WireMessage(b"", {**KAFKA_HEADERS, "ce_subject": None, "ce_tenant": None}), KAFKA)
    assert event.subject is None and event.extensions == {}


def test_an_invalid_event_with_null_headers_and_a_bad_content_type_is_a_decode_error() -> None:
    msg = WireMessage(b"{", {**KAFKA_HEADERS, "ce_type": None, "other": None}, None, b"\xff")  # type: ignore[arg-type]
    with pytest.raises(DecodeError, match="type") as info:
        decode(msg, KAFKA)
    assert info.value.headers == {k: v for k, v in KAFKA_HEADERS.items() if k != "ce_type"}


@pytest.mark.parametrize("value", [[1, 2], {"a": 1}, 1.5, object()])
def test_an_attribute_header_of_a_type_with_no_canonical_text_is_a_decode_error(value: object) -> None:
    with pytest.raises(DecodeError, match="ce-tenant"):
        decode(
            WireMessage(b"", {**{k.replace("_", "-"): v for k, v in KAFKA_HEADERS.items()}, "ce-tenant": value}), AMQP
        )  # type: ignore[dict-item]


def test_typed_amqp_values_are_read_canonically_and_a_naive_time_is_utc() -> None:
    headers = {k.replace("_", "-"): v for k, v in KAFKA_HEADERS.items()}
    msg = WireMessage(b"", {**headers, "ce-n": 7, "ce-ok": False, "ce-at": datetime(2026, 1, 1), "ce-b": b"x"})  # type: ignore[dict-item]
    assert decode(msg, AMQP).extensions == {"n": "7", "ok": "false", "at": "2026-01-01T00:00:00Z", "b": "x"}


@pytest.mark.parametrize(("binding", "header"), [(KAFKA, "ce_data"), (NATS, "ce-data")])
def test_a_data_header_is_refused_since_data_is_no_extension(binding: object, header: str) -> None:
    prefix = header[:3]
    headers = {prefix + k[3:]: v for k, v in KAFKA_HEADERS.items()}
    with pytest.raises(DecodeError, match="'data'"):
        decode(WireMessage(b"", {**headers, header: "x"}), binding)  # type: ignore[arg-type]


def test_non_json_content_type_with_object_data_is_refused() -> None:
    with pytest.raises(DecodeError, match="non-JSON datacontenttype"):
        from_structured(DOC + b',"datacontenttype":"text/plain","data":{"a":1}}')


def test_non_json_content_type_with_string_data_is_read_and_encodes_in_binary() -> None:
    event = from_structured(DOC + b',"datacontenttype":"image/png","data":"abc"}')
    assert event.data == b"abc" and to_binary(event, KAFKA).body == b"abc"


def test_a_numeric_datacontenttype_is_refused() -> None:
    with pytest.raises(DecodeError, match="datacontenttype"):
        from_structured(DOC + b',"datacontenttype":5}')


def test_extensions_nested_255_deep_are_a_decode_error_not_recursion() -> None:
    deep = b"[" * 300 + b"]" * 300
    with pytest.raises(DecodeError, match="nested"):
        from_structured(DOC + b',"ext":' + deep + b"}")
    with pytest.raises(DecodeError, match="write"):
        from_dict({"specversion": "1.0", "id": "1", "source": "/s", "type": "t", "ext": __import__("json").loads(deep)})


def test_binary_json_data_deeper_than_structured_mode_can_write_is_refused() -> None:
    ok = decode(WireMessage(b"[" * 253 + b"]" * 253, KAFKA_HEADERS, None, "application/json"), KAFKA)
    to_structured(ok)
    with pytest.raises(DecodeError, match="nested"):
        decode(WireMessage(b"[" * 254 + b"]" * 254, KAFKA_HEADERS, None, "application/json"), KAFKA)


@pytest.mark.parametrize("number", [b"18446744073709551616", b"-9223372036854775809", b"1" + b"0" * 40])
def test_json_integers_beyond_64_bits_are_refused_not_made_floats(number: bytes) -> None:
    with pytest.raises(DecodeError, match="64 bits"):
        decode(WireMessage(b'{"n": ' + number + b"}", KAFKA_HEADERS, None, "application/json"), KAFKA)
    with pytest.raises(DecodeError, match="64 bits"):
        from_structured(DOC + b',"data":{"n":' + number + b"}}")


def test_json_integers_within_64_bits_and_digit_strings_stay_exact() -> None:
    body = b'{"max": 18446744073709551615, "min": -9223372036854775808, "id": "123456789012345678901234"}'
    data = decode(WireMessage(body, KAFKA_HEADERS, None, "application/json"), KAFKA).data
    assert data == {"max": 2**64 - 1, "min": -(2**63), "id": "123456789012345678901234"}


def test_a_mixed_case_header_among_lower_case_ones_is_read() -> None:
    headers = {**{k: v for k, v in KAFKA_HEADERS.items() if k != "ce_type"}, "ce_Type": "shop.t", "CE_SUBJECT": "A"}
    event = decode(WireMessage(b"", headers), KAFKA)
    assert (event.type, event.subject) == ("shop.t", "A")


def test_from_binary_with_odd_names_and_content_types_raises_decode_error_only() -> None:
    odd_names = WireMessage(b"", {**KAFKA_HEADERS, b"ce_x": "1", 3: "x"})  # type: ignore[dict-item]
    assert from_binary(odd_names, KAFKA).extensions == {}
    with pytest.raises(DecodeError, match="content type is a int"):
        from_binary(WireMessage(b"", KAFKA_HEADERS, None, 5), KAFKA)  # type: ignore[arg-type]


def test_redis_fields_of_any_type_are_read_or_refused() -> None:
    assert from_fields({"ce_specversion": "1.0", b"data": b"x"}).headers == {"ce_specversion": b"1.0"}
    with pytest.raises(DecodeError):
        from_fields({b"event": 5})
    assert lossy({b"\xff": b"v", "data": "body", b"n": None}).body == b"body"


def test_undecodable_stub_is_bounded_and_says_what_the_message_was() -> None:
    body = b"\xff" * 100_000
    stub = undecodable_stub(WireMessage(body, {"h": None, "k": b"v"}, b"key", "x/y"), "too big", 20_000)
    assert stub.type == STUB_TYPE and stub.data["size"] == 100_000 and stub.data["truncated"]
    assert stub.data["bodyencoding"] == "base64" and stub.data["headers"] == {"k": "v"}
    assert len(to_structured(stub)) <= 20_000


def test_oversize_stub_keeps_the_id_and_attributes() -> None:
    event = Event(
        type="t", source="/s", id="e1", data="x" * 50_000, extensions={"n": 3}, time=datetime(2026, 1, 1, tzinfo=UTC)
    )
    stub = oversize_stub(event, "larger than max_event_bytes", 1024)
    assert stub.id == "e1" and stub.data["attributes"]["n"] == "3" and stub.data["bodyencoding"] == "text"
    assert len(to_structured(stub)) <= STUB_OVERHEAD
