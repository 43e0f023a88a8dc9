"""Which config file a ``mesh`` command uses, said out loud, and the warning when there is none.

=======================================  ==================================================
found                                    the command says
=======================================  ==================================================
``--config FILE``, ``$MESH_CONFIG``,     ``mesh: config <file>: broker <type> at <url>``
``./mesh.yaml`` or ``./mesh.yml``        (password masked)
nothing, in ``run``                      that it runs on the in-process memory broker
nothing, in ``publish``, ``invoke``,     a WARNING: the memory broker reaches no other
``apps``, ``replay``, ``dlq``            process, and how to name a config
=======================================  ==================================================
"""

from __future__ import annotations

from pathlib import Path

import click

from mesh.config import find_config
from mesh.urls import mask_url

__all__ = ["ALTERNATIVE_FILES", "choose_config", "describe", "memory_fallback_warning"]

ALTERNATIVE_FILES = ("mesh.yml",)
"""Also looked for in the working directory when ``./mesh.yaml`` is not there."""


def choose_config(explicit: str | None) -> Path | None:
    """The config file: ``explicit``, else ``$MESH_CONFIG``, else ``./mesh.yaml``, else ``./mesh.yml``."""
    found = find_config(explicit)
    if found is not None:
        return found
    for name in ALTERNATIVE_FILES:
        if Path(name).is_file():
            return Path(name)
    return None


def describe(path: Path | None, broker_type: str, url: str | None) -> str:
    """``config <file>: broker <type> at <masked url>`` (or the defaults)."""
    where = str(path) if path else "no config file (defaults)"
    return f"config {where}: broker {broker_type}" + (f" at {mask_url(url)}" if url else "")


def memory_fallback_warning(command: str) -> None:
    """Say loudly on stderr that ``command`` talks to no other process: it fell back to memory."""
    click.secho(
        f"mesh {command}: WARNING: no config file found (--config, $MESH_CONFIG, ./mesh.yaml, ./mesh.yml), "
        "so this uses the in-process memory broker, which no other process can reach",
        fg="yellow",
        err=True,
    )
