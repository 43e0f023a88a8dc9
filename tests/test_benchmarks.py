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


def test_the_one_command_prints_the_machine_and_every_part(capsys) -> None:  # type: ignore[no-untyped-def]
    from benchmarks.__main__ import main

    main(["--quick", "--brokers", "memory"])
    out = capsys.readouterr().out
    for part in ("# machine", "# codec", "# publish -> subscribe", "# invoke", "# many subscriptions", "# memory"):
        assert part in out
    assert "| memory |" in out and "nats-py" in out


@pytest.mark.nats
def test_cpu_benchmark_prints_both_sides_for_each_contender(capsys) -> None:  # type: ignore[no-untyped-def]
    from benchmarks import cpu
    from tests.support import DEFAULT_URLS, reachable, unavailable

    if not reachable(DEFAULT_URLS["nats"], 4222):
        unavailable("nats")
    cpu.main(["--broker", "nats", "--n", "300"])
    rows = [line.split() for line in capsys.readouterr().out.splitlines() if line.startswith("nats ")]
    assert [row[1] for row in rows] == ["raw", "mesh"]
    assert all(float(row[2]) > 0 and float(row[3]) > 0 for row in rows)


def test_subscriptions_benchmark_runs_a_tiny_memory_row(capsys) -> None:  # type: ignore[no-untyped-def]
    from benchmarks import subscriptions

    rows = subscriptions.run(["memory"], [5])
    assert rows[0]["broker"] == "memory" and rows[0]["n"] == 5 and "error" not in rows[0]
    assert rows[0]["start"] >= 0 and rows[0]["deliver"] > 0
    assert "| memory | 5 |" in subscriptions.table(rows)


def test_resiliency_benchmark_runs_a_tiny_memory_row(capsys) -> None:  # type: ignore[no-untyped-def]
    from benchmarks import resiliency

    resiliency.main(["--brokers", "memory", "--n", "20", "--calls", "50"])
    out = capsys.readouterr().out
    assert "memory     group" in out and "memory     chosen" in out


@pytest.mark.nats
def test_pubsub_under_uvloop_measures_mesh_and_raw_on_the_same_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("uvloop", reason="the 'fast' extra (uvloop) is not installed")
    from benchmarks import loops, pubsub
    from tests.support import DEFAULT_URLS, reachable, unavailable

    if not reachable(DEFAULT_URLS["nats"], 4222):
        unavailable("nats")
    monkeypatch.delenv(loops.ENV, raising=False)
    pubsub.main(["--brokers", "nats", "--contenders", "mesh,raw", "--n", "300", "--loop", "uvloop"])
    assert loops.current() == "uvloop"  # and the spawned row processes inherited it
    monkeypatch.delenv(loops.ENV)


def test_an_unknown_loop_is_refused_by_the_benchmarks() -> None:
    from benchmarks import pubsub

    with pytest.raises(SystemExit):
        pubsub.main(["--brokers", "memory", "--loop", "tokio"])


def test_pubsub_benchmark_runs_a_tiny_bulk_row_beside_the_single_one() -> None:
    from benchmarks import pubsub

    rows = pubsub.run(["memory"], 600, ["mesh", "mesh-bulk"])
    assert rows[0]["mesh-bulk"] > 0 and rows[0]["bulk/mesh"] > 0
    table = pubsub.table(rows, ["mesh", "mesh-bulk"])
    assert "bulk/raw" in table and "bulk/mesh" in table
