"""dhanhq's HTTP transport, made lighter: one kept-alive `http.client` connection per client.

`dhanhq` still builds every request (endpoint, payload, headers) and shapes every answer
(`{"status", "remarks", "data"}`); only the sending is replaced. Why: `requests` spends most of a
call's CPU in session machinery (merging settings, runtime Protocol checks, hooks, urllib3's
pool): 0.85 ms against 0.3 ms per placement on the paper exchange. With ten followers that CPU
sits, under the GIL, in front of the tenth follower's placement.

Semantics kept from `requests` as dhanhq uses it: a float timeout per socket operation, no
automatic retry (a placement whose answer is lost is looked up by correlation id, never sent
blind), certificate verification against certifi's bundle (or REQUESTS_CA_BUNDLE), and any
transport failure answered as a failure whose remarks are the exception text. A base URL that
the environment routes through a proxy keeps plain `requests`, which knows proxies.

Each dhanhq client is used by one thread (the gateway keeps one per thread); the account's idle
connections are shared between them (`Connections`), so a placement can be sent on one thread
and its answer read on another (`KeptAliveHTTP.sending_on`).

Both transports add the answer's HTTP status to dhanhq's answer, under `HTTP_STATUS`: dhanhq's
`_parse_response` reads it and drops it, and without it a 502 from a gateway with a JSON body
but no error code looks like a refusal (broker/errors.py `classify`).
"""
from __future__ import annotations

import contextlib
import http.client
import json
import logging
import os
import select
import ssl
import threading
import time
from typing import Any, Iterator
from urllib.parse import urlsplit

import certifi
import requests
from dhanhq.dhan_http import DhanHTTP

log = logging.getLogger(__name__)

HTTP_STATUS = "http_status"  # the key of the HTTP status in an answer (absent: no answer arrived)

_tls_lock = threading.Lock()
_tls_contexts: dict[str, ssl.SSLContext] = {}


def _ca_bundle_from_env() -> str | None:
    """The CA bundle the environment names, read as requests reads it."""
    return os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")


def _tls_context() -> ssl.SSLContext:
    """One verifying TLS context per CA bundle (building one reads the bundle: milliseconds)."""
    cafile = _ca_bundle_from_env() or certifi.where()
    with _tls_lock:
        context = _tls_contexts.get(cafile)
        if context is None:
            context = _tls_contexts[cafile] = ssl.create_default_context(cafile=cafile)
        return context


class _Answer:
    """What DhanHTTP._parse_response reads of a response."""

    def __init__(self, status_code: int, content: bytes) -> None:
        self.status_code = status_code
        self.content = content


class _Connection(http.client.HTTPConnection):
    """An HTTP/1.1 connection that writes a small request's headers and body in one send.

    http.client writes them in two; every socket call gives up the GIL, and a thread sending a
    fan-out of placements waits to get it back each time."""

    last_used = 0.0

    def _send_output(self, message_body: Any = None, encode_chunked: bool = False) -> None:
        if isinstance(message_body, bytes) and not encode_chunked:
            self._buffer.extend((b"", message_body))  # type: ignore[attr-defined]
            msg = b"\r\n".join(self._buffer)  # type: ignore[attr-defined]
            del self._buffer[:]  # type: ignore[attr-defined]
            self.send(msg)
            return
        super()._send_output(message_body, encode_chunked)  # type: ignore[misc]


class _TLSConnection(http.client.HTTPSConnection, _Connection):
    """The same over TLS."""


# A connection idle for longer than this is checked for a close from the server before reuse
# (servers drop idle keep-alive connections after tens of seconds); a recently used one is not,
# as the check is one more socket call on the placement path.
CHECK_AFTER_IDLE_SECONDS = 2.0


class Connections:
    """An account's idle kept-alive connections, shared by its threads. A connection is used by
    one thread at a time: taken for a request, given back once its answer is read."""

    def __init__(self, base_url: str, timeout: float) -> None:
        self.base_url = base_url.rstrip("/")
        parts = urlsplit(self.base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        self.https = parts.scheme == "https"
        self.host = parts.hostname
        self.port = parts.port
        self.prefix = parts.path
        self.timeout = timeout
        self._idle: list[_Connection] = []
        self._lock = threading.Lock()

    def take(self, open_only: bool = False) -> _Connection | None:
        """An idle open connection, else a new one (not yet connected), or None with `open_only`."""
        while True:
            with self._lock:
                conn = self._idle.pop() if self._idle else None
            if conn is None:
                return None if open_only else self._new()
            if conn.sock is None:
                continue
            if time.monotonic() - conn.last_used < CHECK_AFTER_IDLE_SECONDS:
                return conn
            if not select.select([conn.sock], [], [], 0)[0]:
                return conn
            conn.close()  # readable while idle: the server closed it (or broke protocol)

    def give_back(self, conn: _Connection) -> None:
        if conn.sock is not None:
            conn.last_used = time.monotonic()
            with self._lock:
                self._idle.append(conn)

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    def _new(self) -> _Connection:
        if self.https:
            return _TLSConnection(self.host, self.port, timeout=self.timeout, context=_tls_context())
        return _Connection(self.host, self.port, timeout=self.timeout)


class Pending:
    """A request sent whose answer is not read yet (see KeptAliveHTTP.sending_on)."""

    def __init__(self, http: "KeptAliveHTTP", conn: http.client.HTTPConnection, endpoint: str,
                 error: Exception | None) -> None:
        self._http, self._conn, self._endpoint, self._error = http, conn, endpoint, error

    def finish(self) -> dict[str, Any]:
        """Block for the answer; dhanhq's answer shape, as the call would have returned it."""
        return self._http._receive(self._conn, self._endpoint, self._error)


class KeptAliveHTTP(DhanHTTP):
    """DhanHTTP over the account's kept-alive http.client connections (see the module docstring)."""

    def __init__(self, client_id: str, access_token: str, connections: Connections) -> None:
        super().__init__(client_id, access_token)
        self.connections = connections
        self.base_url = connections.base_url
        self.timeout = connections.timeout
        self._deferred_on: http.client.HTTPConnection | None = None

    @contextlib.contextmanager
    def sending_on(self, conn: http.client.HTTPConnection) -> Iterator[None]:
        """Inside it, the next dhanhq call sends its request on `conn` and returns a `Pending`
        instead of waiting: the sender's thread stamps and sends, another thread reads the
        answer. Used for placements, so ten followers' requests leave back to back."""
        self._deferred_on = conn
        try:
            yield
        finally:
            self._deferred_on = None

    def _send_request(self, method: Any, endpoint: str, payload: dict[str, Any] | None = None) -> Any:
        body = None
        if payload:
            payload["dhanClientId"] = self.client_id
            body = json.dumps(payload)
        deferred, self._deferred_on = self._deferred_on, None
        conn = deferred or self.connections.take()
        assert conn is not None
        error: Exception | None = None
        try:
            if conn.timeout != self.timeout:  # (settimeout is a socket call: only when it changes)
                conn.timeout = self.timeout
                if conn.sock is not None:
                    conn.sock.settimeout(self.timeout)
            conn.request(method.value, self.connections.prefix + endpoint, body=body, headers=self.header)
        except Exception as exc:  # answered as a failure when the answer is read
            error = exc
        if deferred is not None:
            return Pending(self, conn, endpoint, error)
        return self._receive(conn, endpoint, error)

    def _receive(self, conn: http.client.HTTPConnection, endpoint: str, error: Exception | None) -> dict[str, Any]:
        if error is None:
            try:
                response = conn.getresponse()
                content = response.read()
            except Exception as exc:
                error = exc
        if error is not None:  # as dhanhq does: a transport failure is an answer, not an exception
            conn.close()
            log.debug("%s failed: %s", endpoint, error)
            return {"status": DhanHTTP.HttpResponseStatus.FAILURE.value, "remarks": str(error) or repr(error),
                    "data": ""}
        if response.will_close:
            conn.close()
        else:
            self.connections.give_back(conn)
        result = self._parse_response(_Answer(response.status, content))
        result[HTTP_STATUS] = response.status
        return result


class RequestsHTTP(DhanHTTP):
    """dhanhq's own `requests` transport, kept where the environment proxies the base URL, with
    the HTTP status added to each answer as KeptAliveHTTP adds it. One thread per client, as the
    gateway uses them: the status of the last response is plain state."""

    def __init__(self, client_id: str, access_token: str) -> None:
        super().__init__(client_id, access_token)
        self._status: int | None = None
        self.session.hooks["response"].append(self._note_status)

    def _note_status(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        self._status = response.status_code

    def _with_status(self, result: Any) -> Any:
        if isinstance(result, dict) and self._status is not None:
            result[HTTP_STATUS] = self._status
        return result

    def get(self, endpoint: str) -> Any:
        self._status = None
        return self._with_status(super().get(endpoint))

    def post(self, endpoint: str, payload: dict[str, Any]) -> Any:
        self._status = None
        return self._with_status(super().post(endpoint, payload))

    def put(self, endpoint: str, payload: dict[str, Any]) -> Any:
        self._status = None
        return self._with_status(super().put(endpoint, payload))

    def delete(self, endpoint: str) -> Any:
        self._status = None
        return self._with_status(super().delete(endpoint))


def connections_for(base_url: str, timeout: float) -> Connections | None:
    """The account's kept-alive connections, or None when the environment proxies `base_url`."""
    if requests.utils.get_environ_proxies(base_url):
        return None
    return Connections(base_url, timeout)


def dhan_http(client_id: str, access_token: str, base_url: str, timeout: float,
              connections: Connections | None = None) -> DhanHTTP:
    """The transport for one client: kept-alive http.client over the account's `connections`
    (from connections_for when not given), or requests where a proxy applies."""
    connections = connections or connections_for(base_url, timeout)
    if connections is not None:
        return KeptAliveHTTP(client_id, access_token, connections)
    http = RequestsHTTP(client_id, access_token)
    http.base_url = base_url.rstrip("/")
    http.timeout = timeout
    session = http.session
    # requests would otherwise re-read the proxy environment and ~/.netrc on every call
    session.proxies.update(requests.utils.get_environ_proxies(base_url))
    bundle = _ca_bundle_from_env()
    if bundle:
        session.verify = bundle
    session.trust_env = False
    return http
