"""``mesh state`` from a shell, on a SQLite store."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from mesh.state.cli import state


def test_set_get_list_delete(tmp_path: Path) -> None:
    cfg = tmp_path / "mesh.yaml"
    cfg.write_text(f"state:\n  local: {{type: sqlite, url: 'sqlite:///{tmp_path}/s.db'}}\n")
    run = CliRunner().invoke
    base = ["--config", str(cfg), "--app", "shop"]
    r = run(state, [*base, "set", "local", "c-1", '{"total": 5}'])
    assert r.exit_code == 0, r.output
    etag = r.output.strip()
    r = run(state, [*base, "get", "local", "c-1"])
    assert json.loads(r.output) == {"key": "c-1", "etag": etag, "value": {"total": 5}}
    r = run(state, [*base, "list", "local", "--where", '{"total": {"gt": 1}}'])
    assert [json.loads(line)["key"] for line in r.output.splitlines()] == ["c-1"]
    assert run(state, [*base, "delete", "local", "c-1", "--etag", "stale"]).exit_code == 1
    assert run(state, [*base, "delete", "local", "c-1"]).exit_code == 0
    r = run(state, [*base, "get", "local", "c-1"])
    assert r.exit_code == 1 and "not in store" in r.output
    r = run(state, [*base, "get", "nope", "k"])
    assert r.exit_code == 1 and "'nope'" in r.output
