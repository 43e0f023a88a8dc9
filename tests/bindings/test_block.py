"""The bindings block: registry, config validation with paths and lines, lifecycle, handles, CLI."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import orjson
import pytest
from click.testing import CliRunner

from mesh import App, Event
from mesh.bindings import BUILTIN_BINDINGS, BindingError
from mesh.cli import cli
from mesh.components import Registry
from mesh.config import load_config
from mesh.errors import ConfigError, MeshError
from tests.support import free_port, unique, wait_for

pytestmark = pytest.mark.memory


def memory() -> dict[str, object]:
    return {"type": "memory", "options": {"name": unique("hub")}}


def test_builtin_binding_types_are_registered_like_any_component() -> None:
    registry = Registry()
    assert registry.types("binding") == [info.type for info in BUILTIN_BINDINGS]
    assert registry.info("binding", "mqtt-in").extra == "mqtt"
    for info in BUILTIN_BINDINGS:
        cls = registry.load("binding", info.type)
        assert cls.type == info.type
        assert registry.options_model("binding", info.type) is not None


def test_config_problems_name_their_path_and_line(tmp_path: Path) -> None:
    file = tmp_path / "mesh.yaml"
    file.write_text(
        "bindings:\n"
        "  github:\n"
        "    type: http-in\n"
        "    path: hooks\n"
        "    topic: repo events\n"
        "  nightly: {type: cron, schedule: '0 2 * *', topic: reports}\n"
        "  mailer: {type: smtp-out, host: 127.0.0.1, sender: a@b.c, colour: red}\n"
        "  sensors: {type: mqtt-in, url: 'http://x', filter: a/b, topic: t}\n"
        "  odd: {type: ftp-in}\n"
    )
    with pytest.raises(ConfigError) as info:
        load_config(file)
    text = str(info.value)
    assert "bindings.github.path (line 4)" in text and "must start with '/'" in text
    assert "bindings.github.topic (line 5)" in text and "cannot be used on every broker" in text
    assert "bindings.nightly.schedule" in text and "five cron fields" in text
    assert "bindings.mailer.colour" in text and "unknown key" in text
    assert "bindings.sensors.url" in text and "mqtt://host:1883" in text
    assert "bindings.odd.type" in text and "unknown binding type 'ftp-in'" in text


async def test_cron_fires_its_event_through_the_jobs_block() -> None:
    topic = unique("reports")
    app = App(
        unique("app"),
        config={
            "broker": memory(),
            "state": {"jobs": {"type": "memory", "url": f"memory://{unique('jobs')}"}},
            "jobs": {"store": "jobs", "poll_interval": "50ms"},
            "bindings": {"nightly": {"type": "cron", "schedule": "@every 1s", "topic": topic, "event_type": "r"}},
        },
    )
    fired: list[Event] = []

    @app.subscribe(topic)
    async def on_report(event: Event) -> None:
        fired.append(event)

    async with app:
        await wait_for(lambda: len(fired) >= 2, timeout=10, what="two occurrences")
        job = await app.jobs.get("binding.nightly")
        assert job is not None
    assert all(e.type == "r" and e.extensions["meshjob"] == "binding.nightly" for e in fired)


async def test_a_binding_that_cannot_start_stops_the_others_and_the_app_does_not_start() -> None:
    port = free_port()
    bindings = {
        "hook": {"type": "http-in", "path": "/h", "topic": "t", "port": port},
        "sensors": {"type": "mqtt-in", "url": f"mqtt://127.0.0.1:{free_port()}", "filter": "a", "topic": "t"},
    }
    app = App(unique("app"), config={"broker": memory(), "bindings": bindings})
    with pytest.raises(BindingError, match="cannot subscribe"):
        await app.start()
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.ClientConnectionError):
            await http.post(f"http://127.0.0.1:{port}/h", json={})


async def test_binding_handles_and_their_errors() -> None:
    bindings = {
        "hook": {"type": "http-in", "path": "/h", "topic": "t", "port": 0},
        "drop": {"type": "files-out", "path": "/tmp/unused"},
    }
    app = App(unique("app"), config={"broker": memory(), "bindings": bindings})
    with pytest.raises(MeshError, match="no output binding 'nope' \\(output bindings: drop\\)"):
        app.binding("nope")
    with pytest.raises(MeshError, match="is an input binding"):
        app.binding("hook")
    assert app.binding("drop").features.operations == {"create", "get", "delete", "list"}
    rows = {row["name"]: row for row in app.bindings.describe()}
    assert rows["hook"]["direction"] == "input" and rows["hook"]["state"] == "stopped"


def test_cli_lists_bindings(tmp_path: Path) -> None:
    file = tmp_path / "mesh.yaml"
    file.write_text(
        "bindings:\n"
        "  github: {type: http-in, path: /hooks/github, topic: repo.events}\n"
        "  ledger: {type: postgres-out, url: 'postgresql://x', from_topic: ledger}\n"
    )
    result = CliRunner().invoke(cli, ["bindings", "list", "--config", str(file), "--json"])
    assert result.exit_code == 0, result.output
    rows = {row["name"]: row for row in orjson.loads(result.output)}
    assert rows["github"]["direction"] == "input" and rows["github"]["topic"] == "repo.events"
    assert rows["ledger"]["operations"] == ["exec", "query"] and rows["ledger"]["state"] == "configured"
    text = CliRunner().invoke(cli, ["bindings", "list", "--config", str(file)])
    assert "github" in text.output and "exec,query" in text.output
