"""The third-party binding example registers its types from a plugin and runs."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from mesh import App
from mesh.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def load() -> object:
    spec = importlib.util.spec_from_file_location("plugin_binding", ROOT / "examples" / "plugin_binding.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def test_plugin_binding_example_runs() -> None:
    module = load()
    assert await module.main() == [{"n": 1}, {"n": 2}, {"n": 3}]  # type: ignore[attr-defined]


def test_plugin_binding_options_are_validated_like_a_builtin() -> None:
    module = load()
    config = {"bindings": {"clock": {"type": "ticker", "topic": "ticks", "count": 0}}}
    with pytest.raises(ConfigError, match=r"bindings\.clock\.count"):
        App("x", config=config, plugins=[module.ClockPlugin()])  # type: ignore[attr-defined]
