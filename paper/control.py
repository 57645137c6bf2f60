"""JSON control endpoint: the PaperExchange control API for drivers in another process
(demo, benchmark). POST /control/<name> with the keyword arguments as a JSON object.

It moves prices, fills and fails orders at will, so beyond loopback it answers only requests
that carry its token (`Authorization: Bearer TOKEN`); on loopback it needs none. It knows HTTP and
the token only: the exchange hands it the calls it exposes and the state it reports."""
from __future__ import annotations

import hmac
import ipaddress
import json
from typing import Any, Callable, Mapping

from aiohttp import web

from .errors import DhanError

# Control bodies may carry a raw socket frame bigger than the REST API's body limit (send_raw).
CONTROL_MAX_BYTES = 16 * 1024 * 1024


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def add_control_routes(app: web.Application, calls: Mapping[str, Callable[..., Any]],
                       state: Callable[[], dict[str, Any]], token: str | None = None) -> None:
    """POST /control/NAME calls `calls[NAME]` with the body's keyword arguments and answers its
    result; GET /control answers `state()`."""
    def refused(request: web.Request) -> web.Response | None:
        if token is None:
            return None
        given = request.headers.get("Authorization", "").removeprefix("Bearer ").encode()
        if hmac.compare_digest(given, token.encode()):
            return None
        return _answer(401, {"error": "the control endpoint needs its token (Authorization: Bearer TOKEN)"})

    async def call(request: web.Request) -> web.Response:
        if (refusal := refused(request)) is not None:
            return refusal
        name = request.match_info["name"]
        target = calls.get(name)
        if target is None:
            return _answer(404, {"error": f"unknown control call {name[:40]!r}"})
        try:
            raw = await _body(request)
            if raw is None:
                return _answer(413, {"error": f"control body over {CONTROL_MAX_BYTES} bytes"})
            kwargs = json.loads(raw) if raw.strip() else {}
            if not isinstance(kwargs, dict):
                raise ValueError("body must be a JSON object of keyword arguments")
            return _answer(200, {"result": target(**kwargs)})
        except DhanError as e:
            return _answer(e.http_status, e.body())
        except (TypeError, ValueError, KeyError) as e:
            return _answer(400, {"error": str(e)[:200]})

    async def report(request: web.Request) -> web.Response:
        if (refusal := refused(request)) is not None:
            return refusal
        return _answer(200, state())

    app.router.add_get("/control", report)
    app.router.add_post("/control/{name}", call)


async def _body(request: web.Request) -> bytes | None:
    """The whole body, read from the stream (`request.read()` applies the REST API's size limit);
    None past CONTROL_MAX_BYTES."""
    chunks: list[bytes] = []
    size = 0
    while chunk := await request.content.readany():
        size += len(chunk)
        if size > CONTROL_MAX_BYTES:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _answer(status: int, payload: Any) -> web.Response:
    return web.Response(status=status, body=json.dumps(payload, default=str).encode(), content_type="application/json")
