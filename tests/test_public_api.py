"""The public surface: ``__all__`` matches, ``import mesh`` loads no broker client, docs run."""

from __future__ import annotations

import doctest
import importlib
import subprocess
import sys

import pytest

import mesh

CLIENTS = ("aiokafka", "aio_pika", "aiormq", "nats", "redis", "faststream", "opentelemetry.sdk")


def test_all_matches_the_public_surface() -> None:
    public = {name for name in vars(mesh) if not name.startswith("_") and name not in {"annotations"}}
    modules = {name for name in public if isinstance(getattr(mesh, name), type(mesh))}
    assert set(mesh.__all__) - {"__version__"} == public - modules


def test_import_mesh_loads_no_broker_client() -> None:
    code = f"import sys, mesh, mesh.cli; bad = [m for m in sys.modules if m.split('.')[0] in {CLIENTS!r} or m in {CLIENTS!r}]; print(bad)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize(
    "module",
    [
        "mesh.event",
        "mesh.app",
        "mesh.codecs.binary",
        "mesh.codecs.structured",
        "mesh.brokers.memory",
        "mesh.config",
        "mesh",
    ],
)
def test_docstring_examples_run(module: str) -> None:
    result = doctest.testmod(importlib.import_module(module))
    assert result.failed == 0 and result.attempted > 0


def test_missing_client_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    from mesh.brokers import broker_class
    from mesh.errors import BrokerNotInstalled

    monkeypatch.setitem(sys.modules, "aiokafka", None)  # as if not installed
    with pytest.raises(BrokerNotInstalled, match=r"pip install 'event-mesh\[kafka\]'"):
        broker_class("kafka")
