"""Names that work on every broker, checked once when they are given, and handler signatures.

A name that works on one broker must work on all, or swapping the broker by config breaks an app
at start (``App("billing service")`` runs on memory and Redis, and fails on NATS and RabbitMQ).
So app ids, topics and groups are checked against the strictest rule of each broker:

=========  =====================================================  ================================
broker     its rule                                               what the mesh requires
=========  =====================================================  ================================
Kafka      topic: ``[a-zA-Z0-9._-]``, at most 249 characters,     those characters only; the topic
           not ``.`` or ``..``; the retry topic                   (with the namespace) and
           ``_mesh.retry.<group>.<topic>`` obeys it too           ``_mesh.retry.<group>.<topic>``
                                                                  within 249
NATS       subject tokens split on ``.``: no whitespace, no       no empty token (no leading,
           ``*`` / ``>`` wildcards, no empty token                trailing or doubled ``.``)
JetStream  stream and consumer names: no whitespace, ``.``,       (``.`` is mapped by the adapter)
           ``*``, ``>``, ``/``, ``\\``
RabbitMQ   exchange and queue names at most 255 bytes;            the queue ``<topic>.<group>``
           ``amq.`` is reserved                                   within 255; no ``amq.`` prefix
Redis      any key                                                (nothing more)
=========  =====================================================  ================================

Hence: letters, digits, ``_`` and ``-``, in tokens joined by single dots; an app id, topic or
group starting with the mesh's reserved prefix ``_mesh.`` is refused too.

:func:`check_handler_signature` refuses, at decoration time, a handler parameter the mesh cannot
fill (it would dead-letter every event at run time). What dispatch fills, by annotation:
``Event`` (or no annotation and the name ``event``, ``e`` or ``ev``), ``Context``, and the data
(no annotation, ``Any`` or any type pydantic validates): one parameter gets the data.

>>> check_topic("shop.order-created_v2")
'shop.order-created_v2'
>>> name_problems("billing service")
["' ' is not allowed"]
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from typing import Any, get_type_hints

from mesh.errors import InvalidHandler, InvalidName
from mesh.extensions import RESERVED_PREFIX

__all__ = [
    "KAFKA_MAX",
    "RABBITMQ_MAX_BYTES",
    "InvalidHandler",
    "InvalidName",
    "check_app_id",
    "check_group",
    "check_handler_signature",
    "check_subscription",
    "check_topic",
    "name_problems",
]

KAFKA_MAX = 249
"""The longest Kafka topic name."""
RABBITMQ_MAX_BYTES = 255
"""The longest AMQP 0-9-1 exchange or queue name, in bytes."""

_ALLOWED = re.compile(r"[A-Za-z0-9_-]")
_EVENT_NAMES = ("event", "e", "ev")


def name_problems(name: object, *, limit: int = KAFKA_MAX) -> list[str]:
    """Why ``name`` cannot be used on every broker (empty: it can)."""
    if not isinstance(name, str) or not name:
        return ["it must be a non-empty string"]
    problems: list[str] = []
    bad = sorted({c for c in name if c != "." and not _ALLOWED.fullmatch(c)})
    if bad:
        shown = ", ".join(repr(c) for c in bad)
        problems.append(f"{shown} {'is' if len(bad) == 1 else 'are'} not allowed")
    if any(not token for token in name.split(".")):
        problems.append("it has an empty part between dots (NATS subjects need every token)")
    if name.startswith(RESERVED_PREFIX):
        problems.append(f"the prefix {RESERVED_PREFIX!r} is reserved for the mesh")
    if name.lower().startswith("amq."):
        problems.append("the prefix 'amq.' is reserved by RabbitMQ")
    if len(name) > limit:
        problems.append(f"it is {len(name)} characters long, over {limit} (Kafka's limit)")
    return problems


def _check(kind: str, name: object, *, limit: int = KAFKA_MAX) -> str:
    problems = name_problems(name, limit=limit)
    if problems:
        hint = " (use letters, digits, '_', '-', and '.' between words)" if "allowed" in problems[0] else ""
        raise InvalidName(f"{kind} {name!r} cannot be used on every broker: {'; '.join(problems)}{hint}")
    assert isinstance(name, str)
    return name


def check_app_id(app_id: object) -> str:
    """``app_id`` if it works on every broker (it is the default group and the event source)."""
    return _check("app id", app_id)


def check_topic(topic: object, *, namespace: str = "") -> str:
    """``topic`` if it (with the namespace prefix) works on every broker."""
    return _check("topic", topic, limit=KAFKA_MAX - len(namespace))


def check_group(group: object) -> str:
    """``group`` if it works on every broker."""
    return _check("group", group)


def check_subscription(topic: str, group: str, *, namespace: str = "") -> None:
    """Topic and group each valid, and the names made of both within every broker's limit.

    Kafka's retry topic ``_mesh.retry.<group>.<topic>`` must stay within 249 characters and
    RabbitMQ's queue ``<topic>.<group>`` within 255 bytes.
    """
    check_topic(topic, namespace=namespace)
    check_group(group)
    retry = f"{namespace}{RESERVED_PREFIX}retry.{group}.{topic}"
    if len(retry) > KAFKA_MAX:
        raise InvalidName(
            f"topic {topic!r} with group {group!r} is too long for Kafka: its retry topic would have "
            f"{len(retry)} characters, over {KAFKA_MAX}; shorten the topic or the group"
        )
    queue = f"{namespace}{topic}.{group}".encode()
    if len(queue) > RABBITMQ_MAX_BYTES:
        raise InvalidName(
            f"topic {topic!r} with group {group!r} is too long for RabbitMQ: the queue name would have "
            f"{len(queue)} bytes, over {RABBITMQ_MAX_BYTES}"
        )


def _hints(fn: Callable[..., Any]) -> dict[str, Any]:
    try:
        return get_type_hints(fn)
    except Exception:  # the pipeline passes unresolvable annotations the data as it is
        return {}


def _unvalidatable(annotation: Any) -> bool:
    from pydantic import TypeAdapter

    if annotation is None:
        return False
    try:
        TypeAdapter(annotation)
    except Exception:
        return True
    return False


def check_handler_signature(fn: Callable[..., Any]) -> None:
    """Raise :class:`InvalidHandler` if the mesh cannot fill every parameter of ``fn``.

    Refused: a positional-only parameter (handlers are called by keyword), more than one
    parameter for the data (each would get the same data, so all but one fail to validate),
    and a data type pydantic cannot validate. What fills what is the pipeline's own plan
    (:func:`mesh.pipeline.injection.injection_plan`), so the check and the delivery agree.
    """
    from pydantic.errors import PydanticSchemaGenerationError, PydanticUserError

    from mesh.pipeline.injection import injection_plan

    name = getattr(fn, "__qualname__", repr(fn))
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError) as exc:
        raise InvalidHandler(f"handler {name}: cannot read its signature: {exc}") from exc
    for param in signature.parameters.values():
        if param.kind is param.POSITIONAL_ONLY:
            raise InvalidHandler(
                f"handler {name}: parameter {param.name!r} is positional-only; the mesh passes "
                "arguments by name (remove the '/')"
            )
    try:
        plan = injection_plan(fn)
    except (PydanticSchemaGenerationError, PydanticUserError, TypeError) as exc:
        hints = _hints(fn)
        bad = next((p for p in signature.parameters if _unvalidatable(hints.get(p))), "?")
        ann = hints.get(bad)
        raise InvalidHandler(
            f"handler {name}: parameter {bad!r}: the event data cannot be validated as "
            f"{getattr(ann, '__name__', ann)!r} ({type(exc).__name__}); use a pydantic model, a "
            "dataclass, a TypedDict or a plain type"
        ) from None
    data = [param for param, kind, _ in plan if kind == "data"]
    if len(data) > 1:
        shown = ", ".join(repr(p) for p in data)
        raise InvalidHandler(
            f"handler {name}: parameters {shown} would each get the event data; the mesh fills one "
            "data parameter, plus Event (or a parameter named event, e or ev) and Context. "
            "Take other things from a closure or from Context"
        )
