"""The CloudEvent model: required attributes, the extension name rule, copies."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import BaseModel

from mesh import Event, InvalidEvent


class Item(BaseModel):
    sku: str


def test_defaults_fill_id_time_specversion_and_content_type() -> None:
    e = Event(type="t", source="/s", data={"a": 1})
    assert e.specversion == "1.0"
    assert len(e.id) == 32 and e.time is not None and e.time.tzinfo is not None
    assert e.datacontenttype == "application/json"


@pytest.mark.parametrize(
    ("data", "content_type"),
    [
        (b"x", "application/octet-stream"),
        ("x", "text/plain; charset=utf-8"),
        (Item(sku="a"), "application/json"),
        (None, None),
    ],
)
def test_content_type_defaults_from_data(data: object, content_type: str | None) -> None:
    assert Event(type="t", source="/s", data=data).datacontenttype == content_type


@pytest.mark.parametrize("name", ["mesh_attempt", "Upper", "1abc", "a" * 21, "", "data", "id", "time"])
def test_invalid_extension_names_are_refused(name: str) -> None:
    with pytest.raises(InvalidEvent, match="invalid extension name"):
        Event(type="t", source="/s", extensions={name: "x"})


def test_extension_values_must_be_of_spec_types() -> None:
    with pytest.raises(InvalidEvent, match="float"):
        Event(type="t", source="/s", extensions={"ratio": 0.5})


@pytest.mark.parametrize("kwargs", [{"type": ""}, {"source": ""}, {"id": ""}, {"specversion": "0.3"}])
def test_required_attributes_are_checked(kwargs: dict[str, str]) -> None:
    args = {"type": "t", "source": "/s", **kwargs}
    with pytest.raises(InvalidEvent):
        Event(**args)  # type: ignore[arg-type]


def test_naive_time_is_refused() -> None:
    with pytest.raises(InvalidEvent, match="timezone"):
        Event(type="t", source="/s", time=datetime(2026, 1, 1))


def test_with_extensions_copies_and_removes() -> None:
    e = Event(type="t", source="/s", extensions={"tenant": "a"})
    f = e.with_extensions(partitionkey="k", tenant=None)
    assert e.extensions == {"tenant": "a"}
    assert f.extensions == {"partitionkey": "k"} and f.id == e.id and f.partitionkey == "k"
    assert f.without_extensions("partitionkey").extensions == {}


def test_equality_compares_attributes_and_data() -> None:
    t = datetime(2026, 1, 1, tzinfo=UTC)
    a = Event(type="t", source="/s", id="1", time=t, data=Item(sku="x"))
    b = Event(type="t", source="/s", id="1", time=t, data={"sku": "x"})
    assert a == b
    assert a != b.with_extensions(more="y")


def test_get_reads_attributes_and_extensions() -> None:
    e = Event(type="t", source="/s", subject="sub", extensions={"tenant": "a"})
    assert (e.get("type"), e.get("subject"), e.get("tenant"), e.get("missing", 0)) == ("t", "sub", "a", 0)


def test_ids_are_unique_and_not_repeated_by_seeding_the_global_random() -> None:
    import random

    from mesh.event import new_id

    ids = {new_id() for _ in range(10_000)}
    assert len(ids) == 10_000 and all(len(i) == 32 and int(i, 16) >= 0 for i in ids)
    random.seed(7)
    first = new_id()
    random.seed(7)
    assert new_id() != first


def test_a_forked_child_draws_other_ids_than_its_parent() -> None:
    import os

    from mesh.event import new_id

    if not hasattr(os, "fork"):
        pytest.skip("no fork here")
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.write(write, new_id().encode())
        os._exit(0)
    os.close(write)
    child = os.read(read, 64).decode()
    os.close(read)
    os.waitpid(pid, 0)
    assert len(child) == 32 and child != new_id()
