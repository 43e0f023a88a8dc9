"""Interop with the official CloudEvents SDK (2.x): its JSON format reads ours and the other way round."""

from __future__ import annotations

from datetime import UTC, datetime

from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent

from mesh import Event
from mesh.codecs import from_structured, to_structured

FORMAT = JSONFormat()


def test_sdk_reads_mesh_structured_json() -> None:
    when = datetime(2026, 11, 20, 10, 0, 1, tzinfo=UTC)
    ours = Event(
        type="shop.order.created",
        source="/orders",
        id="42",
        time=when,
        subject="A1",
        data={"qty": 2},
        extensions={"tenant": "acme"},
    )
    theirs = FORMAT.read(None, to_structured(ours))
    attrs = theirs.get_attributes()
    assert (attrs["id"], attrs["type"], attrs["source"], attrs["subject"], attrs["tenant"]) == (
        "42",
        "shop.order.created",
        "/orders",
        "A1",
        "acme",
    )
    assert attrs["time"] == when
    assert theirs.get_data() == {"qty": 2}


def test_sdk_reads_mesh_binary_data_as_base64() -> None:
    theirs = FORMAT.read(None, to_structured(Event(type="t", source="/s", data=b"\x00\xff")))
    assert theirs.get_data() == b"\x00\xff"


def test_mesh_reads_sdk_structured_json() -> None:
    when = datetime(2026, 11, 20, 10, 0, 1, tzinfo=UTC)
    theirs = CloudEvent(
        {
            "type": "shop.order.created",
            "source": "/orders",
            "id": "7",
            "time": when,
            "datacontenttype": "application/json",
            "tenant": "acme",
        },
        {"qty": 2},
    )
    ours = from_structured(FORMAT.write(theirs))
    assert (ours.id, ours.type, ours.source, ours.time, ours.data) == (
        "7",
        "shop.order.created",
        "/orders",
        when,
        {"qty": 2},
    )
    assert ours.extensions == {"tenant": "acme"}


def test_mesh_reads_sdk_bytes_data() -> None:
    theirs = CloudEvent({"type": "t", "source": "/s", "datacontenttype": "application/octet-stream"}, b"\x01\x02")
    assert from_structured(FORMAT.write(theirs)).data == b"\x01\x02"
