"""The ``mesh`` command: run apps, publish, invoke, list apps, check config, list plugins; plugins add more.

Every error the mesh knows becomes one clear line and exit status 1, never a traceback.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import os
import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
import orjson

from mesh import logs
from mesh.actors.cli import actors_group
from mesh.app import App
from mesh.bindings.cli import bindings
from mesh.cli_config import choose_config, describe, memory_fallback_warning
from mesh.config import config_schema, load_config
from mesh.errors import MeshError, RemoteError
from mesh.health import HealthServer, Ready, all_ready
from mesh.hooks import PluginManager
from mesh.jobs.cli import jobs as jobs_cli
from mesh.loop import LOOPS, loop_factory
from mesh.replay.cli import dlq, replay
from mesh.state.cli import state as state_cli

__all__ = ["DEFAULT_DRAIN_TIMEOUT", "cli", "load_target", "main"]

DEFAULT_DRAIN_TIMEOUT = 30.0
"""Seconds ``mesh run`` lets handlers finish after Ctrl-C or SIGTERM (Kubernetes' grace period)."""


@contextmanager
def _errors() -> Iterator[None]:
    try:
        yield
    except MeshError as exc:
        raise click.ClickException(str(exc)) from exc


def load_target(target: str, *, debug: bool = False) -> list[App]:
    """Apps named by ``module:attribute`` or ``path/to/file.py:attribute`` (attribute optional).

    The attribute may be an App, a list or tuple holding Apps (other members are ignored) or a
    function returning either; without one, every App defined at the module's top level is
    taken. With ``debug``, an import error prints its traceback (where it happened) first.
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
        if debug:
            traceback.print_exc()
        raise click.ClickException(f"cannot run {target!r}: {exc}") from exc
    except Exception as exc:
        if debug:
            traceback.print_exc()
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
            if debug:
                traceback.print_exc()
            raise click.ClickException(
                f"cannot run {target!r}: calling {attr} failed: {type(exc).__name__}: {exc}"
            ) from exc
    if isinstance(value, App):
        apps = [value]
    elif isinstance(value, list | tuple):
        apps = [a for a in value if isinstance(a, App)]  # build() may return its Apps with other parts
    else:
        apps = []
    if not apps:
        raise click.ClickException(f"cannot run {target!r}: {attr!r} is not an App or a list of Apps")
    return apps


def _readiness(app: App) -> Ready:
    return app.ready


async def _stop(app: App, timeout: float) -> None:
    """Stop ``app``, letting handlers finish for at most ``timeout`` seconds."""
    await app.stop(timeout=timeout)  # cancels handlers still running after it, nacks their deliveries


async def _serve(
    apps: list[App],
    *,
    drain_timeout: float,
    health_port: int | None = None,
    health_host: str = "0.0.0.0",
    where: str = "",
) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    import signal

    def interrupted() -> None:
        if stop.is_set():  # a second Ctrl-C (or SIGTERM) while draining: out now
            click.echo("mesh: interrupted again: exiting now; unfinished events are redelivered", err=True)
            sys.stderr.flush()
            os._exit(130)
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, interrupted)
    started: list[App] = []
    health: HealthServer | None = None
    draining = False
    try:
        for app in apps:
            await app.start()
            started.append(app)
        if health_port is not None:
            apps_ready = all_ready([_readiness(a) for a in apps])
            health = HealthServer(lambda: (False, "draining") if draining else apps_ready(), health_port, health_host)
            await health.start()
        names = ", ".join(f"{a.id} ({a.config.broker.type})" for a in apps)
        on = "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"
        click.echo(f"mesh: serving {names} on {on}; Ctrl-C drains and stops", err=True)
        if where:
            click.echo(f"mesh: {where}", err=True)
        if health is not None:
            click.echo(f"mesh: health on http://{health_host}:{health.port}/livez and /readyz", err=True)
        await stop.wait()
        draining = True
        click.echo(
            f"mesh: draining in-flight handlers (up to {drain_timeout:g}s; Ctrl-C again exits at once)...", err=True
        )
    finally:
        draining = True
        for app in reversed(started):
            await _stop(app, drain_timeout)
        if health is not None:
            await health.stop()
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
    help="Config file (default $MESH_CONFIG, ./mesh.yaml or ./mesh.yml).",
)
@click.option(
    "--metrics-port", type=click.IntRange(1, 65535), default=None, help="Serve Prometheus metrics on 127.0.0.1:PORT."
)
@click.option("--health-port", type=click.IntRange(0, 65535), default=None, help="Serve /livez and /readyz on PORT.")
@click.option("--health-host", default="0.0.0.0", show_default=True, help="Address of the health server.")
@click.option(
    "--drain-timeout",
    type=click.FloatRange(min=0),
    default=None,
    help=f"Seconds handlers may finish after Ctrl-C/SIGTERM (default: drain_timeout, else {DEFAULT_DRAIN_TIMEOUT:g}).",
)
@click.option(
    "--log-format", type=click.Choice(["console", "json"]), default="console", show_default=True, help="Log lines."
)
@click.option(
    "--loop",
    "loop",
    type=click.Choice(LOOPS),
    default=None,
    help="Event loop (default: event_loop from the config, else asyncio); uvloop needs the 'fast' extra.",
)
@click.option("--debug", is_flag=True, help="DEBUG logs, tracebacks, and where an import failed.")
def run(
    targets: tuple[str, ...],
    config: str | None,
    metrics_port: int | None,
    health_port: int | None,
    health_host: str,
    drain_timeout: float | None,
    log_format: str,
    loop: str | None,
    debug: bool,
) -> None:
    """Run apps given as MODULE:APP (or file.py:APP) until Ctrl-C, then drain and exit 0."""
    logs.configure("DEBUG" if debug else "INFO", log_format, debug=debug)
    path = choose_config(config)
    if path is not None:
        os.environ["MESH_CONFIG"] = str(path)
    if metrics_port is not None:
        os.environ["MESH_METRICS_PORT"] = str(metrics_port)  # read by the metrics plugin
    with _errors():
        apps = [app for target in targets for app in load_target(target, debug=debug)]
        first = apps[0].config
        if not debug:
            logs.configure(first.log_level, log_format, debug=False)
        timeout = drain_timeout
        if timeout is None:
            timeout = float(getattr(first, "drain_timeout", DEFAULT_DRAIN_TIMEOUT))
        where = describe(path, first.broker.type, first.broker.url)
        if path is None and first.broker.type == "memory":
            where += " (in-process memory broker: other processes cannot reach these apps)"
        loop_name = loop or first.event_loop
        factory = loop_factory(loop_name)  # a missing uvloop is one clear line, before anything starts
        try:
            with asyncio.Runner(loop_factory=factory) as runner:
                runner.run(
                    _serve(apps, drain_timeout=timeout, health_port=health_port, health_host=health_host, where=where)
                )
        except KeyboardInterrupt:  # Ctrl-C before the signal handlers were in place
            raise SystemExit(130) from None


def _client_config(config: str | None, command: str) -> str | None:
    """The config file a client command uses (warning loudly when there is none)."""
    path = choose_config(config)
    if path is None:
        memory_fallback_warning(command)
        return None
    return str(path)


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
        app = App("mesh-cli", config=_client_config(config, "publish"))

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
        app = App(caller, config=_client_config(config, "invoke"))

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
@click.option(
    "--output",
    "-o",
    "output",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="json: one JSON document, app id -> instances.",
)
@click.option("--json", "as_json", is_flag=True, hidden=True, help="Same as --output json (kept for old scripts).")
@click.option("--config", "-c", "config", type=click.Path(dir_okay=False), help="Config file.")
def apps(wait: float | None, output: str, as_json: bool, config: str | None) -> None:
    """List the live apps: their instances, methods and subscriptions (from presence heartbeats)."""
    with _errors():
        app = App("mesh-cli", config=_client_config(config, "apps"))
        if not app.config.presence.enabled:
            raise click.ClickException("presence is disabled in this config: no app announces itself")

        async def listen() -> dict[str, Any]:
            async with app:
                await app.presence.listen()  # running apps with methods answer the probe at once
                await asyncio.sleep(app.presence.interval + 0.2 if wait is None else wait)
                return {k: [i.as_dict() for i in v] for k, v in app.presence.apps().items()}

        live = asyncio.run(listen())
    if as_json or output == "json":
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
    """Validate FILE (default $MESH_CONFIG, ./mesh.yaml or ./mesh.yml); every problem with its path."""
    path = choose_config(file)
    with _errors():
        cfg = load_config(path)
    click.echo(f"ok: {describe(path, cfg.broker.type, cfg.broker.url)}")
    if path is None:
        click.secho(
            "warning: no config file found (./mesh.yaml, ./mesh.yml, $MESH_CONFIG): apps use the in-process "
            "memory broker",
            fg="yellow",
            err=True,
        )


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
cli.add_command(bindings)
cli.add_command(dlq)
cli.add_command(state_cli)
cli.add_command(importlib.import_module("mesh.tail").tail_command)
cli.add_command(importlib.import_module("mesh.asyncapi").asyncapi_command)
cli.add_command(jobs_cli)
cli.add_command(actors_group(lambda path: App("mesh-cli", config=path)))


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
