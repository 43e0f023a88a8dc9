"""The mesh's one HTTP stack (aiohttp): a small server that blocks add routes to, and a client session.

Webhook bindings use it today; health endpoints and later HTTP APIs are meant to add their
routes to the same server. aiohttp gives the server and the client in one well-kept package
with no ASGI server to pick and run beside it.

==============================  ==========================================================
what                            behaviour
==============================  ==========================================================
:class:`HttpServer`             routes added before :meth:`HttpServer.start`; ``port=0``
                                takes a free port (read :attr:`HttpServer.port` after start)
body size                       no aiohttp-wide cap: each handler reads with its own limit
                                (:func:`read_body`), so a 413 names the route's limit
:func:`read_body`               the body up to ``limit`` bytes within ``timeout`` seconds;
                                :class:`BodyTooLarge` / :class:`TimeoutError` otherwise
:func:`client_session`          an ``aiohttp.ClientSession`` with a total timeout
==============================  ==========================================================

aiohttp is the ``http`` extra: without it, :func:`require_aiohttp` raises
:class:`~mesh.errors.ComponentNotInstalled` naming the extra.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from mesh.errors import ComponentNotInstalled

if TYPE_CHECKING:
    from aiohttp import ClientSession, web

__all__ = ["BodyTooLarge", "Handler", "HttpServer", "client_session", "read_body", "require_aiohttp"]

Handler = Callable[["web.Request"], Awaitable["web.StreamResponse"]]
"""An aiohttp request handler."""


class BodyTooLarge(Exception):
    """The request body is over the route's limit."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        super().__init__(f"body over {limit:,} bytes")


def require_aiohttp(kind: str = "http", type: str = "server") -> None:
    """Raise :class:`ComponentNotInstalled` (naming the ``http`` extra) if aiohttp is missing."""
    try:
        import aiohttp  # noqa: F401
    except ImportError as exc:
        raise ComponentNotInstalled(kind, type, "http") from exc


class HttpServer:
    """An aiohttp server on one host and port; add routes, then start."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        require_aiohttp()
        from aiohttp import web

        self.host = host
        self.requested_port = port
        self.port = port
        """The bound port (the real one after :meth:`start`, when 0 was asked)."""
        self.app = web.Application(client_max_size=1024**4)  # handlers enforce their own limits
        self._runner: web.AppRunner | None = None

    def add_route(self, method: str, path: str, handler: Handler) -> None:
        """Serve ``method path`` with ``handler`` (before :meth:`start`)."""
        self.app.router.add_route(method, path, handler)

    @property
    def url(self) -> str:
        """``http://host:port``."""
        return f"http://{self.host}:{self.port}"

    async def start(self) -> None:
        """Listen (returns once bound)."""
        from aiohttp import web

        runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.requested_port, reuse_address=True)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        server = site._server  # aiohttp keeps the asyncio server here; its socket tells the port
        sockets = getattr(server, "sockets", None) or []
        if sockets:
            self.port = sockets[0].getsockname()[1]
        self._runner = runner

    async def stop(self) -> None:
        """Stop listening and close connections (requests in flight get a short grace)."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    def __repr__(self) -> str:
        return f"HttpServer({self.url})"


async def read_body(request: web.Request, limit: int, timeout: float) -> bytes:
    """The request body, at most ``limit`` bytes, read within ``timeout`` seconds."""
    if request.content_length is not None and request.content_length > limit:
        raise BodyTooLarge(limit)
    chunks: list[bytes] = []
    size = 0
    async with asyncio.timeout(timeout):
        while True:
            chunk = await request.content.read(65536)
            if not chunk:
                break
            size += len(chunk)
            if size > limit:
                raise BodyTooLarge(limit)
            chunks.append(chunk)
    return b"".join(chunks)


def client_session(timeout: float, **kwargs: Any) -> ClientSession:
    """A client session whose requests time out after ``timeout`` seconds in all."""
    require_aiohttp("http", "client")
    import aiohttp

    return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout), **kwargs)
