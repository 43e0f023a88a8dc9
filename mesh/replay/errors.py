"""Errors of replay and redrive (all :class:`~mesh.errors.MeshError`, so the CLI prints one line).

::

    MeshError
    └── ReplayError
        ├── BadReplayInput (ValueError)   an empty window, a bad --where / --rate / time
        ├── UnknownTopic                  neither the archive nor the broker knows the topic
        ├── UnknownGroup                  the target group does not subscribe to the topic
        ├── NothingToReplay               no event matches (the message says why)
        ├── ReplayExists                  a replay of that name exists: resume it or rename
        └── CanaryFailed                  canary events came back to the dead-letter topic
"""

from __future__ import annotations

from mesh.errors import MeshError

__all__ = [
    "BadReplayInput",
    "CanaryFailed",
    "NothingToReplay",
    "ReplayError",
    "ReplayExists",
    "UnknownGroup",
    "UnknownTopic",
]


class ReplayError(MeshError):
    """A replay or redrive cannot run (nothing was sent unless the message says otherwise)."""


class BadReplayInput(ReplayError, ValueError):
    """An argument is malformed or contradicts another."""


class UnknownTopic(ReplayError):
    """The source has no such topic."""


class UnknownGroup(ReplayError):
    """The target group does not subscribe to the topic."""


class NothingToReplay(ReplayError):
    """No event matches; the message says whether the window, the topic or a filter is empty."""


class ReplayExists(ReplayError):
    """A replay with this name was started before."""


class CanaryFailed(ReplayError):
    """Canary events came back to the dead-letter topic: the rest was not redriven."""

    def __init__(self, message: str, returned: list[str]) -> None:
        self.returned = returned
        super().__init__(message)
