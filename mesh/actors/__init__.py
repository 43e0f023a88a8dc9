"""Actors: virtual actors placed across live instances, one turn at a time (see docs/actors.md).

:mod:`mesh.actors.placement` (rendezvous hashing), :mod:`mesh.actors.proxy` (calls),
:mod:`mesh.actors.host` and :mod:`mesh.actors.activation` (serving, turns, leases),
:mod:`mesh.actors.reminders` (durable reminders), :mod:`mesh.actors.block` (wiring).
"""

from __future__ import annotations

from mesh.actors.actor import Actor, ActorState
from mesh.actors.config import ActorsConfig
from mesh.actors.errors import ActorTypeNotFound, NotOwner, ReentrancyError, TurnTimeout

__all__ = ["Actor", "ActorState", "ActorTypeNotFound", "ActorsConfig", "NotOwner", "ReentrancyError", "TurnTimeout"]
