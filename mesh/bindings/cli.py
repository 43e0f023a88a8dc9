"""``mesh bindings list``: each configured binding with its type, direction, operations and topics.

Read from the config file (plugins' binding types included); ``state`` is ``configured`` there,
since live state and counts belong to a running app (``app.bindings.describe()``).
"""

from __future__ import annotations

import click
import orjson

from mesh.cli_config import choose_config
from mesh.components import Registry
from mesh.config import load_config
from mesh.errors import MeshError
from mesh.hooks import Hooks, PluginManager

__all__ = ["bindings"]


@click.group()
def bindings() -> None:
    """Input and output bindings of the config."""


def _rows(file: str | None) -> list[dict[str, object]]:
    registry = Registry()
    Hooks(PluginManager()).register_components(registry)
    cfg = load_config(choose_config(file), registry=registry)
    rows: list[dict[str, object]] = []
    for name, component in cfg.bindings.items():
        cls = registry.load("binding", component.type)
        features = getattr(cls, "features", None)
        options = component.options
        rows.append(
            {
                "name": name,
                "type": component.type,
                "direction": getattr(features, "direction", "?"),
                "operations": sorted(getattr(features, "operations", ())),
                "topic": options.get("topic") or options.get("from_topic") or "",
                "state": "configured",
            }
        )
    return rows


@bindings.command("list")
@click.option("--config", "file", type=click.Path(dir_okay=False), help="config file (default: mesh.yaml)")
@click.option("--json", "as_json", is_flag=True, help="one JSON document")
def list_bindings(file: str | None, as_json: bool) -> None:
    """List each binding: name, type, direction, operations, topic, state."""
    try:
        rows = _rows(file)
    except MeshError as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        click.echo(orjson.dumps(rows).decode())
        return
    if not rows:
        click.echo("no bindings configured")
        return
    for row in rows:
        ops = ",".join(row["operations"]) if isinstance(row["operations"], list) else ""
        click.echo(f"{row['name']:<16} {row['type']:<13} {row['direction']:<7} {row['topic'] or '-':<24} {ops or '-'}")
