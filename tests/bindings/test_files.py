"""files-in and files-out on real folders, with the broker in between."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from mesh import Event
from mesh.bindings import BindingError
from mesh.codecs import from_structured, to_structured
from tests.bindings.conftest import MakeApp
from tests.support import unique, wait_for


async def test_files_in_moves_a_file_aside_only_after_its_event(make_app: MakeApp, tmp_path: Path) -> None:
    topic = unique("uploads")
    inbox = tmp_path / "in"
    inbox.mkdir()
    (inbox / "a.json").write_bytes(b'{"n": 1}')
    (inbox / "b.json").write_bytes(to_structured(Event("upload.done", "/scanner", {"n": 2}, id="ce-b")))
    (inbox / "c.bin").write_bytes(b"\x00\xff")
    (inbox / "d.json").write_bytes(b"{broken")
    (inbox / "e.json.tmp").write_bytes(b"{}")  # still being written: skipped
    options = {"type": "files-in", "path": str(inbox), "topic": topic, "poll": 0.05, "event_type": "file.{subject}"}
    app, got = await make_app({"inbox": options}, listen=topic)
    await wait_for(lambda: len(got.events) == 3, what="three events")
    await wait_for(lambda: not (inbox / "c.bin").exists(), what="the last file moved")
    by_subject = {e.subject: e for e in got.events}
    assert by_subject["a.json"].type == "file.a.json" and by_subject["a.json"].data == {"n": 1}
    assert by_subject["c.bin"].data == b"\x00\xff"
    assert got.by_id()["ce-b"].data == {"n": 2}
    assert sorted(p.name for p in (inbox / "processed").iterdir()) == ["a.json", "b.json", "c.bin"]
    assert sorted(p.name for p in (inbox / "failed").iterdir()) == ["d.json", "d.json.reason"]
    assert "not valid JSON" in (inbox / "failed" / "d.json.reason").read_text()
    assert (inbox / "e.json.tmp").exists()
    stats = app.bindings.bindings["inbox"].stats
    # counted once the publish returned, which may be after the subscriber already has the event
    await wait_for(lambda: (stats.emitted, stats.rejected) == (3, 1), what="the counts (3, 1)")
    (inbox / "f.json").write_bytes(b"[1, 2]")  # the binding keeps running
    await wait_for(lambda: len(got.events) == 4, what="the next file")


async def test_files_out_operations_and_from_topic(make_app: MakeApp, tmp_path: Path) -> None:
    topic = unique("archive")
    out = tmp_path / "out"
    app, _ = await make_app({"drop": {"type": "files-out", "path": str(out), "from_topic": topic}})
    drop = app.binding("drop")
    assert await drop.invoke("create", {"a": 1}, {"name": "x.json"}) == {"name": "x.json", "size": 7}
    assert orjson.loads(await drop.invoke("get", metadata={"name": "x.json"})) == {"a": 1}
    sent = await app.publish(topic, {"b": 2}, type="archived")
    await wait_for(lambda: (out / f"{sent.id}.json").exists(), what="the event file")
    assert from_structured((out / f"{sent.id}.json").read_bytes()).data == {"b": 2}
    assert await drop.invoke("list") == sorted(["x.json", f"{sent.id}.json"])
    await drop.invoke("delete", metadata={"name": "x.json"})
    with pytest.raises(BindingError, match="no file"):
        await drop.invoke("get", metadata={"name": "x.json"})
    with pytest.raises(BindingError, match="plain file name"):
        await drop.invoke("create", b"", {"name": "../escape"})
