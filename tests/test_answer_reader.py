"""One thread reads every placement's answer (broker/answers.py) and every other broker call runs
on one shared pool (actors/broker_threads.py). Against a raw local server, over plain TCP and TLS:
an answer arriving in parts is read part by part while another account's answer is read in
between; an answer already there when it is watched is read; one that stops arriving is a lost
answer after the transport's timeout. And the pool: one account's calls start in their order,
at most its cap at once, while another account's run."""
from __future__ import annotations

import queue
import select
import socket
import ssl
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
import trustme

from actors.broker_threads import BrokerThreads
from broker.answers import AnswerReader
from broker.errors import ErrorKind, classify
from broker.order_client import OrderClient
from broker.transport import HTTP_STATUS, transport_for
from tests.conftest import RELIANCE, wait_until
from trading.orders import OrderTerms, OrderType, Product, Side, Validity

TERMS = OrderTerms(RELIANCE, "NSE_EQ", Side.BUY, Product.INTRADAY, OrderType.LIMIT, Validity.DAY, 2, 1500.0)


def _answer(order_id: str) -> tuple[bytes, bytes]:
    """An answer's head and body."""
    body = b'{"orderId": "%s", "orderStatus": "PENDING"}' % order_id.encode()
    return b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body), body


class _RawServer:
    """Accepts connections (TLS when given a context) and hands each to the test, which reads
    the requests and writes the answers byte by byte as it pleases."""

    def __init__(self, context: ssl.SSLContext | None) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.context = context
        self.accepted: queue.Queue[socket.socket] = queue.Queue()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        scheme = "https" if self.context else "http"
        return f"{scheme}://127.0.0.1:{self.listener.getsockname()[1]}/v2"

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            if self.context is not None:
                try:
                    sock = self.context.wrap_socket(sock, server_side=True)
                except (OSError, ssl.SSLError):
                    continue
            self.accepted.put(sock)

    def connection(self) -> socket.socket:
        sock = self.accepted.get(timeout=5)
        sock.settimeout(5)
        return sock

    def close(self) -> None:
        self.listener.close()


def read_request(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length")))
    while len(body) < length:
        body += sock.recv(65536)
    return head + b"\r\n\r\n" + body


@pytest.fixture(params=["tcp", "tls"])
def server(request, tmp_path: Path, monkeypatch) -> Iterator[_RawServer]:
    for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    context = None
    if request.param == "tls":
        ca = trustme.CA()
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert("127.0.0.1").configure_cert(context)
        bundle = tmp_path / "ca.pem"
        ca.cert_pem.write_to_path(str(bundle))
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(bundle))
    srv = _RawServer(context)
    yield srv
    srv.close()


@pytest.fixture
def reader() -> Iterator[AnswerReader]:
    answers = AnswerReader()
    yield answers
    answers.stop()


def _client(url: str, timeout: float = 5.0) -> OrderClient:
    return OrderClient(transport_for("1000000002", "secret-token", url, timeout))


def _send(client: OrderClient, server: _RawServer, correlation_id: str):
    """A placement sent on a new connection; the server's end of it, its request read."""
    pending = client.send_place(TERMS, correlation_id, client.transport.connections.take())
    end = server.connection()
    assert correlation_id.encode() in read_request(end)
    return pending, end


def test_an_answer_arriving_in_parts_is_read_as_it_arrives_while_another_accounts_answer_is_read(server, reader):
    slow, quick = _client(server.url), _client(server.url)  # two accounts
    slow_answers: queue.Queue[dict[str, Any]] = queue.Queue()
    quick_answers: queue.Queue[dict[str, Any]] = queue.Queue()
    slow_pending, slow_end = _send(slow, server, "CTSLOW")
    quick_pending, quick_end = _send(quick, server, "CTQUICK")
    reader.watch(slow_pending, slow_answers.put)
    reader.watch(quick_pending, quick_answers.put)

    head, body = _answer("111")
    slow_end.sendall(head + body[:10])  # part of the slow account's answer, then nothing for a while
    started = time.monotonic()
    quick_end.sendall(b"".join(_answer("222")))
    answer = quick_answers.get(timeout=3)
    assert time.monotonic() - started < 1.0  # not held up behind the part (the timeout is 5 s)
    assert answer["status"] == "success" and answer["data"]["orderId"] == "222" and answer[HTTP_STATUS] == 200
    assert slow_answers.empty()

    slow_end.sendall(body[10:])
    answer = slow_answers.get(timeout=3)
    assert answer["status"] == "success" and answer["data"]["orderId"] == "111"
    # both connections kept alive, given back in blocking mode for the account's next call
    for client in (slow, quick):
        conn = client.transport.connections.take(open_only=True)
        assert conn is not None and conn.sock.gettimeout() == 5.0
    assert reader.in_flight() == 0


def test_an_answer_that_arrived_before_it_was_watched_is_read(server, reader):
    client = _client(server.url)
    answers: queue.Queue[dict[str, Any]] = queue.Queue()
    pending, end = _send(client, server, "CTEARLY")
    end.sendall(b"".join(_answer("333")))
    assert select.select([pending.socket()], [], [], 5)[0]  # arrived, not read yet
    reader.watch(pending, answers.put)
    answer = answers.get(timeout=3)
    assert answer["status"] == "success" and answer["data"]["orderId"] == "333"


def test_an_answer_that_stops_arriving_is_lost_after_the_timeout_from_its_last_byte(server, reader):
    client = _client(server.url, timeout=0.5)
    answers: queue.Queue[dict[str, Any]] = queue.Queue()
    pending, end = _send(client, server, "CTLOST")
    reader.watch(pending, answers.put)
    head, body = _answer("444")
    with pytest.raises(queue.Empty):  # nothing answered before the first byte; part of the timeout gone
        answers.get(timeout=0.3)
    end.sendall(head)
    parted = time.monotonic()
    answer = answers.get(timeout=5)
    waited = time.monotonic() - parted
    assert 0.45 <= waited < 2.0, waited  # the timeout ran from the last byte
    error = classify(answer["remarks"], answer.get(HTTP_STATUS))
    assert answer["status"] == "failure" and error.kind == ErrorKind.NETWORK and error.outcome_unknown
    assert client.transport.connections.take(open_only=True) is None  # closed, never reused
    assert end.recv(1) == b""  # the server sees the close


def test_one_accounts_calls_start_in_order_within_its_cap_while_another_accounts_run():
    threads = BrokerThreads(size=4, per_account=2, name="broker-test")
    hung, other = threads.lane("hung"), threads.lane("other")
    release = threading.Event()
    started: list[int] = []
    done = queue.Queue()

    def hang(i: int) -> None:
        started.append(i)
        release.wait(10)

    try:
        for i in range(6):
            assert threads.submit(hung, lambda i=i: hang(i))
        for i in range(10):
            assert threads.submit(other, lambda i=i: done.put(i))
        assert sorted(done.get(timeout=3) for _ in range(10)) == list(range(10))
        assert started == [0, 1]  # the hung account holds its cap, no more
        release.set()
        wait_until(lambda: len(started) == 6, 3, message="the hung account's other calls started")
        assert started == list(range(6))  # in the order they were submitted
        assert threads.thread_count() <= 4
        threads.close_lane(hung)
        assert not threads.submit(hung, lambda: None)
    finally:
        release.set()
        threads.stop()
