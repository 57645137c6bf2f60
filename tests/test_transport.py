"""The gateway's HTTP transport (broker/transport.py) against small local servers: a kept-alive
connection the server dropped is reopened, not reported as a failure; a server that does not
answer, or is not there, is a network error after the timeout; a proxied URL keeps requests; a
request leaves in one write."""
from __future__ import annotations

import json
import os
import select
import socket
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterator

import pytest
import trustme

from broker.errors import ErrorKind
from broker.gateway import DhanGateway
from broker import transport
from broker.transport import ProxiedTransport, Transport, transport_for
from paper import AccountSpec, PaperExchange
from tests.conftest import RELIANCE, answer_of, wait_until
from trading.orders import OrderTerms, OrderType, Product, Side, Validity


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as Dhan's API
    server: "_Server"

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self.server.requests.append((self.path, dict(self.headers)))
        if self.server.hang.is_set():
            self.server.release.wait(5)
            return
        body = json.dumps({"availabelBalance": 1000.0, "connection": self.server.connections}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.requests.append((self.path, json.loads(body)))
        answer = json.dumps({"orderId": "42", "orderStatus": "PENDING"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def setup(self) -> None:
        super().setup()
        self.server.connections += 1
        self.server.sockets.append(self.request)

    def log_message(self, *args: Any) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.sockets: list[socket.socket] = []
        self.connections = 0
        self.hang = threading.Event()
        self.release = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v2"

    def drop_connections(self) -> None:
        """What a server does to an idle keep-alive connection: closes it."""
        for sock in self.sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


@pytest.fixture
def server() -> Iterator[_Server]:
    srv = _Server()
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.release.set()
    srv.shutdown()
    srv.server_close()


def test_calls_reuse_one_connection_and_reopen_it_after_the_server_dropped_it(server, monkeypatch):
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(transport, "CHECK_AFTER_IDLE_SECONDS", 0.0)  # a server that drops at once
    gateway = DhanGateway("f1", "1000000002", "secret-token", server.url, timeout=2.0)

    first, second = gateway.fund_limit(), gateway.fund_limit()
    assert first.ok and second.ok
    assert server.connections == 1  # kept alive
    path, headers = server.requests[0]
    assert path == "/v2/fundlimit" and headers["access-token"] == "secret-token"
    assert headers["client-id"] == "1000000002"

    server.drop_connections()
    sock = gateway._connections._idle[0].sock  # the idle kept-alive connection
    wait_until(lambda: select.select([sock], [], [], 0)[0], 5, message="the server's close arrived")
    third = gateway.fund_limit()  # must notice the close itself, not fail and leave it to a retry
    assert third.ok, third.error
    assert server.connections == 2


def test_a_server_that_does_not_answer_is_a_network_error_after_the_timeout(server, monkeypatch):
    monkeypatch.delenv("HTTP_PROXY", raising=False)
    monkeypatch.delenv("http_proxy", raising=False)
    gateway = DhanGateway("f1", "1000000002", "secret-token", server.url, timeout=0.3)
    server.hang.set()
    answer = gateway.fund_limit()
    assert not answer.ok
    assert answer.error.kind == ErrorKind.NETWORK and answer.error.transient
    server.hang.clear()
    server.release.set()
    assert gateway.fund_limit().ok  # the timed-out connection was discarded, the next call works


def test_no_server_is_a_network_error():
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    gateway = DhanGateway("f1", "1000000002", "secret-token", f"http://127.0.0.1:{port}/v2", timeout=1.0)
    answer = gateway.fund_limit()
    assert not answer.ok and answer.error.kind == ErrorKind.NETWORK
    assert "secret-token" not in str(answer.error)


def test_a_proxied_url_keeps_requests_with_the_proxy(monkeypatch):
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    proxied = transport_for("1000000002", "t", "https://api.dhan.co/v2", 5.0)
    assert isinstance(proxied, ProxiedTransport)
    assert proxied.session().proxies["https"] == "http://proxy.internal:3128"
    assert proxied.base_url == "https://api.dhan.co/v2" and proxied.timeout == 5.0

    monkeypatch.setenv("NO_PROXY", "api.dhan.co")
    assert isinstance(transport_for("1000000002", "t", "https://api.dhan.co/v2", 5.0), Transport)


def test_a_placement_sent_on_one_thread_is_answered_on_another_and_placed_once(monkeypatch):
    """The fan-out path (RateLimiter._dispatch): send_place on the order actor's thread, the
    answer read by the answer reader. Cold (no open connection) it declines, so a connect never
    holds up the sender; warm, the order exists once, under its correlation id."""
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    ex = PaperExchange(seed=3, price_walk=False, session="open").start()
    try:
        ex.add_account(AccountSpec("1100000002", "follower-secret-token", 5_000_000))
        gateway = DhanGateway("f1", "1100000002", "follower-secret-token", ex.rest_url, timeout=5.0)
        terms = OrderTerms(RELIANCE, "NSE_EQ", Side.BUY, Product.INTRADAY, OrderType.LIMIT, Validity.DAY,
                           quantity=3, price=1000.0)
        assert gateway.send_place(terms, "CTSPLIT000000000000000001") is None  # cold: declined
        assert gateway.fund_limit().ok  # opens the connection, kept alive

        sent = gateway.send_place(terms, "CTSPLIT000000000000000001")
        assert sent is not None
        answer = answer_of(sent)
        assert answer.ok, answer
        order_id = answer.data["orderId"]
        book = [o for o in ex.orders("1100000002") if o["correlationId"] == "CTSPLIT000000000000000001"]
        assert [o["orderId"] for o in book] == [order_id]
        assert book[0]["quantity"] == 3 and book[0]["price"] == 1000.0 and book[0]["validity"] == "DAY"
        assert gateway.fund_limit().ok  # the connection went back to the account's idle set
    finally:
        ex.stop()


def test_https_is_verified_against_the_configured_ca_and_kept_alive(monkeypatch, tmp_path):
    """Live mode talks HTTPS: the transport verifies the server against the CA bundle (certifi's,
    or REQUESTS_CA_BUNDLE as with requests), keeps the TLS connection, and refuses a server its
    bundle does not trust."""
    ca = trustme.CA()
    srv = _Server()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    srv.socket = server_context.wrap_socket(srv.socket, server_side=True)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        url = f"https://127.0.0.1:{srv.server_address[1]}/v2"
        for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
            monkeypatch.delenv(name, raising=False)
        bundle = tmp_path / "ca.pem"
        ca.cert_pem.write_to_path(str(bundle))

        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(bundle))
        trusted = DhanGateway("f1", "1000000002", "secret-token", url, timeout=2.0)
        assert trusted.fund_limit().ok
        terms = OrderTerms(RELIANCE, "NSE_EQ", Side.SELL, Product.CNC, OrderType.LIMIT, Validity.DAY,
                           quantity=2, price=1500.5)
        placed = trusted.place(terms, "CTTLS0000000000000000001")  # a POST: headers and body in one write
        assert placed.ok and placed.data == {"orderId": "42", "orderStatus": "PENDING"}
        assert srv.connections == 1
        path, body = srv.requests[-1]
        assert path == "/v2/orders" and body["correlationId"] == "CTTLS0000000000000000001"
        assert body["price"] == 1500.5 and body["transactionType"] == "SELL" and body["productType"] == "CNC"

        monkeypatch.delenv("REQUESTS_CA_BUNDLE")  # certifi's public roots do not know this CA
        untrusted = DhanGateway("f1", "1000000002", "secret-token", url, timeout=2.0)
        answer = untrusted.fund_limit()
        assert not answer.ok and answer.error.kind == ErrorKind.NETWORK
        assert "CERTIFICATE_VERIFY_FAILED" in answer.error.message
        assert len(srv.requests) == 2  # the refused client's request never reached the server
    finally:
        srv.release.set()
        srv.shutdown()
        srv.server_close()


class _CountingSocket:
    """A connection's socket, with the writes made on it counted."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.writes: list[bytes] = []

    def sendall(self, data: bytes) -> None:
        self.writes.append(bytes(data))
        self.sock.sendall(data)

    def send(self, data: bytes) -> int:
        self.writes.append(bytes(data))
        return self.sock.send(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.sock, name)


def test_a_request_leaves_in_one_write_headers_and_body_together(server, monkeypatch):
    """Every socket call gives up the GIL; a fan-out of placements sent on one thread must not
    wait to get it back twice per follower."""
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    gateway = DhanGateway("f1", "1000000002", "secret-token", server.url, timeout=2.0)
    assert gateway.fund_limit().ok  # opens the connection, kept alive
    conn = gateway._connections._idle[0]
    counting = conn.sock = _CountingSocket(conn.sock)
    terms = OrderTerms(RELIANCE, "NSE_EQ", Side.BUY, Product.INTRADAY, OrderType.LIMIT, Validity.DAY,
                       quantity=2, price=1500.5)

    assert gateway.place(terms, "CTONEWRITE00000000000001").ok
    sent = gateway.send_place(terms, "CTONEWRITE00000000000002")
    assert sent is not None and answer_of(sent).ok
    assert len(counting.writes) == 2  # two placements, one write each
    for write, correlation_id in zip(counting.writes, ("CTONEWRITE00000000000001", "CTONEWRITE00000000000002")):
        head, _, body = write.partition(b"\r\n\r\n")
        assert head.startswith(b"POST /v2/orders HTTP/1.1\r\n")
        assert json.loads(body)["correlationId"] == correlation_id
    assert server.connections == 1


def test_a_renewed_token_is_sent_on_the_same_connection(server, monkeypatch):
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    gateway = DhanGateway("f1", "1000000002", "old-secret-token", server.url, timeout=2.0)
    assert gateway.fund_limit().ok
    gateway.set_token("new-secret-token")
    assert gateway.fund_limit().ok and gateway.order_book().ok
    assert [headers["access-token"] for _, headers in server.requests] == ["old-secret-token"] + ["new-secret-token"] * 2
    assert server.connections == 1


def test_a_token_with_a_line_break_is_refused_before_anything_is_sent(server, monkeypatch):
    """A token pasted with its line break must not end the header early: each call is refused,
    as an input error, without the token in the message, and nothing reaches the server."""
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    gateway = DhanGateway("f1", "1000000002", "secret-token\r\nX-Injected: 1", server.url, timeout=2.0)
    terms = OrderTerms(RELIANCE, "NSE_EQ", Side.BUY, Product.INTRADAY, OrderType.LIMIT, Validity.DAY, 1, 1500.0)
    for answer in (gateway.fund_limit(), gateway.place(terms, "CTBADTOKEN00000000000001")):
        assert not answer.ok and answer.error.kind == ErrorKind.INPUT
        assert "secret-token" not in str(answer.error) and "line break" in str(answer.error)
    assert server.requests == []


def test_a_kept_alive_connection_is_checked_in_a_process_with_over_a_thousand_open_files(server, monkeypatch):
    """A copier with hundreds of followers holds well over 1,024 descriptors (sockets, threads'
    files); checking an idle connection must not depend on its descriptor's number."""
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(transport, "CHECK_AFTER_IDLE_SECONDS", 0.0)
    held = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]  # what many followers hold
    try:
        gateway = DhanGateway("f1", "1000000002", "secret-token", server.url, timeout=2.0)
        first = gateway.fund_limit()  # its connection's descriptor is above 1,024
        assert first.ok, first.error
        assert gateway._connections._idle[0].sock.fileno() > 1024
        second = gateway.fund_limit()  # the idle connection is checked before it is reused
        assert second.ok, second.error
        assert server.connections == 1
    finally:
        for fd in held:
            os.close(fd)


# -- an answer read without http.client: the same as http.client reads it, or left to it -------------------
def _by_http_client(data: bytes, method: str = "POST") -> tuple[int, bytes, bool] | None:
    """(status, body, connection kept) as http.client reads `data`; None when it refuses it."""
    replayed = transport._Replayed(data)
    response = transport.http.client.HTTPResponse(replayed, method=method)  # type: ignore[arg-type]
    try:
        response.begin()
        body = response.read()
    except Exception:  # noqa: BLE001 - refused: what the fast path must leave to it
        return None
    return response.status, body, not response.will_close and replayed.file.tell() == len(data)


BODY = b'{"orderId":"1","orderStatus":"PENDING"}'
ANSWERS = {
    "plain": (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 39\r\n\r\n" + BODY, True),
    "an error status": (b"HTTP/1.1 400 Bad Request\r\ncontent-length: 39\r\n\r\n" + BODY, True),
    "no reason phrase": (b"HTTP/1.1 200\r\nContent-Length: 39\r\n\r\n" + BODY, True),
    "after a 100 Continue": (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 39\r\n\r\n" + BODY,
                             True),
    "the server closes": (b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 39\r\n\r\n" + BODY, False),
    "HTTP/1.0": (b"HTTP/1.0 200 OK\r\nContent-Length: 39\r\n\r\n" + BODY, False),
    "chunked": (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n27\r\n" + BODY + b"\r\n0\r\n\r\n", False),
    "read to the close": (b"HTTP/1.1 200 OK\r\n\r\n" + BODY, False),
    "bytes after the answer": (b"HTTP/1.1 200 OK\r\nContent-Length: 39\r\n\r\n" + BODY + b"HTTP/1.1", False),
    "a short body": (b"HTTP/1.1 200 OK\r\nContent-Length: 40\r\n\r\n" + BODY, False),
    "a negative length": (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n" + BODY, False),
    "no content": (b"HTTP/1.1 204 No Content\r\n\r\n", False),
    "not HTTP": (b"SSH-2.0-OpenSSH\r\n\r\n", False),
    "a bad status": (b"HTTP/1.1 abc OK\r\nContent-Length: 39\r\n\r\n" + BODY, False),
}


@pytest.mark.parametrize("name", ANSWERS)
def test_an_answer_read_without_http_client_reads_as_http_client_reads_it_or_is_left_to_it(name: str):
    data, plain = ANSWERS[name]
    fast = transport._plain_answer(data, "POST")
    assert (fast is not None) == plain
    if fast is not None:
        assert (*fast, True) == _by_http_client(data)
