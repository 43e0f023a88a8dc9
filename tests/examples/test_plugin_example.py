"""The worked example of docs/writing-a-plugin.md runs and does what the page says."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


async def test_tenant_plugin_example() -> None:
    spec = importlib.util.spec_from_file_location("plugin_tenant", ROOT / "examples" / "plugin_tenant.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert await module.main() == [
        "billed 42 for tenant acme",
        "dead-lettered: bad request, not retried: negative amount",
    ]
