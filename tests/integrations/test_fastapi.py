"""FastAPI: the App starts and drains with the web app; endpoints publish and invoke through it."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Annotated

import httpx
import pytest
from fastapi import FastAPI

from mesh import App, Event
from mesh.integrations.fastapi import MeshApp, mesh_app, mesh_lifespan
from tests.support import DEFAULT_URLS, unique, wait_for

ROOT = Path(__file__).resolve().parents[2]


def _load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fastapi_example", ROOT / "examples" / "fastapi_app.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.memory
async def test_endpoints_publish_and_invoke_through_the_lifespan_app() -> None:
    config = {"broker": {"type": "memory", "options": {"name": unique("hub")}}}
    topic = unique("web")
    web, worker = App("web", config=config), App("worker", config=config)
    seen: list[Event] = []

    @worker.subscribe(topic)
    async def on(event: Event) -> None:
        seen.append(event)

    @worker.method()
    async def double(n: int) -> int:
        return n * 2

    api = FastAPI(lifespan=mesh_lifespan(web, worker))

    @api.post("/publish/{n}")
    async def publish(n: int, mesh: MeshApp) -> dict[str, str]:
        event = await mesh.publish(topic, {"n": n}, type="web.clicked")
        return {"id": event.id}

    @api.get("/double/{n}")
    async def call(n: int, mesh: MeshApp, other: Annotated[App, mesh_app("worker")]) -> dict[str, object]:
        return {"result": await mesh.invoke("worker", "double", n), "other": other.id}

    async with api.router.lifespan_context(api):
        assert web.started and worker.started
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=api), base_url="http://t")
        async with client:
            published = (await client.post("/publish/7")).json()
            called = (await client.get("/double/21")).json()
            await wait_for(lambda: len(seen) == 1, what="the published event")
    assert not web.started and not worker.started  # stopped with the web app
    assert seen[0].id == published["id"] and seen[0].data == {"n": 7} and seen[0].source == "/web"
    assert called == {"result": 42, "other": "worker"}


@pytest.mark.memory
async def test_a_web_app_without_the_lifespan_says_how_to_add_it() -> None:
    api = FastAPI()

    @api.get("/")
    async def root(mesh: MeshApp) -> str:
        return mesh.id

    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=api, raise_app_exceptions=True), base_url="http://t")
    async with client:
        with pytest.raises(Exception, match="mesh_lifespan"):
            await client.get("/")


@pytest.mark.memory
def test_the_example_runs_and_exits_zero(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "fastapi_app.py")], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "200 {'order_id': 'A1', 'left': 2}" in result.stdout
    assert "409" in result.stdout


@pytest.mark.rabbitmq
async def test_the_example_runs_on_a_real_broker() -> None:
    example = _load_example()
    config = {"broker": {"type": "rabbitmq", "url": DEFAULT_URLS["rabbitmq"], "namespace": unique("api") + "."}}
    out = await example.main(config)
    assert out[0] == (200, {"order_id": "A1", "left": 2})
    assert out[1][0] == 409 and "only 2 apple left" in out[1][1]["detail"]
