"""The event loop choice: ``mesh.loop``, ``event_loop`` in the config and ``mesh run --loop``."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from mesh import App, Event
from mesh.config import MeshConfig
from mesh.errors import ComponentNotInstalled, ConfigError
from mesh.loop import loop_factory, run

ROOT = Path(__file__).resolve().parents[1]
uvloop = pytest.importorskip("uvloop", reason="the 'fast' extra (uvloop) is not installed")


def _app() -> App:
    return App("looped", config={"broker": {"type": "memory", "options": {"name": f"loop-{uuid.uuid4().hex[:8]}"}}})


async def _round_trip(app: App) -> tuple[str, object]:
    got: asyncio.Future[object] = asyncio.get_running_loop().create_future()

    @app.subscribe("pings")
    async def on_ping(event: Event) -> None:
        got.set_result(event.data)

    async with app:
        await app.publish("pings", {"n": 1}, type="ping")
        data = await asyncio.wait_for(got, 5)
    return type(asyncio.get_running_loop()).__module__, data


@pytest.mark.parametrize(("name", "module"), [("uvloop", "uvloop"), ("auto", "uvloop"), ("asyncio", "asyncio")])
def test_an_app_publishes_and_handles_on_the_chosen_loop(name: str, module: str) -> None:
    loop_module, data = run(_round_trip(_app()), name)
    assert loop_module.split(".")[0] == module
    assert data == {"n": 1}


def test_uvloop_missing_names_the_extra_and_auto_falls_back(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop now raises ImportError
    with pytest.raises(ComponentNotInstalled, match=r"event-mesh\[fast\]"):
        loop_factory("uvloop")
    assert loop_factory("auto") is asyncio.new_event_loop


def test_unknown_loop_is_a_clear_error_and_run_closes_the_coroutine() -> None:
    async def never() -> None:  # pragma: no cover - must not run
        raise AssertionError

    coro = never()
    with pytest.raises(ConfigError, match="unknown event loop 'tokio'"):
        run(coro, "tokio")
    assert coro.cr_frame is None  # closed, so no "never awaited" warning


def test_config_takes_event_loop_and_rejects_others() -> None:
    assert MeshConfig().event_loop == "asyncio"
    assert MeshConfig.model_validate({"event_loop": "uvloop"}).event_loop == "uvloop"
    with pytest.raises(ValueError, match="event_loop"):
        MeshConfig.model_validate({"event_loop": "trio"})


def _serve(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    (tmp_path / "svc.py").write_text("from mesh import App\napp = App('svc')\n")
    base = {k: v for k, v in os.environ.items() if k != "MESH_CONFIG"}
    return subprocess.Popen(
        [sys.executable, "-m", "mesh.cli", "run", "svc:app", *args],
        cwd=tmp_path,
        stderr=subprocess.PIPE,
        text=True,
        env={**base, "PYTHONPATH": str(ROOT), **(env or {})},
    )


@pytest.mark.parametrize(("config", "flag", "expected"), [("uvloop", None, "uvloop"), ("uvloop", "asyncio", "asyncio")])
def test_mesh_run_serves_on_the_configured_loop_and_the_flag_wins(
    tmp_path: Path, config: str, flag: str | None, expected: str
) -> None:
    (tmp_path / "mesh.yaml").write_text(f"broker: {{type: memory}}\nevent_loop: {config}\n")
    with _serve(tmp_path, *(["--loop", flag] if flag else [])) as proc:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        while line and "serving" not in line:
            line = proc.stderr.readline()
        assert f"serving svc (memory) on {expected};" in line
        proc.send_signal(signal.SIGINT)
        proc.stderr.read()
        assert proc.wait(15) == 0


def test_mesh_run_without_uvloop_says_which_extra(tmp_path: Path) -> None:
    hide = tmp_path / "hide"
    hide.mkdir()
    (hide / "uvloop.py").write_text("raise ImportError('hidden by the test')\n")
    (tmp_path / "svc.py").write_text("from mesh import App\napp = App('svc')\n")
    result = subprocess.run(
        [sys.executable, "-m", "mesh.cli", "run", "svc:app", "--loop", "uvloop"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "PYTHONPATH": f"{hide}{os.pathsep}{ROOT}"},
    )
    assert result.returncode == 1
    assert "pip install 'event-mesh[fast]'" in result.stderr and "Traceback" not in result.stderr
