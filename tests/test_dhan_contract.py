"""The broker adapter depends on no library's private members, and the order calls it sends itself
are the ones `dhanhq` would send.

The gateway sends placing, modifying, cancelling and reading orders itself (broker/order_client.py,
over broker/transport.py) and leaves every other call to `dhanhq`. Here each of those requests is
held against the request `dhanhq`, with its own `requests` transport, sends for the same call to
the same recording server: method, path, headers and body; and each kind of answer (Dhan's error
body, a 5xx without an error code, a page that is not JSON, a timeout, a refused connection) is
read as `dhanhq` reads it, with the HTTP status it drops kept beside. An upgrade of `dhanhq` that
changes what it sends fails here, not in a trading session.
"""
from __future__ import annotations

import ast
import importlib
import inspect
import json
import pkgutil
import queue
import socket
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
from dhanhq import DhanContext, dhanhq
from dhanhq.dhan_http import DhanHTTP

import broker
from broker.answers import AnswerReader
from broker.errors import ErrorKind, classify
from broker.gateway import DhanGateway
from broker.order_client import OrderClient
from broker.parsing import place_body
from broker.transport import HTTP_STATUS, transport_for
from paper import AccountSpec, PaperExchange
from tests.conftest import RELIANCE, answer_of
from trading.orders import Leg, OrderTerms, OrderType, Product, Side, Validity

FOLLOWER, TOKEN = "1300000001", "follower-secret-token-0013"
BROKER_DIR = Path(broker.__file__).parent


def _broker_modules() -> list:
    return [importlib.import_module(f"broker.{info.name}") for info in pkgutil.iter_modules([str(BROKER_DIR)])]


def _project_class(cls: type) -> bool:
    return cls.__module__.split(".")[0] in ("broker", "trading", "app", "actors", "storage", "supervisors")


def test_no_broker_class_overrides_a_private_method_of_a_library():
    overridden = []
    for module in _broker_modules():
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ != module.__name__:
                continue
            for name in vars(cls):
                if not name.startswith("_") or name.startswith("__") or name.endswith("_"):
                    continue  # public, dunder, or a sunder name (enum's own hooks)
                owners = [base for base in cls.__mro__[1:] if not _project_class(base) and name in vars(base)]
                overridden += [f"{cls.__qualname__}.{name} overrides {base.__module__}.{base.__qualname__}"
                               for base in owners]
    assert overridden == []


# Documented API despite the underscore (namedtuple's), not a library's internals.
DOCUMENTED_UNDERSCORE_NAMES = frozenset({"_replace", "_asdict", "_fields", "_make", "_field_defaults"})


def test_the_broker_adapter_reads_no_private_member_of_a_library():
    """A `._name` the broker package reads must be one it defines itself."""
    trees = {path.name: ast.parse(path.read_text()) for path in BROKER_DIR.glob("*.py")}
    defined = set()
    for tree in trees.values():
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                defined.add(node.name)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                defined.add(node.id)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                defined.add(node.attr)
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                defined.add(node.target.id)
    foreign = []
    for file, tree in trees.items():
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Attribute):
                names = [node.attr]
            elif isinstance(node, ast.ImportFrom) and not (node.module or "").startswith(("broker", "trading")):
                names = [alias.name for alias in node.names]
            foreign += [f"{file}:{node.lineno} {name}" for name in names
                        if name.startswith("_") and not name.startswith("__") and not name.endswith("_")
                        and name not in defined and name not in DOCUMENTED_UNDERSCORE_NAMES]
    assert foreign == []


def test_order_calls_work_with_a_dhanhq_whose_private_methods_changed(monkeypatch):
    """A later dhanhq that renames its internals (its request sender and answer parser) leaves
    placements, lookups, modifications, cancellations and the calls left to dhanhq working."""
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delattr(DhanHTTP, "_send_request")
    monkeypatch.delattr(DhanHTTP, "_parse_response")
    ex = PaperExchange(seed=3, price_walk=False, session="open").start()
    try:
        ex.add_account(AccountSpec(FOLLOWER, TOKEN, 5_000_000))
        gateway = DhanGateway("f1", FOLLOWER, TOKEN, ex.rest_url, timeout=5.0)
        terms = OrderTerms(RELIANCE, "NSE_EQ", Side.BUY, Product.INTRADAY, OrderType.LIMIT, Validity.DAY,
                           quantity=2, price=1300.0)

        placed = gateway.place(terms, "CTUPGRADE000000000000001")
        assert placed.ok, placed.error
        assert [o["correlationId"] for o in ex.orders(FOLLOWER)] == ["CTUPGRADE000000000000001"]
        order_id = placed.data["orderId"]
        assert gateway.fund_limit().ok  # left to dhanhq
        sent = gateway.send_place(terms, "CTUPGRADE000000000000002")
        assert sent is not None and answer_of(sent).ok
        assert gateway.order_by_correlation("CTUPGRADE000000000000002").data.correlation_id == \
            "CTUPGRADE000000000000002"
        assert gateway.modify(order_id, terms.with_changes(price=1301.0)).ok
        assert gateway.order(order_id).data.terms.price == 1301.0
        assert gateway.cancel(order_id).ok
        assert {o["orderId"]: o["orderStatus"] for o in ex.orders(FOLLOWER)}[order_id] == "CANCELLED"
        assert len(gateway.order_book().data.entries) == 2
    finally:
        ex.stop()


# -- the contract: the same requests as dhanhq's, the same reading of the answers -----------------
# Headers either client's HTTP library adds on its own; every other header is compared.
TRANSPORT_HEADERS = frozenset({"user-agent", "accept-encoding", "connection"})
PLACED = b'{"orderId": "112111182198", "orderStatus": "PENDING"}'


@dataclass(frozen=True)
class Seen:
    """A request as the server read it."""

    method: str
    path: str
    headers: dict[str, str]  # lower-cased names, without TRANSPORT_HEADERS
    body: bytes


@dataclass
class Script:
    """How the server answers: `status` and `body`, or `mode` hang (no answer), drop (close
    without one), chunked (the body in chunks), close (answer, then close the connection)."""

    status: int = 200
    body: bytes = PLACED
    mode: str = "answer"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as Dhan's API
    server: "_Recorder"

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items() if k.lower() not in TRANSPORT_HEADERS}
        self.server.seen.append(Seen(self.command, self.path, headers, body))
        script = self.server.script
        if script.mode == "hang":
            self.server.release.wait(5)
            self.close_connection = True
            return
        if script.mode == "drop":
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.send_response(script.status)
        self.send_header("Content-Type", "application/json")
        if script.mode == "chunked":
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            half = len(script.body) // 2
            for chunk in (script.body[:half], script.body[half:], b""):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            return
        self.send_header("Content-Length", str(len(script.body)))
        if script.mode == "close":
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(script.body)

    do_GET = do_POST = do_PUT = do_DELETE = _serve

    def setup(self) -> None:
        super().setup()
        self.server.connections += 1

    def log_message(self, *args: Any) -> None:
        pass


class _Recorder(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.seen: list[Seen] = []
        self.script = Script()
        self.connections = 0
        self.release = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v2"


@pytest.fixture
def recorder(monkeypatch) -> Iterator[_Recorder]:
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    server = _Recorder()
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield server
    server.release.set()
    server.shutdown()
    server.server_close()


def _dhanhq(url: str, timeout: float = 2.0) -> dhanhq:
    """dhanhq as it ships: its own `requests` transport."""
    context = DhanContext(FOLLOWER, TOKEN)
    context.get_dhan_http().base_url = url
    context.get_dhan_http().timeout = timeout
    return dhanhq(context)


def _our_client(url: str, timeout: float = 2.0) -> OrderClient:
    return OrderClient(transport_for(FOLLOWER, TOKEN, url, timeout))


def _terms(**changes: Any) -> OrderTerms:
    return OrderTerms(RELIANCE, "NSE_EQ", Side.BUY, Product.INTRADAY, OrderType.LIMIT, Validity.DAY,
                      quantity=3, price=1500.5).with_changes(**changes)


def _send_ahead(client: OrderClient, terms: OrderTerms, correlation_id: str) -> dict[str, Any]:
    """The fan-out's placement: sent on an open connection, its answer read afterwards."""
    transport = client.transport
    conn = transport.connections.take()
    transport.connections.open(conn)
    return client.send_place(terms, correlation_id, conn).finish()


# (name, our call, dhanhq's call as the gateway made it before it sent these itself)
Call = tuple[str, Callable[[OrderClient], Any], Callable[[dhanhq], Any]]
CALLS: list[Call] = [
    ("place a limit order",
     lambda c: c.place(_terms(), "CTCONTRACT01"),
     lambda d: d.place_order(**place_body(_terms(), "CTCONTRACT01"))),
    ("place a market order (no price sent)",
     lambda c: c.place(_terms(side=Side.SELL, product=Product.CNC, order_type=OrderType.MARKET,
                              validity=Validity.IOC), "CTCONTRACT02"),
     lambda d: d.place_order(**place_body(_terms(side=Side.SELL, product=Product.CNC, order_type=OrderType.MARKET,
                                                 validity=Validity.IOC), "CTCONTRACT02"))),
    ("place a stop-loss order with a disclosed quantity",
     lambda c: c.place(_terms(order_type=OrderType.STOP_LOSS, trigger_price=1490.25, disclosed_qty=1,
                              product=Product.MARGIN, exchange_segment="nse_fno"), "CTCONTRACT03"),
     lambda d: d.place_order(**place_body(_terms(order_type=OrderType.STOP_LOSS, trigger_price=1490.25,
                                                 disclosed_qty=1, product=Product.MARGIN,
                                                 exchange_segment="nse_fno"), "CTCONTRACT03"))),
    ("place a stop-loss market order",
     lambda c: c.place(_terms(order_type=OrderType.STOP_LOSS_MARKET, trigger_price=1490), "CTCONTRACT04"),
     lambda d: d.place_order(**place_body(_terms(order_type=OrderType.STOP_LOSS_MARKET, trigger_price=1490),
                                          "CTCONTRACT04"))),
    ("place an after-market order",
     lambda c: c.place(_terms(amo=True, amo_time="OPEN_30"), "CTCONTRACT05"),
     lambda d: d.place_order(**place_body(_terms(amo=True, amo_time="OPEN_30"), "CTCONTRACT05"))),
    ("place an after-market order at the open by default",
     lambda c: c.place(_terms(amo=True), "CTCONTRACT06"),
     lambda d: d.place_order(**place_body(_terms(amo=True), "CTCONTRACT06"))),
    ("send a placement ahead of its answer",
     lambda c: _send_ahead(c, _terms(quantity=7), "CTCONTRACT07"),
     lambda d: d.place_order(**place_body(_terms(quantity=7), "CTCONTRACT07"))),
    ("modify an order",
     lambda c: c.modify("112111182198", _terms(quantity=5, price=1499.95)),
     lambda d: d.modify_order("112111182198", "LIMIT", "", 5, 1499.95, 0.0, 0, "DAY")),
    ("modify a stop-loss order",
     lambda c: c.modify("112111182198", _terms(order_type=OrderType.STOP_LOSS, trigger_price=1490.5,
                                                validity=Validity.IOC, disclosed_qty=2)),
     lambda d: d.modify_order("112111182198", "STOP_LOSS", "", 3, 1500.5, 1490.5, 2, "IOC")),
    ("cancel an order", lambda c: c.cancel("112111182198"), lambda d: d.cancel_order("112111182198")),
    ("read an order", lambda c: c.order("112111182198"), lambda d: d.get_order_by_id("112111182198")),
    ("look an order up by correlation id",
     lambda c: c.order_by_correlation("CTCONTRACT01"), lambda d: d.get_order_by_correlationID("CTCONTRACT01")),
    ("read the order book", lambda c: c.order_book(), lambda d: d.get_order_list()),
    ("place a super order",
     lambda c: c.place(_super(), "CTCONTRACT08"),
     lambda d: d.place_super_order(RELIANCE, "NSE_EQ", "BUY", 3, "LIMIT", "INTRADAY", 1500.5, 1550.0, 1480.0, 1.5,
                                   tag="CTCONTRACT08")),
    ("place a super order with a market entry (sent with the price it was asked at)",
     lambda c: c.place(_super(order_type=OrderType.MARKET, trailing_jump=0.0), "CTCONTRACT09"),
     lambda d: d.place_super_order(RELIANCE, "NSE_EQ", "BUY", 3, "MARKET", "INTRADAY", 1500.5, 1550.0, 1480.0,
                                   tag="CTCONTRACT09")),
    ("send a super order's placement ahead of its answer",
     lambda c: _send_ahead(c, _super(quantity=7), "CTCONTRACT10"),
     lambda d: d.place_super_order(RELIANCE, "NSE_EQ", "BUY", 7, "LIMIT", "INTRADAY", 1500.5, 1550.0, 1480.0, 1.5,
                                   tag="CTCONTRACT10")),
    ("modify a super order's entry",
     lambda c: c.modify_super("112111182198", Leg.ENTRY, _super(quantity=5, price=1499.95)),
     lambda d: d.modify_super_order("112111182198", "LIMIT", "ENTRY_LEG", 5, 1499.95, 1550.0, 1480.0, 1.5)),
    ("modify a super order's target",
     lambda c: c.modify_super("112111182198", Leg.TARGET, _super(target_price=1560.0)),
     lambda d: d.modify_super_order("112111182198", "LIMIT", "TARGET_LEG", targetPrice=1560.0)),
    ("modify a super order's stop-loss and trailing jump",
     lambda c: c.modify_super("112111182198", Leg.STOP_LOSS, _super(stop_loss_price=1470.0, trailing_jump=2.0)),
     lambda d: d.modify_super_order("112111182198", "LIMIT", "STOP_LOSS_LEG", stopLossPrice=1470.0, trailingJump=2.0)),
    ("cancel a super order", lambda c: c.cancel_super("112111182198", Leg.ENTRY),
     lambda d: d.cancel_super_order("112111182198", "ENTRY_LEG")),
    ("cancel a super order's target leg", lambda c: c.cancel_super("112111182198", Leg.TARGET),
     lambda d: d.cancel_super_order("112111182198", "TARGET_LEG")),
    ("read the super orders", lambda c: c.super_orders(), lambda d: d.get_super_order_list()),
]


def _super(**changes: Any) -> OrderTerms:
    return _terms(super_order=True, target_price=1550.0, stop_loss_price=1480.0, trailing_jump=1.5).with_changes(
        **changes)


@pytest.mark.parametrize("name, ours, theirs", CALLS, ids=[call[0] for call in CALLS])
def test_each_order_call_sends_what_dhanhq_sends(recorder, name, ours, theirs):
    theirs(_dhanhq(recorder.url))
    ours(_our_client(recorder.url))
    expected, sent = recorder.seen
    assert (sent.method, sent.path) == (expected.method, expected.path)
    assert sent.headers == expected.headers  # the token, the client id, content type, host, length
    assert sent.body == expected.body  # byte for byte: the same fields, values, types and order
    if sent.body:
        assert json.loads(sent.body)["dhanClientId"] == FOLLOWER


def test_an_after_market_time_dhan_does_not_take_is_refused_before_sending(recorder):
    terms = _terms(amo=True, amo_time="CLOSE")
    with pytest.raises(Exception, match="amo_time"):
        _dhanhq(recorder.url).place_order(**place_body(terms, "CTCONTRACT08"))
    with pytest.raises(ValueError, match="amo_time"):
        _our_client(recorder.url).place(terms, "CTCONTRACT08")
    assert recorder.seen == []


ANSWERS = [  # (what the server answers, its HTTP status, ...)
    ("a placement accepted", Script(200, PLACED)),
    ("the order book", Script(200, b'[{"orderId": "1", "orderStatus": "TRADED"}, {"orderId": "2"}]')),
    ("an answer in chunks", Script(200, PLACED, mode="chunked")),
    ("an answer before the server closes", Script(200, PLACED, mode="close")),
    ("a refusal Dhan named", Script(400, b'{"errorType": "Order_Error", "errorCode": "DH-906", '
                                         b'"errorMessage": "Insufficient margin"}')),
    ("Dhan failing with its code", Script(500, b'{"errorType": "Server_Error", "errorCode": "DH-908", '
                                               b'"errorMessage": "internal error"}')),
    ("an unknown correlation id", Script(404, b'{"errorType": "Input_Exception", "errorCode": "DH-905", '
                                              b'"errorMessage": "no order for the correlation id"}')),
    ("a 5xx without an error code", Script(502, b'{"status": "error"}')),
    ("a gateway's page", Script(502, b"<html><body>502 Bad Gateway</body></html>")),
    ("an empty 503", Script(503, b"")),
    ("a rate limit without a body", Script(429, b"")),
    ("a 2xx that is not JSON", Script(200, b"OK")),
    ("a 2xx cut short", Script(200, b'{"orderId": "11211')),
    ("an error body that is not an object", Script(400, b'["bad request"]')),
]


def _read_by_reader(client: OrderClient, terms: OrderTerms, correlation_id: str) -> dict[str, Any]:
    """The fan-out's placement, its answer read as it arrives by the answer reader."""
    transport = client.transport
    conn = transport.connections.take()
    reader, answers = AnswerReader(), queue.Queue()
    try:
        reader.watch(client.send_place(terms, correlation_id, conn), answers.put)
        return answers.get(timeout=10)
    finally:
        reader.stop()


@pytest.mark.parametrize("call", ["place", "place read by the answer reader", "order_by_correlation"])
@pytest.mark.parametrize("name, script", ANSWERS, ids=[a[0] for a in ANSWERS])
def test_each_answer_is_read_as_dhanhq_reads_it_and_keeps_its_http_status(recorder, call, name, script):
    recorder.script = script
    if call.startswith("place"):
        expected = _dhanhq(recorder.url).place_order(**place_body(_terms(), "CTCONTRACT09"))
        client = _our_client(recorder.url)
        answer = (client.place(_terms(), "CTCONTRACT09") if call == "place"
                  else _read_by_reader(client, _terms(), "CTCONTRACT09"))
    else:
        expected = _dhanhq(recorder.url).get_order_by_correlationID("CTCONTRACT09")
        client = _our_client(recorder.url)
        answer = client.order_by_correlation("CTCONTRACT09")
    status = answer.pop(HTTP_STATUS)
    assert answer == expected
    assert status == script.status
    recorder.script = Script()
    assert client.order("112111182198")["status"] == "success"  # the connection, kept or not, still serves


def _failure_of(answer: dict[str, Any]) -> tuple:
    error = classify(answer["remarks"], answer.get(HTTP_STATUS))
    return answer["status"], error.code, error.kind, error.outcome_unknown


@pytest.mark.parametrize("reader", [False, True], ids=["read by the caller", "read by the answer reader"])
@pytest.mark.parametrize("mode", ["hang", "drop"])
def test_no_answer_is_a_failure_whose_outcome_is_unknown_as_with_dhanhq(recorder, mode, reader):
    """A server that does not answer within the timeout, or closes without answering."""
    recorder.script = Script(mode=mode)
    expected = _dhanhq(recorder.url, timeout=0.3).place_order(**place_body(_terms(), "CTCONTRACT10"))
    client = _our_client(recorder.url, timeout=0.3)
    answer = (_read_by_reader(client, _terms(), "CTCONTRACT10") if reader
              else client.place(_terms(), "CTCONTRACT10"))
    assert HTTP_STATUS not in answer
    assert _failure_of(answer) == _failure_of(expected) == ("failure", "TRANSPORT", ErrorKind.NETWORK, True)
    assert answer["remarks"] and TOKEN not in answer["remarks"]
    assert len(recorder.seen) == 2  # each sent once: no retry


def test_a_refused_connection_is_a_failure_whose_outcome_is_unknown_as_with_dhanhq(monkeypatch):
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe.getsockname()[1]}/v2"
    expected = _dhanhq(url).place_order(**place_body(_terms(), "CTCONTRACT11"))
    answer = _our_client(url).place(_terms(), "CTCONTRACT11")
    assert HTTP_STATUS not in answer
    assert _failure_of(answer) == _failure_of(expected) == ("failure", "TRANSPORT", ErrorKind.NETWORK, True)
    assert "refused" in answer["remarks"].lower() and TOKEN not in answer["remarks"]
