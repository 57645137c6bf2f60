"""Every websocket of the process on one reader thread, on websocket-client's public low-level API.

A websocket-client `WebSocketApp` runs a thread per socket and one more for its pings: two threads
per account, each woken by its own frames. `SocketHub` reads all of them on one thread instead,
over a `selectors` selector, and keeps them alive on a schedule:

- Connecting (TCP, TLS, the websocket handshake) can block up to `connect_timeout` on a dead host,
  so it runs on a few connector threads, never on the reader. Once connected, the owner's
  `on_open(conn)` runs there (it may send its login; the hub itself sends nothing but pings).
- The reader reads one frame from each readable socket (and what TLS already decrypted) and hands
  text and binary frames to `on_frame(conn, data, received_ns)`, as bytes (UTF-8 is not checked
  here: the caller's parser decodes). A frame that has begun must arrive whole within
  `read_timeout`: a peer that stops half-way through one holds the other sockets up no longer.
- Each socket is pinged every `ping_interval`; one that sends nothing (no pong, no frame) for
  `ping_timeout` after a ping is dead.
- A close frame, a read error or timeout, a dead peer or `conn.close()` ends the connection:
  `on_close(conn, reason)` is called once, on the reader thread. Reconnecting is the owner's.

    hub = SocketHub(ping_interval=20, ping_timeout=10, read_timeout=5).start()
    conn = hub.connect(url, on_open=lambda c: c.send(login), on_frame=handle, on_close=closed)
    conn.close("done")
    hub.stop()        # every socket closed, every thread of the hub ended

Callbacks run on the hub's threads: they must be quick (tell an actor, set a flag), unless the
hub is theirs alone (the leaders' hub stores and routes each frame on its reader: docs/design.md).
"""
from __future__ import annotations

import collections
import itertools
import logging
import queue
import selectors
import socket
import ssl
import struct
import threading
import time
from typing import Callable

import websocket
from websocket import ABNF

from broker.wakeup import Wakeup

log = logging.getLogger(__name__)

OnOpen = Callable[["Connection"], None]
OnFrame = Callable[["Connection", bytes, int], None]
OnClose = Callable[["Connection", str], None]


class Connection:
    """One websocket of a hub. `send` and `close` may be called from any thread."""

    def __init__(self, hub: "SocketHub", conn_id: int, url: str, on_open: OnOpen, on_frame: OnFrame,
                 on_close: OnClose) -> None:
        self.id = conn_id
        self.url = url
        self.on_open, self.on_frame, self.on_close = on_open, on_frame, on_close
        self._hub = hub
        self.ws: websocket.WebSocket | None = None  # set once connected
        self.close_reason: str | None = None  # a close was asked for (from any thread)
        # the reader thread's alone:
        self.sock: socket.socket | None = None  # what the selector watches
        self.ended = False
        self.ping_due = 0.0
        self.unanswered_since: float | None = None  # the first ping not followed by any frame

    def __repr__(self) -> str:
        return f"Connection({self.id})"

    def send(self, text: str | bytes) -> None:
        """Send a text frame (bytes: a binary one). Raises when not connected."""
        if self.ws is None:
            raise websocket.WebSocketConnectionClosedException("not connected")
        opcode = ABNF.OPCODE_BINARY if isinstance(text, bytes) else ABNF.OPCODE_TEXT
        self.ws.send(text, opcode)

    def close(self, reason: str = "closed") -> None:
        """End this connection (soon, on the reader thread); `on_close` is still called once."""
        if self.close_reason is None:
            self.close_reason = reason
        self._hub._call(lambda: self._hub._end(self, self.close_reason or reason, ours=True))


class SocketHub:
    """Owns every connection it made; one reader thread, `connectors` connector threads."""

    def __init__(self, *, ping_interval: float = 20.0, ping_timeout: float = 10.0, read_timeout: float = 5.0,
                 connect_timeout: float = 10.0, connectors: int = 2, name: str = "sockets") -> None:
        self.ping_interval, self.ping_timeout = ping_interval, ping_timeout
        self.read_timeout, self.connect_timeout = read_timeout, connect_timeout
        self._name = name
        self._connectors = connectors
        self._ids = itertools.count(1)
        self._selector = selectors.DefaultSelector()
        self._wakeup = Wakeup(self._selector)
        self._calls: collections.deque[Callable[[], None]] = collections.deque()
        self._to_connect: queue.SimpleQueue[Connection | None] = queue.SimpleQueue()
        self._conns: set[Connection] = set()  # registered with the selector (reader thread's)
        self._next_check = float("inf")
        self._stopped = False
        self._reader_done = False  # the reader has ended: nothing queued for it runs any more
        self._threads: list[threading.Thread] = []

    # -- the owner's calls (any thread) -----------------------------------------------------------
    def start(self) -> "SocketHub":
        self._threads = [threading.Thread(target=self._read_loop, name=self._name, daemon=True)]
        self._threads += [threading.Thread(target=self._connect_loop, name=f"{self._name}-connect-{i + 1}",
                                           daemon=True) for i in range(self._connectors)]
        for thread in self._threads:
            thread.start()
        return self

    def connect(self, url: str, *, on_open: OnOpen, on_frame: OnFrame, on_close: OnClose) -> Connection:
        """A new connection to `url`, connected on a connector thread (`on_close` if that fails)."""
        conn = Connection(self, next(self._ids), url, on_open, on_frame, on_close)
        if not self._stopped:
            self._to_connect.put(conn)
        return conn

    def stop(self, timeout: float = 5.0) -> None:
        """Close every connection and end the hub's threads (a connector in the middle of a connect
        ends when it returns, at most `connect_timeout` later: its threads are daemons)."""
        if self._stopped:
            return
        self._stopped = True
        for _ in range(self._connectors):
            self._to_connect.put(None)
        self._wakeup.wake()
        reader = self._threads[0] if self._threads else None
        if reader is not None and reader is not threading.current_thread():
            reader.join(timeout)

    def connection_count(self) -> int:
        return len(self._conns)

    # -- connector threads ------------------------------------------------------------------------
    def _connect_loop(self) -> None:
        while True:
            conn = self._to_connect.get()
            if conn is None or self._stopped:
                return
            if conn.close_reason is not None:  # closed before it was connected
                self._call(lambda conn=conn: self._end(conn, conn.close_reason or "closed", ours=True))
                continue
            ws = websocket.WebSocket(skip_utf8_validation=True, enable_multithread=True)
            try:
                ws.connect(conn.url, timeout=self.connect_timeout)
                ws.settimeout(self.read_timeout)  # a frame begun must arrive within it; sends too
                conn.ws = ws
                if conn.close_reason is None:
                    conn.on_open(conn)
            except Exception as exc:  # noqa: BLE001 - a refused connect, a handshake or a send that failed
                ws.shutdown()
                conn.ws = None
                reason = f"connect failed: {type(exc).__name__}: {exc}"
                self._call(lambda conn=conn, reason=reason: self._end(conn, reason, ours=False))
                continue
            self._call(lambda conn=conn: self._register(conn))
            if self._reader_done:  # stopped meanwhile, too late for the reader to see it
                ws.shutdown()

    # -- the reader thread ------------------------------------------------------------------------
    def _call(self, fn: Callable[[], None]) -> None:
        """Run `fn` on the reader thread (connection state is changed there only)."""
        self._calls.append(fn)
        self._wakeup.wake()

    def _read_loop(self) -> None:
        try:
            while not self._stopped:
                timeout = None if self._next_check == float("inf") else max(0.0, self._next_check - time.monotonic())
                for key, _events in self._selector.select(timeout):
                    if key.data is None:
                        self._wakeup.drain()
                    else:
                        self._read(key.data)
                self._run_calls()
                if time.monotonic() >= self._next_check:
                    self._check(time.monotonic())
        except Exception:  # noqa: BLE001 - a bug here must not leave every socket unread silently
            log.exception("the socket reader failed; every socket is closed")
        finally:
            self._stopped = True
            for conn in list(self._conns):
                self._end(conn, "stopped", ours=True)
            self._run_calls()  # connections connected meanwhile are closed (_register)
            self._reader_done = True
            self._run_calls()
            self._selector.close()
            self._wakeup.close()

    def _run_calls(self) -> None:
        while self._calls:
            self._calls.popleft()()

    def _register(self, conn: Connection) -> None:
        if conn.ended and conn.ws is not None:  # closed while it was connecting
            conn.ws.shutdown()
            return
        if conn.close_reason is not None or self._stopped or conn.ws is None:
            self._end(conn, conn.close_reason or "stopped", ours=True)
            return
        conn.sock = conn.ws.sock
        self._selector.register(conn.sock, selectors.EVENT_READ, conn)
        self._conns.add(conn)
        conn.ping_due = time.monotonic() + self.ping_interval
        self._next_check = min(self._next_check, conn.ping_due)

    def _read(self, conn: Connection) -> None:
        ws = conn.ws
        if conn.ended or ws is None:
            return
        try:
            while True:
                opcode, frame = ws.recv_data_frame(True)  # answers pings itself
                conn.unanswered_since = None  # any frame says the peer is alive
                if opcode in (ABNF.OPCODE_TEXT, ABNF.OPCODE_BINARY):
                    self._deliver(conn, frame.data)
                elif opcode == ABNF.OPCODE_CLOSE:  # the library answered it
                    self._end(conn, _close_reason(frame.data), ours=False)
                    return
                sock = ws.sock
                if not (isinstance(sock, ssl.SSLSocket) and sock.pending()):
                    return  # more would block; TLS records already decrypted would not wake the selector
        except websocket.WebSocketTimeoutException:
            self._end(conn, f"no whole frame within {self.read_timeout:g}s", ours=False)
        except (websocket.WebSocketException, OSError, ValueError) as exc:
            self._end(conn, f"{type(exc).__name__}: {exc}", ours=False)

    @staticmethod
    def _deliver(conn: Connection, data: bytes) -> None:
        try:
            conn.on_frame(conn, data, time.monotonic_ns())
        except Exception:  # noqa: BLE001 - the owner's bug: the socket and the other sockets go on
            log.exception("a socket frame's handler failed")

    def _check(self, now: float) -> None:
        """Ping the sockets that are due; end those that did not answer in time."""
        soonest = float("inf")
        for conn in list(self._conns):
            if conn.unanswered_since is not None and now - conn.unanswered_since >= self.ping_timeout:
                self._end(conn, f"no answer to a ping within {self.ping_timeout:g}s", ours=True)
                continue
            if now >= conn.ping_due:
                conn.ping_due = now + self.ping_interval
                if conn.unanswered_since is None:
                    conn.unanswered_since = now
                try:
                    conn.ws.ping()  # type: ignore[union-attr]
                except (websocket.WebSocketException, OSError) as exc:
                    self._end(conn, f"ping failed: {type(exc).__name__}: {exc}", ours=False)
                    continue
            soonest = min(soonest, conn.ping_due)
            if conn.unanswered_since is not None:
                soonest = min(soonest, conn.unanswered_since + self.ping_timeout)
        self._next_check = soonest

    def _end(self, conn: Connection, reason: str, *, ours: bool) -> None:
        """Close `conn` (said to the peer when `ours`) and tell its owner, once."""
        if conn.ended:
            return
        conn.ended = True  # a connect still under way is shut when it returns (_register)
        if conn in self._conns:
            self._conns.discard(conn)
            try:
                self._selector.unregister(conn.sock)
            except (KeyError, ValueError):
                pass
        ws = conn.ws
        if ws is not None:
            if ours and ws.connected:
                try:
                    ws.send_close()
                except (websocket.WebSocketException, OSError):
                    pass
            ws.shutdown()
        try:
            conn.on_close(conn, reason)
        except Exception:  # noqa: BLE001 - the owner's bug must not stop the reader
            log.exception("a socket's close handler failed")


def _close_reason(data: bytes) -> str:
    """A close frame's status and reason, as "closed 1000 bye"."""
    if len(data) < 2:
        return "closed"
    code = struct.unpack("!H", data[:2])[0]
    text = data[2:].decode("utf-8", "replace")
    return f"closed {code} {text}".strip()
