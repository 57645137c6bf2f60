"""JSON control endpoint: the PaperExchange control API for drivers in another process
(demo, benchmark). POST /control/<name> with the keyword arguments as a JSON object.

It moves prices, fills and fails orders at will, so beyond loopback it answers only requests
that carry its token (`Authorization: Bearer TOKEN`); on loopback it needs none."""
from __future__ import annotations

import hmac
import ipaddress
import json
from typing import TYPE_CHECKING, Any, Callable

from aiohttp import web

from .errors import DhanError

if TYPE_CHECKING:
    from .exchange import PaperExchange

_EXCHANGE_CALLS = ("set_price", "set_session", "set_circuit", "halt", "fill", "reject_next", "set_funds",
                   "price", "orders", "positions", "trades", "funds", "request_log", "modification_count",
                   "set_data_plan", "hold_fills", "hide_quote", "rate_limit_exempt", "send_raw", "socket_count",
                   "socket_logins")
# Control bodies may carry a raw socket frame bigger than the REST API's body limit (send_raw).
CONTROL_MAX_BYTES = 16 * 1024 * 1024
_FAULT_CALLS = ("drop_sockets", "refuse_reconnects", "delay_answers", "fail_fraction", "fail_after_effect",
                "duplicate_messages", "reorder_messages", "clear", "counts")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def add_control_routes(app: web.Application, ex: "PaperExchange", token: str | None = None) -> None:
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
        target: Callable[..., Any] | None = None
        if name in _EXCHANGE_CALLS:
            target = getattr(ex, name)
        elif name.startswith("faults.") and name[7:] in _FAULT_CALLS:
            target = getattr(ex.faults, name[7:])
        elif name == "add_account":
            from .exchange import AccountSpec
            target = lambda **kw: ex.add_account(AccountSpec(**kw)) and None  # noqa: E731
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

    async def state(request: web.Request) -> web.Response:
        if (refusal := refused(request)) is not None:
            return refusal
        return _answer(200, {"rest_url": ex.rest_url, "ws_url": ex.ws_url, "session": ex.engine.sessions.state(),
                             "accounts": sorted(ex.engine.accounts), "sockets": ex.socket_count()})

    app.router.add_get("/control", state)
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
