"""Smoke tests: the benchmark commands keep working (tiny sizes; no timing is asserted)."""

from __future__ import annotations

import pytest

from benchmarks import codec


def test_codec_benchmark_reports_rates_and_the_ratio_to_the_sdk(capsys) -> None:  # type: ignore[no-untyped-def]
    codec.main(["--n", "300"])
    out = capsys.readouterr().out
    assert "binary" in out and "structured" in out and "x" in out
    rows = codec.run(300)
    assert {r["mode"] for r in rows} == {"binary", "structured"}
    assert all(r["mesh"] > 0 and r["sdk"] and r["ratio"] for r in rows)


async def test_memory_benchmark_reports_rss() -> None:
    from benchmarks import memory

    result = await memory.run(events=2000, batch=500)
    assert result["events"] == 2000
    assert result["idle_mb"] > 0 and result["final_mb"] > 0


def test_pubsub_benchmark_runs_a_tiny_memory_row() -> None:
    from benchmarks import pubsub

    rows = pubsub.run(["memory"], 200, ["mesh", "raw"])
    assert rows[0]["broker"] == "memory" and rows[0]["mesh"] > 0 and rows[0]["raw"] is None
    assert "| memory |" in pubsub.table(rows, ["mesh", "raw"])


@pytest.mark.nats
def test_invoke_benchmark_shows_raw_faststream_and_mesh_rows_for_nats(capsys) -> None:  # type: ignore[no-untyped-def]
    from benchmarks import invoke
    from mesh.testing import reachable
    from tests.support import unavailable

    if not reachable(invoke.URLS["nats"], 4222):
        unavailable(f"nats at {invoke.URLS['nats']}")
    rows = invoke.main(["--brokers", "nats", "--n", "5", "--calls", "20", "--concurrency", "5"])
    assert [(r.broker, r.client) for r in rows] == [("nats", "raw"), ("nats", "FastStream"), ("nats", "mesh")]
    assert all(r.rps > 0 and r.p50_ms > 0 for r in rows)
    out = capsys.readouterr().out
    assert "mesh/raw" in out and "mesh/FS" in out
    mesh_line = next(line for line in out.splitlines() if line.split()[:2] == ["nats", "mesh"])
    assert mesh_line.count("x") == 2  # both ratios are filled in


def test_the_one_command_prints_the_machine_and_every_part(capsys) -> None:  # type: ignore[no-untyped-def]
    from benchmarks.__main__ import main

    main(["--quick", "--brokers", "memory"])
    out = capsys.readouterr().out
    for part in ("# machine", "# codec", "# publish -> subscribe", "# invoke", "# memory"):
        assert part in out
    assert "| memory |" in out and "nats-py" in out
