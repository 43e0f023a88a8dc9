"""HTTP bindings: ``http-in`` (webhooks as CloudEvents) and ``http-out`` (requests, CloudEvents HTTP binding).

``http-in`` answers each request only after the broker confirmed its events, so a 2xx means
the events are on the topic:

===========================================  ================================================
request                                      answer
===========================================  ================================================
``ce-specversion`` header (binary mode)      202, the event as sent
``application/cloudevents+json``             202, the event as sent
``application/cloudevents-batch+json``       202 once every event of the batch is confirmed
``application/json`` (or ``*+json``)         202, the body wrapped as data of ``event_type``
body not JSON, or not a valid CloudEvent     400 with the reason
missing or wrong bearer token / signature    401
body over ``max_body``                       413
data over the mesh's ``max_event_bytes``     413
another content type                         415 naming the accepted ones
body not sent within ``read_timeout``        408
broker did not confirm within the timeout    503 with ``Retry-After: 1`` (the client retries;
                                             use ids, or ``id_header``, to let consumers dedup)
binding not running (starting, stopping)     503
===========================================  ================================================

``http-out`` sends ``data`` as JSON (``bytes`` and ``str`` as they are), or, for ``from_topic``
events, the event in the CloudEvents HTTP binding (binary: ``ce-`` headers; structured). It
retries 5xx answers, timeouts and refused connections only for idempotent methods (GET, HEAD,
PUT, DELETE, OPTIONS); a POST is tried once, and the mesh's retry policy applies to events.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from typing import TYPE_CHECKING, Any, ClassVar

import aiohttp
import orjson
from aiohttp import web
from opentelemetry.trace import SpanKind

from mesh.bindings.base import BindingError, BindingFeatures, InputBinding, OutputBinding, json_by_default, span
from mesh.bindings.options import IDEMPOTENT_METHODS, HttpInOptions, HttpOutOptions
from mesh.codecs import CONTENT_TYPE, Binding, WireMessage, from_dict, from_structured, to_binary, to_structured
from mesh.codecs.binary import BATCH_CONTENT_TYPE, from_binary
from mesh.codecs.data import json_dumps
from mesh.errors import DecodeError, EncodeError, InvalidEvent
from mesh.event import Event, ExtensionValue
from mesh.http import BodyTooLarge, HttpServer, client_session, read_body

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["HTTP", "HttpIn", "HttpOut"]

HTTP = Binding(write_prefix="ce-")
"""The CloudEvents HTTP binding: ``ce-<attr>`` headers, ``Content-Type`` for ``datacontenttype``."""

_ACCEPTED = f"{CONTENT_TYPE}, {BATCH_CONTENT_TYPE}, application/json, or binary mode (ce-specversion header)"


class _Refused(Exception):
    def __init__(self, status: int, reason: str) -> None:
        self.status = status
        super().__init__(reason)


def _answer(status: int, reason: str, **headers: str) -> web.Response:
    return web.json_response({"error": reason}, status=status, headers=headers or None)


class HttpIn(InputBinding[HttpInOptions]):
    """A webhook endpoint turning requests into CloudEvents (see the module docstring)."""

    type = "http-in"
    features = BindingFeatures(
        direction="input",
        delivery="2xx only after the broker confirmed every event; else 4xx/503 and nothing published",
    )

    def http_endpoint(self) -> tuple[str, int]:
        """The shared server this webhook is served on."""
        return self.options.host, self.options.port

    server: HttpServer | None = None

    @property
    def url(self) -> str:
        """Where callers post (known once the shared server started)."""
        base = self.server.url if self.server is not None else f"http://{self.options.host}:{self.options.port}"
        return base + self.options.path

    def add_routes(self, server: HttpServer) -> None:
        """Serve ``POST <path>``."""
        self.server = server
        server.add_route("POST", self.options.path, self.handle)

    async def start(self) -> None:
        """Accept requests (the shared server is started by the block)."""
        self.state = "running"

    async def stop(self) -> None:
        """Answer 503 from now on."""
        self.state = "stopped"

    async def handle(self, request: web.Request) -> web.Response:
        """One webhook request: check, read, decode, publish, answer."""
        carrier = {k.lower(): v for k, v in request.headers.items()}
        attributes = {
            "http.request.method": request.method,
            "http.route": self.options.path,
            "url.path": request.path,
            "mesh.binding.name": self.name,
        }
        with span(f"{request.method} {self.options.path}", SpanKind.SERVER, attributes, carrier) as current:
            response = await self._handle(request, carrier)
            current.set_attribute("http.response.status_code", response.status)
            return response

    async def _handle(self, request: web.Request, headers: dict[str, str]) -> web.Response:
        if self.state != "running":
            return _answer(503, f"binding {self.name!r} is not running", **{"Retry-After": "1"})
        self.stats.add("received")
        try:
            self._check_bearer(headers)
            try:
                body = await read_body(request, self.options.max_body, self.options.read_timeout)
            except BodyTooLarge as exc:
                raise _Refused(413, f"request body over {exc.limit:,} bytes") from None
            except TimeoutError:
                raise _Refused(408, f"request body not received within {self.options.read_timeout:g}s") from None
            self._check_signature(headers, body)
            events = self._events(body, headers)
        except _Refused as exc:
            self.stats.add("rejected")
            return _answer(exc.status, str(exc))
        try:
            for event in events:
                await self.emit(event)
        except EncodeError as exc:
            self.stats.add("rejected")
            return _answer(413, str(exc))
        except (Exception, TimeoutError) as exc:
            reason = f"the broker did not confirm the event: {type(exc).__name__}: {exc}"
            return _answer(503, reason, **{"Retry-After": "1"})
        return web.json_response({"ids": [e.id for e in events]}, status=202)

    def _check_bearer(self, headers: Mapping[str, str]) -> None:
        auth = self.options.auth
        if auth is None or auth.bearer is None:
            return
        given = headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {auth.bearer}".encode()):
            raise _Refused(401, "missing or wrong bearer token")

    def _check_signature(self, headers: Mapping[str, str], body: bytes) -> None:
        auth = self.options.auth
        if auth is None or auth.hmac_sha256 is None:
            return
        given = headers.get(auth.header.lower())
        if not given:
            raise _Refused(401, f"missing signature header {auth.header}")
        expected = hmac.new(auth.hmac_sha256.encode(), body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(given.removeprefix("sha256=").strip().lower().encode(), expected.encode()):
            raise _Refused(401, f"signature in {auth.header} does not match the body")

    def _events(self, body: bytes, headers: dict[str, str]) -> list[Event]:
        content_type = headers.get("content-type")
        base = (content_type or "").split(";", 1)[0].strip().lower()
        try:
            if "ce-specversion" in headers:
                return [from_binary(WireMessage(body, headers, None, content_type), HTTP)]
            if base == CONTENT_TYPE:
                return [json_by_default(from_structured(body))]
            if base == BATCH_CONTENT_TYPE:
                docs = orjson.loads(body)
                if not isinstance(docs, list):
                    raise _Refused(400, "a CloudEvents batch must be a JSON array")
                return [json_by_default(from_dict(doc)) for doc in docs]
            if base == "application/json" or base.endswith("+json"):
                return [self._wrap_json(body, headers)]
        except orjson.JSONDecodeError as exc:
            raise _Refused(400, f"body is not JSON: {exc}") from None
        except (DecodeError, InvalidEvent) as exc:
            raise _Refused(400, f"not a valid CloudEvent: {exc}") from None
        if not content_type:
            raise _Refused(415, f"no Content-Type: send {_ACCEPTED}")
        raise _Refused(415, f"unsupported Content-Type {content_type!r}: send {_ACCEPTED}")

    def _wrap_json(self, body: bytes, headers: dict[str, str]) -> Event:
        data = orjson.loads(body)
        self.stats.add("wrapped")
        extensions: dict[str, ExtensionValue] = {}
        if "traceparent" in headers:  # continue the caller's trace even without an SDK span
            extensions["traceparent"] = headers["traceparent"]
            if "tracestate" in headers:
                extensions["tracestate"] = headers["tracestate"]
        event_id = headers.get(self.options.id_header.lower()) if self.options.id_header else None
        return self.wrap(data, id=event_id or None, datacontenttype="application/json", extensions=extensions)


class HttpOut(OutputBinding[HttpOutOptions]):
    """Requests to one URL; ``from_topic`` events go in the CloudEvents HTTP binding."""

    type = "http-out"
    features = BindingFeatures(
        direction="output",
        operations=frozenset({"create", "get", "head", "post", "put", "patch", "delete", "options"}),
        delivery="2xx is success; 5xx and timeouts retried for idempotent methods; errors raise",
    )
    default_operation: ClassVar[str] = ""

    def __init__(self, name: str, options: HttpOutOptions, runtime: Any) -> None:
        super().__init__(name, options, runtime)
        self._session: aiohttp.ClientSession | None = None

    def session(self) -> aiohttp.ClientSession:
        """The client session (made on first use)."""
        if self._session is None or self._session.closed:
            self._session = client_session(self.options.timeout)
        return self._session

    async def start(self) -> None:
        """Ready to send."""
        self.state = "running"

    async def close(self) -> None:
        """Close the client session."""
        session, self._session = self._session, None
        if session is not None:
            await session.close()
        self.state = "stopped"

    async def call(self, operation: str, data: Any, metadata: dict[str, Any]) -> Any:
        """One request: ``create`` is POST, the others their method; ``metadata``: path, headers, query."""
        method = "POST" if operation == "create" else operation.upper()
        headers = {**self.options.headers, **{str(k): str(v) for k, v in (metadata.get("headers") or {}).items()}}
        body: bytes | None = None
        event = metadata.get("event")
        if isinstance(event, Event) and self.options.cloudevents != "none":
            if self.options.cloudevents == "binary":
                msg = to_binary(event, HTTP)
                headers.update({k: v if isinstance(v, str) else v.decode() for k, v in msg.headers.items()})
                if msg.content_type:
                    headers["Content-Type"] = msg.content_type
                body = msg.body
            else:
                headers["Content-Type"] = CONTENT_TYPE
                body = to_structured(event)
        elif data is not None:
            if isinstance(data, bytes):
                body = data
            elif isinstance(data, str):
                body = data.encode()
                headers.setdefault("Content-Type", "text/plain; charset=utf-8")
            else:
                body = json_dumps(data)
                headers.setdefault("Content-Type", "application/json")
        url = self.options.url.rstrip("/") + str(metadata["path"]) if metadata.get("path") else self.options.url
        return await self._send(method, url, headers, body, metadata.get("query"))

    async def _send(
        self, method: str, url: str, headers: dict[str, str], body: bytes | None, query: Any
    ) -> dict[str, Any]:
        attempts = 1 + (self.options.retries if method in IDEMPOTENT_METHODS else 0)
        delay = self.options.backoff
        for attempt in range(1, attempts + 1):
            attributes = {"http.request.method": method, "url.full": url, "http.request.resend_count": attempt - 1}
            with span(method, SpanKind.CLIENT, attributes) as current:
                try:
                    async with self.session().request(method, url, headers=headers, data=body, params=query) as resp:
                        current.set_attribute("http.response.status_code", resp.status)
                        raw = await resp.read()
                        if resp.status >= 500 and attempt < attempts:
                            await asyncio.sleep(delay)
                            delay *= 2
                            continue
                        result = {"status": resp.status, "headers": dict(resp.headers), "data": _decode(raw, resp)}
                        if resp.status >= 400:
                            raise BindingError(
                                f"{method} {url} answered {resp.status}: {raw[:200]!r}", status=resp.status
                            )
                        return result
                except (TimeoutError, aiohttp.ClientConnectionError) as exc:
                    if attempt >= attempts:
                        raise BindingError(f"{method} {url} failed: {type(exc).__name__}: {exc}") from exc
                    await asyncio.sleep(delay)
                    delay *= 2
        raise AssertionError("unreachable")  # pragma: no cover

    async def handle_event(self, event: Event) -> None:
        """Send one ``from_topic`` event with the configured method (CloudEvents HTTP binding)."""
        operation = self.options.operation or self.options.method.lower()
        await self.invoke(operation, event.data, {"event": event})


def _decode(raw: bytes, resp: aiohttp.ClientResponse) -> Any:
    if not raw:
        return None
    if resp.content_type == "application/json" or resp.content_type.endswith("+json"):
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            return raw.decode(errors="replace")
    if resp.content_type.startswith("text/"):
        return raw.decode(resp.charset or "utf-8", errors="replace")
    return raw
