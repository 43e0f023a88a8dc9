"""Smoke test: ``python -m benchmarks.bindings`` still runs (tiny size; no timing is asserted)."""

from __future__ import annotations

import pytest

from benchmarks import bindings
from tests.support import reachable, unavailable

pytestmark = pytest.mark.redis


def test_bindings_benchmark_prints_both_rows(capsys: pytest.CaptureFixture[str]) -> None:
    if not reachable("redis://127.0.0.1:6379/0", 6379):
        unavailable("redis")
    rows = bindings.main(["--brokers", "redis", "--requests", "100", "--concurrency", "8"])
    assert [r.broker for r in rows] == ["redis"] and rows[0].bare > 0 and rows[0].mesh > 0
    assert "mesh / bare" in capsys.readouterr().out
