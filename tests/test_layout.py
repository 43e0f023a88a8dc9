"""The house rules of the package layout, checked on the source (no import side effects)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MESH = ROOT / "mesh"

# Inside a broker package, a module may import only modules of an earlier rank (options first,
# the broker last): parts take the connection, never the broker.
RANKS = {
    "options": 0,
    "script": 0,
    "fastclient": 1,
    "gaps": 1,
    "frames": 1,
    "connection": 2,
    "consume": 2,
    "common": 2,
    "consumer": 3,
    "ephemeral": 3,
    "history": 3,
    "groups": 3,
    "core": 4,
    "jetstream": 4,
    "reader": 4,
    "broker": 5,
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


# NATS has two brokers over one connection: its order is spelt out, module by module.
NATS_ORDER = ["options", "messages", "fastclient", "connection", "streams", "ephemeral", "groups", "history", "consumer", "pull", "broker", "core", "jetstream"]
RANKS_OF = {"nats": {name: rank for rank, name in enumerate(NATS_ORDER)}}


@pytest.mark.parametrize("package", ["kafka", "nats", "rabbitmq", "redis"])
def test_imports_inside_a_broker_package_go_one_way(package: str) -> None:
    folder = MESH / "brokers" / package
    prefix = f"mesh.brokers.{package}."
    init = _imports(folder / "__init__.py")
    assert not [n for n in init if n.startswith(prefix)], f"{package}/__init__.py must import nothing of the package"
    for path in sorted(folder.glob("*.py")):
        if path.stem == "__init__":
            continue
        ranks = RANKS_OF.get(package, RANKS)
        assert path.stem in ranks, f"{package}/{path.name}: give the module a rank in tests/test_layout.py"
        rank = ranks[path.stem]
        for name in _imports(path):
            if not name.startswith(prefix):
                continue
            other = name.removeprefix(prefix).split(".")[0]
            if other not in ranks:
                continue  # 'from mesh.brokers.x import name' of a non-module name
            assert ranks[other] < rank, f"{package}/{path.name} imports {other} (rank {ranks[other]} >= {rank})"


def test_nothing_below_the_app_imports_it() -> None:
    offenders = []
    for path in sorted(MESH.rglob("*.py")):
        rel = path.relative_to(MESH).as_posix()
        # entry points above the App: the package surface, the CLIs, the operators' replay tools,
        # the AsyncAPI generator, mesh tail, integrations with web frameworks, the testing kit
        entry_points = ("app.py", "__init__.py", "cli.py", "replay/__init__.py", "replay/cli.py", "asyncapi.py", "tail.py")
        if rel in entry_points or rel.startswith(("testing", "integrations")):
            continue
        if "mesh.app" in _imports(path):
            offenders.append(rel)
    assert not offenders, f"these modules import mesh.app: {offenders}"


def test_plugin_facing_types_import_only_the_event_and_config() -> None:
    allowed = {"mesh.config", "mesh.event"}
    got = {n for n in _imports(MESH / "types.py") if n.startswith("mesh.") and n.split(".")[1] not in ("types",)}
    runtime_only = {"mesh.brokers.base", "mesh.brokers.base.Delivery", "mesh.runtime", "mesh.runtime.Runtime"}
    extra = {n for n in got - runtime_only if not any(n == a or n.startswith(a + ".") for a in allowed)}
    assert not extra, f"mesh/types.py imports {extra}"


def test_core_never_imports_a_builtin_plugin() -> None:
    """Only the list of built-ins in mesh/hooks/manager.py names them; nothing else imports one."""
    offenders = [
        path.relative_to(MESH).as_posix()
        for path in sorted(MESH.rglob("*.py"))
        if path.relative_to(MESH).as_posix() != "hooks/manager.py"
        and any(
            f in path.read_text() for f in ("import mesh_plugins", "from mesh_plugins", 'import_module("mesh_plugins')
        )
    ]
    assert not offenders, f"core modules name built-in plugins: {offenders}"


def test_every_package_is_listed_for_the_wheel() -> None:
    import tomllib

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {
        ".".join(path.parent.relative_to(ROOT).parts)
        for path in MESH.rglob("__init__.py")
        if "__pycache__" not in path.parts
    }
    assert not found - listed, f"add to [tool.setuptools] packages in pyproject.toml: {sorted(found - listed)}"
