"""``mesh state get|set|delete|list STORE [KEY]``: a configured store from a shell.

The store comes from the ``state:`` section of the config file (``--config``, else
``$MESH_CONFIG``, else ``./mesh.yaml``), loaded as the App loads it (:func:`mesh.config.load_config`:
``${VAR:default}``, ``secretKeyRef``, validation of every option) with the App's registry, so a
store type a plugin registers works here too. Keys are prefixed with ``--app`` as the app would.
Values are JSON on stdout and stdin/argument. ``list`` needs a store with queries.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable

import click

from mesh.components import Registry
from mesh.config import find_config, load_config
from mesh.errors import ConfigError
from mesh.hooks import Hooks, PluginManager
from mesh.state.block import build_store
from mesh.state.errors import StoreNotFound
from mesh.state.handle import StateStore

__all__ = ["state"]


def _open(config: str | None, app_id: str, name: str) -> StateStore:
    """The (not yet open) store ``name`` of the config, as app ``app_id`` sees it."""
    path = find_config(config)
    if path is None or not path.is_file():
        raise click.ClickException(f"no config file at {path or 'mesh.yaml'} (use --config or $MESH_CONFIG)")
    registry = Registry()  # as the App builds it: built-ins, then what plugins register
    Hooks(PluginManager()).register_components(registry)
    try:
        section = load_config(path, registry=registry).state
        if name not in section:
            raise click.ClickException(str(StoreNotFound(name, list(section))))
        c = section[name]
        store, _ = build_store(name, {"type": c.type, **c.options}, registry, app_id)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    return store


def _run(ctx: click.Context, name: str, action: Callable[[StateStore], Awaitable[None]]) -> None:
    store = _open(ctx.obj["config"], ctx.obj["app"], name)

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
