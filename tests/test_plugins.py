"""Plugins: one test per hook, the loading order, entry points, disabling, errors naming the plugin."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner

import mesh.pipeline.settle
from mesh import App, Context, Decision, Event, PluginError, hookimpl
from mesh.brokers.memory import MemoryBroker
from mesh.errors import ConfigError
from mesh.hooks import PluginManager, hook_doc, hook_names
from mesh.runtime import Runtime

ROOT = Path(__file__).resolve().parents[1]


def config(hub: str, **extra: Any) -> dict[str, Any]:
    return {"broker": {"type": "memory", "options": {"name": hub}}, **extra}


@pytest.fixture
def hub(request: pytest.FixtureRequest) -> Any:
    name = f"plugins-{request.node.name}"
    yield name
    MemoryBroker.reset(name)


def failing_app(hub: str, *plugins: object, **extra: Any) -> tuple[App, list[int]]:
    app = App("svc", config=config(hub, **extra), plugins=list(plugins))
    calls: list[int] = []

    @app.subscribe("jobs")
    async def work(ctx: Context) -> None:
        calls.append(ctx.attempt)
        raise RuntimeError("boom")

    return app, calls


def test_every_hook_is_documented_and_tested() -> None:
    tests = "\n".join(p.read_text() for p in (ROOT / "tests").rglob("test_*.py"))
    for name in hook_names():
        doc = hook_doc(name)
        assert "Called" in doc or "called" in doc, f"{name}: say when it is called"
        assert "eturn" in doc, f"{name}: say what to return"
        assert ("firstresult" in doc) or ("Collect-all" in doc), f"{name}: say whether it is firstresult"
        assert f"def {name}(" in tests, f"{name} has no test implementing it"


def test_the_plugin_guide_lists_every_hook() -> None:
    guide = (ROOT / "docs" / "writing-a-plugin.md").read_text()
    missing = [name for name in hook_names() if f"`{name}(" not in guide]
    assert not missing, f"docs/writing-a-plugin.md does not list {missing}"


def test_every_hook_has_a_typed_method_on_hooks() -> None:
    from mesh.hooks import Hooks

    missing = [name for name in hook_names() if not callable(getattr(Hooks, name.removeprefix("mesh_"), None))]
    assert not missing, f"mesh.hooks.Hooks has no method for {missing}"


def test_a_hook_wrapper_is_refused_at_registration() -> None:
    class Wrapping:
        @hookimpl(wrapper=True)
        def mesh_publish_layers(self, runtime: Runtime) -> Any:
            return (yield)

    with pytest.raises(ConfigError, match="hook wrapper"):
        PluginManager([Wrapping()], entry_points=False)


def test_builtins_load_first_in_order() -> None:
    assert PluginManager(entry_points=False).names()[:4] == ["tracing", "retry", "deadletter", "metrics"]


async def test_mesh_register_components_adds_a_secret_store_and_a_broker(hub: str) -> None:
    class Vault:
        @hookimpl
        def mesh_register_components(self, registry: Any) -> None:
            registry.add_secret_store("vault", lambda settings: lambda name: f"{settings['prefix']}{name}")
            registry.add_broker("loopback", lambda url, **kw: MemoryBroker(url, **{**kw, "options": {"name": hub}}))

    app = App(
        "svc",
        config={
            "secrets": {"vault": {"prefix": "ns-"}},
            "broker": {"namespace": {"secretKeyRef": {"store": "vault", "name": "x"}}},
        },
        plugins=[Vault()],
    )
    assert app.config.broker.namespace == "ns-x"
    assert app.components.brokers["loopback"] is not None


def test_mesh_configure_sees_plugin_settings(hub: str) -> None:
    seen = {}

    class Settings:
        name = "settings"

        @hookimpl
        def mesh_configure(self, runtime: Runtime, config: Any) -> None:
            seen.update(config.plugins.config["settings"])

    App("svc", config=config(hub, plugins={"config": {"settings": {"level": 3}}}), plugins=[Settings()])
    assert seen == {"level": 3}


def test_mesh_register_commands_adds_a_cli_command() -> None:
    class Hello:
        @hookimpl
        def mesh_register_commands(self, cli: click.Group) -> None:
            @cli.command()
            def hello() -> None:
                click.echo("hello from a plugin")

    group = click.Group("mesh")
    PluginManager([Hello()], entry_points=False).call("mesh_register_commands", cli=group)
    assert CliRunner().invoke(group, ["hello"]).output == "hello from a plugin\n"


async def test_mesh_app_started_and_stopping(hub: str) -> None:
    events: list[str] = []

    class Life:
        @hookimpl
        def mesh_app_started(self, runtime: Runtime) -> None:
            events.append(f"started {runtime.id}")

        @hookimpl
        def mesh_app_stopping(self, runtime: Runtime) -> None:
            events.append(f"stopping {runtime.id}")

    async with App("svc", config=config(hub), plugins=[Life()]):
        assert events == ["started svc"]
    assert events == ["started svc", "stopping svc"]


async def test_mesh_publish_attributes_and_layers(hub: str) -> None:
    sent: list[str] = []

    class Tenant:
        @hookimpl
        def mesh_publish_attributes(self, topic: str, event: Event) -> dict[str, Any]:
            return {"tenant": "acme", "partitionkey": "ignored-when-set"}

        @hookimpl
        def mesh_publish_layers(self, runtime: Runtime) -> Any:
            def layer(next_: Any) -> Any:
                async def publish(topic: str, event: Event) -> None:
                    sent.append(topic)
                    await next_(topic, event)

                return publish

            return layer

    app = App("svc", config=config(hub), plugins=[Tenant()])
    got: list[Event] = []

    @app.subscribe("t")
    async def h(event: Event) -> None:
        got.append(event)

    async with app:
        returned = await app.publish("t", {"a": 1}, type="x", key="k1")
        await app.join()
    assert sent == ["t"]
    assert returned.extensions == {"partitionkey": "k1", "tenant": "acme"}
    assert got[0].extensions["tenant"] == "acme" and got[0].extensions["partitionkey"] == "k1"


async def test_mesh_handler_layers_wrap_in_order(hub: str) -> None:
    trail: list[str] = []

    class Outer:
        @hookimpl(tryfirst=True)
        def mesh_handler_layers(self, runtime: Runtime, subscription: Any) -> Any:
            def layer(next_: Any) -> Any:
                async def handle(ctx: Context) -> Any:
                    trail.append(f"outer>{subscription.topic}")
                    result = await next_(ctx)
                    trail.append("outer<")
                    return result

                return handle

            return layer

    app = App("svc", config=config(hub), plugins=[Outer()])

    @app.subscribe("t")
    async def h(event: Event) -> None:
        trail.append("handler")

    async with app:
        await app.publish("t", None, type="x")
        await app.join()
    assert trail == ["outer>t", "handler", "outer<"]


async def test_mesh_retry_decision_user_plugin_wins(hub: str) -> None:
    class NoRetries:
        @hookimpl
        def mesh_retry_decision(self, context: Context, error: BaseException) -> Decision:
            return Decision.dead_letter("no retries here")

    app, calls = failing_app(hub, NoRetries(), defaults={"retry": {"attempts": 5, "immediate": 0}})
    async with app:
        await app.publish("jobs", {}, type="x")
        await app.join()
    assert calls == [1]
    [dead] = app.broker.dead_letters("jobs")  # type: ignore[attr-defined]
    assert dead.extensions["mesherror"] == "no retries here"


async def test_mesh_dead_letter_target_event_and_notification(hub: str) -> None:
    noted: list[tuple[str, str]] = []

    class Graveyard:
        @hookimpl
        def mesh_dead_letter_target(self, context: Context, error: BaseException | None) -> str:
            return "graveyard"

        @hookimpl
        def mesh_dead_letter_event(self, context: Context, error: BaseException | None, target: str) -> Event:
            assert context.event is not None
            cause = error.__cause__ if error is not None else None
            return context.event.with_extensions(why=f"{type(cause).__name__} to {target}")

        @hookimpl
        def mesh_event_dead_lettered(self, context: Context, event: Event, target: str) -> None:
            noted.append((event.id, target))

    app, _ = failing_app(hub, Graveyard(), defaults={"retry": {"attempts": 1}})
    async with app:
        sent = await app.publish("jobs", {}, type="x")
        await app.join()
    [dead] = app.broker.messages("graveyard")  # type: ignore[attr-defined]
    assert dead.id == sent.id and dead.extensions["why"] == "RuntimeError to graveyard"
    assert noted == [(sent.id, "graveyard")]


async def test_a_plugin_raising_in_a_hook_is_named_and_the_message_is_not_lost(
    hub: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(mesh.pipeline.settle, "FALLBACK_REDELIVERY", 0.05)
    raised: list[int] = []

    class Broken:
        name = "broken"

        @hookimpl
        def mesh_retry_decision(self, context: Context, error: BaseException) -> Decision | None:
            if not raised:
                raised.append(1)
                raise KeyError("oops")
            return None

    app, calls = failing_app(hub, Broken(), defaults={"retry": {"attempts": 2, "immediate": 0}})
    async with app:
        await app.publish("jobs", {}, type="x")
        await app.join(timeout=5)
    assert "plugin 'broken' failed in hook mesh_retry_decision: KeyError" in caplog.text
    assert len(calls) == 2, "the delivery came back after the plugin failed"
    assert len(app.broker.dead_letters("jobs")) == 1  # type: ignore[attr-defined]
    raised.clear()
    with pytest.raises(PluginError, match="plugin 'broken' failed in hook mesh_retry_decision"):
        app.plugins.first("mesh_retry_decision", context=None, error=RuntimeError())


def test_unknown_hook_names_are_an_error(hub: str) -> None:
    class Typo:
        @hookimpl
        def mesh_retry_decisoin(self) -> None: ...

    with pytest.raises(ConfigError, match="mesh_retry_decisoin"):
        App("svc", config=config(hub), plugins=[Typo()])


async def test_disable_builtin_by_config_and_env(hub: str, monkeypatch: pytest.MonkeyPatch) -> None:
    app = App("svc", config=config(hub, plugins={"disable": ["retry"]}))
    assert "retry" not in app.plugins.names() and "deadletter" in app.plugins.names()
    monkeypatch.setenv("MESH_DISABLE_PLUGINS", "deadletter, retry")
    assert not {"retry", "deadletter"} & set(App("svc2", config=config(hub)).plugins.names())


@pytest.fixture
def installed_plugin(tmp_path: Path) -> Any:
    """A third-party distribution with an entry point in group ``mesh``, installed on sys.path."""
    (tmp_path / "mesh_giveup.py").write_text(
        textwrap.dedent(
            """
            from mesh import Decision, hookimpl

            @hookimpl
            def mesh_retry_decision(context, error):
                if isinstance(error, LookupError):
                    return Decision.dead_letter("giveup plugin: lookups never heal")
                return None
            """
        )
    )
    dist = tmp_path / "mesh_giveup-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: mesh-giveup\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[mesh]\ngiveup = mesh_giveup\n")
    sys.path.insert(0, str(tmp_path))
    yield "giveup"
    sys.path.remove(str(tmp_path))
    sys.modules.pop("mesh_giveup", None)


async def test_entry_point_plugin_changes_a_retry_decision(hub: str, installed_plugin: str) -> None:
    app = App("svc", config=config(hub, defaults={"retry": {"attempts": 4, "immediate": 0, "initial": "1ms"}}))
    assert installed_plugin in app.plugins.names()
    calls: dict[str, int] = {"lookup": 0, "runtime": 0}

    @app.subscribe("jobs")
    async def work(event: Event) -> None:
        calls[event.data["kind"]] += 1
        raise (KeyError if event.data["kind"] == "lookup" else RuntimeError)("fail")

    async with app:
        await app.publish("jobs", {"kind": "lookup"}, type="x")
        await app.publish("jobs", {"kind": "runtime"}, type="x")
        await app.join()
    assert calls == {"lookup": 1, "runtime": 4}
    reasons = sorted(str(e.extensions["mesherror"]) for e in app.broker.dead_letters("jobs"))  # type: ignore[attr-defined]
    assert reasons[1] == "giveup plugin: lookups never heal"


def test_cli_plugins_lists_hooks_in_call_order(installed_plugin: str) -> None:
    out = CliRunner().invoke(__import__("mesh.cli", fromlist=["cli"]).cli, ["plugins"]).output
    assert out.index("retry") < out.index("deadletter") < out.index("giveup")
    assert "mesh_retry_decision  (position 1 of 2)" in out.split("giveup")[1]


async def test_mesh_delivery_outcome_reports_each_settlement(hub: str) -> None:
    outcomes: list[tuple[str, str, int]] = []

    class Count:
        @hookimpl
        def mesh_delivery_outcome(self, context: Context, outcome: str, error: BaseException | None) -> None:
            outcomes.append((outcome, type(error).__name__, context.state.get("immediate_retries", 0)))

    app = App(
        "svc",
        config=config(hub, defaults={"retry": {"attempts": 3, "immediate": 1, "initial": "1ms"}}),
        plugins=[Count()],
    )

    @app.subscribe("jobs", type="job")
    async def work(event: Event) -> None:
        if event.data["fail"]:
            raise RuntimeError("boom")

    async with app:
        await app.publish("jobs", {"fail": False}, type="job")
        await app.publish("jobs", {"fail": False}, type="other")
        await app.publish("jobs", {"fail": True}, type="job")
        await app.join()
    assert outcomes == [
        ("handled", "NoneType", 0),
        ("skipped", "NoneType", 0),
        ("retry", "RuntimeError", 1),
        ("dead_letter", "DeadLetter", 0),
    ]


async def test_mesh_delivery_layers_wrap_handling_and_settlement(hub: str) -> None:
    seen: list[tuple[str, str, str]] = []

    class Around:
        @hookimpl
        def mesh_delivery_layers(self, runtime: Runtime, subscription: Any) -> Any:
            def layer(next_: Any) -> Any:
                async def handle(ctx: Context) -> Any:
                    result = await next_(ctx)  # never raises for a handler failure
                    dead = len(app.broker.dead_letters("jobs"))  # type: ignore[attr-defined]
                    seen.append((ctx.outcome, type(ctx.error).__name__, f"dead letters {dead}"))
                    return result

                return handle

            return layer

    app = App("svc", config=config(hub, defaults={"retry": {"attempts": 1}}), plugins=[Around()])

    @app.subscribe("jobs")
    async def work(event: Event) -> None:
        if event.data["fail"]:
            raise RuntimeError("boom")

    async with app:
        await app.publish("jobs", {"fail": False}, type="x")
        await app.publish("jobs", {"fail": True}, type="x")
        await app.join()
    assert seen == [("handled", "NoneType", "dead letters 0"), ("dead_letter", "RuntimeError", "dead letters 1")]
