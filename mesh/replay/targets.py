"""Where replayed events go: the original topic, another topic, one subscription group, or (for a
redrive) each event's original topic.

Topic targets publish through the App, so its plugins act as on any publish (tracing continues
the trace the event carries; the archive does not record the copy twice). A group target uses
the broker's :class:`~mesh.brokers.capabilities.GroupPublisher`: only that group's members get the
event, on the topic they subscribe to (how, per broker: :mod:`mesh.brokers.capabilities`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from mesh.brokers.base import RESERVED_PREFIX
from mesh.brokers.capabilities import GroupPublisher, group_publisher
from mesh.event import Event
from mesh.replay.errors import BadReplayInput, UnknownGroup

if TYPE_CHECKING:
    from mesh.runtime import Runtime

__all__ = ["Sender", "Target"]

TargetKind = Literal["original", "topic", "group", "origin"]


@dataclass(frozen=True, slots=True)
class Target:
    """A replay target; build with :meth:`original`, :meth:`topic`, :meth:`group` or :meth:`origin`."""

    kind: TargetKind = "original"
    name: str | None = None

    def __post_init__(self) -> None:
        if self.kind in ("topic", "group") and not self.name:
            raise BadReplayInput(f"a {self.kind} target needs a name")
        if self.kind in ("topic", "origin") and self.name and self.name.startswith(RESERVED_PREFIX):
            raise BadReplayInput(f"topic {self.name!r} uses the reserved prefix {RESERVED_PREFIX!r}")

    @classmethod
    def original(cls) -> Target:
        """Back to the topic the events were on: every subscribing group sees them."""
        return cls("original")

    @classmethod
    def topic(cls, name: str) -> Target:
        """To another topic."""
        return cls("topic", name)

    @classmethod
    def group(cls, name: str) -> Target:
        """To one subscription group of the topic only; nobody else sees them."""
        return cls("group", name)

    @classmethod
    def origin(cls, override: str | None = None) -> Target:
        """Redrive: each dead letter to the topic it failed on (``meshtopic``), or to ``override``."""
        return cls("origin", override)

    def describe(self, topic: str) -> str:
        """The target in words."""
        if self.kind == "original":
            return f"topic {topic} (every group)"
        if self.kind == "topic":
            return f"topic {self.name}"
        if self.kind == "group":
            return f"group {self.name} of {topic} only"
        return f"topic {self.name}" if self.name else "each event's original topic (meshtopic)"

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name}

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> Target:
        return cls(doc.get("kind", "original"), doc.get("name"))


class Sender:
    """Sends events to a target through a started App (checks the target first)."""

    def __init__(self, runtime: Runtime, target: Target, topic: str) -> None:
        self.runtime = runtime
        self.target = target
        self.topic = topic
        self._group: GroupPublisher | None = None

    async def check(self) -> None:
        """Refuse a target that cannot work, before anything is sent."""
        if self.target.kind == "group":
            assert self.target.name is not None
            publisher = group_publisher(self.runtime.broker)
            if not await publisher.has_group(self.topic, self.target.name):
                raise UnknownGroup(
                    f"no group {self.target.name!r} subscribes to {self.topic!r} on the "
                    f"{self.runtime.broker.type} broker: check the name (a group is the app id by default) "
                    "and that its app subscribed at least once"
                )
            self._group = publisher

    def destination(self, event: Event) -> str | None:
        """The topic an event goes to (``None``: a redriven event without ``meshtopic``)."""
        kind = self.target.kind
        if kind == "topic":
            return self.target.name
        if kind == "origin":
            if self.target.name:
                return self.target.name
            origin = event.extensions.get("meshtopic")
            if origin is None or not str(origin) or str(origin).startswith(RESERVED_PREFIX):
                return None
            return str(origin)
        return self.topic

    async def send(self, event: Event, destination: str | None = None) -> None:
        """Send one event (to ``destination`` for topic-like targets)."""
        if self.target.kind == "group":
            assert self._group is not None and self.target.name is not None, "call check() first"
            await self._group.publish_to_group(self.topic, self.target.name, event)
            return
        topic = destination or self.destination(event)
        if topic is None:
            raise BadReplayInput(f"event {event.id} has no original topic (meshtopic): redrive it with --to TOPIC")
        await self.runtime.send(topic, event)
