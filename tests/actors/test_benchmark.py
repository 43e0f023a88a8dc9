"""Smoke test: ``python -m benchmarks.actors`` keeps working (tiny sizes; no timing is asserted)."""

from __future__ import annotations

from benchmarks import actors


def test_actor_benchmark_reports_rows_next_to_invoke() -> None:
    rows = actors.run(["memory"], 20, 100, 5, 5)
    assert [r.client for r in rows] == ["invoke", "actor echo", "actor write"]
    assert all(r.rps > 0 for r in rows)
    assert "/invoke" in actors.table(rows, 5)
