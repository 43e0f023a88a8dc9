"""The demo: runs as the README says on memory, and unchanged on every broker by config alone."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tests.support import BrokerSpec, unique

ROOT = Path(__file__).resolve().parents[2]


def load_shop() -> ModuleType:
    spec = importlib.util.spec_from_file_location("shop_demo", ROOT / "examples" / "shop.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_demo_script_runs_and_exits_zero(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "shop.py"), "--pace", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "7 orders: 5 confirmed, 2 cancelled; 2 mail(s) retried" in result.stdout
    assert "your order A07 could not be filled" in result.stdout


@pytest.mark.timeout(180)
async def test_same_demo_runs_unchanged_on_every_broker(broker_spec: BrokerSpec) -> None:
    shop = load_shop()
    config = {"broker": {**broker_spec.config(), "namespace": unique("shop") + "."}}
    seen = await shop.main(config=config, timeout=120)
    assert seen["mails"] == {"confirmed": 5, "cancelled": 2}
    assert seen["outcomes"] == {
        "A01": "confirmed",
        "A02": "confirmed",
        "A03": "confirmed",
        "A04": "confirmed",
        "A05": "cancelled",
        "A06": "confirmed",
        "A07": "cancelled",
    }
    assert seen["bounces"] == 2
