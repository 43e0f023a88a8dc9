"""The invocation protocol without a broker: the documented schemas, parsing, error mapping, access rules."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from jsonschema import Draft202012Validator, FormatChecker
from jsonschema.exceptions import ValidationError

from mesh import App, MethodNotFound, PermissionDenied, RemoteError
from mesh.codecs.structured import to_dict
from mesh.event import WRITE_NAME, Event
from mesh.invoke.protocol import (
    MalformedMessage,
    error_data,
    error_reply,
    invoke_topic,
    ok_reply,
    parse_reply,
    parse_request,
    remote_error,
    reply_topic,
    request_event,
)

ROOT = Path(__file__).resolve().parents[2]
WHEN = datetime(2026, 11, 20, 10, 0, 1, tzinfo=UTC)


def validator(name: str) -> Draft202012Validator:
    schema = orjson.loads((ROOT / "schemas" / f"invoke-{name}.schema.json").read_bytes())
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, format_checker=FormatChecker())


def as_json(event: Event) -> dict[str, Any]:
    """The event in the structured format, as JSON sees it."""
    return orjson.loads(orjson.dumps(to_dict(event)))  # type: ignore[no-any-return]


def a_request(**kw: Any) -> Event:
    return request_event(
        "/orders",
        "reserve",
        {"sku": "A1"},
        reply_to=reply_topic("orders-3fa85f64"),
        deadline=WHEN + timedelta(seconds=2),
        **kw,
    )


@pytest.mark.parametrize("name", ["request", "reply"])
def test_schema_examples_validate(name: str) -> None:
    check = validator(name)
    examples = check.schema["examples"]
    assert len(examples) >= 2
    for example in examples:
        check.validate(example)


def test_events_the_mesh_writes_fit_the_schemas() -> None:
    request = a_request(extensions={"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"})
    validator("request").validate(as_json(request))
    validator("reply").validate(as_json(ok_reply(request, "/inventory", {"left": 3})))
    validator("reply").validate(as_json(ok_reply(request, "/inventory", None)))
    failed = error_reply(request, "/inventory", error_data(ValueError("bad"), include_traceback=True))
    validator("reply").validate(as_json(failed))
    for event in (request, failed):
        assert all(WRITE_NAME.match(name) for name in event.extensions), event.extensions


def test_schemas_refuse_what_breaks_the_protocol() -> None:
    request = as_json(a_request())
    for broken in ({**request, "type": "x"}, {k: v for k, v in request.items() if k != "subject"}):
        with pytest.raises(ValidationError):
            validator("request").validate(broken)
    reply = as_json(error_reply(a_request(), "/inventory", error_data(ValueError("x"))))
    with pytest.raises(ValidationError):
        validator("reply").validate({**reply, "data": {"message": "no type, no code"}})
    with pytest.raises(ValidationError):
        validator("reply").validate({**reply, "meshstatus": "maybe"})


def test_names_on_the_broker() -> None:
    assert invoke_topic("inventory") == "_mesh.invoke.inventory"
    assert reply_topic("orders-1a2b3c4d") == "_mesh.reply.orders-1a2b3c4d"
    assert reply_topic("odd id/with.dots") == "_mesh.reply.odd_id_with_dots"


def test_parse_request_reads_what_travels_as_strings() -> None:
    request = a_request(key="A1")
    parsed = parse_request(request)
    assert (parsed.method, parsed.caller, parsed.reply_to) == ("reserve", "orders", "_mesh.reply.orders-3fa85f64")
    assert parsed.deadline == WHEN + timedelta(seconds=2)
    assert request.extensions["partitionkey"] == "A1"
    wire = request.replace(extensions={**request.extensions, "expirytime": "2026-11-20T10:00:03Z"})
    assert parse_request(wire).deadline == WHEN + timedelta(seconds=2)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"type": "other"}, "is not 'mesh.invoke.request'"),
        ({"subject": None}, "no method"),
        ({"extensions": {"meshreplyto": "orders"}}, "is not a reply topic"),
        ({"extensions": {"expirytime": "soon"}}, "not an RFC 3339 time"),
    ],
)
def test_malformed_requests_say_what_is_wrong(change: dict[str, Any], reason: str) -> None:
    with pytest.raises(MalformedMessage, match=reason):
        parse_request(a_request().replace(**change))


def test_parse_reply() -> None:
    request = a_request()
    assert parse_reply(ok_reply(request, "/inventory", [1])) == (request.id, True, [1])
    for broken in (
        Event("mesh.invoke.other", "/x"),
        Event("mesh.invoke.reply", "/x", extensions={"meshstatus": "ok"}),
        Event("mesh.invoke.reply", "/x", extensions={"correlationid": "1", "meshstatus": "perhaps"}),
    ):
        with pytest.raises(MalformedMessage):
            parse_reply(broken)


class OutOfStock(Exception):
    code = "out_of_stock"


def test_error_data_from_exceptions() -> None:
    assert error_data(OutOfStock("none left")) == {"type": "OutOfStock", "message": "none left", "code": "out_of_stock"}
    assert error_data(ValueError("x"))["code"] == "internal"
    assert error_data(PermissionError("no"))["code"] == "permission_denied"
    assert error_data(TimeoutError())["code"] == "deadline_exceeded"
    passed_on = error_data(MethodNotFound("MethodNotFound", "no such", "method_not_found"))
    assert passed_on == {"type": "MethodNotFound", "message": "no such", "code": "method_not_found"}
    assert "traceback" not in error_data(ValueError("x"))
    with pytest.raises(ValueError, match="deep") as caught:
        raise ValueError("deep")
    assert "raise ValueError" in error_data(caught.value, include_traceback=True)["traceback"]


def test_remote_errors_by_code() -> None:
    assert type(remote_error({"type": "X", "message": "m", "code": "method_not_found"})) is MethodNotFound
    assert type(remote_error({"type": "X", "message": "m", "code": "permission_denied"})) is PermissionDenied
    error = remote_error({"type": "OutOfStock", "message": "none", "code": "out_of_stock", "traceback": "tb"})
    assert type(error) is RemoteError
    assert (error.type, error.message, error.code, error.details) == (
        "OutOfStock",
        "none",
        "out_of_stock",
        {"traceback": "tb"},
    )
    assert remote_error("not an object").code == "malformed"


@pytest.mark.parametrize(
    ("allow", "method", "caller", "allowed"),
    [
        (None, "anything", "anyone", True),
        ({"reserve": ["orders"]}, "reserve", "orders", True),
        ({"reserve": ["orders"]}, "reserve", "intruder", False),
        ({"reserve": ["orders"]}, "release", "orders", False),
        ({"reserve": ["orders"], "*": ["*"]}, "release", "intruder", True),
        ({"reserve": ["orders"], "*": ["*"]}, "reserve", "intruder", False),
        ({"*": ["admin"]}, "reserve", "admin", True),
    ],
)
def test_access_rules(allow: dict[str, list[str]] | None, method: str, caller: str, allowed: bool) -> None:
    app = App("inventory", config={"invoke": {"allow": allow}})
    assert app.callee.allowed(method, caller) is allowed
