"""Smoke test: the invocation benchmark keeps working (tiny sizes; no timing is asserted)."""

from __future__ import annotations

import pytest

from benchmarks import invoke
from tests.support import DEFAULT_URLS, reachable, unavailable


@pytest.mark.memory
def test_invoke_benchmark_prints_a_table_for_the_mesh(capsys: pytest.CaptureFixture[str]) -> None:
    rows = invoke.main(["--brokers", "memory", "--n", "20", "--calls", "40", "--concurrency", "5"])
    assert [(r.broker, r.client) for r in rows] == [("memory", "mesh")]
    assert rows[0].p50_ms > 0 and rows[0].p99_ms >= rows[0].p50_ms and rows[0].rps > 0
    assert "req/s @5" in capsys.readouterr().out


@pytest.mark.nats
def test_invoke_benchmark_puts_the_raw_client_beside_the_mesh(capsys: pytest.CaptureFixture[str]) -> None:
    if not reachable(DEFAULT_URLS["nats"], 4222):
        unavailable("nats")
    rows = invoke.main(["--brokers", "nats", "--n", "20", "--calls", "40", "--concurrency", "5"])
    assert [r.client for r in rows] == ["raw", "mesh"]
    assert "x" in capsys.readouterr().out.splitlines()[-1]  # the mesh/raw ratio
