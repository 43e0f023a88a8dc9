"""The ``jobs:`` section of ``mesh.yaml``: where schedules live and how firing is paced."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = ["DEFAULT_URL", "JobsConfig"]

DEFAULT_URL = "sqlite:///.mesh/jobs.db"
"""The embedded store used when ``jobs.store`` names none (relative to the working directory)."""


def _seconds(value: Any) -> float:
    from mesh.config.models import parse_duration

    return parse_duration(value)


class JobsConfig(BaseModel):
    """Where jobs are stored and how the scheduler polls, leases and catches up."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    store: str | None = None
    """A store of the ``state:`` section with transactions and queries (memory, sqlite, postgres);
    unset: the embedded SQLite file at ``url``."""
    url: str = DEFAULT_URL
    """The SQLite file used when ``store`` is unset."""
    poll_interval: float = Field(0.25, gt=0)
    """Seconds between looks at the due-time index; jobs due within it are claimed ahead and fired
    on time (``250ms``, ``1s``)."""
    lease: float = Field(10.0, gt=0)
    """Seconds an instance holds a claimed job; if it dies, another fires the job after this."""
    misfire_grace: float = Field(5.0, ge=0)
    """A job found later than this past its time (nobody ran) is a misfire: its policy decides."""
    batch: int = Field(200, ge=1, le=5000)
    """Jobs claimed per look at the index."""

    _durations = field_validator("poll_interval", "lease", "misfire_grace", mode="before")(
        lambda v: _seconds(v)
    )
