"""The class users subclass: ``@app.actor("Cart") class Cart(Actor)``.

Inside a turn an actor reads and writes :attr:`Actor.state` (buffered: the writes, the events
it publishes and the reminders it sets take effect together when the turn ends without an
error), sets timers, and calls other actors. Public ``async def`` methods (names not starting
with ``_`` and not one of the hooks below) are what callers may call; each takes at most one
argument, validated from the call's data by its annotation.

==================  ====================================================================
hook                when
==================  ====================================================================
``on_activate``     before the first turn of an activation (a turn of its own)
``on_deactivate``   when the actor goes idle, moves or the app stops (a turn of its own)
``on_reminder``     a durable reminder set with :meth:`Actor.remind` is due
``on_timer``        a timer set with :meth:`Actor.timer` fires (unless it names a method)
``on_event``        an event routed by ``@app.subscribe(topic, actor=TYPE)`` (subject = id)
==================  ====================================================================
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar, overload

from mesh.event import Event

if TYPE_CHECKING:
    from mesh.actors.activation import Activation
    from mesh.actors.proxy import ActorProxy

__all__ = ["HOOKS", "Actor", "ActorState"]

T = TypeVar("T")

HOOKS = frozenset({"on_activate", "on_deactivate", "on_reminder", "on_timer", "on_event"})
"""Method names the runtime calls itself (not callable by name, except ``on_event``)."""

_ABSENT: Any = object()


class ActorState:
    """One actor's keys as a turn sees them: its own writes first, then the stored values."""

    def __init__(self, load: Callable[[str], Awaitable[Any]], parent: ActorState | None = None) -> None:
        self._load = load
        self._parent = parent
        self.writes: dict[str, Any] = {}
        """Key -> value (or the deletion marker) written in this turn."""

    async def _raw(self, key: str) -> Any:
        if key in self.writes:
            return self.writes[key]
        if self._parent is not None:
            return await self._parent._raw(key)
        return await self._load(key)

    @overload
    async def get(self, key: str) -> Any: ...
    @overload
    async def get(self, key: str, type: type[T]) -> T | None: ...
    @overload
    async def get(self, key: str, type: Any) -> Any: ...

    async def get(self, key: str, type: Any = None) -> Any:
        """The key's value (validated as ``type`` if given), or ``None`` if it has none."""
        value = await self._raw(key)
        if value is _ABSENT or value is None:
            return None
        if type is None:
            return value
        from mesh.pipeline import data_adapter  # late: mesh.config imports this package

        return data_adapter(type)(value)

    async def contains(self, key: str) -> bool:
        """Whether the key has a value."""
        return await self._raw(key) is not _ABSENT

    def set(self, key: str, value: Any) -> None:
        """Write a value (stored when the turn ends without an error)."""
        if not isinstance(key, str) or not key:
            raise ValueError(f"an actor state key is a non-empty string, not {key!r}")
        self.writes[key] = value

    def delete(self, key: str) -> None:
        """Remove a key (when the turn ends without an error)."""
        self.writes[key] = _ABSENT


ABSENT = _ABSENT
"""The marker of a deleted or absent key in :attr:`ActorState.writes` and the activation cache."""


class Actor:
    """A virtual actor: one instance per id across the mesh, one turn at a time (see the module)."""

    type_name: ClassVar[str] = ""
    """The actor type this class was registered as."""
    id: str
    """This actor's id."""
    _activation: Activation

    @property
    def state(self) -> ActorState:
        """The actor's state as the current turn sees it."""
        return self._activation.turn_state()

    async def publish(self, topic: str, data: Any = None, *, type: str, **attributes: Any) -> Event:
        """Publish an event when the turn commits (with its state changes, through the outbox)."""
        event = data if isinstance(data, Event) else Event(type, self._activation.source, data, **attributes)
        self._activation.current().events.append((topic, event))
        return event

    async def remind(self, name: str, *, due: timedelta | float, period: timedelta | float | None = None,
                     data: Any = None) -> None:
        """Set a durable reminder (fires ``on_reminder(name, data)`` after ``due``, then every
        ``period``), even after every instance restarted. Takes effect when the turn commits."""
        self._activation.current().reminders.append(("set", name, _seconds(due), _seconds(period), data))

    async def forget(self, name: str) -> None:
        """Remove a reminder (when the turn commits)."""
        self._activation.current().reminders.append(("cancel", name, 0.0, None, None))

    def timer(self, name: str, due: timedelta | float, period: timedelta | float | None = None, *,
              callback: str = "on_timer", data: Any = None) -> None:
        """Start an in-memory timer: a turn calling ``callback(name, data)`` (or a method by name with
        ``data``) after ``due``, then every ``period``; it ends when the actor deactivates."""
        self._activation.start_timer(name, _seconds(due), _seconds(period), callback, data)

    def cancel_timer(self, name: str) -> None:
        """Stop a timer."""
        self._activation.cancel_timer(name)

    def actor(self, type: str, id: str) -> ActorProxy:
        """Another actor (calls made in a turn carry its call chain, for reentrancy)."""
        return self._activation.proxy(type, id)

    async def on_activate(self) -> None:
        """Called before the first turn of an activation."""

    async def on_deactivate(self) -> None:
        """Called when the actor is deactivated (idle, moved, app stopping)."""

    async def on_reminder(self, name: str, data: Any) -> None:
        """Called when a reminder is due."""

    async def on_timer(self, name: str, data: Any) -> None:
        """Called when a timer fires (the default callback)."""

    async def on_event(self, event: Event) -> None:
        """Called with an event routed to this actor by ``@app.subscribe(topic, actor=TYPE)``."""
        raise NotImplementedError(f"actor type {self.type_name!r} does not handle events (define on_event)")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.type_name!r}, {getattr(self, 'id', '?')!r})"


def _seconds(value: timedelta | float | None) -> float | None:
    if value is None:
        return None
    return value.total_seconds() if isinstance(value, timedelta) else float(value)
