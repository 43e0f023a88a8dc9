"""http-in and http-out against a real HTTP client and server, with the broker in between."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from mesh import Event
from mesh.bindings import BindingError
from mesh.bindings.http import HttpIn
from mesh.codecs import to_structured
from tests.bindings.conftest import MakeApp
from tests.support import unique, wait_for

SECRET = "s3cret"


def webhook(topic: str, **options: Any) -> dict[str, Any]:
    return {"type": "http-in", "path": "/hooks/in", "topic": topic, "port": 0, "event_type": "hook.received", **options}


def url_of(app: Any, name: str = "hook") -> str:
    binding = app.bindings.bindings[name]
    assert isinstance(binding, HttpIn)
    return binding.url


async def test_webhook_reads_binary_structured_batch_and_plain_json(make_app: MakeApp) -> None:
    topic = unique("hook")
    app, got = await make_app({"hook": webhook(topic)}, listen=topic)
    url = url_of(app)
    async with aiohttp.ClientSession() as http:
        binary = {
            "ce-specversion": "1.0",
            "ce-id": "b1",
            "ce-source": "/gh",
            "ce-type": "push",
            "content-type": "application/json",
        }
        async with http.post(url, data=b'{"n": 1}', headers=binary) as r:
            assert r.status == 202, await r.text()
        structured = to_structured(Event("push", "/gh", {"n": 2}, id="s1"))
        async with http.post(url, data=structured, headers={"content-type": "application/cloudevents+json"}) as r:
            assert r.status == 202
        batch = orjson.dumps(
            [{"specversion": "1.0", "id": f"k{i}", "source": "/gh", "type": "push", "data": i} for i in (3, 4)]
        )
        async with http.post(url, data=batch, headers={"content-type": "application/cloudevents-batch+json"}) as r:
            assert r.status == 202
            assert (await r.json())["ids"] == ["k3", "k4"]
        async with http.post(url, json={"n": 5}) as r:
            assert r.status == 202
            plain_id = (await r.json())["ids"][0]
    await wait_for(lambda: len(got.events) == 5, what="five events")
    events = got.by_id()
    assert events["b1"].data == {"n": 1} and events["b1"].type == "push"
    assert events["s1"].data == {"n": 2}
    assert events["k3"].data == 3 and events["k4"].data == 4
    assert events[plain_id].type == "hook.received" and events[plain_id].data == {"n": 5}
    assert events[plain_id].source == f"/{app.id}/bindings/hook"
    stats = app.bindings.bindings["hook"].stats
    assert (stats.received, stats.emitted, stats.wrapped, stats.rejected) == (4, 5, 1, 0)


async def test_webhook_answers_bad_input_clearly_counts_it_and_keeps_running(make_app: MakeApp) -> None:
    topic = unique("hook")
    options = webhook(topic, max_body=1000, read_timeout=0.5, auth={"hmac_sha256": SECRET})
    app, got = await make_app({"hook": options}, listen=topic)
    url = url_of(app)

    def signed(body: bytes) -> dict[str, str]:
        digest = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        return {"X-Hub-Signature-256": f"sha256={digest}", "content-type": "application/json"}

    async with aiohttp.ClientSession() as http:

        async def post(body: bytes, headers: dict[str, str]) -> tuple[int, str]:
            async with http.post(url, data=body, headers=headers) as r:
                return r.status, (await r.json())["error"] if r.status >= 400 else ""

        assert (await post(b'{"a": 1}', {"content-type": "application/json"}))[0] == 401  # no signature
        bad = {**signed(b'{"a": 1}'), "X-Hub-Signature-256": "sha256=" + "0" * 64}
        assert await post(b'{"a": 1}', bad) == (401, "signature in X-Hub-Signature-256 does not match the body")
        status, reason = await post(b"not json", signed(b"not json"))
        assert status == 400 and reason.startswith("body is not JSON")
        body = b'{"specversion": "1.0", "id": "x"}'
        status, reason = await post(body, {**signed(body), "content-type": "application/cloudevents+json"})
        assert status == 400 and "not a valid CloudEvent" in reason
        big = b'{"a": "' + b"x" * 2000 + b'"}'
        assert (await post(big, signed(big)))[0] == 413
        status, reason = await post(b"a,b", {**signed(b"a,b"), "content-type": "text/csv"})
        assert status == 415 and "text/csv" in reason
        # a slow client: headers, then half the body, then nothing
        host, port = url.split("//")[1].split("/")[0].split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(
            b"POST /hooks/in HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
        )
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(4096), 10)
        writer.close()
        assert b" 408 " in answer.split(b"\r\n")[0]
        good = b'{"ok": true}'
        assert (await post(good, signed(good)))[0] == 202
    await wait_for(lambda: len(got.events) == 1, what="the good event")
    assert got.events[0].data == {"ok": True}
    stats = app.bindings.bindings["hook"].stats
    assert stats.rejected == 7 and stats.emitted == 1


async def test_webhook_bearer_token_and_id_header(make_app: MakeApp) -> None:
    topic = unique("hook")
    app, got = await make_app(
        {"hook": webhook(topic, auth={"bearer": "tok"}, id_header="X-GitHub-Delivery")}, listen=topic
    )
    async with aiohttp.ClientSession() as http:
        async with http.post(url_of(app), json={}, headers={"Authorization": "Bearer nope"}) as r:
            assert r.status == 401
        headers = {"Authorization": "Bearer tok", "X-GitHub-Delivery": "d-1"}
        async with http.post(url_of(app), json={"a": 1}, headers=headers) as r:
            assert r.status == 202
    await wait_for(lambda: len(got.events) == 1, what="the event")
    assert got.events[0].id == "d-1"


async def test_webhook_continues_the_callers_trace(make_app: MakeApp) -> None:
    topic = unique("hook")
    app, got = await make_app({"hook": webhook(topic)}, listen=topic)
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    async with aiohttp.ClientSession() as http, http.post(url_of(app), json={}, headers={"traceparent": parent}) as r:
        assert r.status == 202
    await wait_for(lambda: len(got.events) == 1, what="the event")
    assert str(got.events[0].extensions["traceparent"]).split("-")[1] == "0af7651916cd43dd8448eb211c80319c"


class Target:
    """A small HTTP server that records requests and answers as told."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        self.fail_first = 0

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append((request.method, dict(request.headers), await request.read()))
        if self.fail_first > 0:
            self.fail_first -= 1
            return web.Response(status=503, text="busy")
        return web.json_response({"ok": True, "n": len(self.requests)})


@pytest.fixture
async def target() -> Any:
    t = Target()
    web_app = web.Application()
    web_app.router.add_route("*", "/{tail:.*}", t.handle)
    runner = web.AppRunner(web_app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    t.url = f"http://127.0.0.1:{runner.addresses[0][1]}"  # type: ignore[attr-defined]
    yield t
    await runner.cleanup()


async def test_http_out_invoke_retries_only_idempotent_methods(make_app: MakeApp, target: Any) -> None:
    app, _ = await make_app({"alerts": {"type": "http-out", "url": target.url + "/alert", "backoff": 0.01}})
    out = app.binding("alerts")
    result = await out.invoke("post", {"level": "high"})
    assert result["status"] == 200 and result["data"]["ok"] is True
    assert orjson.loads(target.requests[-1][2]) == {"level": "high"}
    target.fail_first = 1
    with pytest.raises(BindingError) as info:
        await out.invoke("post", {"level": "again"})
    assert info.value.status == 503
    target.fail_first = 2
    before = len(target.requests)
    assert (await out.invoke("get", metadata={"path": "/x"}))["status"] == 200
    assert len(target.requests) - before == 3  # two 503s, then the answer
    with pytest.raises(BindingError, match="no operation 'exec'"):
        await out.invoke("exec", {})


@pytest.mark.parametrize("mode", ["binary", "structured"])
async def test_http_out_from_topic_sends_the_event_in_the_cloudevents_http_binding(
    make_app: MakeApp, target: Any, mode: str
) -> None:
    topic = unique("alerts")
    app, _ = await make_app(
        {"alerts": {"type": "http-out", "url": target.url, "from_topic": topic, "cloudevents": mode}}
    )
    sent = await app.publish(topic, {"level": "high"}, type="alert.raised", id="a-1")
    await wait_for(lambda: len(target.requests) == 1, what="the request")
    method, headers, body = target.requests[0]
    assert method == "POST"
    if mode == "binary":
        assert headers["ce-id"] == "a-1" and headers["ce-type"] == "alert.raised" and headers["ce-specversion"] == "1.0"
        assert headers["Content-Type"] == "application/json" and orjson.loads(body) == {"level": "high"}
    else:
        assert headers["Content-Type"] == "application/cloudevents+json"
        assert orjson.loads(body)["id"] == sent.id and orjson.loads(body)["data"] == {"level": "high"}
    assert app.binding("alerts").stats.invoked == 1
