"""``mesh state get|set|delete|list STORE [KEY]``: a configured store from a shell.

The store comes from the ``state:`` section of the config file (``--config``, else
``$MESH_CONFIG``, else ``./mesh.yaml``); keys are prefixed with ``--app`` as the app would.
Values are JSON on stdout and stdin/argument. ``list`` needs a store with queries.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import click
import yaml

from mesh.components import Registry
from mesh.state.block import build_store
from mesh.state.errors import StoreNotFound
from mesh.state.handle import StateStore

__all__ = ["state"]


def _stores(config: str | None) -> dict[str, Any]:
    path = Path(config or os.environ.get("MESH_CONFIG") or "mesh.yaml")
    if not path.exists():
        raise click.ClickException(f"no config file at {path}")
    data = yaml.safe_load(path.read_text()) or {}
    section = data.get("state") or {}
    if not isinstance(section, dict):
        raise click.ClickException(f"{path}: 'state' must be a mapping of store names")
    return section


def _run(ctx: click.Context, name: str, action: Callable[[StateStore], Awaitable[None]]) -> None:
    stores = _stores(ctx.obj["config"])
    if name not in stores:
        raise click.ClickException(str(StoreNotFound(name, list(stores))))
    store, _ = build_store(name, stores[name], Registry(), ctx.obj["app"])

    async def main() -> None:
        await store.backend.open()
        try:
            await action(store)
        finally:
            await store.backend.close()

    try:
        asyncio.run(main())
    except click.ClickException:
        raise
    except Exception as exc:
        raise click.ClickException(f"{type(exc).__name__}: {exc}") from exc


@click.group()
@click.option("--config", "config", default=None, help="The mesh config file (default: $MESH_CONFIG or mesh.yaml).")
@click.option("--app", "app", default="mesh", show_default=True, help="The app id whose keys to use.")
@click.pass_context
def state(ctx: click.Context, config: str | None, app: str) -> None:
    """Read and write a configured state store."""
    ctx.obj = {"config": config, "app": app}


@state.command()
@click.argument("store")
@click.argument("key")
@click.pass_context
def get(ctx: click.Context, store: str, key: str) -> None:
    """Print a key's value and ETag as JSON (exit 1 if absent)."""
    async def action(s: StateStore) -> None:
        item = await s.get(key)
        if item is None:
            raise click.ClickException(f"{key!r} is not in store {store!r}")
        click.echo(json.dumps({"key": item.key, "etag": item.etag, "value": item.value}))
    _run(ctx, store, action)


@state.command("set")
@click.argument("store")
@click.argument("key")
@click.argument("value", required=False)
@click.option("--etag", default=None, help="Write only if the key still has this ETag.")
@click.option("--ttl", type=float, default=None, help="Seconds to live.")
@click.pass_context
def set_(ctx: click.Context, store: str, key: str, value: str | None, etag: str | None, ttl: float | None) -> None:
    """Set a key to a JSON value (from the argument, else stdin); prints the new ETag."""
    text = value if value is not None else sys.stdin.read()
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise click.ClickException(f"the value is not JSON: {exc}") from exc

    async def action(s: StateStore) -> None:
        click.echo(await s.set(key, doc, etag=etag, ttl=ttl))
    _run(ctx, store, action)


@state.command()
@click.argument("store")
@click.argument("key")
@click.option("--etag", default=None, help="Delete only if the key still has this ETag.")
@click.pass_context
def delete(ctx: click.Context, store: str, key: str, etag: str | None) -> None:
    """Delete a key."""
    async def action(s: StateStore) -> None:
        await s.delete(key, etag=etag)
    _run(ctx, store, action)


@state.command("list")
@click.argument("store")
@click.option("--where", default=None, help='A JSON filter, e.g. \'{"status": "open"}\'.')
@click.option("--limit", default=100, show_default=True)
@click.pass_context
def list_(ctx: click.Context, store: str, where: str | None, limit: int) -> None:
    """Print the keys (and values) of a store, one JSON line each."""
    filt = json.loads(where) if where else None

    async def action(s: StateStore) -> None:
        page = await s.query(filt, limit=limit)
        for item in page.items:
            click.echo(json.dumps({"key": item.key, "etag": item.etag, "value": item.value}))
    _run(ctx, store, action)
