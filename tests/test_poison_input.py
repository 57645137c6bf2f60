"""Never stopped by input. Every field of a socket frame or order-book entry is checked at the edge
(type, finite, in range, bounded length; frames over `feed.max_frame_bytes` refused before they
are parsed): a bad one is counted with its reason, logged and dropped, and the copier copies on.
An inbox event that keeps crashing its order actor is parked as a dead letter and the order goes
on with its next events; a supervisor never gives up on a child because of a message it parked.
"""
from __future__ import annotations

import dataclasses
import json
import sqlite3
import subprocess
import sys
import urllib.request
from collections import Counter
from dataclasses import dataclass
from typing import Any

import pykka
import pytest
import yaml

from actors.feed import store_and_route
from actors.messages import LEADER, IsConnected
from broker import parsing
from broker.parsing import MalformedMessage, decode_socket_message, from_order_book, from_socket
from copier.config import ConfigError, parse
from observability import metrics
from storage import models as m
from supervisors import Address, ChildSpec, Escalated, Supervised, Supervisor
from tests.conftest import LEADER_ID, ROOT, client, copier_ready, end_processes, run_command, start_paper_process, wait_until
from tests.frames import DROP, MIB, FrameInjector, bad_frames, order_alert_text
from tests.test_chaos import Control
from trading.orders import OrderUpdate


def _malformed(role: str, reason: str) -> float:
    return metrics.MALFORMED_MESSAGES.labels(role, reason)._value.get()


def _restarts(kind: str) -> float:
    return metrics.ACTOR_RESTARTS.labels(kind)._value.get()


# -- the parser: every field checked ---------------------------------------------------------------
def _socket(**fields: Any):
    data = decode_socket_message(order_alert_text(LEADER_ID, **fields))
    assert data is not None
    return from_socket(data)


SOCKET_CASES = [
    ({"Quantity": "inf"}, "not_finite"),
    ({"Quantity": 1e30}, "out_of_range"),
    ({"Quantity": 10**40}, "out_of_range"),
    ({"Quantity": 10.5}, "out_of_range"),
    ({"Quantity": -5}, "out_of_range"),
    ({"Quantity": 0}, "out_of_range"),
    ({"Quantity": True}, "bad_type"),
    ({"Quantity": [10]}, "bad_type"),
    ({"Quantity": "ten"}, "bad_type"),
    ({"Price": "nan"}, "not_finite"),
    ({"Price": -1}, "out_of_range"),
    ({"Price": 1e12}, "out_of_range"),
    ({"Price": False}, "bad_type"),
    ({"TriggerPrice": {"value": 1}}, "bad_type"),
    ({"AvgTradedPrice": "Infinity"}, "not_finite"),
    ({"TradedPrice": "-inf"}, "not_finite"),
    ({"TradedQty": 1e30}, "out_of_range"),
    ({"TradedQty": -1}, "out_of_range"),
    ({"DiscQuantity": -1}, "out_of_range"),
    ({"LotSize": 2.5}, "out_of_range"),
    ({"Sequence": 10**30}, "out_of_range"),
    ({"Sequence": "soon"}, "bad_type"),
    ({"OrderNo": {"id": 1}}, "bad_type"),
    ({"OrderNo": "1" * 100}, "out_of_range"),
    ({"OrderNo": "12 34;DROP TABLE"}, "bad_field"),
    ({"SecurityId": ["2885"]}, "bad_type"),
    ({"CorrelationId": "x" * 200}, "out_of_range"),
    ({"CorrelationId": "bad\nid"}, "bad_field"),
    ({"Status": True}, "bad_type"),
    ({"Status": "Exploded"}, "bad_field"),
    ({"TxnType": DROP}, "missing_field"),
    ({"ReasonDescription": "x" * 100_000}, "out_of_range"),
    ({"Symbol": ["RELIANCE"]}, "bad_type"),
    ({"LastUpdatedTime": {"at": 1}}, "bad_type"),
    ({"OffMktFlag": [1]}, "bad_type"),
]


@pytest.mark.parametrize("fields,reason", SOCKET_CASES, ids=[f"{next(iter(f))}={str(next(iter(f.values())))[:12]}"
                                                            for f, _r in SOCKET_CASES])
def test_socket_field_of_the_wrong_type_or_out_of_range_is_refused_with_its_reason(fields, reason):
    with pytest.raises(MalformedMessage) as refused:
        _socket(**fields)
    assert refused.value.reason == reason, str(refused.value)


def test_socket_values_dhan_sends_are_still_read_numbers_as_text_and_ids_as_numbers_included():
    update = _socket(Quantity="20", Price="1400.55", OrderNo=990001, SecurityId=2885, DiscQuantity="",
                     TriggerPrice=None, CorrelationId="CT0123456789ABCDEF012345", Sequence=None, LotSize=1)
    assert (update.order_id, update.terms.security_id, update.terms.quantity) == ("990001", "2885", 20)
    assert update.terms.price == 1400.55 and update.terms.trigger_price == 0.0 and update.sequence is None
    assert update.correlation_id == "CT0123456789ABCDEF012345"
    largest = _socket(Quantity=parsing.MAX_QUANTITY - 1, Price=parsing.MAX_PRICE - 0.05)
    assert largest.terms.quantity == parsing.MAX_QUANTITY - 1


@pytest.mark.parametrize("text,reason", [
    ('{"Type": "order_alert", "Data": {"Price": NaN}}', "not_finite"),
    ('{"Type": "order_alert", "Data": {"Quantity": Infinity}}', "not_finite"),
    ('{"Type": "order_alert", "Data": ' + "[" * 200_000 + "]" * 200_000 + "}", "too_deep"),
    ('{"Type": "order_alert", "Data": {"Quantity": ' + "9" * 5000 + "}}", "out_of_range"),
    ("{not json", "bad_json"),
    ("[1, 2]", "bad_shape"),
    ('{"Type": "order_alert", "Data": [1]}', "bad_shape"),
    (b"\xff\xfe{}", "bad_json"),
], ids=["NaN", "Infinity", "200k_deep", "5000_digits", "not_json", "not_an_object", "data_not_an_object",
        "not_utf8"])
def test_frames_that_json_cannot_read_safely_are_malformed_never_an_exception(text, reason):
    with pytest.raises(MalformedMessage) as refused:
        data = decode_socket_message(text)
        from_socket(data)
    assert refused.value.reason == reason, str(refused.value)


def test_a_frame_over_the_size_limit_is_refused_before_it_is_parsed():
    limit = 4096
    # too deep and not JSON as well: parsed first, it would be refused as too_deep or bad_json
    for frame in ("[" * (limit + 1), "{" * (limit + 1), ("[" * (limit + 1)).encode()):
        with pytest.raises(MalformedMessage) as refused:
            decode_socket_message(frame, max_bytes=limit)
        assert refused.value.reason == "too_large"
    with pytest.raises(MalformedMessage) as refused:  # the limit is in bytes, not characters
        decode_socket_message("[" + "\u00e9" * (limit // 2), max_bytes=limit)
    assert refused.value.reason == "too_large"
    assert decode_socket_message(order_alert_text(LEADER_ID), max_bytes=limit) is not None
    with pytest.raises(MalformedMessage) as refused:  # at the limit: parsed (and refused for what it is)
        decode_socket_message("[" * limit, max_bytes=limit)
    assert refused.value.reason in ("too_deep", "bad_json")


def _book_entry(**fields: Any) -> dict[str, Any]:
    entry = {"dhanClientId": LEADER_ID, "orderId": "5126112300001", "correlationId": "", "orderStatus": "PENDING",
             "transactionType": "BUY", "exchangeSegment": "NSE_EQ", "productType": "INTRADAY", "orderType": "LIMIT",
             "validity": "DAY", "securityId": "2885", "quantity": 10, "disclosedQuantity": 0, "price": 1400.0,
             "triggerPrice": 0.0, "afterMarketOrder": False, "createTime": "2025-01-02 10:00:00",
             "updateTime": "2025-01-02 10:00:00", "filledQty": 0, "averageTradedPrice": 0.0, "sequence": 1}
    entry.update(fields)
    return entry


@pytest.mark.parametrize("fields,reason", [
    ({"quantity": float("inf")}, "not_finite"),
    ({"quantity": 1e30}, "out_of_range"),
    ({"price": float("nan")}, "not_finite"),
    ({"price": 1e300}, "out_of_range"),
    ({"filledQty": "1e30"}, "out_of_range"),
    ({"disclosedQuantity": [0]}, "bad_type"),
    ({"orderId": {"id": 1}}, "bad_type"),
    ({"securityId": "2885" * 30}, "out_of_range"),
    ({"orderStatus": 7}, "bad_type"),
    ({"afterMarketOrder": {"yes": 1}}, "bad_type"),
    ({"averageTradedPrice": True}, "bad_type"),
])
def test_order_book_entry_is_checked_like_a_socket_frame(fields, reason):
    with pytest.raises(MalformedMessage) as refused:
        from_order_book(_book_entry(**fields))
    assert refused.value.reason == reason, str(refused.value)


def test_order_book_answer_that_is_not_an_object_is_malformed():
    for entry in ([1, 2], "5126112300001", None, 7):
        with pytest.raises(MalformedMessage) as refused:
            from_order_book(entry)  # type: ignore[arg-type]
        assert refused.value.reason == "bad_shape"
    assert from_order_book(_book_entry()).terms.quantity == 10


def test_feed_max_frame_bytes_is_a_validated_config_key(tmp_path):
    from types import SimpleNamespace

    from tests.conftest import config_dict

    exchange = SimpleNamespace(rest_url="http://127.0.0.1:1/v2", ws_url="ws://127.0.0.1:2")
    raw = config_dict(exchange, tmp_path, [{"name": "f1"}])  # type: ignore[arg-type]
    assert parse(raw).feed.max_frame_bytes == MIB
    assert parse({**raw, "feed": {"max_frame_bytes": 65536}}).feed.max_frame_bytes == 65536
    for bad in (0, 100, "big", 2.5):
        with pytest.raises(ConfigError, match=r"feed\.max_frame_bytes"):
            parse({**raw, "feed": {"max_frame_bytes": bad}})


# -- end to end: bad frames on the leader's and a follower's socket ----------------------------------
@pytest.mark.parametrize("account", ["leader", "f1"])
def test_six_kinds_of_bad_frame_are_counted_dropped_and_the_copier_keeps_copying(rig, frames, account):
    role = "leader" if account == LEADER else "follower"
    valid = frames.order_alert(account)
    order_no = json.loads(valid)["Data"]["OrderNo"]
    kinds = bad_frames(valid, rig.config.feed.max_frame_bytes)
    expected = Counter(reason for _text, reason in kinds.values())
    before = {reason: _malformed(role, reason) for reason in expected}
    restarts = {kind: _restarts(kind) for kind in ("feed", "order", "router")}
    feed = rig.copier.address(f"feed:{account}")
    incarnation = feed.ref.actor_urn

    for text, _reason in kinds.values():
        frames.send(account, text)

    def counted() -> dict[str, float]:
        return {reason: _malformed(role, reason) - before[reason] for reason in expected}

    wait_until(lambda: counted() == dict(expected), 20,
               message=lambda: f"every bad frame counted with its reason: {counted()} != {dict(expected)}")
    assert feed.ref is not None and feed.ref.actor_urn == incarnation, "the feed crashed"
    assert {kind: _restarts(kind) for kind in restarts} == restarts
    assert rig.copier.escalation is None and not rig.copier.stopped.is_set()
    assert rig.store.read(lambda: m.InboundEvent.select().where(m.InboundEvent.order_id == order_no).count()) == 0

    leader_order = rig.place(quantity=10, price=1400.0)
    assert rig.follower_copy(leader_order)["quantity"] == 5


def test_frames_that_crash_the_feed_are_parked_and_never_stop_the_copier(make_rig, monkeypatch, tmp_path):
    from actors.feed import FeedActor

    rig = make_rig()
    frames = FrameInjector.for_rig(rig)
    original = FeedActor.ingest

    def ingest(self, update):  # a bug that some frames hit after parsing
        if update.symbol == "CRASHME":
            raise ValueError("a bug this frame hits")
        return original(self, update)

    monkeypatch.setattr(FeedActor, "ingest", ingest)
    feed = rig.copier.address("feed:leader")
    for _ in range(6):  # one more than the supervisor's 5 restarts in 30 s
        wait_until(lambda: feed.ref is not None and feed.ask(IsConnected()), message="leader feed connected")
        crashed = feed.ref
        frames.send(LEADER, frames.order_alert(LEADER, Symbol="CRASHME"))
        wait_until(lambda: feed.ref is not None and feed.ref is not crashed, message="leader feed restarted")

    wait_until(lambda: len(rig.store.read(lambda: list(m.DeadLetter.select()))) == 6, message="six parked frames")
    letters = rig.store.read(lambda: list(m.DeadLetter.select()))
    assert all(l.operation == "socket_frame" and l.follower == LEADER and "ValueError" in l.reason
               and "CRASHME" in l.payload for l in letters)
    assert rig.copier.escalation is None and not rig.copier.stopped.is_set()
    refused = run_command(rig, tmp_path, "dlq", "retry", str(letters[0].id))
    assert refused.returncode == 2 and "socket frame" in refused.stderr
    wait_until(lambda: feed.ref is not None and feed.ask(IsConnected()), message="leader feed connected")
    assert rig.follower_copy(rig.place(quantity=10, price=1400.0))["quantity"] == 5


# -- a stored event that crashes its order actor every time ------------------------------------------
def _poisoned_update(rig, leader_order: str) -> OrderUpdate:
    """The leader order's next update as a version that checked nothing would have stored it: its
    NaN average price reaches SQLite as NULL, and saving the order fails (NOT NULL) every time."""
    seen = from_order_book(rig.exchange.order(LEADER_ID, leader_order), source="socket")
    stored = rig.store.leader_order(leader_order)
    return dataclasses.replace(seen, terms=seen.terms.with_changes(price=1401.0), avg_price=float("nan"),
                               sequence=(stored.sequence or 0) + 1)


def test_an_event_that_keeps_crashing_its_order_actor_is_parked_and_the_order_goes_on(make_rig, tmp_path):
    rig = make_rig()
    leader_order = rig.place(quantity=10, price=1400.0)
    rig.follower_copy(leader_order)
    poison = _poisoned_update(rig, leader_order)
    restarts = _restarts("order")
    parked_before = metrics.POISON_MESSAGES.labels("order")._value.get()
    assert store_and_route(rig.store, rig.copier.address("router"), LEADER, poison)
    event_id = rig.store.read(lambda: m.InboundEvent.select(m.InboundEvent.id)
                              .order_by(m.InboundEvent.id.desc()).first().id)

    event = wait_until(lambda: rig.store.read(lambda: m.InboundEvent.get_or_none(
        (m.InboundEvent.id == event_id) & (m.InboundEvent.done == True))), 20,  # noqa: E712
        message="the poison event parked")
    assert event.outcome.startswith("dead_letter:") and "IntegrityError" in event.outcome, event.outcome
    letter = rig.store.read(lambda: m.DeadLetter.get(m.DeadLetter.event_id == event_id))
    assert (letter.operation, letter.leader_order_id, letter.follower, letter.resolved) == \
        ("inbox_event", leader_order, LEADER, False)
    assert "NOT NULL" in letter.reason and '"avg_price": NaN' in letter.payload
    assert _restarts("order") - restarts == 3
    # counted once the event is parked (after its transaction): waited for, not read at once
    wait_until(lambda: metrics.POISON_MESSAGES.labels("order")._value.get() == parked_before + 1, 5,
               message="the parked event counted")
    # the alert is stored just after the event is parked (a transaction of its own): wait for it
    alerts = wait_until(lambda: rig.store.read(lambda: list(m.Alert.select().where(m.Alert.key == "poison:order"))),
                        5, message="the poison alert stored")
    assert len(alerts) == 1 and leader_order in alerts[0].message

    # the order actor goes on: the leader's next real change of the order is copied
    rig.modify(leader_order, price=1395.0)
    rig.wait_copy(leader_order, lambda c: c["price"] == 1395.0, timeout=15, message="modified after the parking")
    assert rig.copier.escalation is None and not rig.copier.stopped.is_set()
    assert rig.follower_placements("f1") == 1

    listing = run_command(rig, tmp_path, "dlq", "list")
    assert listing.returncode == 0, listing.stderr
    line = next(l for l in listing.stdout.splitlines() if l.split()[0] == str(letter.id))
    assert "inbox event" in line and f"leader order {leader_order}" in line and "IntegrityError" in line, line


def test_dlq_retry_of_a_parked_event_routes_it_again(make_rig, tmp_path):
    rig = make_rig(config={"copy": {"sweep_seconds": 0.2}})
    leader_order = rig.place(quantity=10, price=1400.0)
    rig.follower_copy(leader_order)
    store_and_route(rig.store, rig.copier.address("router"), LEADER, _poisoned_update(rig, leader_order))
    letter = wait_until(lambda: rig.store.read(lambda: m.DeadLetter.get_or_none(m.DeadLetter.event_id.is_null(False))),
                        20, message="the poison event parked")
    restarts = _restarts("order")
    assert run_command(rig, tmp_path, "dlq", "retry", str(letter.id)).returncode == 0
    # routed again, it crashes again (nothing changed), and is parked again under a new letter
    wait_until(lambda: rig.store.read(lambda: m.DeadLetter.select().where(
        (m.DeadLetter.event_id == letter.event_id) & (m.DeadLetter.resolved == False)  # noqa: E712
        & (m.DeadLetter.id != letter.id)).count()) == 1, 20, message="parked again after the retry")
    assert _restarts("order") - restarts == 3
    assert rig.store.read(lambda: m.DeadLetter.get_by_id(letter.id)).resolved


def test_an_event_whose_actor_crashed_because_sizing_was_down_is_retried_not_parked(make_rig, monkeypatch):
    from actors.order import OrderActor

    rig = make_rig()
    original = OrderActor.ask_sizing
    failures = {"left": 3}  # as many crashes as would park a poison event

    def sizing_restarting(self, message, wait=True):
        if failures["left"]:
            failures["left"] -= 1
            try:
                raise pykka.ActorDeadError("sizing is restarting")
            except pykka.ActorDeadError as exc:
                raise RuntimeError(f"sizing unavailable: {exc}") from exc
        return original(self, message, wait)

    monkeypatch.setattr(OrderActor, "ask_sizing", sizing_restarting)
    restarts = _restarts("order")
    leader_order = rig.place(quantity=10, price=1400.0)
    assert rig.follower_copy(leader_order, timeout=20)["quantity"] == 5
    assert _restarts("order") - restarts == 3 and failures["left"] == 0
    assert rig.store.read(lambda: m.DeadLetter.select().count()) == 0


def test_a_stored_event_this_version_cannot_read_is_parked_not_a_router_crash_loop(make_rig):
    rig = make_rig(config={"copy": {"sweep_seconds": 0.2}})
    router = rig.copier.address("router")
    incarnation = router.ref.actor_urn
    event_id = rig.store.inbox.record(LEADER, "5126112399999", "an-old-format", "socket",
                                      {"order": "5126112399999", "qty": 10}, 0)
    letter = wait_until(lambda: rig.store.read(lambda: m.DeadLetter.get_or_none(m.DeadLetter.event_id == event_id)),
                        10, message="the unreadable event parked")
    assert letter.operation == "inbox_event" and "cannot be read back" in letter.reason
    assert rig.store.read(lambda: m.InboundEvent.get_by_id(event_id)).outcome.startswith("dead_letter:")
    assert router.ref.actor_urn == incarnation and rig.copier.escalation is None
    assert rig.follower_copy(rig.place(quantity=10, price=1400.0))["quantity"] == 5


# -- the supervisor never gives up on a child because of input ---------------------------------------
@dataclass(frozen=True)
class Frame:
    text: str


class Reader(Supervised):
    """Crashes on Frame("poison") (bad input) and on "bug" (its own fault)."""

    def __init__(self, address: Address, supervisor: Address | None, seen: list) -> None:
        super().__init__(address, supervisor)
        self.seen = seen

    def on_receive(self, message: Any) -> Any:
        if message == "bug":
            raise RuntimeError("a bug")
        if isinstance(message, Frame) and message.text == "poison":
            raise ValueError("unreadable frame")
        self.seen.append(message)
        return None


@pytest.fixture
def reader_tree():
    refs: list[pykka.ActorRef] = []

    def build(max_restarts: int = 3):
        seen: list = []
        parked: list[tuple[str, Any, str]] = []
        escalations: list[Escalated] = []

        def park(child_id: str, message: Any, error: BaseException | None) -> bool:
            if not isinstance(message, Frame):
                return False  # not input: an ordinary crash
            parked.append((child_id, message, repr(error)))
            return True

        top = Address("top")
        ref = Supervisor.start("top", [ChildSpec("reader", lambda a: Reader.start(a, top, seen), kind="reader")],
                               address=top, max_restarts=max_restarts, period=30.0, on_escalate=escalations.append,
                               on_dead_letter=park)
        top.bind(ref)
        refs.append(ref)
        reader = ref.proxy().start_children().get(timeout=10)["reader"]
        return reader, seen, parked, escalations

    yield build
    for ref in refs:
        try:
            ref.stop(timeout=5)
        except pykka.ActorDeadError:
            pass


def test_supervisor_parks_input_that_crashes_a_child_and_never_escalates_because_of_it(reader_tree):
    reader, seen, parked, escalations = reader_tree(max_restarts=3)
    for i in range(10):  # more crashes than the restart intensity allows, all on input
        crashed = reader.ref
        reader.tell(Frame("poison"))
        wait_until(lambda: reader.ref is not None and reader.ref is not crashed, message="restarted")
        reader.tell(Frame(f"good {i}"))  # (what was in the crashed incarnation's inbox is lost)
        wait_until(lambda: len(seen) == i + 1, message=lambda: f"good frame {i} handled, got {seen}")
    assert seen == [Frame(f"good {i}") for i in range(10)]
    assert parked == [("reader", Frame("poison"), "ValueError('unreadable frame')")] * 10
    assert escalations == []


def test_supervisor_still_escalates_a_child_that_crashes_on_its_own_messages(reader_tree):
    reader, _seen, parked, escalations = reader_tree(max_restarts=3)
    for _ in range(4):
        old = wait_until(lambda: reader.ref, message="the reader running again")  # None while it restarts
        reader.tell("bug")
        wait_until(lambda: not old.is_alive(), message="crashed")
    wait_until(lambda: escalations, message="escalation")
    assert escalations[0].child_id == "reader" and parked == []


def test_child_failed_names_the_message_the_child_crashed_on():
    reports: list = []

    class Recorder(pykka.ThreadingActor):
        def on_receive(self, message: Any) -> Any:
            reports.append(message)

    recorder = Recorder.start()
    try:
        sup = Address("sup")
        sup.bind(recorder)
        address = Address("reader")
        address.bind(Reader.start(address, sup, []))
        address.tell(Frame("fine"))
        address.tell(Frame("poison"))
        wait_until(lambda: reports, message="a ChildFailed report")
        assert reports[0].message == Frame("poison") and isinstance(reports[0].exception, ValueError)
    finally:
        recorder.stop()


# -- the real process ---------------------------------------------------------------------------------
def test_run_py_survives_bad_frames_on_every_socket_and_copies_the_next_order(tmp_path):
    exchange, urls, accounts = start_paper_process("--accounts", "2", "--no-price-walk")
    control = Control(urls["CONTROL"])
    copier: subprocess.Popen | None = None
    log_path = tmp_path / "copier.log"
    try:
        (leader_id, leader_token), (follower_id, follower_token) = accounts
        config = {
            "mode": "live",
            "leader": {"client_id": leader_id, "access_token": leader_token, "api_base_url": urls["REST"],
                       "order_update_url": urls["WS"]},
            "followers": [{"name": "f1", "client_id": follower_id, "access_token": follower_token,
                           "api_base_url": urls["REST"], "order_update_url": urls["WS"],
                           "sizing": {"strategy": "fixed_ratio", "ratio": 0.5}}],
            "instruments": {"master": str(ROOT / "paper" / "data" / "instruments.csv")},
            "market_hours": {"enforce": False},
            "storage": {"path": str(tmp_path / "copytrader.db")},
            "metrics": {"port": 0},
        }
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump(config))
        db = tmp_path / "copytrader.db"
        with open(log_path, "w") as log_file:
            copier = subprocess.Popen([sys.executable, "run.py", "--config", str(path), "run", "--no-view"],
                                      cwd=ROOT, stdout=log_file, stderr=subprocess.STDOUT)
        wait_until(lambda: copier_ready(db), 30, message="copier ready")
        wait_until(lambda: control("socket_count") == 2, 10, message="both sockets logged in")
        with sqlite3.connect(db, timeout=5) as conn:
            metrics_url = conn.execute("select value from setting where key = 'metrics_url'").fetchone()[0]

        def scrape() -> dict[str, float]:
            with urllib.request.urlopen(metrics_url, timeout=5) as answer:
                lines = answer.read().decode().splitlines()
            return {name: float(value) for name, _, value in (l.rpartition(" ") for l in lines)
                    if name and not name.startswith("#")}

        frames = FrameInjector.for_control(control, {"leader": leader_id, "f1": follower_id})
        sent: Counter = Counter()
        for _round in range(3):  # 36 bad frames: more than the restart intensity, were any to crash
            for account, role in (("leader", "leader"), ("f1", "follower")):
                for text, reason in bad_frames(frames.order_alert(account)).values():
                    frames.send(account, text)
                    sent[(role, reason)] += 1
                    key = f'copytrader_malformed_messages_total{{reason="{reason}",role="{role}"}}'
                    wait_until(lambda: scrape().get(key, 0) == sent[(role, reason)], 15,
                               message=lambda: f"{key} == {sent[(role, reason)]} (copier log: {log_path})")
        assert copier.poll() is None, f"the copier exited ({copier.returncode}); see {log_path}"
        assert scrape().get('copytrader_actor_restarts_total{kind="feed"}', 0) == 0

        leader = client(urls["REST"], leader_id, leader_token)
        placed = leader.place_order(security_id="2885", exchange_segment="NSE_EQ", transaction_type="BUY",
                                    quantity=10, order_type="LIMIT", product_type="INTRADAY",
                                    price=round(control("price", security_id="2885") * 0.97, 1))
        assert placed["status"] == "success", placed
        follower = client(urls["REST"], follower_id, follower_token)
        copy = wait_until(lambda: next(iter(follower.get_order_list()["data"] or []), None), 15,
                          message="the follower's copy on its book")
        assert copy["quantity"] == 5 and copy["securityId"] == "2885"
        assert copier.poll() is None
    finally:
        end_processes(copier, exchange)
