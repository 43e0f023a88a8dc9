"""``mesh jobs list|show|cancel|trigger`` against a store a running app wrote."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from mesh import App
from mesh.cli import cli
from tests.support import unique

pytestmark = pytest.mark.memory


def test_list_show_trigger_cancel(tmp_path: Path) -> None:
    conf = {"broker": {"type": "memory", "options": {"name": unique("b")}},
            "state": {"js": {"type": "sqlite", "url": f"sqlite:///{tmp_path}/j.db"}}, "jobs": {"store": "js"}}
    path = tmp_path / "mesh.yaml"
    path.write_text(yaml.safe_dump(conf))

    async def schedule() -> None:
        async with App("clijobs", config=conf) as app:
            await app.jobs.schedule("nightly", cron="0 2 * * *", tz="Europe/Berlin", topic="reports", type="r")

    asyncio.run(schedule())
    run = CliRunner().invoke
    base = ["jobs", "--config", str(path), "--app", "clijobs"]
    out = run(cli, [*base, "list"])
    assert out.exit_code == 0, out.output
    row = json.loads(out.output.splitlines()[0])
    assert row["name"] == "nightly" and row["schedule"] == "cron 0 2 * * * Europe/Berlin" and row["target"] == "reports"
    shown = json.loads(run(cli, [*base, "show", "nightly"]).output)
    assert shown["cron"] == "0 2 * * *"
    out = run(cli, [*base, "trigger", "nightly"])
    assert out.exit_code == 0 and "triggered nightly" in out.output
    assert run(cli, [*base, "cancel", "nightly"]).exit_code == 0
    out = run(cli, [*base, "show", "nightly"])
    assert out.exit_code != 0 and "not scheduled" in out.output
    out = run(cli, [*base, "cancel", "nightly"])
    assert out.exit_code != 0 and "not scheduled" in out.output
