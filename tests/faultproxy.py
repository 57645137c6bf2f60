"""A fault-injecting HTTP proxy on loopback, between a REST client (the copier) and the paper exchange.

The paper exchange's own faults (paper/faults.py) act inside the broker. This proxy acts on the
wire, where a real network and a real broker's front end fail: it can hold an answer past the
client's timeout, answer an HTTP status and body of its choosing (a 502 with no error code, a
page that is not JSON), or drop the connection; and each of those either *before* the request
reaches the exchange (nothing took effect) or *after* (the order exists, the client never learns
it). Point an account's `api_base_url` at `proxy.url` and its REST calls go through it.

    proxy = FaultProxy(exchange.rest_url).start()
    proxy.hang("POST /orders", seconds=3, forward=FIRST, count=1)      # placed, answer lost
    proxy.respond("GET /orders/external/*", 503, "busy", forward=NEVER, count=2)
    proxy.respond("POST /orders", 502, '{"status":"error"}', forward=FIRST, count=1)
    proxy.drop("POST /orders", forward=NEVER, fraction=0.2)              # one in five fails before effect
    proxy.hang("POST /orders", seconds=3, forward=LATE, count=1)       # the broker acts after the timeout
    ...
    proxy.clear(); proxy.stop()

Patterns are "METHOD /path" relative to the upstream URL's path (`/v2` for the paper exchange),
with shell-style globs: "POST /orders", "GET /orders/external/*", "* /orders*". A call is matched
against the rules in the order they were added; the first rule that still has calls left (`count`)
and whose `fraction` roll succeeds applies; a call no rule takes is forwarded untouched.
Every call is recorded in `proxy.calls` with what was done to it. The tests' `fault_proxy`
fixture and `make_rig(proxied=[...])` (tests/conftest.py) start and stop proxies for a test.
"""
from __future__ import annotations

import http.client
import random
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

# When the request reaches the exchange, relative to the fault:
FIRST = "first"  # forwarded at once: the call takes effect; then the fault hits its answer
NEVER = "never"  # never forwarded: the call fails before any effect
LATE = "late"  # (hang only) forwarded after the hang: the broker acts on it late, then answers
FORWARDS = (FIRST, NEVER, LATE)

_HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "proxy-authorization", "te", "trailer",
                         "transfer-encoding", "upgrade", "host", "content-length"})


@dataclass
class Rule:
    """One fault: what (`action`), on which calls (`pattern`, `count`, `fraction`), and whether the
    exchange sees the request (`forward`). `hits` counts the calls it took."""

    pattern: str
    action: str  # hang | respond | drop
    forward: str
    count: int | None = None  # calls left to take; None: every matching call
    fraction: float = 1.0
    seconds: float = 0.0  # hang
    status: int = 0  # respond
    body: bytes = b""  # respond
    content_type: str = "application/json"  # respond
    body_has: bytes = b""  # only calls whose body holds these bytes
    hits: int = 0
    _proxy: "FaultProxy | None" = field(default=None, repr=False)

    def matches(self, key: str) -> bool:
        method, _, path = key.partition(" ")
        want_method, _, want_path = self.pattern.partition(" ")
        return fnmatchcase(method, want_method.upper()) and fnmatchcase(path, want_path)

    @property
    def exhausted(self) -> bool:
        return self.count is not None and self.count <= 0

    def remove(self) -> None:
        """Stop applying this rule (calls already held finish as they started)."""
        if self._proxy is not None:
            self._proxy._remove(self)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away in the middle of a call (killed, or past its timeout) is one of
        the faults under test, not a failure of the proxy: no traceback for it."""
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)


class FaultProxy:
    """A threaded HTTP/1.1 proxy to one upstream base URL (kept-alive client connections are
    served; each forwarded call opens its own upstream connection). Thread-safe: rules may be
    added and removed while calls are in flight."""

    def __init__(self, upstream: str, *, seed: int = 0, host: str = "127.0.0.1", port: int = 0) -> None:
        parts = urlsplit(upstream.rstrip("/"))
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"upstream must be an http:// URL, got {upstream!r}")
        self.upstream_host, self.upstream_port = parts.hostname, parts.port or 80
        self.prefix = parts.path  # e.g. "/v2": kept on forwarded paths, left out of patterns
        self._rules: list[Rule] = []
        self._lock = threading.Lock()
        self._rng = random.Random(seed)
        self._stopping = threading.Event()
        # every call seen: {"t" (monotonic, when it arrived), "method", "path", "action", "forwarded",
        # "status" (what the client was answered; None: dropped)}
        self.calls: list[dict[str, Any]] = []
        self._server = _Server((host, port), self._handler_class())
        self._thread: threading.Thread | None = None
        self.url = f"http://{host}:{self._server.server_address[1]}{self.prefix}"

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> "FaultProxy":
        self._thread = threading.Thread(target=self._server.serve_forever, name="fault-proxy", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Release held calls at once and close the listening socket."""
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()

    # -- faults --------------------------------------------------------------------------------
    def hang(self, pattern: str, seconds: float, *, forward: str, count: int | None = None,
             fraction: float = 1.0, body_has: str = "") -> Rule:
        """Hold matching calls `seconds`. FIRST: forwarded at once, its answer delivered only after
        the hang (a client with a shorter timeout has given up by then). NEVER: nothing is
        forwarded; after the hang the connection is dropped. LATE: forwarded after the hang, and
        its answer then delivered (the broker acted on a request the client gave up on).
        `body_has`: only calls whose body holds it (one of several orders sent together)."""
        return self._add(Rule(pattern, "hang", _forward(forward, LATE), count, fraction, seconds=seconds,
                              body_has=body_has.encode()))

    def respond(self, pattern: str, status: int, body: str | bytes = b"", *, forward: str,
                count: int | None = None, fraction: float = 1.0, content_type: str = "application/json") -> Rule:
        """Answer matching calls with `status` and `body` (e.g. 502 and '{"status":"error"}', with
        no errorCode, or an HTML page). FIRST: the exchange got the call and acted on it; its own
        answer is thrown away. NEVER: the exchange never saw it."""
        data = body.encode() if isinstance(body, str) else body
        return self._add(Rule(pattern, "respond", _forward(forward), count, fraction, status=status, body=data,
                              content_type=content_type))

    def drop(self, pattern: str, *, forward: str, count: int | None = None, fraction: float = 1.0) -> Rule:
        """Close the connection without an answer. FIRST: after the exchange acted on the call.
        NEVER: before it reached the exchange."""
        return self._add(Rule(pattern, "drop", _forward(forward), count, fraction))

    def clear(self) -> None:
        """Back to a transparent proxy (calls already held finish as they started)."""
        with self._lock:
            for rule in self._rules:
                rule._proxy = None
            self._rules = []

    def calls_to(self, pattern: str) -> list[dict[str, Any]]:
        """The recorded calls matching `pattern` ("METHOD /path" glob), in the order they arrived."""
        probe = Rule(pattern, "", NEVER)
        with self._lock:
            found = [dict(c) for c in self.calls if probe.matches(f"{c['method']} {c['path'].split('?')[0]}")]
        return sorted(found, key=lambda c: c["t"])

    def _add(self, rule: Rule) -> Rule:
        if not 0.0 < rule.fraction <= 1.0:
            raise ValueError(f"fraction must be in (0, 1], got {rule.fraction}")
        if rule.count is not None and rule.count < 1:
            raise ValueError(f"count must be at least 1 (or None for every call), got {rule.count}")
        rule._proxy = self
        with self._lock:
            self._rules.append(rule)
        return rule

    def _remove(self, rule: Rule) -> None:
        with self._lock:
            if rule in self._rules:
                self._rules.remove(rule)
            rule._proxy = None

    def _take(self, key: str, body: bytes = b"") -> Rule | None:
        """The rule that applies to this call, its count taken; None: forward untouched."""
        with self._lock:
            for rule in self._rules:
                if rule.exhausted or not rule.matches(key) or rule.body_has not in body:
                    continue
                if rule.fraction < 1.0 and self._rng.random() >= rule.fraction:
                    continue
                if rule.count is not None:
                    rule.count -= 1
                rule.hits += 1
                return rule
        return None

    def _record(self, arrived: float, method: str, path: str, action: str, forwarded: bool,
                status: int | None) -> None:
        with self._lock:
            self.calls.append({"t": arrived, "method": method, "path": path, "action": action,
                               "forwarded": forwarded, "status": status})

    # -- serving -------------------------------------------------------------------------------
    def _forward(self, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, str, bytes]:
        conn = http.client.HTTPConnection(self.upstream_host, self.upstream_port, timeout=30)
        try:
            conn.request(method, path, body=body or None, headers=headers)
            answer = conn.getresponse()
            return answer.status, answer.getheader("Content-Type") or "application/json", answer.read()
        finally:
            conn.close()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as the copier's transport expects

            def log_message(self, *args: Any) -> None:  # quiet: calls are recorded in proxy.calls
                pass

            def do_GET(self) -> None:  # noqa: N802 - http.server's names
                self._serve()

            do_POST = do_PUT = do_DELETE = do_PATCH = do_GET  # noqa: N815

            def _serve(self) -> None:
                arrived = time.monotonic()
                method = self.command
                full_path = self.path
                if "://" in full_path:  # absolute form: used as a forward proxy (HTTP_PROXY)
                    full_path = "/" + full_path.split("://", 1)[1].partition("/")[2]
                path = full_path[len(proxy.prefix):] if full_path.startswith(proxy.prefix) else full_path
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
                rule = proxy._take(f"{method} {path.split('?')[0]}", body)
                action = rule.action if rule else "forward"
                forwarded = False
                answer: tuple[int, str, bytes] | None = None
                try:
                    if rule is None or rule.forward == FIRST:
                        answer = proxy._forward(method, full_path, headers, body)
                        forwarded = True
                    if rule is not None and rule.action == "hang":
                        proxy._stopping.wait(rule.seconds)
                        if rule.forward == LATE:
                            answer = proxy._forward(method, full_path, headers, body)
                            forwarded = True
                    if rule is not None and rule.action == "respond":
                        answer = (rule.status, rule.content_type, rule.body)
                    if rule is not None and (rule.action == "drop" or (rule.action == "hang" and rule.forward == NEVER)):
                        answer = None
                except OSError as exc:  # the exchange is gone: answer as a gateway would
                    answer = (502, "text/plain", f"fault proxy: upstream failed: {exc}".encode())
                proxy._record(arrived, method, path, action, forwarded, answer[0] if answer else None)
                if answer is None:
                    self._drop()
                    return
                status, content_type, data = answer
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", content_type)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    self.wfile.flush()
                except OSError:  # the client gave up waiting (its timeout): nothing to answer
                    self.close_connection = True

            def _drop(self) -> None:
                self.close_connection = True
                try:
                    self.connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

        return Handler


def _forward(value: str, *extra: str) -> str:
    allowed = (FIRST, NEVER, *extra)
    if value not in allowed:
        raise ValueError(f"forward must be one of {allowed}, got {value!r}")
    return value
