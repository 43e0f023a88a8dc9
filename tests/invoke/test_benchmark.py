"""Smoke test: the invocation benchmark keeps working (tiny sizes; no timing is asserted)."""

from __future__ import annotations

import pytest

from benchmarks import invoke, invoke_cpu
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


@pytest.mark.memory
def test_invoke_cpu_benchmark_measures_each_row(capsys: pytest.CaptureFixture[str]) -> None:
    results = invoke_cpu.main(["--broker", "memory", "--calls", "30", "--concurrency", "5", "--rounds", "2",
                               "--profile", "3"])
    assert {name: len(rows) for name, rows in results.items()} == {"mesh": 2, "mesh-shared": 2}
    assert all(us > 0 and rps > 0 for rows in results.values() for us, rps in rows)
    out = capsys.readouterr().out
    assert "median  mesh " in out and "median  mesh-shared" in out
    assert out.count("Python function calls per invocation") == 2


@pytest.mark.rabbitmq
def test_invoke_cpu_benchmark_has_a_raw_row_where_the_client_has_request_reply(
    capsys: pytest.CaptureFixture[str],
) -> None:
    if not reachable(DEFAULT_URLS["rabbitmq"], 5672):
        unavailable("rabbitmq")
    results = invoke_cpu.main(["--broker", "rabbitmq", "--calls", "40", "--concurrency", "5", "--rounds", "2"])
    assert {name: len(rows) for name, rows in results.items()} == {"raw": 2, "mesh": 2, "mesh-shared": 2}
    assert [line.split()[:2] for line in capsys.readouterr().out.splitlines()[-3:]] == [
        ["median", "raw"],
        ["median", "mesh"],
        ["median", "mesh-shared"],
    ]
