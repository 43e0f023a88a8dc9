"""FastAPI (and any ASGI app with a lifespan): the mesh App starts and drains with the web app.

=====================================  ==========================================================
piece                                  what it does
=====================================  ==========================================================
``mesh_lifespan(app, ...)``            a lifespan: starts the Apps before the first request,
                                       stops them (draining handlers) after the last one; chains
                                       an existing ``lifespan=`` of yours inside it
``MeshApp``                            a dependency: the (first) App, for ``publish``/``invoke``
``Annotated[App, mesh_app("id")]``     one of several Apps, by id
=====================================  ==========================================================

The Apps are kept on ``api.state.mesh`` (and in the lifespan state), so endpoints find them
whether or not the server passes lifespan state through (httpx's ``ASGITransport`` does not run
the lifespan at all: enter ``api.router.lifespan_context(api)`` yourself in tests).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING, Annotated, Any

from mesh.app import App
from mesh.errors import MeshError
from mesh.integrations import require

require("fastapi", "fastapi")

from fastapi import Depends, Request  # noqa: E402 - after the one-line message for a missing extra

if TYPE_CHECKING:
    from fastapi import FastAPI

__all__ = ["MeshApp", "mesh_app", "mesh_lifespan"]

Lifespan = Callable[[Any], AbstractAsyncContextManager[Any]]


def mesh_lifespan(
    *apps: App, lifespan: Lifespan | None = None, drain_timeout: float | None = None
) -> Callable[[FastAPI], AbstractAsyncContextManager[dict[str, Any]]]:
    """A lifespan for ``FastAPI(lifespan=...)`` that starts ``apps`` and stops them at shutdown.

    ``drain_timeout`` (default: each App's ``drain_timeout``) bounds how long handlers in flight
    may finish at shutdown; ``lifespan`` is an inner lifespan of yours, run while the Apps are up.
    """
    if not apps:
        raise MeshError("mesh_lifespan needs at least one App")

    @asynccontextmanager
    async def run(api: FastAPI) -> AsyncIterator[dict[str, Any]]:
        started: list[App] = []
        try:
            for app in apps:
                await app.start()
                started.append(app)
            api.state.mesh = apps
            state: dict[str, Any] = {"mesh": apps}
            if lifespan is None:
                yield state
            else:
                async with lifespan(api) as inner:
                    yield {**state, **(inner if isinstance(inner, Mapping) else {})}
        finally:
            for app in reversed(started):
                await app.stop(drain_timeout)

    return run


def _apps(request: Request) -> tuple[App, ...]:
    apps = getattr(request.state, "mesh", None) or getattr(request.app.state, "mesh", None)
    if not apps:
        raise MeshError("no mesh App on this web app: create it with FastAPI(lifespan=mesh_lifespan(app))")
    return tuple(apps)


def _first_app(request: Request) -> App:
    """The first App of the lifespan (the ``MeshApp`` dependency)."""
    return _apps(request)[0]


def mesh_app(app_id: str) -> Any:
    """A dependency giving the App with id ``app_id`` (when the lifespan runs several)."""

    def pick(request: Request) -> App:
        for app in _apps(request):
            if app.id == app_id:
                return app
        raise MeshError(f"no App {app_id!r} in this web app's mesh_lifespan")

    return Depends(pick)


MeshApp = Annotated[App, Depends(_first_app)]
"""A handler parameter ``mesh: MeshApp`` receives the App started by :func:`mesh_lifespan`."""
