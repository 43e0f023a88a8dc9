"""``/livez`` and ``/readyz``: Kubernetes-style probes answered by a tiny asyncio HTTP server."""

from __future__ import annotations

import asyncio
import time

from mesh.health import HealthServer, all_ready


async def get(port: int, path: str, method: str = "GET") -> tuple[int, str]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"{method} {path} HTTP/1.1\r\nHost: x\r\nUser-Agent: kube-probe/1.30\r\n\r\n".encode())
    await writer.drain()
    raw = await reader.read()
    writer.close()
    head, _, body = raw.decode().partition("\r\n\r\n")
    return int(head.split()[1]), body


async def test_livez_and_readyz_answer_ok() -> None:
    async with HealthServer(lambda: (True, "broker connected"), host="127.0.0.1") as server:
        assert await get(server.port, "/livez") == (200, "ok\n")
        assert await get(server.port, "/readyz") == (200, "ok\n")
        assert await get(server.port, "/readyz?verbose") == (200, "ok: broker connected\n")


async def test_not_ready_is_503_with_the_reason() -> None:
    state = {"ready": (False, "draining")}
    async with HealthServer(lambda: state["ready"], host="127.0.0.1") as server:
        assert await get(server.port, "/readyz") == (503, "readyz check failed: draining\n")
        state["ready"] = (True, "")
        status, _ = await get(server.port, "/readyz")
        assert status == 200


async def test_a_failing_check_is_not_ready_and_the_server_goes_on() -> None:
    def broken() -> tuple[bool, str]:
        raise RuntimeError("no broker yet")

    async with HealthServer(broken, host="127.0.0.1") as server:
        assert await get(server.port, "/readyz") == (503, "readyz check failed: check failed: RuntimeError: no broker yet\n")
        assert (await get(server.port, "/livez"))[0] == 200


async def test_only_the_probe_paths_are_served() -> None:
    async with HealthServer(lambda: (True, ""), host="127.0.0.1") as server:
        assert (await get(server.port, "/metrics"))[0] == 404
        assert (await get(server.port, "/"))[0] == 404
        assert (await get(server.port, "/livez", method="POST"))[0] == 405
        assert await get(server.port, "/livez", method="HEAD") == (200, "")


async def test_a_blocked_event_loop_fails_liveness() -> None:
    async with HealthServer(lambda: (True, ""), host="127.0.0.1", max_lag=0.2, tick=0.05) as server:
        await asyncio.sleep(0.1)
        time.sleep(0.5)  # noqa: ASYNC251 - a handler blocking the loop, on purpose
        await asyncio.sleep(0.1)  # the watchdog's late tick is seen
        status, body = await get(server.port, "/livez")
        assert status == 503 and "event loop blocked" in body
        await asyncio.sleep(0.4)  # the window passed with the loop free again
        assert (await get(server.port, "/livez"))[0] == 200


def test_all_ready_joins_reasons() -> None:
    assert all_ready([lambda: (True, "a"), lambda: (True, "b")])() == (True, "a; b")
    assert all_ready([lambda: (True, "a"), lambda: (False, "b down")])() == (False, "b down")
    assert all_ready([])() == (True, "ok")
