"""The ``mesh`` command: version, publish, run (with a clean Ctrl-C), bad targets."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest
import yaml
from click.testing import CliRunner

from mesh import App, Event
from mesh.cli import cli
from tests.support import DEFAULT_URLS, reachable, unavailable, unique, wait_for

ROOT = Path(__file__).resolve().parents[1]


def test_version() -> None:
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0 and "0.1.0" in result.output


def test_publish_prints_the_event(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli, ["publish", "orders", "--type", "shop.order.created", "--data", '{"id": "A1"}', "--key", "A1"]
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("published shop.order.created id=") and "to orders (memory)" in result.stdout
    assert "WARNING: no config file found" in result.stderr  # memory reaches no other process


def test_run_target_that_does_not_import_is_one_clear_error(tmp_path: Path) -> None:
    runner = CliRunner()
    for target, message in [
        ("no_such_module:app", "ModuleNotFoundError: No module named 'no_such_module'"),
        (str(tmp_path / "missing.py") + ":app", "no such file"),
        ("json:dumps", "calling dumps failed"),
        ("json:decoder", "is not an App"),
        ("json:nothing", "has no attribute 'nothing'"),
    ]:
        result = runner.invoke(cli, ["run", target])
        assert result.exit_code == 1, target
        assert message in result.output and "Traceback" not in result.output, result.output


def test_run_target_with_a_broken_config_reports_the_path(tmp_path: Path) -> None:
    (tmp_path / "svc.py").write_text("from mesh import App\napp = App('svc')\n")
    (tmp_path / "mesh.yaml").write_text("broker: {type: memory, options: {retention: none}}\n")
    result = subprocess.run(
        [sys.executable, "-m", "mesh.cli", "run", "svc:app"], cwd=tmp_path, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 1
    assert "broker.options.retention (line 1)" in result.stderr and "Traceback" not in result.stderr


def test_run_serves_until_ctrl_c_and_drains(tmp_path: Path) -> None:
    (tmp_path / "svc.py").write_text(
        "import asyncio\nfrom mesh import App, Event\napp = App('svc')\n"
        "@app.subscribe('t')\nasync def h(e: Event) -> None:\n    await asyncio.sleep(0.1)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with subprocess.Popen(
        [sys.executable, "-m", "mesh.cli", "run", "svc:app"], cwd=tmp_path, stderr=subprocess.PIPE, text=True, env=env
    ) as proc:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        assert "serving svc (memory)" in line
        time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        rest = proc.stderr.read()
        assert proc.wait(15) == 0
    assert "draining" in rest and "stopped" in rest


# -- day one: config said out loud, logs, drain limit, second Ctrl-C, health ---------------------------------


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "MESH_CONFIG"}
    return {**env, "PYTHONPATH": str(ROOT)}


def test_client_commands_warn_loudly_without_a_config(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mesh.cli", "publish", "orders", "--type", "t"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
        env=_env(),
    )
    assert result.returncode == 0, result.stderr
    assert "WARNING: no config file found" in result.stderr and "no other process can reach" in result.stderr


def test_mesh_yml_is_found_and_config_check_masks_the_password(tmp_path: Path) -> None:
    (tmp_path / "mesh.yml").write_text("broker: {type: rabbitmq, url: 'amqp://app:s3cret@rabbit:5672/shop'}\n")
    result = subprocess.run(
        [sys.executable, "-m", "mesh.cli", "config", "check"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
        env=_env(),
    )
    assert result.returncode == 0, result.stderr
    assert "ok: config mesh.yml: broker rabbitmq at amqp://app:***@rabbit:5672/shop" in result.stdout
    assert "s3cret" not in result.stdout + result.stderr


def test_config_check_without_a_file_warns(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mesh.cli", "config", "check"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
        env=_env(),
    )
    assert result.returncode == 0
    assert "no config file (defaults): broker memory" in result.stdout and "warning" in result.stderr


def test_apps_output_json_is_one_document_even_when_nothing_runs() -> None:
    result = CliRunner().invoke(cli, ["apps", "--output", "json", "--wait", "0"])
    assert result.exit_code == 0, result.output
    assert orjson.loads(result.stdout) == {}


def test_run_accepts_a_build_function_returning_apps_and_more() -> None:
    from mesh.cli import load_target

    apps = load_target("examples.shop:build")
    assert [a.id for a in apps] == ["orders", "inventory", "notifications"]


def _serve(tmp_path: Path, body: str, *args: str) -> subprocess.Popen[str]:
    (tmp_path / "svc.py").write_text("import asyncio\nfrom mesh import App, Event\n" + body)
    return subprocess.Popen(
        [sys.executable, "-m", "mesh.cli", "run", "svc:app", *args],
        cwd=tmp_path,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    )


def _until(proc: subprocess.Popen[str], text: str) -> str:
    assert proc.stderr is not None
    seen = ""
    deadline = time.monotonic() + 20
    while text not in seen and time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        seen += line
    assert text in seen, seen
    return seen


def test_run_says_its_config_and_serves_health(tmp_path: Path) -> None:
    proc = _serve(
        tmp_path, "app = App('svc')\n", "--log-format", "json", "--health-port", "0", "--health-host", "127.0.0.1"
    )
    with proc:
        seen = _until(proc, "health on http://127.0.0.1:")
        assert "config no config file (defaults): broker memory" in seen
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0


def test_drain_timeout_bounds_a_stuck_handler_and_second_ctrl_c_exits_130(tmp_path: Path) -> None:
    body = (
        "app = App('svc')\n"
        "@app.subscribe('t')\nasync def h(e: Event) -> None:\n    print('started', flush=True)\n    await asyncio.Event().wait()\n"
        "@app.subscribe('go')\nasync def go(e: Event) -> None:\n    await app.publish('t', {}, type='x')\n"
    )
    # the stuck handler gets an event published from inside the process (memory is in-process)
    proc = _serve(
        tmp_path,
        body + "_orig = App.start\n"
        "async def _start(self):\n    await _orig(self)\n    await self.publish('t', {}, type='x')\n"
        "App.start = _start\n",
        "--drain-timeout",
        "1",
    )
    with proc:
        _until(proc, "serving svc")
        time.sleep(0.3)
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
        assert time.monotonic() - started < 8, "the drain timeout ended the stuck handler"
    proc = _serve(
        tmp_path,
        body + "_orig = App.start\n"
        "async def _start(self):\n    await _orig(self)\n    await self.publish('t', {}, type='x')\n"
        "App.start = _start\n",
        "--drain-timeout",
        "60",
    )
    with proc:
        _until(proc, "serving svc")
        time.sleep(0.3)
        proc.send_signal(signal.SIGINT)
        _until(proc, "draining")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(10) == 130


# -- SIGTERM on a real broker: the stuck event goes to the next instance ------------------------------------


def _redis_config(tmp_path: Path) -> dict[str, object]:
    """A mesh.yaml on the local Redis whose take-over of given-back entries is quick (claim_idle_ms 500)."""
    url = os.environ.get("MESH_TEST_REDIS_URL", DEFAULT_URLS["redis"])
    if not reachable(url, 6379):
        unavailable(f"redis at {url}")
    config: dict[str, object] = {
        "broker": {"type": "redis", "url": url, "options": {"claim_idle_ms": 500, "claim_interval_ms": 100}},
        "defaults": {"retry": {"attempts": 1, "immediate": 0}},
    }
    (tmp_path / "mesh.yaml").write_text(yaml.safe_dump(config))
    return config


@pytest.mark.redis
def test_sigterm_ends_a_stuck_handler_and_the_next_instance_gets_its_event(tmp_path: Path) -> None:
    config = _redis_config(tmp_path)
    topic, app_id = unique("sigterm"), unique("svc")
    body = (
        f"app = App({app_id!r})\n"
        f"@app.subscribe({topic!r})\n"
        "async def h(e: Event) -> None:\n    print('started', e.id, flush=True)\n    await asyncio.Event().wait()\n"
        "@app.method('ping')\nasync def ping(data: object) -> str:\n    return 'pong'\n"
    )
    (tmp_path / "svc.py").write_text("import asyncio\nfrom mesh import App, Event\n" + body)
    proc = subprocess.Popen(
        [sys.executable, "-m", "mesh.cli", "run", "svc:app", "--drain-timeout", "1"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    with proc:
        assert proc.stdout is not None
        _until(proc, f"serving {app_id} (redis)")
        # mesh apps --output json (and its old spelling --json) finds the running instance
        for flag in (["--output", "json"], ["--json"]):
            listed = CliRunner().invoke(cli, ["apps", *flag, "--wait", "1", "-c", str(tmp_path / "mesh.yaml")])
            assert listed.exit_code == 0, listed.output
            live = orjson.loads(listed.stdout)[app_id]
            assert len(live) == 1 and {"name": "ping", "idempotent": False} in live[0]["methods"]
            assert {"topic": topic, "group": app_id} in [
                {k: s[k] for k in ("topic", "group")} for s in live[0]["subscriptions"]
            ]

        async def publish() -> Event:
            async with App("sender", config=config) as sender:
                return await sender.publish(topic, {"n": 1}, type="stuck.event")

        sent = asyncio.run(publish())
        assert proc.stdout.readline().split() == ["started", sent.id]
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        assert time.monotonic() - started < 6, "the drain timeout (1 s) bounded the stuck handler"
        assert proc.stderr is not None
        assert "cancelling them" in proc.stderr.read()

    async def next_instance() -> list[Event]:
        got: list[Event] = []
        app = App(app_id, config=config)

        @app.subscribe(topic)
        async def handle(event: Event) -> None:
            got.append(event)

        async with app:
            await wait_for(lambda: bool(got), 15, "the given-back event at the next instance")
        return got

    got = asyncio.run(next_instance())
    assert [e.id for e in got] == [sent.id] and got[0].data == {"n": 1}
