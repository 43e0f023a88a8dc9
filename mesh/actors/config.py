"""The ``actors:`` section of ``mesh.yaml``.

.. code-block:: yaml

    actors:
      store: actors          # a state store of ``state:`` with transactions and an outbox
      lease: 10s             # an owner's lease on one actor; renewed every lease/3 while active
      idle_after: 10m        # default idle time before an actor is deactivated
      turn_timeout: 60s      # longest turn (also bounded by the caller's deadline)
      max_depth: 16          # deepest reentrant call chain
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = ["ActorsConfig"]


def _duration(value: Any) -> float:
    from mesh.config.models import parse_duration  # imported late: models imports this module

    return parse_duration(value)


class ActorsConfig(BaseModel):
    """Settings of the actors block (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    store: str = "actors"
    """The state store actors keep their state, leases and reminders in (name under ``state:``)."""
    lease: float = Field(10.0, gt=0)
    """Seconds an owner's lease on an actor lasts without renewal (a crashed owner's actors move
    after at most this long)."""
    idle_after: float = Field(600.0, gt=0)
    """Seconds without a call before an actor is deactivated (``@app.actor(idle_after=)`` wins)."""
    turn_timeout: float = Field(60.0, gt=0)
    """Longest a turn may run; a turn past it is cancelled and leaves the state as it was."""
    max_depth: int = Field(16, ge=1)
    """Deepest reentrant call chain (A calls B calls A ...) before ``ReentrancyError``."""

    _durations = field_validator("lease", "idle_after", "turn_timeout", mode="before")(
        lambda v: _duration(v)
    )
