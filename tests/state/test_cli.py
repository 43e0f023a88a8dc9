"""``mesh state`` from a shell, on a SQLite store."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
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


def test_the_config_is_loaded_as_the_app_loads_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``${VAR:default}`` and ``secretKeyRef`` are resolved, and options are validated with their path."""
    monkeypatch.setenv("MESH_TEST_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("MESH_TEST_STATE_TABLE", "carts_from_secret")
    cfg = tmp_path / "mesh.yaml"
    cfg.write_text(
        "state:\n"
        "  local:\n"
        "    type: sqlite\n"
        "    url: 'sqlite:///${MESH_TEST_STATE_DIR}/${MESH_TEST_UNSET:s}.db'\n"
        "    table: {secretKeyRef: {store: env, name: MESH_TEST_STATE_TABLE}}\n"
    )
    monkeypatch.setenv("MESH_CONFIG", str(cfg))  # no --config: the App's own lookup
    run = CliRunner().invoke
    r = run(state, ["--app", "shop", "set", "local", "c-1", '{"total": 5}'])
    assert r.exit_code == 0, r.output
    with sqlite3.connect(tmp_path / "s.db") as db:
        assert db.execute("SELECT key FROM carts_from_secret").fetchall() == [("shop||c-1",)]

    cfg.write_text("state:\n  local: {type: sqlite, url: 'sqlite:///x.db', urll: oops}\n")
    r = run(state, ["get", "local", "c-1"])
    assert r.exit_code == 1 and "state.local.urll" in r.output
    r = run(state, ["--config", str(tmp_path / "missing.yaml"), "get", "local", "c-1"])
    assert r.exit_code == 1 and "no config file" in r.output
