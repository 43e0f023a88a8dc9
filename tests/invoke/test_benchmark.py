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
def test_invoke_benchmark_shows_raw_faststream_and_mesh_rows(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("faststream", reason="the FastStream rows need the bench extra: pip install '.[bench]'")
    if not reachable(DEFAULT_URLS["nats"], 4222):
        unavailable("nats")
    rows = invoke.main(["--brokers", "nats", "--n", "20", "--calls", "40", "--concurrency", "5"])
    assert [(r.broker, r.client) for r in rows] == [("nats", "raw"), ("nats", "FastStream"), ("nats", "mesh")]
    assert all(r.rps > 0 and r.p50_ms > 0 for r in rows)
    out = capsys.readouterr().out
    assert "mesh/raw" in out and "mesh/FS" in out
    mesh_line = next(line for line in out.splitlines() if line.split()[:2] == ["nats", "mesh"])
    assert mesh_line.count("x") == 2  # both ratios are filled in


@pytest.mark.rabbitmq
def test_invoke_cpu_benchmark_measures_raw_and_mesh_rounds(capsys: pytest.CaptureFixture[str]) -> None:
    from benchmarks import invoke_cpu

    if not reachable(DEFAULT_URLS["rabbitmq"], 5672):
        unavailable("rabbitmq")
    results = invoke_cpu.main(["--broker", "rabbitmq", "--calls", "40", "--concurrency", "5", "--rounds", "2"])
    assert {name: len(rows) for name, rows in results.items()} == {"raw": 2, "mesh": 2}
    assert all(us > 0 and rps > 0 for rows in results.values() for us, rps in rows)
    assert [line.split()[:2] for line in capsys.readouterr().out.splitlines()[-2:]] == [
        ["median", "raw"],
        ["median", "mesh"],
    ]
