"""Bridges to the tools users already run: the CloudEvents SDK, FastStream, FastAPI.

=====================================  ==========================================  ===========
module                                 what it gives                               extra
=====================================  ==========================================  ===========
:mod:`mesh.integrations.sdk`           SDK ``CloudEvent`` <-> :class:`~mesh.Event`  cloudevents
:mod:`mesh.integrations.faststream`    ``MeshMiddleware``, ``MeshEvent``            faststream
:mod:`mesh.integrations.fastapi`       ``mesh_lifespan``, ``MeshApp``               fastapi
=====================================  ==========================================  ===========

Each module imports its library when first used, so the core never needs it; a missing one is
one line naming the extra to install.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from mesh.errors import MeshError

__all__ = ["MissingExtra", "require"]


class MissingExtra(MeshError, ImportError):
    """An optional library an integration needs is not installed."""


def require(module: str, extra: str) -> ModuleType:
    """Import ``module`` or raise :class:`MissingExtra` naming ``pip install 'event-mesh[extra]'``."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtra(f"{module} is not installed: pip install 'event-mesh[{extra}]'") from exc
