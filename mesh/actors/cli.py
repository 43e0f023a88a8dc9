"""``mesh actors list [TYPE]``: the active actors per instance, from presence heartbeats.

Every instance hosting actor types lists them in its heartbeats with its active actors (the
count, and up to 100 ids per type). The command listens for one heartbeat interval (after a
probe, running instances answer at once) and prints them per type and instance.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import click
import orjson

from mesh.cli_config import choose_config, memory_fallback_warning
from mesh.errors import MeshError

__all__ = ["actors_group"]


def actors_group(make_app: Callable[[str | None], Any]) -> click.Group:
    """The ``mesh actors`` group; ``make_app(config path)`` builds the listening client App (the
    CLI passes it in: nothing below :mod:`mesh.app` imports it)."""

    @click.group("actors")
    def actors() -> None:
        """Virtual actors: where they are active."""

    @actors.command("list")
    @click.argument("type_", metavar="[TYPE]", required=False)
    @click.option("--wait", type=float, default=None, help="Seconds to listen (default: one heartbeat interval).")
    @click.option("--json", "as_json", is_flag=True, help="Print JSON.")
    @click.option("--config", "-c", "config", type=click.Path(dir_okay=False), help="Config file.")
    def list_actors(type_: str | None, wait: float | None, as_json: bool, config: str | None) -> None:
        """List the instances hosting actor types (or only TYPE) and their active actors."""
        _run(make_app, type_, wait, as_json, config)

    return actors


def _run(make_app: Callable[[str | None], Any], type_: str | None, wait: float | None, as_json: bool,
         config: str | None) -> None:
    path = choose_config(config)
    if path is None:
        memory_fallback_warning("actors list")
    try:
        app = make_app(None if path is None else str(path))
    except MeshError as exc:
        raise click.ClickException(str(exc)) from exc

    async def listen() -> dict[str, list[dict[str, Any]]]:
        async with app:
            await app.presence.listen()
            await asyncio.sleep(app.presence.interval + 0.2 if wait is None else wait)
            out: dict[str, list[dict[str, Any]]] = {}
            for instances in app.presence.apps().values():
                for instance in instances:
                    for name, ids in instance.actors.items():
                        if type_ is None or name == type_:
                            out.setdefault(name, []).append(
                                {"app": instance.app, "instance": instance.instance, "active": ids})
            return {k: sorted(v, key=lambda i: i["instance"]) for k, v in sorted(out.items())}

    try:
        found = asyncio.run(listen())
    except MeshError as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        click.echo(orjson.dumps(found, option=orjson.OPT_INDENT_2).decode())
        return
    if not found:
        what = f"actor type {type_!r}" if type_ else "actors"
        click.echo(f"no instance hosts {what} on {app.config.broker.type}")
        return
    for name, instances in found.items():
        click.echo(f"{name}  ({len(instances)} instance{'s' if len(instances) != 1 else ''})")
        for i in instances:
            shown = ", ".join(i["active"]) or "-"
            click.echo(f"  {i['instance']} [{i['app']}]: {len(i['active'])} active: {shown}")
