"""Dhan's REST API over kept-alive connections of our own, on public APIs only.

`dhanhq` sends through `requests`, whose per-call CPU would sit, under the GIL, in front of the
tenth follower's placement (docs/design.md). So the gateway's calls go out here instead:

- `Connections`: an account's idle kept-alive connections, sockets it opens itself (TLS verified
  against certifi's bundle, or REQUESTS_CA_BUNDLE as requests reads it), shared by the account's
  threads, one thread at a time. One idle for a while is checked for a close from the server
  before it is reused.
- `Transport`: one account's calls. A request is written whole with one `sendall`; its answer
  is read by `http.client.HTTPResponse` and shaped as dhanhq shapes answers (`answer_from`),
  with the HTTP status dhanhq drops. A request can be sent on one thread and its answer read on
  another (`Transport.send`): the fan-out sends ten placements back to back. That answer can
  also be read as it arrives, without ever waiting (`Pending.read_available`): one thread then
  reads every account's answers (broker/answers.py).
- `ProxiedTransport`: the same calls through `requests`, for a base URL the environment proxies.
- `DhanHTTPOver`: dhanhq's HTTP object over either transport, for the calls left to dhanhq.

Kept from `requests` as dhanhq uses it: a float timeout per socket operation; no automatic retry
(a placement whose answer is lost is looked up by correlation id, never sent blind); a transport
failure answered as a failure whose remarks are the exception's text.
"""
from __future__ import annotations

import http.client
import io
import json
import logging
import os
import re
import select
import socket
import ssl
import threading
import time
from typing import Any, Union
from urllib.parse import urlsplit

import certifi
import requests
from dhanhq.dhan_http import DhanHTTP

from broker import jsonread

log = logging.getLogger(__name__)

HTTP_STATUS = "http_status"  # the key of the HTTP status in an answer (absent: no answer arrived)
SUCCESS, FAILURE = "success", "failure"  # an answer's "status", as dhanhq words it

_tls_lock = threading.Lock()
_tls_contexts: dict[str, ssl.SSLContext] = {}
_NOT_IN_A_TARGET = re.compile(r"[\x00-\x20\x7f]")  # as http.client refuses them in a request target


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


def answer_from(status: int, content: bytes) -> dict[str, Any]:
    """An HTTP answer as dhanhq 2.3 shapes it: `{"status", "remarks", "data"}`, the JSON body as
    `data` for a 2xx, Dhan's error fields as `remarks` otherwise, and the parse error's text as
    `remarks` for a body that is not what dhanhq expects. Plus the HTTP status (`HTTP_STATUS`):
    without it a 502 from a gateway with a JSON body but no error code would look like a refusal
    (broker/errors.py `classify`)."""
    try:
        body = jsonread.loads(content)
        if 200 <= status <= 299:
            answer: dict[str, Any] = {"status": SUCCESS, "remarks": "", "data": body}
        else:
            answer = {"status": FAILURE, "remarks": {"error_code": body.get("errorCode"),
                                                     "error_type": body.get("errorType"),
                                                     "error_message": body.get("errorMessage")}, "data": ""}
    except Exception as exc:  # not JSON, or an error body that is not an object: dhanhq says why
        answer = {"status": FAILURE, "remarks": str(exc), "data": ""}
    answer[HTTP_STATUS] = status
    return answer


def no_answer(error: BaseException) -> dict[str, Any]:
    """No answer arrived (refused, timed out, dropped): as dhanhq answers it, a failure whose
    remarks are the exception's text, and no HTTP status."""
    return {"status": FAILURE, "remarks": str(error) or repr(error), "data": ""}


def _body(client_id: str, payload: dict[str, Any] | None) -> bytes:
    """The JSON body dhanhq sends: the payload with the client id added last; none when empty."""
    if not payload:
        return b""
    return json.dumps({**payload, "dhanClientId": client_id}).encode()


def _headers(host: str, client_id: str, access_token: str) -> bytes:
    """The request headers dhanhq sends, plus Host, and identity encoding (the body is read as
    sent). Raises ValueError for a value that would end its header line or not encode."""
    lines = []
    for name, value in (("Host", host), ("access-token", access_token), ("client-id", client_id),
                        ("Content-type", "application/json"), ("Accept", "application/json"),
                        ("Accept-Encoding", "identity")):
        if "\r" in value or "\n" in value:  # a pasted token with a line break
            raise ValueError(f"the {name} header holds a line break")
        lines.append(f"{name}: {value}\r\n".encode("latin-1"))
    return b"".join(lines)


def _readable(sock: socket.socket) -> bool:
    """Whether `sock` has something to read now. poll, not select: select refuses descriptors
    above 1,024, which a copier with hundreds of followers holds."""
    if hasattr(select, "poll"):
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        return bool(poller.poll(0))
    return bool(select.select([sock], [], [], 0)[0])  # Windows: no poll, and no such limit


class Connection:
    """One kept-alive connection: a socket of our own (None until opened, and once closed)."""

    __slots__ = ("sock", "last_used")

    def __init__(self) -> None:
        self.sock: socket.socket | None = None
        self.last_used = 0.0

    def close(self) -> None:
        sock, self.sock = self.sock, None
        if sock is not None:
            sock.close()


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
        self.port = parts.port or (443 if self.https else 80)
        self.host_header = parts.netloc.rpartition("@")[2]  # without credentials, as http.client sends it
        self.prefix = parts.path
        self.timeout = timeout
        self._idle: list[Connection] = []
        self._lock = threading.Lock()

    def take(self, open_only: bool = False) -> Connection | None:
        """An idle open connection, else a new one (not yet open), or None with `open_only`."""
        while True:
            with self._lock:
                conn = self._idle.pop() if self._idle else None
            if conn is None:
                return None if open_only else Connection()
            if conn.sock is None:
                continue
            if time.monotonic() - conn.last_used < CHECK_AFTER_IDLE_SECONDS:
                return conn
            if not _readable(conn.sock):
                return conn
            conn.close()  # readable while idle: the server closed it (or broke protocol)

    def give_back(self, conn: Connection) -> None:
        if conn.sock is not None:
            conn.last_used = time.monotonic()
            with self._lock:
                self._idle.append(conn)

    def open(self, conn: Connection) -> None:
        """Connect `conn` (TCP, then TLS for https): each step within the timeout."""
        sock = socket.create_connection((self.host, self.port), self.timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # small requests leave at once
            if self.https:
                sock = _tls_context().wrap_socket(sock, server_hostname=self.host)
        except BaseException:
            sock.close()
            raise
        conn.sock = sock

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


_Head = tuple[bytes, int, dict[bytes, bytes], int]  # version, status, fields, where the body starts


def _head(data: bytes | bytearray) -> _Head | None:
    """The head of the HTTP answer in `data`, past any 100 Continue; None until it has arrived.
    Raises ValueError when it is no HTTP answer."""
    start = 0
    while True:
        end = data.find(b"\r\n\r\n", start)
        if end < 0:
            return None
        head = bytes(data[start:end]).split(b"\r\n")
        try:
            version, status_text = head[0].split(None, 2)[:2]
            status = int(status_text)
        except (IndexError, ValueError):
            raise ValueError("not an HTTP answer") from None
        if status != 100:
            break
        start = end + 4
    fields: dict[bytes, bytes] = {}
    for line in head[1:]:
        name, _, value = line.partition(b":")
        fields.setdefault(name.strip().lower(), value.strip())  # the first, as http.client reads it
    return version, status, fields, end + 4


def _whole_answer(data: bytes | bytearray, method: str) -> bool:
    """Whether `data` holds a whole HTTP answer, framed as http.client frames one (a 100 Continue
    skipped; no body for 1xx, 204, 304 or HEAD; chunks; Content-Length). An answer that only the
    server's close ends is never whole here: the close makes it whole."""
    try:
        head = _head(data)
    except ValueError:
        return True  # not an HTTP answer: http.client says why
    if head is None:
        return False
    _version, status, fields, body = head
    if status in (204, 304) or 100 <= status < 200 or method == "HEAD":
        return True
    if fields.get(b"transfer-encoding", b"").lower() == b"chunked":
        return _whole_chunks(data, body)
    try:
        length = int(fields[b"content-length"])
    except (KeyError, ValueError):
        return False  # read to the close
    return length >= 0 and len(data) - body >= length


def _whole_chunks(data: bytes | bytearray, pos: int) -> bool:
    """Whether the chunked body from `pos` has arrived to its last chunk and trailer."""
    while True:
        line_end = data.find(b"\r\n", pos)
        if line_end < 0:
            return False
        try:
            size = int(bytes(data[pos:line_end]).split(b";", 1)[0].strip(), 16)
        except ValueError:
            return True  # malformed: http.client says why
        if size == 0:
            trailer = line_end + 2
            # no trailer (an empty line at once), or trailer lines ended by an empty line
            return data[trailer:trailer + 2] == b"\r\n" or data.find(b"\r\n\r\n", trailer) >= 0
        pos = line_end + 2 + size + 2
        if pos > len(data):
            return False


def _plain_answer(data: bytes, method: str) -> tuple[int, bytes] | None:
    """(status, body) of the common answer, read without http.client: one HTTP/1.1 answer with a
    Content-Length body, the connection kept, nothing after it. None for any other (http.client
    reads those: chunks, a close, an answer it would refuse, ...); a Dhan answer is this one."""
    if len(data) > 65536 or method == "HEAD":
        return None
    try:
        head = _head(data)
    except ValueError:
        return None
    if head is None:
        return None
    version, status, fields, body = head
    if (version != b"HTTP/1.1" or not 200 <= status <= 999 or status in (204, 304) or len(fields) > 100
            or b"transfer-encoding" in fields or b"close" in fields.get(b"connection", b"").lower()):
        return None
    length = fields.get(b"content-length", b"")
    if not length.isdigit() or len(data) - body != int(length):
        return None
    return status, data[body:]


class _Arrived(io.BytesIO):
    """An answer already read off the socket, as the file http.client reads it from. Kept open
    after http.client is done with it, so that what followed the answer can be told."""

    def close(self) -> None:
        pass


class _Replayed:
    """What http.client.HTTPResponse needs of a socket, over bytes that have arrived."""

    def __init__(self, data: bytes) -> None:
        self.file = _Arrived(data)

    def makefile(self, mode: str) -> _Arrived:
        return self.file


_CHUNK = 65536


class Pending:
    """A request sent whose answer is not read yet (see Transport.send). Read it whole, waiting,
    on any thread (`finish`); or as it arrives, never waiting (`read_available` each time the
    socket is readable, then `settle`), as the answer reader does (broker/answers.py)."""

    def __init__(self, transport: "Transport", conn: Connection, method: str, endpoint: str,
                 error: Exception | None) -> None:
        self._transport, self._conn, self._method, self._endpoint = transport, conn, method, endpoint
        self._error = error
        self._arrived = bytearray()
        self._closed_by_server = False

    @property
    def timeout(self) -> float:
        """Seconds an answer may go without a byte arriving before it counts as lost."""
        return self._transport.timeout

    def socket(self) -> socket.socket | None:
        """The socket the answer arrives on; None when the request failed (`settle` says how)."""
        return self._conn.sock if self._error is None else None

    def finish(self) -> dict[str, Any]:
        """Block for the answer (on any thread): dhanhq's answer shape, with the HTTP status."""
        return self._transport.receive(self._conn, self._method, self._endpoint, self._error)

    def read_available(self) -> bool:
        """Read what has arrived, without waiting; True once the whole answer (or a failure) is in
        hand, for `settle`. Reads until nothing more is there: for TLS that includes what the
        TLS layer already holds decrypted (`SSLSocket.pending()`), which no readiness signal of
        the socket would report."""
        if self._error is not None:
            return True
        sock = self._conn.sock
        assert sock is not None
        try:
            if sock.gettimeout() != 0.0:
                sock.settimeout(0.0)  # given back in blocking mode again by settle
            while True:
                try:
                    chunk = sock.recv(_CHUNK)
                except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                    break
                if not chunk:
                    self._closed_by_server = True
                    break
                self._arrived += chunk
        except Exception as exc:  # reset, or a TLS failure: answered as a failure, as receive() does
            self._error = exc
            return True
        return self._closed_by_server or _whole_answer(self._arrived, self._method)

    def expire(self, error: Exception) -> dict[str, Any]:
        """No (whole) answer in time: the connection closed, answered as a failure with `error`."""
        self._error = error
        return self.settle()

    def settle(self) -> dict[str, Any]:
        """The answer read by `read_available` (an unfinished one read as http.client reads a
        close), shaped as `receive` shapes it; the connection given back, or closed."""
        status, content, reusable = 0, b"", False
        data = bytes(self._arrived)
        plain = _plain_answer(data, self._method) if self._error is None else None
        if plain is not None:
            (status, content), reusable = plain, not self._closed_by_server
        elif self._error is None:
            replayed = _Replayed(data)
            response = http.client.HTTPResponse(replayed, method=self._method)  # type: ignore[arg-type]
            try:
                response.begin()
                content = response.read()
                status = response.status
                # nothing after the answer, and the server keeps the connection
                reusable = not (response.will_close or self._closed_by_server
                                or replayed.file.tell() < len(self._arrived))
            except Exception as exc:
                self._error = exc
            finally:
                response.close()
        conn = self._conn
        reusable = reusable and conn.sock is not None
        if reusable:
            conn.sock.settimeout(self.timeout)  # type: ignore[union-attr]  # blocking again, as taken
        return self._transport.conclude(conn, self._method, self._endpoint, self._error, status, content, reusable)


class Transport:
    """One account's calls to Dhan as one client id and token, over the account's `Connections`.
    Safe to call from any thread: a call holds its connection alone."""

    def __init__(self, connections: Connections, client_id: str, access_token: str) -> None:
        self.connections = connections
        self.base_url = connections.base_url
        self.timeout = connections.timeout
        self.client_id = client_id
        self.access_token = access_token
        try:
            self._head, self._refusal = _headers(connections.host_header, client_id, access_token), ""
        except ValueError as exc:  # refused at each call, not here: one account, not the copier
            self._head, self._refusal = b"", str(exc)

    def request(self, method: str, endpoint: str, payload: dict[str, Any] | None = None) -> bytes:
        """The whole request, as bytes to write at once. Raises ValueError, sending nothing, for a
        request no server would read."""
        if self._refusal:
            raise ValueError(self._refusal)
        target = self.connections.prefix + endpoint
        if _NOT_IN_A_TARGET.search(target):
            raise ValueError(f"not a request target: {target!r}")
        body = _body(self.client_id, payload)
        length = b"Content-Length: %d\r\n" % len(body) if body or method != "GET" else b""
        return b"%s %s HTTP/1.1\r\n%s%s\r\n%s" % (method.encode(), target.encode("ascii"), self._head, length, body)

    def call(self, method: str, endpoint: str, payload: dict[str, Any] | None = None) -> dict[str, Any]:
        """Send a request and wait for its answer."""
        request = self.request(method, endpoint, payload)  # raises before a connection is taken
        conn = self.connections.take()
        assert conn is not None
        return self._write(conn, request, method, endpoint).finish()

    def send(self, method: str, endpoint: str, payload: dict[str, Any] | None, conn: Connection) -> Pending:
        """Send a request on `conn`, a connection taken from the account's, and return without
        its answer. An open one cannot block (docs/design.md); one not open yet is opened first,
        within the timeout."""
        return self._write(conn, self.request(method, endpoint, payload), method, endpoint)

    def _write(self, conn: Connection, request: bytes, method: str, endpoint: str) -> Pending:
        error: Exception | None = None
        try:
            if conn.sock is None:
                self.connections.open(conn)
            conn.sock.sendall(request)  # type: ignore[union-attr]
        except Exception as exc:  # answered as a failure, as dhanhq answers it
            error = exc
        return Pending(self, conn, method, endpoint, error)

    def receive(self, conn: Connection, method: str, endpoint: str, error: Exception | None) -> dict[str, Any]:
        """Read the answer to the request sent on `conn`, then give the connection back (or close
        it: after a failure, or when the server said it closes)."""
        if error is None:
            response = None
            try:
                response = http.client.HTTPResponse(conn.sock, method=method)  # type: ignore[arg-type]
                response.begin()
                content = response.read()
            except Exception as exc:
                error = exc
            finally:
                if response is not None:
                    response.close()  # its file on the socket, not the socket
        if error is not None:
            return self.conclude(conn, method, endpoint, error, 0, b"", False)
        assert response is not None
        return self.conclude(conn, method, endpoint, None, response.status, content, not response.will_close)

    def conclude(self, conn: Connection, method: str, endpoint: str, error: Exception | None, status: int,
                 content: bytes, reusable: bool) -> dict[str, Any]:
        """An answer read whole (or its failure), however it was read: dhanhq's answer shape; the
        connection given back when the server keeps it, else closed (after any failure too)."""
        if error is not None:
            conn.close()
            log.debug("%s %s failed: %s", method, endpoint, error)
            return no_answer(error)
        if reusable:
            self.connections.give_back(conn)
        else:
            conn.close()
        return answer_from(status, content)


class ProxiedTransport:
    """The same calls through `requests`, where the environment routes the base URL through a
    proxy (requests speaks to proxies: CONNECT for https, NO_PROXY, credentials in the proxy URL).
    One requests session per thread, as a session is not documented as safe to share."""

    def __init__(self, base_url: str, timeout: float, client_id: str, access_token: str) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.client_id = client_id
        self.access_token = access_token
        try:
            _headers("", client_id, access_token)
            self._refusal = ""
        except ValueError as exc:  # refused at each call, as Transport refuses it
            self._refusal = str(exc)
        self._headers = {"access-token": access_token, "client-id": client_id,
                         "Content-type": "application/json", "Accept": "application/json"}
        self.proxies = requests.utils.get_environ_proxies(self.base_url)
        self._verify: str | bool = _ca_bundle_from_env() or True
        self._local = threading.local()

    def session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
            # read once here: requests would otherwise re-read the environment and ~/.netrc per call
            session.trust_env = False
            session.proxies.update(self.proxies)
            session.verify = self._verify
        return session

    def call(self, method: str, endpoint: str, payload: dict[str, Any] | None = None) -> dict[str, Any]:
        if self._refusal:
            raise ValueError(self._refusal)
        body = _body(self.client_id, payload) or None
        try:
            response = self.session().request(method, self.base_url + endpoint, data=body, headers=self._headers,
                                              timeout=self.timeout)
            status, content = response.status_code, response.content
        except Exception as exc:
            log.debug("%s %s failed: %s", method, endpoint, exc)
            return no_answer(exc)
        return answer_from(status, content)


AnyTransport = Union[Transport, ProxiedTransport]


class DhanHTTPOver(DhanHTTP):
    """dhanhq's HTTP object, sending through `transport`: every dhanhq call goes through
    DhanHTTP's public get/post/put/delete, so dhanhq keeps building the calls the gateway does
    not send itself, and their answers carry the HTTP status too."""

    def __init__(self, transport: AnyTransport) -> None:
        super().__init__(transport.client_id, transport.access_token)
        self.base_url = transport.base_url
        self.timeout = transport.timeout
        self.transport = transport

    def get(self, endpoint: str) -> dict[str, Any]:
        return self.transport.call("GET", endpoint)

    def post(self, endpoint: str, payload: dict[str, Any]) -> dict[str, Any]:
        return self.transport.call("POST", endpoint, payload)

    def put(self, endpoint: str, payload: dict[str, Any]) -> dict[str, Any]:
        return self.transport.call("PUT", endpoint, payload)

    def delete(self, endpoint: str) -> dict[str, Any]:
        return self.transport.call("DELETE", endpoint)


def connections_for(base_url: str, timeout: float) -> Connections | None:
    """The account's kept-alive connections, or None when the environment proxies `base_url`."""
    if requests.utils.get_environ_proxies(base_url):
        return None
    return Connections(base_url, timeout)


def transport_for(client_id: str, access_token: str, base_url: str, timeout: float,
                  connections: Connections | None = None) -> AnyTransport:
    """The transport for one client id and token: over the account's `connections` (from
    connections_for when not given), or through requests where a proxy applies."""
    connections = connections or connections_for(base_url, timeout)
    if connections is not None:
        return Transport(connections, client_id, access_token)
    return ProxiedTransport(base_url, timeout, client_id, access_token)
