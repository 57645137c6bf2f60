"""A leader order without a price (MARKET) is valued before it is sized and checked: at Dhan's
market quote (POST /marketfeed/ltp, asked by an account with a data plan), or else at the price the
leader's own order traded at, waited for a short time; `price_unknown` only when neither exists."""
from __future__ import annotations

import threading
import time
from pathlib import Path

import yaml

from storage import models as m
from tests.conftest import LEADER_ID, RELIANCE, ROOT, TCS, start_rig, wait_until

INFY = "1594"


def _quote_requests(rig) -> list[dict]:
    return [r for r in rig.exchange.request_log() if r["method"] == "POST" and r["path"] == "/marketfeed/ltp"]


def _copied_or_skipped(rig, leader_id: str, follower: str) -> bool:
    row = rig.copy_row(leader_id, follower)
    return row is not None and (row.status == "SKIPPED" or rig.follower_order_now(leader_id, follower) is not None)


VALUE_RULES = [
    {"name": "roomy", "sizing": {"strategy": "fixed_ratio", "ratio": 1.0}, "risk": {"max_order_value": 50_000}},
    {"name": "capped", "sizing": {"strategy": "fixed_ratio", "ratio": 1.0}, "risk": {"max_order_value": 20_500}},
]


def test_market_order_copy_is_sized_and_checked_against_the_market_quote(make_rig):
    rig = make_rig(followers=VALUE_RULES, config={"copy": {"market_fill_wait_seconds": 10}})
    rig.exchange.set_price(RELIANCE, 2100.0)
    rig.exchange.hold_fills(RELIANCE)  # the leader's order does not fill: only the quote can price it
    started = time.monotonic()
    leader_id = rig.place(order_type="MARKET", quantity=10)

    copy = rig.follower_copy(leader_id, "roomy", timeout=5)  # well before the 10 s wait for a fill ends
    assert (copy["orderType"], copy["quantity"]) == ("MARKET", 10)  # 10 x 2100 = 21,000 <= 50,000
    skip = rig.wait_skip(leader_id, "capped", timeout=5)
    assert skip.reason == "max_order_value"  # 21,000 > 20,500: still a recorded skip naming the rule
    assert "10 x 2100.00" in skip.detail and "market quote" in skip.detail, skip.detail
    assert time.monotonic() - started < 5
    assert _quote_requests(rig), "the copier never asked the market quote API"
    assert rig.exchange.order(LEADER_ID, leader_id)["filledQty"] == 0  # nothing else could have priced it


def test_without_a_data_plan_the_copy_waits_for_the_leaders_fill_and_uses_its_traded_price(make_rig):
    rig = make_rig(followers=VALUE_RULES, config={"copy": {"market_fill_wait_seconds": 10}}, start=False)
    for client_id in [LEADER_ID, *rig.follower_ids.values()]:
        rig.exchange.set_data_plan(client_id, False)
    start_rig(rig)
    rig.exchange.set_price(RELIANCE, 2000.0)
    rig.exchange.hold_fills(RELIANCE)
    filled_ns: list[int] = []

    def leader_fills() -> None:  # the leader's order trades 0.3 s after it was placed, above the last price
        filled_ns.append(time.monotonic_ns())
        rig.exchange.fill(LEADER_ID, leader_id, price=2100.0)

    leader_id = rig.place(order_type="MARKET", quantity=10)
    fill = threading.Timer(0.3, leader_fills)
    fill.start()

    copy = rig.follower_copy(leader_id, "roomy")
    assert (copy["orderType"], copy["quantity"]) == ("MARKET", 10)
    assert filled_ns, "copied before the leader's order traded"
    first_seen_ns = rig.store.read(lambda: min(e.received_ns for e in m.InboundEvent.select().where(
        (m.InboundEvent.account == "leader") & (m.InboundEvent.order_id == leader_id))))
    waited_ms = (filled_ns[0] - first_seen_ns) / 1e6
    latency = rig.wait_row(leader_id, lambda r: r.latency_ms is not None, "roomy").latency_ms
    assert latency >= waited_ms, f"replication latency {latency:.1f} ms leaves out the {waited_ms:.1f} ms wait"
    skip = rig.wait_skip(leader_id, "capped")
    assert skip.reason == "max_order_value"  # at 2000 it would have passed: the traded price was used
    assert "10 x 2100.00" in skip.detail and "leader's fill" in skip.detail, skip.detail
    assert not _quote_requests(rig), "no account has a data plan: the copier must not ask for quotes"
    profiled = {r["client_id"] for r in rig.exchange.request_log() if r["path"] == "/profile"}
    assert profiled == {LEADER_ID, *rig.follower_ids.values()}  # every account's plan was checked at start


def test_an_instrument_without_a_quote_whose_leader_order_never_fills_is_skipped_as_price_unknown_after_the_wait(
        make_rig):
    followers = [VALUE_RULES[1], {"name": "plain", "sizing": {"strategy": "fixed_ratio", "ratio": 1.0}}]
    rig = make_rig(followers=followers, config={"copy": {"market_fill_wait_seconds": 1.5}})
    rig.exchange.hide_quote(TCS)
    rig.exchange.hold_fills(TCS)
    started = time.monotonic()
    leader_id = rig.place(security_id=TCS, order_type="MARKET", quantity=4)

    skip = rig.wait_skip(leader_id, "capped")
    waited = time.monotonic() - started
    assert skip.reason == "price_unknown"
    assert waited >= 1.4, f"decided after {waited:.2f}s, before the configured wait for a fill ended"
    # a follower without a value rule needs no price: it is copied (after the same wait)
    copy = rig.follower_copy(leader_id, "plain")
    assert (copy["orderType"], copy["quantity"]) == ("MARKET", 4)
    assert _quote_requests(rig), "the copier should have asked for a quote before giving up"


def test_quotes_for_a_burst_of_market_orders_are_batched_cached_and_paced(make_rig):
    followers = [{"name": "capped", "sizing": {"strategy": "fixed_ratio", "ratio": 1.0},
                  "risk": {"max_order_value": 1_000_000}}]
    rig = make_rig(followers=followers, config={"copy": {"market_fill_wait_seconds": 10},
                                                "quotes": {"cache_seconds": 30}}, start=False)
    rig.exchange.set_data_plan(rig.follower_ids["capped"], False)  # one account asks: its 1 request/s paces all
    start_rig(rig)
    securities = (RELIANCE, TCS, INFY)
    for security in securities:
        rig.exchange.hold_fills(security)  # every copy must be valued by a quote
    leader_ids = [rig.place(security_id=securities[i % 3], order_type="MARKET", quantity=2) for i in range(9)]

    for leader_id in leader_ids:
        wait_until(lambda: _copied_or_skipped(rig, leader_id, "capped"), 8, message=f"a decision on {leader_id}")
    skipped = [r.skip_reason for r in (rig.copy_row(i, "capped") for i in leader_ids) if r.status == "SKIPPED"]
    assert not skipped, f"copies skipped: {skipped}"
    requests = _quote_requests(rig)
    # the first order's instrument at once; the other two together once the account's second is up;
    # every later order from the cache
    assert len(requests) == 2, f"{len(requests)} quote requests for 9 orders on 3 instruments: {requests}"
    assert {r["client_id"] for r in requests} == {LEADER_ID}
    assert all(r["status"] == 200 for r in requests), requests  # never refused for exceeding the limit
    assert requests[1]["t"] - requests[0]["t"] >= 0.95  # Dhan allows 1 quote request per second


def test_the_shipped_demo_follower_f2_copies_market_orders(make_rig):
    shipped = yaml.safe_load(Path(ROOT / "config.yaml").read_text(encoding="utf-8"))
    f2 = next(f for f in shipped["followers"] if f["name"] == "f2")
    assert f2["risk"].get("max_order_value"), "the demo's f2 is the follower with a value rule"
    follower = {key: f2[key] for key in ("name", "sizing", "risk", "funds")}
    rig = make_rig(followers=[follower])
    securities = [RELIANCE, TCS, INFY, RELIANCE, TCS, INFY]
    leader_ids = [rig.place(security_id=s, order_type="MARKET", quantity=5) for s in securities]

    for leader_id in leader_ids:
        copy = rig.follower_copy(leader_id, "f2")
        assert (copy["orderType"], copy["quantity"]) == ("MARKET", 1)  # fixed_lots: 1
    reasons = [s.reason for leader_id in leader_ids for s in rig.skips(leader_id, "f2")]
    assert not reasons, f"f2 skipped MARKET orders: {reasons}"


def test_a_data_plan_that_lapsed_is_noticed_and_quotes_are_asked_through_another_account(make_rig):
    rig = make_rig(followers=VALUE_RULES, config={"copy": {"market_fill_wait_seconds": 10}})
    rig.exchange.set_data_plan(LEADER_ID, False)  # after the start-up check: the copier still counts on it
    rig.exchange.hold_fills(RELIANCE)
    rig.exchange.set_price(RELIANCE, 2100.0)
    leader_id = rig.place(order_type="MARKET", quantity=10)

    skip = rig.wait_skip(leader_id, "capped", timeout=5)  # well before the 10 s wait for a fill ends
    assert skip.reason == "max_order_value" and "market quote" in skip.detail, skip.detail
    answers = [(r["client_id"], r["error_code"]) for r in _quote_requests(rig)]
    assert answers[0] == (LEADER_ID, "DH-902"), answers
    assert answers[1][0] != LEADER_ID and answers[1][1] is None, answers
