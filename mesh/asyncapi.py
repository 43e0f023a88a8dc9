"""AsyncAPI 3.0 documents of apps (from their code) and of the live mesh (from presence).

=============================  ==================================================================
the app declares               becomes
=============================  ==================================================================
``app.publishes(topic, ...)``  a channel (address = topic), a message per CloudEvent type with the
                               data's JSON Schema, and a ``send`` operation
``@app.subscribe(topic)``      a ``receive`` operation; its ``type=`` filters name the messages
                               and the data parameter's type gives their payload schema; on Kafka
                               the group is the operation's ``groupId`` binding
``@app.method(name)``          a ``receive`` operation on the app's invocation channel with a
                               ``reply`` (the caller's reply topic, from header ``meshreplyto``)
=============================  ==================================================================

Messages carry the CloudEvents attributes as headers in the broker's binary binding (``ce_`` on
Kafka and Redis, ``ce-`` on AMQP and NATS). Channels get the broker's binding where AsyncAPI
defines one (Kafka, AMQP). Pydantic models land in ``components.schemas``. ``--live`` builds the
same document from heartbeats, which carry names but no schemas (payloads are then left open).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

import click
from pydantic import TypeAdapter

from mesh.app import App
from mesh.invoke.presence import Instance
from mesh.invoke.protocol import REPLY_PREFIX, REPLY_TO, invoke_topic
from mesh.pipeline.batch import BatchSpec
from mesh.pipeline.injection import _resolve, injection_plan

__all__ = ["PROTOCOLS", "app_document", "asyncapi_command", "live_document"]

PROTOCOLS = {"kafka": "kafka", "rabbitmq": "amqp", "nats": "nats", "jetstream": "nats", "redis": "redis"}
"""AsyncAPI protocol per broker type (the memory broker has no server)."""
PREFIXES = {"kafka": "ce_", "rabbitmq": "ce-", "nats": "ce-", "jetstream": "ce-", "redis": "ce_", "memory": "ce_"}
_ID = re.compile(r"[^A-Za-z0-9_.\-]")


def _id(text: str) -> str:
    return _ID.sub("_", text) or "_"


class _Builder:
    """Collects channels, messages, operations and schemas into one document."""

    def __init__(self, broker: str, title: str, version: str, url: str | None) -> None:
        self.broker = broker
        self.prefix = PREFIXES.get(broker, "ce_")
        self.doc: dict[str, Any] = {
            "asyncapi": "3.0.0",
            "info": {"title": title, "version": version, "description": f"CloudEvents on {broker} (event mesh)"},
            "defaultContentType": "application/json",
            "channels": {},
            "operations": {},
            "components": {"schemas": {}},
        }
        if broker in PROTOCOLS and url:
            parts = urlsplit(url)
            server: dict[str, Any] = {"host": parts.netloc.rpartition("@")[2] or url, "protocol": PROTOCOLS[broker]}
            self.doc["servers"] = {broker: server}

    def schema(self, annotation: Any) -> dict[str, Any] | None:
        """The JSON Schema of a data type, its models moved to ``components.schemas``."""
        if annotation is None:
            return None
        try:
            raw = TypeAdapter(annotation).json_schema(ref_template="#/components/schemas/{model}")
        except Exception:  # a type pydantic cannot describe: leave the payload open
            return None
        defs = raw.pop("$defs", {})
        self.doc["components"]["schemas"].update(defs)
        name = getattr(annotation, "__name__", None)
        if raw.get("type") == "object" and isinstance(name, str) and "title" in raw:
            self.doc["components"]["schemas"][_id(name)] = raw
            return {"$ref": f"#/components/schemas/{_id(name)}"}
        return raw

    def channel(self, topic: str, bindings: bool = True) -> str:
        key = _id(topic)
        if key not in self.doc["channels"]:
            channel: dict[str, Any] = {"address": topic, "messages": {}}
            if bindings and self.broker == "kafka":
                channel["bindings"] = {"kafka": {"topic": topic, "bindingVersion": "0.5.0"}}
            elif bindings and self.broker == "rabbitmq":
                exchange = {"name": topic, "type": "topic", "durable": True, "autoDelete": False, "vhost": "/"}
                channel["bindings"] = {"amqp": {"is": "routingKey", "exchange": exchange, "bindingVersion": "0.3.0"}}
            self.doc["channels"][key] = channel
        return key

    def message(self, channel: str, type_: str, payload: dict[str, Any] | None) -> dict[str, str]:
        """Add the message of CloudEvent ``type_`` to a channel; returns its reference."""
        key = _id(type_)
        messages = self.doc["channels"][channel]["messages"]
        if key not in messages or (payload is not None and "payload" not in messages[key]):
            p = self.prefix
            headers = {
                "type": "object",
                "required": [f"{p}id", f"{p}source", f"{p}specversion", f"{p}type"],
                "properties": {
                    f"{p}id": {"type": "string"},
                    f"{p}source": {"type": "string", "format": "uri-reference"},
                    f"{p}specversion": {"type": "string", "const": "1.0"},
                    f"{p}type": {"type": "string", "const": type_} if "*" not in type_ else {"type": "string"},
                    f"{p}time": {"type": "string", "format": "date-time"},
                    "traceparent": {"type": "string"},
                },
            }
            message: dict[str, Any] = {"name": type_, "title": type_, "headers": headers}
            if payload is not None:
                message["payload"] = payload
            messages[key] = message
        return {"$ref": f"#/channels/{channel}/messages/{key}"}

    def operation(self, op_id: str, action: str, channel: str, refs: list[dict[str, str]], **extra: Any) -> None:
        op: dict[str, Any] = {"action": action, "channel": {"$ref": f"#/channels/{channel}"}, "messages": refs}
        op.update(extra)
        self.doc["operations"][_id(op_id)] = op

    def publishes(self, app: str, topic: str, type_: str, data: Any) -> None:
        channel = self.channel(topic)
        ref = self.message(channel, type_, self.schema(data))
        self.operation(f"{app}.publish.{type_}", "send", channel, [ref], summary=f"{app} publishes {type_}")

    def subscribes(self, app: str, name: str, topic: str, group: str, types: Iterable[str], data: Any) -> None:
        channel = self.channel(topic)
        payload = self.schema(data)
        refs = [self.message(channel, t, payload) for t in types] or [self.message(channel, "*", payload)]
        extra: dict[str, Any] = {"summary": f"{app} consumes as group {group}"}
        if self.broker == "kafka":
            group_id = {"type": "string", "enum": [group]}
            extra["bindings"] = {"kafka": {"groupId": group_id, "bindingVersion": "0.5.0"}}
        self.operation(f"{app}.{name}", "receive", channel, refs, **extra)

    def method(self, app: str, name: str, argument: Any, result: Any) -> None:
        channel = self.channel(invoke_topic(app), bindings=False)
        request = self.message(channel, f"{name}.request", self.schema(argument))
        reply_channel = self.channel(REPLY_PREFIX + "{instance}", bindings=False)
        self.doc["channels"][reply_channel]["address"] = None  # each caller instance has its own
        reply = self.message(reply_channel, f"{app}.{name}.reply", self.schema(result))
        self.operation(
            f"{app}.invoke.{name}",
            "receive",
            channel,
            [request],
            summary=f"{app}.{name}: request/reply (mesh invoke)",
            reply={
                "address": {"location": f"$message.header#/{self.prefix}{REPLY_TO}"},
                "channel": {"$ref": f"#/channels/{reply_channel}"},
                "messages": [reply],
            },
        )


def _types(filters: Mapping[str, Any]) -> list[str]:
    value = filters.get("type")
    if value is None or callable(value):
        return []
    return [str(v) for v in value] if isinstance(value, list | tuple | set | frozenset) else [str(value)]


def _data_type(fn: Any) -> Any:
    hints = _resolve(fn)
    for name, kind, convert in injection_plan(fn):
        if kind == "data" and convert is not None:
            return hints.get(name)
    return None


def app_document(apps: list[App], *, title: str | None = None, version: str | None = None) -> dict[str, Any]:
    """The AsyncAPI 3.0 document of ``apps`` (one broker: the first app's config)."""
    first = apps[0]
    b = _Builder(
        first.config.broker.type,
        title or ", ".join(a.id for a in apps),
        version or first.version,
        first.config.broker.url,
    )
    for app in apps:
        for topic, type_, data in app.declared_publishes:
            b.publishes(app.id, topic, type_, data)
        for route in app.routes:
            for spec, _, _ in route.handlers:
                # a batch handler: the schema of one item
                data = spec.item_type if isinstance(spec, BatchSpec) else _data_type(spec.fn)
                types = _types(spec.filters)
                b.subscribes(app.id, spec.fn.__name__, route.topic, route.group, types, data)
        for name, method in app.callee.methods.items():
            fn = method.handler.fn
            b.method(app.id, name, _data_type(fn), _resolve(fn).get("return"))
    return b.doc


def live_document(live: Mapping[str, list[Instance]], broker: str, url: str | None) -> dict[str, Any]:
    """The AsyncAPI 3.0 document of the mesh as presence sees it (no payload schemas)."""
    b = _Builder(broker, "the live mesh", "live", url)
    for app_id, instances in sorted(live.items()):
        published = {(p["topic"], p["type"]) for i in instances for p in i.publishes}
        for topic, type_ in sorted(published):
            b.publishes(app_id, topic, type_, None)
        for topic, group in sorted({s for i in instances for s in i.subscriptions}):
            b.subscribes(app_id, f"consume.{topic}", topic, group, [], None)
        for name in sorted({m for i in instances for m in i.methods}):
            b.method(app_id, name, None, None)
    return b.doc


# -- the command ---------------------------------------------------------------------------------


@click.command("asyncapi")
@click.argument("target", required=False)
@click.option("--live", is_flag=True, help="Describe the live mesh from presence heartbeats instead of code.")
@click.option("--wait", type=click.FloatRange(min=0), default=None, help="--live: seconds to listen.")
@click.option("--format", "fmt", type=click.Choice(["yaml", "json"]), default="yaml", show_default=True)
@click.option("--title", default=None, help="info.title (default: the app ids).")
@click.option("--config", "-c", "config", type=click.Path(dir_okay=False), help="Config file.")
def asyncapi_command(
    target: str | None, live: bool, wait: float | None, fmt: str, title: str | None, config: str | None
) -> None:
    """Print the AsyncAPI 3.0 document of the apps at TARGET (MODULE:APPS), or of the live mesh."""
    import asyncio

    import orjson
    import yaml

    from mesh.cli import load_target
    from mesh.cli_config import choose_config
    from mesh.errors import MeshError

    if live == bool(target):
        raise click.UsageError("give either MODULE:APPS or --live")
    path = choose_config(config)
    if path is not None:
        os.environ["MESH_CONFIG"] = str(path)
    try:
        if target:
            doc = app_document(load_target(target), title=title)
        else:
            app = App("mesh-cli", config=None if path is None else str(path))

            async def listen() -> dict[str, Any]:
                async with app:
                    await app.presence.listen()
                    await asyncio.sleep(app.presence.interval + 0.2 if wait is None else wait)
                    return live_document(app.presence.apps(), app.config.broker.type, app.config.broker.url)

            doc = asyncio.run(listen())
            if title:
                doc["info"]["title"] = title
    except MeshError as exc:
        raise click.ClickException(str(exc)) from exc
    if fmt == "json":
        click.echo(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode())
    else:
        click.echo(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True), nl=False)
