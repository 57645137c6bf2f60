"""Order-update websocket: Dhan's login message, then every change of every order of the
account as an `order_alert`, to every socket logged in as that account.

Each connection has its own queue and writer task so messages leave in the order they were
published; the fault knobs (drop, refuse, duplicate, reorder, lag, unanswered pings, a frame
stalled half-sent) act here. Pings are answered here, not by aiohttp, so that a fault can leave
them unanswered."""
from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from typing import Any, Callable

from aiohttp import WSMsgType, web

from .faults import Faults

log = logging.getLogger("paper.socket")
LOGIN_TIMEOUT = 10.0
REORDER_HOLD = 0.3   # a held message goes out at the latest this long after it was due
STALL = object()     # queued to a connection: send the start of a frame, then nothing more
# a text frame announcing 1,000 bytes, then the first 10 of them: the client is left mid-frame
HALF_FRAME = bytes([0x81, 126]) + (1000).to_bytes(2, "big") + b'{"Type": "'


def _stamp(text: str) -> object:
    """A frame's `LastUpdatedTime` (None for a frame that has none, or that no parser can read:
    raw frames sent to test a client may nest deeper than the recursion limit)."""
    try:
        return json.loads(text).get("Data", {}).get("LastUpdatedTime")
    except (ValueError, AttributeError, RecursionError):
        return None


class _Conn:
    def __init__(self, ws: web.WebSocketResponse, client_id: str, request: web.Request) -> None:
        self.ws = ws
        self.client_id = client_id
        self.request = request
        self.stalled = False  # a half frame was sent: nothing else may follow it
        self.queue: asyncio.Queue[str | object | None] = asyncio.Queue()


class OrderSocketHub:
    """Runs on the event loop; `publish` may be called from any thread."""

    def __init__(self, authenticate: Callable[[str, str], bool], faults: Faults) -> None:
        self.authenticate = authenticate
        self.faults = faults
        self.loop: asyncio.AbstractEventLoop | None = None
        self._conns: dict[str, set[_Conn]] = {}
        self._outbox: deque[tuple[str, str]] = deque()
        self._drain_scheduled = False
        self._held: dict[str, str] = {}
        self._logins: dict[str, list[float]] = {}  # client id -> monotonic times of login attempts

    # --- publishing (thread-safe entry point) ---
    def publish(self, client_id: str, message: dict[str, Any]) -> None:
        if not self._conns.get(client_id):
            return   # nobody listening: Dhan does not replay missed updates either
        self._outbox.append((client_id, json.dumps(message)))
        if not self._drain_scheduled and self.loop is not None:
            self._drain_scheduled = True
            try:
                self.loop.call_soon_threadsafe(self._drain)
            except RuntimeError:   # loop closed during shutdown
                pass

    def publish_raw(self, client_id: str, text: str) -> None:
        """Send an arbitrary frame (fault injection: malformed messages)."""
        if not self._conns.get(client_id):
            return
        self._outbox.append((client_id, text))
        if not self._drain_scheduled and self.loop is not None:
            self._drain_scheduled = True
            self.loop.call_soon_threadsafe(self._drain)

    def _drain(self) -> None:
        self._drain_scheduled = False
        while self._outbox:
            client_id, text = self._outbox.popleft()
            self._route(client_id, text)

    def _route(self, client_id: str, text: str) -> None:
        held = self._held.pop(client_id, None)
        if held is not None and self.faults.reorder_same_second and _stamp(held) != _stamp(text):
            self._send(client_id, held)  # frames of different seconds keep their order
            held = None
        if held is None and self.faults.roll(self.faults.reorder_fraction):
            self._held[client_id] = text
            assert self.loop is not None
            self.loop.call_later(REORDER_HOLD, self._release, client_id, text)
            return
        self._send(client_id, text)
        if held is not None:
            self.faults.count("reordered")
            self._send(client_id, held)

    def _release(self, client_id: str, text: str) -> None:
        if self._held.get(client_id) is text:
            del self._held[client_id]
            self._send(client_id, text)

    def _send(self, client_id: str, text: str) -> None:
        copies = 1
        if self.faults.roll(self.faults.duplicate_fraction):
            copies = 2
            self.faults.count("duplicated")
        lag = self.faults.message_delay(client_id)
        if lag > 0:
            assert self.loop is not None
            self.loop.call_at(self.loop.time() + lag, self._enqueue, client_id, text, copies)
        else:
            self._enqueue(client_id, text, copies)

    def _enqueue(self, client_id: str, text: str, copies: int) -> None:
        for conn in self._conns.get(client_id, ()):
            for _ in range(copies):
                conn.queue.put_nowait(text)

    def stall(self, client_id: str) -> None:
        """Fault (from any thread): the account's sockets send half a frame, then nothing."""
        if self.loop is not None:
            self.loop.call_soon_threadsafe(self._stall, client_id)

    def _stall(self, client_id: str) -> None:
        for conn in self._conns.get(client_id, ()):
            conn.queue.put_nowait(STALL)

    # --- connections ---
    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(heartbeat=None, autoping=False)
        await ws.prepare(request)
        client_id = await self._login(ws)
        if client_id is None:
            await ws.close()
            return ws
        conn = _Conn(ws, client_id, request)
        self._conns.setdefault(client_id, set()).add(conn)
        writer = asyncio.ensure_future(self._write(conn))
        try:
            async for msg in ws:   # nothing to read after login but pings; open until closed
                if msg.type == WSMsgType.ERROR:
                    break
                if msg.type == WSMsgType.PING and not conn.stalled and self.faults.answers_ping(client_id):
                    await ws.pong(msg.data)
        finally:
            self._conns.get(client_id, set()).discard(conn)
            conn.queue.put_nowait(None)
            await writer
        return ws

    async def _login(self, ws: web.WebSocketResponse) -> str | None:
        try:
            msg = await asyncio.wait_for(ws.receive(), LOGIN_TIMEOUT)
            while msg.type == WSMsgType.PING:  # a ping before the login is answered, not taken for it
                await ws.pong(msg.data)
                msg = await asyncio.wait_for(ws.receive(), LOGIN_TIMEOUT)
        except asyncio.TimeoutError:
            return None
        if msg.type != WSMsgType.TEXT:
            return None
        try:
            req = json.loads(msg.data)["LoginReq"]
            client_id, token = str(req["ClientId"]), str(req["Token"])
        except (ValueError, KeyError, TypeError):
            await self._refuse(ws, "DH-905", "LoginReq: malformed login message")
            return None
        self._logins.setdefault(client_id, []).append(time.monotonic())
        if self.faults.refusing():
            return None
        if not self.authenticate(client_id, token):
            await self._refuse(ws, "DH-901", "LoginReq: invalid client id or token")
            return None
        return client_id

    @staticmethod
    async def _refuse(ws: web.WebSocketResponse, code: str, message: str) -> None:
        try:
            await ws.send_str(json.dumps({"Type": "error", "errorCode": code, "errorMessage": message}))
        except (ConnectionError, RuntimeError):
            pass

    async def _write(self, conn: _Conn) -> None:
        while True:
            text = await conn.queue.get()
            if text is None or conn.ws.closed:
                return
            if text is STALL:
                conn.stalled = True
                if conn.request.transport is not None:
                    conn.request.transport.write(HALF_FRAME)
                return  # nothing more on this connection: the client must notice and close it
            try:
                await conn.ws.send_str(str(text))
            except (ConnectionError, RuntimeError):
                return

    def login_attempts(self, client_id: str) -> list[float]:
        """When each login message of the account arrived (monotonic), accepted or refused."""
        return list(self._logins.get(client_id, ()))

    def connection_count(self, client_id: str | None = None) -> int:
        if client_id is not None:
            return len(self._conns.get(client_id, ()))
        return sum(len(c) for c in self._conns.values())

    async def close_all(self) -> None:
        conns = [c for s in self._conns.values() for c in s]
        await asyncio.gather(*(c.ws.close() for c in conns), return_exceptions=True)

    def drop_all(self) -> None:
        """Fault: close every socket abruptly (from any thread)."""
        if self.loop is not None:
            self.loop.call_soon_threadsafe(lambda: asyncio.ensure_future(self.close_all()))
