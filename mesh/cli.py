"""The ``mesh`` command: run apps, publish, invoke, list apps, check config, list plugins; plugins add more.

Every error the mesh knows becomes one clear line and exit status 1, never a traceback.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import os
import sys
from collections.abc import Iterator
from contextlib import AsyncExitStack, contextmanager
from pathlib import Path
from typing import Any

import click
import orjson

from mesh.app import App
from mesh.config import config_schema, find_config, load_config
from mesh.errors import MeshError, RemoteError
from mesh.hooks import PluginManager
from mesh.replay.cli import dlq, replay

__all__ = ["cli", "load_target", "main"]


@contextmanager
def _errors() -> Iterator[None]:
    try:
        yield
    except MeshError as exc:
        raise click.ClickException(str(exc)) from exc


def load_target(target: str) -> list[App]:
    """Apps named by ``module:attribute`` or ``path/to/file.py:attribute`` (attribute optional).

    The attribute may be an App, a list of Apps or a function returning either; without one,
    every App defined at the module's top level is taken.
    """
    module_name, _, attr = target.partition(":")
    try:
        if module_name.endswith(".py") or os.sep in module_name:
            path = Path(module_name).resolve()
            if not path.is_file():
                raise click.ClickException(f"cannot run {target!r}: no such file {str(path)!r}")
            spec = importlib.util.spec_from_file_location(path.stem, path)
            assert spec is not None and spec.loader is not None
            module = importlib.util.module_from_spec(spec)
            sys.modules[path.stem] = module
            spec.loader.exec_module(module)
        else:
            if os.getcwd() not in sys.path:
                sys.path.insert(0, os.getcwd())
            module = importlib.import_module(module_name)
    except click.ClickException:
        raise
    except MeshError as exc:
        raise click.ClickException(f"cannot run {target!r}: {exc}") from exc
    except Exception as exc:
        raise click.ClickException(f"cannot run {target!r}: {type(exc).__name__}: {exc}") from exc
    if not attr:
        apps = [v for v in vars(module).values() if isinstance(v, App)]
        if not apps:
            raise click.ClickException(f"cannot run {target!r}: the module defines no App")
        return apps
    value: Any = module
    for part in attr.split("."):
        try:
            value = getattr(value, part)
        except AttributeError:
            raise click.ClickException(f"cannot run {target!r}: {module_name} has no attribute {attr!r}") from None
    if callable(value) and not isinstance(value, App):
        try:
            value = value()
        except Exception as exc:
            raise click.ClickException(
                f"cannot run {target!r}: calling {attr} failed: {type(exc).__name__}: {exc}"
            ) from exc
    apps = [value] if isinstance(value, App) else list(value) if isinstance(value, list | tuple) else []
    if not apps or not all(isinstance(a, App) for a in apps):
        raise click.ClickException(f"cannot run {target!r}: {attr!r} is not an App or a list of Apps")
    return apps


async def _serve(apps: list[App]) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    import signal

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with AsyncExitStack() as stack:
        for app in apps:
            await stack.enter_async_context(app)
        names = ", ".join(f"{a.id} ({a.config.broker.type})" for a in apps)
        click.echo(f"mesh: serving {names}; Ctrl-C drains and stops", err=True)
        await stop.wait()
        click.echo("mesh: draining in-flight handlers...", err=True)
    click.echo("mesh: stopped", err=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="event-mesh", prog_name="mesh")
def cli() -> None:
    """The event mesh: pub/sub, invocation and replay as CloudEvents over your broker."""


@cli.command()
@click.argument("targets", nargs=-1, required=True)
@click.option(
    "--config",
    "-c",
    "config",
    type=click.Path(dir_okay=False),
    help="Config file (default $MESH_CONFIG or ./mesh.yaml).",
)
@click.option(
    "--metrics-port", type=click.IntRange(1, 65535), default=None, help="Serve Prometheus metrics on 127.0.0.1:PORT."
)
def run(targets: tuple[str, ...], config: str | None, metrics_port: int | None) -> None:
    """Run apps given as MODULE:APP (or file.py:APP) until Ctrl-C, then drain and exit 0."""
    if config:
        os.environ["MESH_CONFIG"] = config
    if metrics_port is not None:
        os.environ["MESH_METRICS_PORT"] = str(metrics_port)  # read by the metrics plugin
    with _errors():
        apps = [app for target in targets for app in load_target(target)]
        try:
            asyncio.run(_serve(apps))
        except KeyboardInterrupt:  # a second Ctrl-C while draining
            raise SystemExit(130) from None


@cli.command()
@click.argument("topic")
@click.option("--type", "-t", "type_", required=True, help="CloudEvent type.")
@click.option("--data", "-d", default=None, help="Data as JSON (a plain string is sent as text).")
@click.option("--key", "-k", default=None, help="Partition key.")
@click.option("--source", default="/mesh-cli", show_default=True, help="CloudEvent source.")
@click.option("--subject", default=None, help="CloudEvent subject.")
@click.option("--config", "-c", "config", type=click.Path(dir_okay=False), help="Config file.")
def publish(
    topic: str, type_: str, data: str | None, key: str | None, source: str, subject: str | None, config: str | None
) -> None:
    """Publish one event to TOPIC and print it."""
    payload: Any = None
    if data is not None:
        try:
            payload = orjson.loads(data)
        except orjson.JSONDecodeError:
            payload = data
    with _errors():
        app = App("mesh-cli", config=config)

        async def send() -> Any:
            async with app:
                return await app.publish(topic, payload, type=type_, key=key, source=source, subject=subject)

        event = asyncio.run(send())
    click.echo(f"published {event.type} id={event.id} to {topic} ({app.config.broker.type})")


def _json_or_text(data: str | None) -> Any:
    if data is None:
        return None
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return data


@cli.command()
@click.argument("app_id", metavar="APP")
@click.argument("method")
@click.option("--data", "-d", default=None, help="Request data as JSON (a plain string is sent as text).")
@click.option("--timeout", "-t", type=click.FloatRange(min=0, min_open=True), default=None, help="Seconds to wait.")
@click.option("--caller", default="mesh-cli", show_default=True, help="App id to call as (what access rules see).")
@click.option("--config", "-c", "config", type=click.Path(dir_okay=False), help="Config file.")
def invoke(app_id: str, method: str, data: str | None, timeout: float | None, caller: str, config: str | None) -> None:
    """Call METHOD of APP and print the reply's data (exit 1 with the error if it fails)."""
    payload = _json_or_text(data)
    with _errors():
        app = App(caller, config=config)

        async def call() -> Any:
            async with app:
                return await app.invoke(app_id, method, payload, timeout=timeout)

        try:
            result = asyncio.run(call())
        except RemoteError as exc:
            raise click.ClickException(f"{app_id}.{method} failed: {exc}") from exc
    if isinstance(result, bytes):
        sys.stdout.buffer.write(result)
    elif isinstance(result, str):
        click.echo(result)
    else:
        click.echo(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())


@cli.command()
@click.option(
    "--wait",
    "-w",
    type=click.FloatRange(min=0),
    default=None,
    help="Seconds to listen (default: one heartbeat interval).",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--config", "-c", "config", type=click.Path(dir_okay=False), help="Config file.")
def apps(wait: float | None, as_json: bool, config: str | None) -> None:
    """List the live apps: their instances, methods and subscriptions (from presence heartbeats)."""
    with _errors():
        app = App("mesh-cli", config=config)
        if not app.config.presence.enabled:
            raise click.ClickException("presence is disabled in this config: no app announces itself")

        async def listen() -> dict[str, Any]:
            async with app:
                await app.presence.listen()  # running apps with methods answer the probe at once
                await asyncio.sleep(app.presence.interval + 0.2 if wait is None else wait)
                return {k: [i.as_dict() for i in v] for k, v in app.presence.apps().items()}

        live = asyncio.run(listen())
    if as_json:
        click.echo(orjson.dumps(live, option=orjson.OPT_INDENT_2).decode())
        return
    if not live:
        click.echo(f"no live apps on {app.config.broker.type}")
        return
    for app_id, instances in live.items():
        versions = sorted({i["version"] for i in instances})
        count = f"{len(instances)} instance{'s' if len(instances) != 1 else ''}"
        click.echo(f"{app_id}  ({count}, version {', '.join(versions)})")
        click.echo(f"  instances:     {', '.join(i['instance'] for i in instances)}")
        methods = {m["name"]: m["idempotent"] for i in instances for m in i["methods"]}
        if methods:
            shown = [f"{n} (idempotent)" if idem else n for n, idem in sorted(methods.items())]
            click.echo(f"  methods:       {', '.join(shown)}")
        subs = sorted({(s["topic"], s["group"]) for i in instances for s in i["subscriptions"]})
        if subs:
            click.echo(f"  subscriptions: {', '.join(f'{t} [{g}]' for t, g in subs)}")


@cli.group()
def config() -> None:
    """Check the config file or print its JSON Schema."""


@config.command("check")
@click.argument("file", required=False, type=click.Path(dir_okay=False))
def config_check(file: str | None) -> None:
    """Validate FILE (default $MESH_CONFIG or ./mesh.yaml); every problem with its path."""
    path = find_config(file)
    with _errors():
        cfg = load_config(path)
    where = str(path) if path else "defaults (no config file found)"
    click.echo(f"ok: {where}: broker {cfg.broker.type}" + (f" at {cfg.broker.url}" if cfg.broker.url else ""))


@config.command("schema")
def config_schema_cmd() -> None:
    """Print the JSON Schema of mesh.yaml."""
    click.echo(config_schema(), nl=False)


@cli.command()
def plugins() -> None:
    """List plugins in call order and the hooks each implements."""
    with _errors():
        manager = PluginManager()
    by_plugin: dict[str, list[str]] = {name: [] for name in manager.names()}
    for hook in sorted(h for h in dir(manager.pm.hook) if h.startswith("mesh_")):
        for plugin, _ in manager.implementations(hook):
            by_plugin.setdefault(plugin, []).append(hook)
    for name, hooks in by_plugin.items():
        click.echo(f"{name}")
        for hook in hooks:
            order = [p for p, _ in manager.implementations(hook)]
            click.echo(f"  {hook}  (position {order.index(name) + 1} of {len(order)})")


cli.add_command(replay)
cli.add_command(dlq)


def _add_plugin_commands(group: click.Group) -> None:
    try:
        PluginManager().call("mesh_register_commands", cli=group)
    except MeshError as exc:
        click.echo(f"mesh: plugin commands unavailable: {exc}", err=True)


def main(argv: list[str] | None = None) -> Any:
    """Entry point of the ``mesh`` console script."""
    _add_plugin_commands(cli)
    return cli.main(args=argv, prog_name="mesh")


if __name__ == "__main__":
    sys.exit(main())
