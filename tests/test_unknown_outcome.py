"""Never double, never stop: a placement whose outcome is unknown (its answer lost, late, a 5xx or
unreadable) is looked up until a lookup answers, never sent again while unknown and never marked
rejected. Faults are injected on the wire by a FaultProxy between the copier and the exchange;
every count is taken on the exchange's books."""
from __future__ import annotations

from actors.messages import (CallFailed, CopyNotFound, CopyRejected, LookupCopy, OrderFound, PlaceCopy,
                             PlacementUnknown)
from actors.rate_limiter import RateLimiter
from app.commands import replay_order
from broker.errors import classify
from broker.gateway import Answer
from storage import models as m
from tests.conftest import run_command, start_rig, wait_until
from tests.faultproxy import FIRST, LATE, NEVER
from trading import copy as copy_rules
from trading.orders import OrderStatus, OrderTerms, OrderType, OrderUpdate, Product, Side, Validity

TIMEOUT = 0.5  # broker.timeout_seconds in these tests


def _posts(rig, follower: str = "f1") -> list[dict]:
    """Placements that reached the exchange for the follower (refused ones included)."""
    return [r for r in rig.exchange.request_log(rig.follower_ids[follower])
            if r["method"] == "POST" and r["path"] == "/orders"]


def _dead_letters(rig) -> int:
    return rig.store.read(lambda: m.DeadLetter.select().count())


def _without_follower_socket(rig) -> None:
    """The follower's order-update socket goes away (stopped, not crashed: nothing restarts it), so
    only a REST lookup can tell the copier what became of a placement."""
    rig.copier.terminate_child("feed:f1")
    wait_until(lambda: rig.exchange.socket_count(rig.follower_ids["f1"]) == 0, message="follower socket closed")


def _settled(rig, leader_id: str, timeout: float = 20.0) -> m.FollowerOrder:
    """The stored copy once its placement is decided one way or the other."""
    return rig.wait_row(leader_id, lambda r: r.status not in ("PENDING_PLACEMENT", "UNKNOWN"), timeout=timeout,
                        message="placement decided")


def test_lost_placement_answer_and_failing_lookups_never_place_the_order_again(make_rig):
    rig = make_rig(config={"broker": {"timeout_seconds": TIMEOUT}}, proxied=["f1"])
    _without_follower_socket(rig)
    proxy = rig.proxies["f1"]
    proxy.hang("POST /orders", 4 * TIMEOUT, forward=FIRST, count=1)  # placed; the answer comes too late
    proxy.hang("GET /orders/external/*", 4 * TIMEOUT, forward=NEVER, count=2)
    proxy.respond("GET /orders", 503, "<html>busy</html>", forward=NEVER, count=2, content_type="text/html")

    leader_id = rig.place(quantity=10, price=1430.0)
    row = _settled(rig, leader_id)
    assert len(_posts(rig)) == 1, "the placement was sent again while its outcome was unknown"
    book = rig.follower_book()
    assert len(book) == 1 and row.status == "PENDING" and row.broker_order_id == book[0]["orderId"]
    assert _dead_letters(rig) == 0
    placed_at = proxy.calls_to("POST /orders")[0]["t"]
    lookups = [c for c in proxy.calls_to("GET /orders*") if c["t"] > placed_at]
    assert lookups[0]["status"] != 200 and any(c["status"] == 200 for c in lookups)  # failed, then answered

    rig.cancel(leader_id)
    rig.wait_copy(leader_id, lambda c: c["orderStatus"] == "CANCELLED", message="cancelled with its leader")
    assert len(_posts(rig)) == 1 and len(rig.follower_book()) == 1
    assert replay_order(rig.store, leader_id)[0]


def test_an_unknown_copy_is_reported_alerted_looked_up_with_backoff_and_adopted(make_rig, tmp_path):
    rig = make_rig(config={"broker": {"timeout_seconds": TIMEOUT}, "copy": {"unknown_alert_seconds": 1}},
                   proxied=["f1"])
    _without_follower_socket(rig)
    proxy = rig.proxies["f1"]
    proxy.respond("POST /orders", 502, '{"status":"error"}', forward=FIRST, count=1)  # placed, no error code
    failing = [proxy.respond("GET /orders/external/*", 503, "", forward=NEVER),
               proxy.respond("GET /orders", 502, '{"status":"error"}', forward=NEVER)]

    leader_id = rig.place(quantity=10, price=1430.0)
    rig.wait_row(leader_id, lambda r: r.status == "UNKNOWN", message="outcome unknown")
    alert = wait_until(lambda: rig.store.read(lambda: m.Alert.get_or_none(m.Alert.key == "unknown:f1")), 10,
                       message="an alert for the copy still unknown")
    assert leader_id in alert.message and alert.level == "critical"

    operator = rig.config_yaml.replace(proxy.url, rig.exchange.rest_url)  # the operator sees the broker directly
    rig.config_yaml, proxied_yaml = operator, rig.config_yaml
    report = run_command(rig, tmp_path, "reconcile")
    rig.config_yaml = proxied_yaml
    assert report.returncode == 3, report.stdout + report.stderr
    lines = [line for line in report.stdout.splitlines() if "outcome_unknown" in line]
    assert len(lines) == 1 and leader_id in lines[0] and "f1" in lines[0], report.stdout

    started = proxy.calls_to("POST /orders")[0]["t"]
    wait_until(lambda: proxy.calls_to("GET /orders*")[-1]["t"] - started > 4.0, 15, message="lookups for 4s")
    lookups = [c for c in proxy.calls_to("GET /orders*") if c["t"] > started]
    spent = lookups[-1]["t"] - started
    assert len(lookups) / spent < 5, f"{len(lookups)} lookups in {spent:.1f}s: not backing off"
    assert rig.copy_row(leader_id).status == "UNKNOWN" and len(_posts(rig)) == 1 and _dead_letters(rig) == 0

    for rule in failing:
        rule.remove()
    row = _settled(rig, leader_id)
    book = rig.follower_book()
    assert row.status == "PENDING" and len(book) == 1 and row.broker_order_id == book[0]["orderId"]
    assert len(_posts(rig)) == 1 and _dead_letters(rig) == 0
    assert replay_order(rig.store, leader_id)[0]


def test_a_leader_cancel_while_unknown_cancels_the_copy_once_found_even_across_a_restart(make_rig):
    rig = make_rig(config={"broker": {"timeout_seconds": TIMEOUT}}, proxied=["f1"])
    _without_follower_socket(rig)
    proxy = rig.proxies["f1"]
    proxy.drop("POST /orders", forward=FIRST, count=1)  # placed, the connection lost before the answer
    failing = [proxy.respond("GET /orders/external/*", 500, "{}", forward=NEVER),
               proxy.respond("GET /orders", 500, "{}", forward=NEVER)]
    leader_id = rig.place(quantity=10, price=1430.0)
    rig.wait_row(leader_id, lambda r: r.status == "UNKNOWN", message="outcome unknown")
    rig.cancel(leader_id)
    wait_until(lambda: rig.store.leader_order(leader_id).status == "CANCELLED", message="leader cancel seen")

    rig.copier.stop()
    start_rig(rig)
    seen = len(proxy.calls_to("GET /orders/external/*"))
    wait_until(lambda: len(proxy.calls_to("GET /orders/external/*")) > seen, message="looked up after the restart")
    assert rig.copy_row(leader_id).status == "UNKNOWN" and len(_posts(rig)) == 1

    for rule in failing:
        rule.remove()
    rig.wait_copy(leader_id, lambda c: c["orderStatus"] == "CANCELLED", timeout=20, message="cancelled once found")
    rig.wait_row(leader_id, lambda r: r.status == "CANCELLED", message="stored cancelled")
    assert len(_posts(rig)) == 1 and len(rig.follower_book()) == 1 and _dead_letters(rig) == 0


def test_a_copy_whose_lookups_gave_up_is_looked_up_again_when_news_of_its_order_comes(make_rig, monkeypatch):
    monkeypatch.setattr(copy_rules, "LOOKUP_RETRY_SECONDS", 0.05)  # six failed lookups in about 2 s
    monkeypatch.setattr(copy_rules, "LOOKUP_RETRY_MAX_SECONDS", 0.5)
    rig = make_rig(config={"broker": {"timeout_seconds": TIMEOUT, "max_attempts": 1}}, proxied=["f1"])
    proxy = rig.proxies["f1"]
    leader_id = rig.place(quantity=10, price=1430.0)
    rig.wait_row(leader_id, lambda r: r.status == "PENDING" and bool(r.broker_order_id), message="copy placed")
    failing = [proxy.respond("GET /orders/*", 500, "{}", forward=NEVER),
               proxy.respond("GET /orders", 500, "{}", forward=NEVER)]
    rig.copier.stop()
    start_rig(rig)  # a restarted order actor looks its copies up before acting: every lookup fails
    alert = wait_until(lambda: rig.store.read(lambda: m.Alert.get_or_none(m.Alert.key == "lookup:f1")), 20,
                       message="the copy's lookups given up")
    assert leader_id in alert.message

    for rule in failing:
        rule.remove()
    rig.cancel(leader_id)  # news of the order: the copy is looked up again, then cancelled with it
    rig.wait_copy(leader_id, lambda c: c["orderStatus"] == "CANCELLED", timeout=20, message="cancelled with its leader")
    rig.wait_row(leader_id, lambda r: r.status == "CANCELLED", message="stored cancelled")
    assert len(rig.follower_book()) == 1 and len(_posts(rig)) == 1 and _dead_letters(rig) == 0


def test_a_5xx_without_error_code_before_the_order_took_effect_is_placed_once_known_absent(make_rig):
    rig = make_rig(config={"broker": {"timeout_seconds": TIMEOUT}}, proxied=["f1"])
    proxy = rig.proxies["f1"]
    proxy.respond("POST /orders", 502, '{"status":"error"}', forward=NEVER, count=1)
    leader_id = rig.place(quantity=10, price=1430.0)
    copy = rig.follower_copy(leader_id, timeout=15)
    row = _settled(rig, leader_id)
    assert row.status == "PENDING" and row.broker_order_id == copy["orderId"]
    assert len(rig.follower_book()) == 1 and len(_posts(rig)) == 1 and _dead_letters(rig) == 0
    # the proxy records a forwarded call once its answer is back, which may be after the copy is seen
    first, second = wait_until(lambda: (calls := proxy.calls_to("POST /orders"))[1:] and calls, 5,
                               message="both placements recorded by the proxy")
    # "not found" is trusted only once the broker has had the timeout to act on a late request
    assert second["t"] - first["t"] >= TIMEOUT


def test_a_copy_is_dead_lettered_only_once_lookups_found_every_placement_absent(make_rig):
    rig = make_rig(config={"broker": {"timeout_seconds": TIMEOUT, "max_attempts": 2}}, proxied=["f1"])
    proxy = rig.proxies["f1"]
    proxy.respond("POST /orders", 502, '{"status":"error"}', forward=NEVER)  # every placement, before effect
    leader_id = rig.place(quantity=10, price=1430.0)
    row = _settled(rig, leader_id)
    assert row.status == "REJECTED" and "never took effect" in row.last_error
    letters = rig.store.read(lambda: list(m.DeadLetter.select()))
    assert len(letters) == 1 and "never took effect" in letters[0].reason
    assert len(proxy.calls_to("POST /orders")) == 2 and _posts(rig) == [] and rig.follower_book() == []


def test_a_5xx_without_error_code_after_the_order_took_effect_adopts_the_order(make_rig):
    rig = make_rig(config={"broker": {"timeout_seconds": TIMEOUT}}, proxied=["f1"])
    proxy = rig.proxies["f1"]
    proxy.respond("POST /orders", 502, '{"status":"error"}', forward=FIRST, count=1)
    leader_id = rig.place(quantity=10, price=1430.0)
    copy = rig.follower_copy(leader_id)
    row = rig.wait_row(leader_id, lambda r: r.status != "PENDING_PLACEMENT" and r.confirmed is not None,
                       message="answer handled")
    assert row.status == "PENDING" and row.broker_order_id == copy["orderId"] and _dead_letters(rig) == 0
    rig.modify(leader_id, price=1431.0)
    rig.wait_copy(leader_id, lambda c: c["price"] == 1431.0, message="modified like any copy")
    assert len(_posts(rig)) == 1 and len(rig.follower_book()) == 1


def test_a_placement_the_broker_acts_on_after_the_timeout_is_adopted_not_placed_twice(make_rig):
    timeout = 1.0
    rig = make_rig(config={"broker": {"timeout_seconds": timeout}}, proxied=["f1"])
    _without_follower_socket(rig)
    proxy = rig.proxies["f1"]
    proxy.hang("POST /orders", 1.8 * timeout, forward=LATE, count=1)  # reaches the exchange after the timeout
    leader_id = rig.place(quantity=10, price=1430.0)
    row = _settled(rig, leader_id)
    wait_until(lambda: any(c["action"] == "hang" for c in proxy.calls_to("POST /orders")), 5,
               message="the held placement forwarded")
    assert len(_posts(rig)) == 1, "placed again on a 'not found' that came before the late placement"
    book = rig.follower_book()
    assert row.status == "PENDING" and len(book) == 1 and row.broker_order_id == book[0]["orderId"]


def test_dlq_retry_refuses_a_copy_whose_outcome_is_unknown(make_rig, tmp_path):
    rig = make_rig(config={"broker": {"timeout_seconds": TIMEOUT}, "copy": {"sweep_seconds": 0.2}},
                   proxied=["f1"])
    _without_follower_socket(rig)
    proxy = rig.proxies["f1"]
    proxy.hang("POST /orders", 4 * TIMEOUT, forward=FIRST, count=1)
    proxy.respond("GET /orders*", 503, "", forward=NEVER)
    leader_id = rig.place(quantity=10, price=1430.0)
    row = rig.wait_row(leader_id, lambda r: r.status == "UNKNOWN", message="outcome unknown")
    # a dead letter for that copy, as an earlier copier recorded lost answers
    letter = rig.store.write(lambda: m.DeadLetter.create(
        leader_order_id=leader_id, follower="f1", correlation_id=row.correlation_id, operation="place",
        error_code="TRANSPORT", reason="timed out"))

    result = run_command(rig, tmp_path, "dlq", "retry", str(letter.id))
    assert result.returncode == 1
    message = (result.stdout + result.stderr).strip()
    assert "unknown" in message and len(message.splitlines()) == 1, message
    assert rig.store.read(lambda: m.DeadLetter.get_by_id(letter.id)).next_retry_at is None
    assert rig.copy_row(leader_id).generation == 0 and len(_posts(rig)) == 1


# -- the rate limiter's part, against a stub gateway ----------------------------------------------
class _Recorder:
    """Stands in for an actor address: keeps what it was told."""

    def __init__(self) -> None:
        self.told: list = []

    def tell(self, message) -> None:
        self.told.append(message)


class _Gateway:
    account = "f1"

    def __init__(self, by_id: Answer, book: Answer) -> None:
        self.by_id, self.book, self.asked = by_id, book, []

    def order_by_correlation(self, correlation_id: str) -> Answer:
        self.asked.append("by_id")
        return self.by_id

    def order_in_book(self, correlation_id: str) -> Answer:
        self.asked.append("book")
        return self.book


TERMS = OrderTerms("2885", "NSE_EQ", Side.BUY, Product.INTRADAY, OrderType.LIMIT, Validity.DAY, 5, 1.0)


def _place(reply_to: _Recorder) -> PlaceCopy:
    return PlaceCopy(account="f1", leader_order_id="L1", correlation_id="CT1", reply_to=reply_to, terms=TERMS)


def _lookup(reply_to: _Recorder) -> LookupCopy:
    return LookupCopy(account="f1", leader_order_id="L1", correlation_id="CT1", reply_to=reply_to)


def test_a_placement_with_an_unknown_outcome_goes_to_its_order_actor_never_to_a_retry():
    gateway = _Gateway(Answer(), Answer())
    limiter = RateLimiter(gateway, order_limits=[(10, 1.0)], data_limits=[(20, 1.0)])  # type: ignore[arg-type]
    limiter.actor, order_actor = _Recorder(), _Recorder()
    try:
        for error in (classify({"error_code": None}, 502), classify("timed out"), classify({"error_code": "DH-908"}, 500)):
            limiter._report(PlacementUnknown(_place(order_actor), error))
        limiter._report(CopyRejected(_place(order_actor), classify({"error_code": "DH-904"}, 429)))
        limiter._report(CallFailed(_lookup(order_actor), classify("timed out")))
        assert len(order_actor.told) == 3  # the three unknown outcomes, for it to look up
        assert [type(m.command) for m in limiter.actor.told] == [PlaceCopy, LookupCopy]  # a refusal, a lookup: retried
    finally:
        limiter.close()


def test_a_lookup_that_gets_no_answer_asks_the_order_book_when_the_data_window_has_room():
    order = OrderUpdate("F1", OrderStatus.PENDING, TERMS, correlation_id="CT1")
    gateway = _Gateway(Answer(error=classify("timed out")), Answer(data=order))
    limiter = RateLimiter(gateway, order_limits=[(10, 1.0)], data_limits=[(1, 60.0)])  # type: ignore[arg-type]
    try:
        found = limiter._perform(_lookup(_Recorder()))
        assert isinstance(found, OrderFound) and found.order == order and gateway.asked == ["by_id", "book"]
        unanswered = limiter._perform(_lookup(_Recorder()))  # the window is full now
        assert isinstance(unanswered, CallFailed) and unanswered.error is not None
        assert gateway.asked == ["by_id", "book", "by_id"]
        gateway.by_id = Answer(data=None)  # the broker answered: no such order
        absent = limiter._perform(_lookup(_Recorder()))
        assert isinstance(absent, CopyNotFound) and absent.sent_at > 0
    finally:
        limiter.close()
