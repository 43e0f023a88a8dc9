"""The program of docs/batches.md runs and does what the page says."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from mesh.brokers.memory import MemoryBroker

ROOT = Path(__file__).resolve().parents[2]


async def test_batches_example() -> None:
    spec = importlib.util.spec_from_file_location("batches_example", ROOT / "examples" / "batches.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    try:
        assert await module.main() == (250, 249, ["o7"])
    finally:
        MemoryBroker.reset("example-batches")
