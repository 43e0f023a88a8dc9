"""``mesh jobs list|show|cancel|trigger [NAME]``: an app's jobs from a shell.

The store is the one the app uses: ``jobs.store`` of the config file (``--config``, else
``$MESH_CONFIG``, else ``./mesh.yaml``) from its ``state:`` section, else the embedded SQLite file
``jobs.url``. ``trigger`` adds a one-shot copy due now, which a running instance fires.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import click
import yaml

from mesh.components import Registry
from mesh.jobs.block import sqlite_file
from mesh.jobs.config import JobsConfig
from mesh.jobs.model import Job, as_datetime
from mesh.jobs.store import JobStore
from mesh.state.block import build_store
from mesh.state.errors import StoreNotFound

__all__ = ["jobs"]


def _open(config: str | None, app: str) -> JobStore:
    path = Path(config or os.environ.get("MESH_CONFIG") or "mesh.yaml")
    data: dict[str, Any] = (yaml.safe_load(path.read_text()) or {}) if path.exists() else {}
    conf = JobsConfig.model_validate(data.get("jobs") or {})
    if conf.store is not None:
        stores = data.get("state") or {}
        if conf.store not in stores:
            raise click.ClickException(str(StoreNotFound(conf.store, list(stores))))
        handle, _ = build_store(conf.store, stores[conf.store], Registry(), app)
    else:
        if not sqlite_file(conf.url).exists():
            raise click.ClickException(f"no jobs yet: {conf.url} does not exist")
        handle, _ = build_store("jobs", {"type": "sqlite", "url": conf.url, "table": "mesh_jobs"}, Registry(), app)
    return JobStore(handle)


def _run(ctx: click.Context, action: Callable[[JobStore], Awaitable[None]]) -> None:
    async def main() -> None:
        store = _open(ctx.obj["config"], ctx.obj["app"])
        await store.store.backend.open()
        try:
            await action(store)
        finally:
            await store.store.backend.close()

    try:
        asyncio.run(main())
    except click.ClickException:
        raise
    except Exception as exc:
        raise click.ClickException(f"{type(exc).__name__}: {exc}") from exc


def _row(job: Job) -> dict[str, Any]:
    schedule = (job.cron and f"cron {job.cron} {job.tz or 'UTC'}") or (job.every and f"every {job.every:g}s") or "once"
    return {"name": job.name, "schedule": schedule, "target": job.topic if job.target != "handler" else "@app.job",
            "next": as_datetime(job.next).isoformat() if job.next is not None else None, "fired": job.count,
            "owner": job.owner}


@click.group()
@click.option("--config", "config", default=None, help="The mesh config file (default: $MESH_CONFIG or mesh.yaml).")
@click.option("--app", "app", default="mesh", show_default=True, help="The app id whose jobs to use.")
@click.pass_context
def jobs(ctx: click.Context, config: str | None, app: str) -> None:
    """List, show, cancel and trigger an app's scheduled jobs."""
    ctx.obj = {"config": config, "app": app}


@jobs.command("list")
@click.pass_context
def list_(ctx: click.Context) -> None:
    """Print every job, one JSON line each (name, schedule, target, next time, fires, owner)."""
    async def action(s: JobStore) -> None:
        async for job in s.list():
            click.echo(json.dumps(_row(job)))
    _run(ctx, action)


@jobs.command()
@click.argument("name")
@click.pass_context
def show(ctx: click.Context, name: str) -> None:
    """Print one job as stored (JSON)."""
    async def action(s: JobStore) -> None:
        held = await s.get(name)
        if held is None:
            raise click.ClickException(f"job {name!r} is not scheduled")
        click.echo(json.dumps(held.job.model_dump(mode="json"), indent=2))
    _run(ctx, action)


@jobs.command()
@click.argument("name")
@click.pass_context
def cancel(ctx: click.Context, name: str) -> None:
    """Remove a job."""
    _run(ctx, lambda s: s.cancel(name))


@jobs.command()
@click.argument("name")
@click.pass_context
def trigger(ctx: click.Context, name: str) -> None:
    """Fire a job once now, besides its schedule (a running instance of the app fires it)."""
    async def action(s: JobStore) -> None:
        copy = await s.trigger(name)
        click.echo(f"triggered {name} (as {copy.name})")
    _run(ctx, action)
