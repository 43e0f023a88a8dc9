"""The ``mesh`` command: version, publish, run (with a clean Ctrl-C), bad targets."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from click.testing import CliRunner

from mesh.cli import cli

ROOT = Path(__file__).resolve().parents[1]


def test_version() -> None:
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0 and "0.1.0" in result.output


def test_publish_prints_the_event(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli, ["publish", "orders", "--type", "shop.order.created", "--data", '{"id": "A1"}', "--key", "A1"]
    )
    assert result.exit_code == 0, result.output
    assert result.output.startswith("published shop.order.created id=") and "to orders (memory)" in result.output


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
