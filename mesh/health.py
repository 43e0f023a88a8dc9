"""Liveness and readiness over HTTP for ``mesh run --health-port``, in Kubernetes' conventions.

==============  ======================================================  ===================
path            200 ``ok`` when                                         else
==============  ======================================================  ===================
``/livez``      the event loop is responsive: it answers, and no tick    503 and the lag
                of the watchdog came later than ``max_lag`` seconds
                during the last ``max_lag`` window
``/readyz``     ``ready()`` says so: broker connected, subscriptions     503 and the reason
                consuming, no drain in progress
anything else                                                           404
==============  ======================================================  ===================

``GET`` and ``HEAD`` are answered; ``?verbose`` adds the reason on success too (as the Kubernetes
API server does). One request per connection (``Connection: close``), plain text, no
dependency beyond asyncio: a probe needs nothing more. ``ready`` is any
``() -> (bool, reason)`` callable; the App provides one, and :func:`all_ready` joins several.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence

__all__ = ["HealthServer", "Ready", "all_ready"]

Ready = Callable[[], tuple[bool, str]]
"""``ready() -> (is_ready, reason)``."""

_REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 400: "Bad Request", 503: "Service Unavailable"}


def all_ready(checks: Sequence[Ready]) -> Ready:
    """One readiness made of several: ready when every one is, else the reasons of those that are not."""

    def ready() -> tuple[bool, str]:
        results = [check() for check in checks]
        bad = [reason for ok, reason in results if not ok]
        if bad:
            return False, "; ".join(bad)
        return True, "; ".join(reason for _, reason in results if reason) or "ok"

    return ready


class HealthServer:
    """``/livez`` and ``/readyz`` on ``host:port`` (port 0: a free one, see :attr:`port`)."""

    def __init__(
        self,
        ready: Ready,
        port: int = 0,
        host: str = "0.0.0.0",  # the kubelet probes the pod's address
        *,
        max_lag: float = 5.0,
        tick: float = 0.5,
    ) -> None:
        self.ready = ready
        self.host = host
        self.port = port
        self.max_lag = max_lag
        self.tick = tick
        self.lag = 0.0
        """The longest the watchdog's last tick came late, in seconds."""
        self._server: asyncio.Server | None = None
        self._watchdog: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Listen (and start the event-loop watchdog); returns once the port is open."""
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        self.port = int(self._server.sockets[0].getsockname()[1])
        self._watchdog = asyncio.get_running_loop().create_task(self._watch())

    async def stop(self) -> None:
        """Close the port and the watchdog."""
        if self._watchdog is not None:
            self._watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watchdog
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def __aenter__(self) -> HealthServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        recent: list[float] = []
        window = max(1, int(self.max_lag / self.tick))
        while True:
            before = loop.time()
            await asyncio.sleep(self.tick)
            recent.append(max(0.0, loop.time() - before - self.tick))
            del recent[:-window]
            self.lag = max(recent)

    def live(self) -> tuple[bool, str]:
        """Whether the event loop is responsive."""
        if self.lag > self.max_lag:
            return False, f"event loop blocked for {self.lag:.1f}s (over {self.max_lag:g}s)"
        return True, "event loop responsive"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readline(), 5)
            while (await asyncio.wait_for(reader.readline(), 5)) not in (b"\r\n", b"\n", b""):
                pass  # headers: nothing in them matters here
            status, body, head = self._answer(request)
            payload = body.encode()
            lines = [
                f"HTTP/1.1 {status} {_REASONS[status]}",
                "Content-Type: text/plain; charset=utf-8",
                f"Content-Length: {len(payload)}",
                "Cache-Control: no-store",
                "Connection: close",
            ]
            writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + (b"" if head else payload))
            await writer.drain()
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    def _answer(self, request: bytes) -> tuple[int, str, bool]:
        parts = request.decode("latin-1").split()
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            return 400, "bad request\n", False
        method, target = parts[0], parts[1]
        path, _, query = target.partition("?")
        verbose = "verbose" in query.split("&")
        head = method == "HEAD"
        if path not in ("/livez", "/readyz"):
            return 404, "not found: this port serves /livez and /readyz\n", head
        if method not in ("GET", "HEAD"):
            return 405, "only GET and HEAD\n", head
        try:
            ok, reason = self.live() if path == "/livez" else self.ready()
        except Exception as exc:  # a broken check says not ready, it does not kill the probe
            ok, reason = False, f"check failed: {type(exc).__name__}: {exc}"
        if ok:
            return 200, (f"ok: {reason}\n" if verbose else "ok\n"), head
        return 503, f"{path[1:]} check failed: {reason}\n", head
