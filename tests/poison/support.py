"""Shared parts of the poison tests (issue #12): the bad messages, the good ones, and one run.

A run is two Apps on one broker: the *worker* subscribed to a fresh topic with ``attempts: 1``
and ``max_event_bytes`` = :data:`MAX_EVENT_BYTES`, and the *watcher* on ``<topic>.dlq``. The
test publishes every bad message its broker can carry with the broker's raw client, then five
good CloudEvents in binary mode, and checks:

==========================  ==================================================================
message                     expected end
==========================  ==================================================================
good (type ``poison.good``)  handled exactly once
mixed-case ``<prefix>Type``  handled exactly once (the header prefix and names are read in any
                            case), never dead-lettered
any other bad message       dead-lettered exactly once with a reason: ``mesherror``, or the
                            stub's ``reason`` (type ``mesh.deadletter.stub``); the handler
                            refuses every event that is not ``poison.good``
the subscription            nothing pending at the end (checked per broker by the module)
==========================  ==================================================================

Each bad message carries its tag (``PZN-<case>-``) in its id, at the start of its body and, in
binary mode, in an ``x-poison`` header, so its dead letter is found whatever form it took (the
event, an undecodable wrapper with the raw bytes and headers, or a bounded stub, which keeps the
attributes and headers but may keep none of the body).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from mesh import App, Event
from mesh.codecs.stub import STUB_TYPE
from tests.support import BrokerSpec, unique, wait_for

GOOD_TYPE = "poison.good"
BAD_TYPE = "poison.bad"
SOURCE = "/poison"
MAX_EVENT_BYTES = 16384
BIG = 100 * 1024
STRUCTURED = "application/cloudevents+json"


@dataclass
class Message:
    """One message as a raw client sends it: headers, body and content type, in one binding.

    ``structured`` messages are a JSON document in the body (Redis: the ``event`` field);
    ``handled`` says the mesh must hand it to the handler rather than dead-letter it.
    """

    tag: str
    body: bytes
    headers: dict[str, Any] = field(default_factory=dict)
    content_type: Any = None
    structured: bool = False
    handled: bool = False


def tagged(messages: list[Message]) -> list[Message]:
    """The messages, each binary one with its tag in an ``x-poison`` header as well."""
    for message in messages:
        if not message.structured:
            message.headers.setdefault("x-poison", message.tag)
    return messages


def tag(case: str) -> str:
    """The marker of one bad case (no tag is a prefix of another: it ends with ``-``)."""
    return f"PZN-{case}-"


def attributes(prefix: str, id: str, type: str = BAD_TYPE) -> dict[str, Any]:
    """The four required attributes as binary-mode headers with ``prefix``."""
    return {f"{prefix}specversion": "1.0", f"{prefix}id": id, f"{prefix}source": SOURCE, f"{prefix}type": type}


def good(prefix: str, i: int) -> Message:
    """The ``i``-th good event: binary mode, JSON data ``{"i": i}``."""
    return Message(
        f"good-{i}", json.dumps({"i": i}).encode(), attributes(prefix, f"good-{i}", GOOD_TYPE), "application/json"
    )


def structured(case: str, **members: Any) -> Message:
    """A structured event whose id is the case's tag, with ``members`` added."""
    doc = {"specversion": "1.0", "id": tag(case), "source": SOURCE, "type": BAD_TYPE, **members}
    return Message(tag(case), json.dumps(doc).encode(), {}, STRUCTURED, structured=True)


def common(prefix: str) -> list[Message]:
    """The bad messages every broker can carry, in the binding whose header prefix is ``prefix``."""
    deep_ext = b"[" * 300 + b"]" * 300
    deep_doc = json.dumps({"specversion": "1.0", "id": tag("deep-extension"), "source": SOURCE, "type": BAD_TYPE})
    deep = Message(
        tag("deep-extension"), deep_doc[:-1].encode() + b', "xdeep": ' + deep_ext + b"}", {}, STRUCTURED, True
    )
    return tagged(
        [
            Message(
                tag("oversize-event"),
                tag("oversize-event").encode() + b"x" * BIG,
                attributes(prefix, tag("oversize-event")),
                "text/plain",
            ),
            Message(
                tag("oversize-undecodable"),
                tag("oversize-undecodable").encode() + b"y" * BIG,
                {f"{prefix}specversion": "1.0", f"{prefix}source": SOURCE},  # no id, no type: not an event
                "text/plain",
            ),
            structured("structured-text-object", datacontenttype="text/plain", data={"a": 1}),
            Message(
                tag("ce-data-header"),
                b'{"a": 1}',
                {**attributes(prefix, tag("ce-data-header")), f"{prefix}data": "x"},
                "application/json",
            ),
            Message(
                tag("big-int"),
                b'{"n": 18446744073709551616, "m": -9223372036854775809}',
                attributes(prefix, tag("big-int")),
                "application/json",
            ),
            deep,
            structured("numeric-datacontenttype", datacontenttype=5, data={"a": 1}),
            mixed_case(prefix),
        ]
    )


def mixed_case(prefix: str) -> Message:
    """A good event whose type header is ``<prefix>Type`` among lower-case ones: must be handled."""
    headers = attributes(prefix, tag("mixed-case"), GOOD_TYPE)
    headers[f"{prefix}Type"] = headers.pop(f"{prefix}type")
    return Message(tag("mixed-case"), b'{"i": -1}', headers, "application/json", handled=True)


def kafka_nulls() -> list[Message]:
    """Kafka-only shapes (also carried by the memory broker): null header values, a non-UTF-8 content type."""
    null_id = {**attributes("ce_", "x"), "ce_id": None}
    null_spec = {**attributes("ce_", "x"), "ce_specversion": None}
    return tagged(
        [
            Message(tag("null-id"), tag("null-id").encode(), null_id, "text/plain"),
            Message(tag("null-specversion"), tag("null-specversion").encode(), null_spec, "text/plain"),
            Message(
                tag("bad-content-type-null-header"),
                tag("bad-content-type-null-header").encode(),
                {**attributes("ce_", tag("bad-content-type-null-header")), "x-null": None},
                b"\xff\xfe",
            ),
        ]
    )


def typed_headers(prefix: str) -> list[Message]:
    """Header values that are not strings, as an AMQP table can hold them."""
    typed = {
        **attributes(prefix, tag("typed-headers")),
        f"{prefix}xint": 7,
        f"{prefix}xbool": True,
        f"{prefix}xnested": {"a": [1, {"b": 2}]},
        f"{prefix}xlist": [1, "two"],
        f"{prefix}xnull": None,
    }
    typed_attr = {**attributes(prefix, tag("typed-attribute")), f"{prefix}specversion": 1, f"{prefix}xneg": -5}
    return tagged(
        [
            Message(tag("typed-headers"), b'{"a": 1}', typed, "application/json"),
            Message(tag("typed-attribute"), tag("typed-attribute").encode(), typed_attr, "text/plain"),
        ]
    )


async def eventually(check: Callable[[], Awaitable[Any]], expected: Any, timeout: float = 20.0, what: str = "") -> None:
    """Poll the async ``check()`` until it returns ``expected``; fail with the last value after ``timeout``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while (value := await check()) != expected:
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}: {value!r} != {expected!r}")
        await asyncio.sleep(0.2)


def config(spec: BrokerSpec) -> dict[str, Any]:
    """The mesh config of a poison run: one attempt, a small ``max_event_bytes``."""
    return {
        "broker": spec.config(),
        "defaults": {"retry": {"attempts": 1, "immediate": 0}},
        "max_event_bytes": MAX_EVENT_BYTES,
    }


def text_of(letter: Event) -> str:
    """Everything a dead letter says, as text, to look for a tag in."""
    data = letter.data
    if isinstance(data, bytes | bytearray):
        data = bytes(data).decode("utf-8", "replace")
    return f"{letter.id} {data!r} {letter.extensions!r}"


def reason_of(letter: Event) -> str:
    """The reason a dead letter gives: the stub's ``reason``, else ``mesherror``."""
    if letter.type == STUB_TYPE and isinstance(letter.data, Mapping):
        return str(letter.data.get("reason") or "")
    return str(letter.extensions.get("mesherror") or "")


class PoisonRun:
    """A worker App and a dead-letter watcher App on one broker, recording what each got."""

    def __init__(self, spec: BrokerSpec) -> None:
        self.topic = unique("poison")
        self.group = unique("w")
        cfg = config(spec)
        self.worker = App(unique("worker"), config=cfg)
        self.watcher = App(unique("watcher"), config=cfg)
        self.handled: list[Event] = []
        self.refused: list[Event] = []
        self.dead: list[Event] = []

        @self.worker.subscribe(self.topic, group=self.group)
        async def work(event: Event) -> None:
            if event.type != GOOD_TYPE:
                self.refused.append(event)
                raise ValueError(f"poison test: refusing {event.type!r}")
            self.handled.append(event)

        @self.watcher.subscribe(f"{self.topic}.dlq")
        async def on_dead(event: Event) -> None:
            self.dead.append(event)

    async def __aenter__(self) -> PoisonRun:
        await self.watcher.start()
        try:
            await self.worker.start()
        except BaseException:
            await self.watcher.stop()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        try:
            await self.worker.stop()
        finally:
            await self.watcher.stop()

    async def settled(self, sent: list[Message], timeout: float = 30.0) -> None:
        """Wait until the handled ones were handled and every other one has a dead letter."""
        to_handle = {m.tag for m in sent if m.handled or m.tag.startswith("good-")}
        to_dead = {m.tag for m in sent if not m.handled and not m.tag.startswith("good-")}
        await wait_for(
            lambda: to_handle <= {e.id for e in self.handled},
            timeout=timeout,
            what=f"handled: {sorted(to_handle)} (so far {sorted(e.id for e in self.handled)})",
        )
        await wait_for(
            lambda: to_dead <= self.dead_tags(to_dead),
            timeout=timeout,
            what=f"dead letters of {sorted(to_dead)} (missing {sorted(to_dead - self.dead_tags(to_dead))})",
        )

    def dead_tags(self, tags: set[str]) -> set[str]:
        """The tags some dead letter so far mentions."""
        texts = [text_of(letter) for letter in self.dead]
        return {t for t in tags if any(t in text for text in texts)}

    def check(self, sent: list[Message]) -> None:
        """Every good and mixed-case event handled once; every other one dead-lettered once with a reason."""
        to_handle = sorted(m.tag for m in sent if m.handled or m.tag.startswith("good-"))
        assert sorted(e.id for e in self.handled) == to_handle, "each good event handled exactly once"
        bad = [m.tag for m in sent if not m.handled and not m.tag.startswith("good-")]
        problems: list[str] = []
        for t in bad:
            letters = [letter for letter in self.dead if t in text_of(letter)]
            if len(letters) != 1:
                problems.append(f"{t}: {len(letters)} dead letters")
            elif not reason_of(letters[0]):
                problems.append(f"{t}: dead letter without a reason ({letters[0].type})")
        for t in to_handle:
            if any(t in text_of(letter) for letter in self.dead):
                problems.append(f"{t}: dead-lettered though it is a good event")
        assert not problems, "; ".join(problems)
        assert len(self.dead) == len(bad), f"{len(self.dead)} dead letters for {len(bad)} bad messages"
