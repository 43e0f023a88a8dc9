"""Errors of the actors block, as a caller sees them (every one is also an error reply code).

==========================  ==========================  ========================================
error                       code                        when
==========================  ==========================  ========================================
``NoResponders``            (raised by the caller)      no live instance hosts the actor type
``ActorTypeNotFound``       ``actor_type_not_found``    the instance reached does not host it
``MethodNotFound``          ``method_not_found``        the actor has no such public method
``RemoteError``             ``invalid_argument``        the data does not fit the method
``TurnTimeout``             ``deadline_exceeded``       the turn ran past its timeout (state kept)
``ReentrancyError``         ``reentrancy_depth``        a call chain went deeper than allowed
``NotOwner``                ``not_owner``               (internal) the lease is held elsewhere:
                                                        the caller asks placement again and
                                                        retries within its deadline
==========================  ==========================  ========================================
"""

from __future__ import annotations

from typing import Any

from mesh.errors import MethodNotFound, RemoteError

__all__ = [
    "ACTOR_TYPE_NOT_FOUND",
    "DEADLINE_EXCEEDED",
    "NOT_OWNER",
    "REENTRANCY_DEPTH",
    "ActorTypeNotFound",
    "NotOwner",
    "ReentrancyError",
    "TurnTimeout",
    "actor_error",
]

ACTOR_TYPE_NOT_FOUND = "actor_type_not_found"
NOT_OWNER = "not_owner"
DEADLINE_EXCEEDED = "deadline_exceeded"
REENTRANCY_DEPTH = "reentrancy_depth"


class ActorTypeNotFound(RemoteError):
    """The instance the call reached hosts no actor type of that name."""


class NotOwner(RemoteError):
    """Another instance holds the actor's lease (the caller retries with fresh placement)."""


class TurnTimeout(RemoteError, TimeoutError):
    """The turn ran past its timeout and was cancelled; the actor's state is as before it."""


class ReentrancyError(RemoteError):
    """A reentrant call chain went past the depth limit."""


_CLASSES: dict[str, type[RemoteError]] = {
    ACTOR_TYPE_NOT_FOUND: ActorTypeNotFound,
    NOT_OWNER: NotOwner,
    DEADLINE_EXCEEDED: TurnTimeout,
    REENTRANCY_DEPTH: ReentrancyError,
}


def actor_error(data: Any, method: str, target: str) -> RemoteError:
    """The typed exception an actor's error reply stands for."""
    from mesh.invoke.protocol import remote_error  # late: mesh.config imports this package

    error = remote_error(data, method, target)
    cls = _CLASSES.get(error.code)
    if cls is None or isinstance(error, MethodNotFound):
        return error
    return cls(error.type, error.message, error.code)
