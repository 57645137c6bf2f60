"""Leg order for option strategies, end to end against the paper exchange: a `legs: buy_first`
follower gets a strategy's BUY legs placed and filled before its SELL legs are placed (never a
naked short); a `parallel` follower in the same copier gets the legs as they come."""
from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml

from copier.config import ConfigError, load, parse
from observability import metrics
from app.live_view import render
from tests.conftest import (ROOT, client, copier_ready, end_processes, paper_control, start_copier_process,
                            start_paper_process, wait_until, write_live_config)
from trading.orders import correlation_id

CE, PE = "45105", "45106"  # NIFTY 24000 CE / PE, lot 75
WINDOW = {"copy": {"leg_window_seconds": 2.0}}
RATIO = {"strategy": "fixed_ratio", "ratio": 1.0}
FOLLOWERS = [{"name": "f1", "sizing": RATIO, "funds": 5_000_000, "legs": "buy_first"},
             {"name": "f2", "sizing": RATIO, "funds": 5_000_000}]


def _leg(rig, security: str, side: str, lots: int = 1, market: bool = False) -> str:
    """A leader leg on NIFTY options: resting (a LIMIT away from the market) unless `market`."""
    if market:
        return rig.place(security_id=security, segment="NSE_FNO", side=side, quantity=75 * lots, order_type="MARKET",
                         product="MARGIN")
    price = round(rig.exchange.price(security) * (0.9 if side == "BUY" else 1.1), 1)
    return rig.place(security_id=security, segment="NSE_FNO", side=side, quantity=75 * lots, price=price,
                     product="MARGIN")


def _placements(rig, follower: str) -> list[tuple[str, float]]:
    """(side, when it arrived) of each order the follower's account placed, in the order they arrived."""
    sides = {o["orderId"]: o["transactionType"] for o in rig.follower_book(follower)}
    return [(sides.get(r["order_id"], "?"), r["arrived"]) for r in rig.exchange.request_log(rig.follower_ids[follower])
            if r["method"] == "POST" and r["path"].endswith("/orders") and r["status"] == 200]


def _sells(rig, follower: str) -> list[dict]:
    return [o for o in rig.follower_book(follower) if o["transactionType"] == "SELL"]


def test_a_buy_first_follower_gets_its_sell_leg_only_after_its_buy_leg_filled(make_rig):
    rig = make_rig(followers=FOLLOWERS, config=WINDOW)
    sell = _leg(rig, PE, "SELL")
    rig.follower_copy(sell, "f2")  # the parallel follower's SELL leg: placed at once, no BUY leg anywhere yet
    buy = _leg(rig, CE, "BUY")
    rig.follower_copy(buy, "f2")
    assert [side for side, _ in _placements(rig, "f2")] == ["SELL", "BUY"]
    # the buy_first follower: its BUY is working, its SELL held (not sent) while the BUY is not filled
    bought = rig.follower_copy(buy, "f1")
    rig.wait_row(sell, lambda r: r.held, "f1", message="held")
    # counted once the hold is stored (after its transaction): waited for, not read at once
    wait_until(lambda: metrics.LEGS_HELD.labels("f1")._value.get() == 1, 5, message="one leg held")
    view = str(render(rig.store, rig.config).renderables[0].columns[4]._cells)
    assert "held: waiting for BUY legs" in view
    wait_until(lambda: time.time() > rig.store.leader_order(sell).first_seen_at + 3.0, 10, message="window over")
    assert _sells(rig, "f1") == [] and rig.copy_row(sell, "f1").held
    filled_at = time.time()
    rig.exchange.fill(rig.follower_ids["f1"], bought["orderId"])
    rig.follower_copy(sell, "f1")
    placements = _placements(rig, "f1")
    assert [side for side, _ in placements] == ["BUY", "SELL"]
    assert placements[1][1] > filled_at  # sent only once the BUY had filled
    wait_until(lambda: metrics.LEGS_HELD.labels("f1")._value.get() == 0, 5, message="no leg held")
    assert not rig.copy_row(sell, "f1").held


def test_a_rejected_buy_leg_leaves_no_sell_leg_on_the_buy_first_followers_book(make_rig):
    rig = make_rig(followers=FOLLOWERS, config=WINDOW)
    skips_before = metrics.SKIPS.labels("f1", "hedge_not_filled")._value.get()
    sell = _leg(rig, PE, "SELL")
    rig.wait_row(sell, lambda r: r.held, "f1", message="held")
    rig.exchange.reject_next(rig.follower_ids["f1"], error_code="DH-906", message="RMS: order rejected")
    buy = _leg(rig, CE, "BUY")
    rig.wait_row(buy, lambda r: r.status == "REJECTED", "f1", message="BUY leg rejected")
    skip = rig.wait_skip(sell, "f1")
    assert skip.reason == "hedge_not_filled" and buy in skip.detail and "rejected" in skip.detail
    assert rig.wait_row(sell, lambda r: r.status == "SKIPPED", "f1").skip_reason == "hedge_not_filled"
    assert _sells(rig, "f1") == []
    wait_until(lambda: metrics.SKIPS.labels("f1", "hedge_not_filled")._value.get() == skips_before + 1, 5,
               message="the skip counted once it was stored")
    rig.follower_copy(sell, "f2")  # the parallel follower's SELL leg is placed all the same


def test_a_lone_sell_leg_is_placed_once_the_leg_window_closed(make_rig):
    rig = make_rig(followers=FOLLOWERS, config=WINDOW)
    sell = _leg(rig, PE, "SELL")
    rig.follower_copy(sell, "f2")
    rig.wait_row(sell, lambda r: r.held, "f1", message="held")
    assert _sells(rig, "f1") == []
    rig.follower_copy(sell, "f1")  # no BUY leg came: the leader's naked sell is what is copied
    seen_at = rig.store.leader_order(sell).first_seen_at
    placed_at = _placements(rig, "f1")[0][1]
    assert placed_at >= seen_at + 2.0


def test_the_leaders_modify_and_cancel_of_a_held_sell_leg_apply_to_the_held_leg(make_rig):
    rig = make_rig(followers=FOLLOWERS, config=WINDOW)
    modified = _leg(rig, PE, "SELL")
    cancelled = _leg(rig, CE, "SELL")
    buy = _leg(rig, CE, "BUY")
    bought = rig.follower_copy(buy, "f1")
    rig.wait_row(cancelled, lambda r: r.held, "f1", message="held")
    rig.cancel(cancelled)
    assert rig.wait_skip(cancelled, "f1").reason == "leader_cancelled_before_placement"
    new_price = round(rig.exchange.price(PE) * 1.2, 1)
    rig.modify(modified, quantity=150, price=new_price)
    rig.wait_row(modified, lambda r: r.held and r.quantity == 150, "f1", message="held, re-sized")
    rig.exchange.fill(rig.follower_ids["f1"], bought["orderId"])
    placed = rig.follower_copy(modified, "f1")
    assert placed["quantity"] == 150 and placed["price"] == new_price
    assert [o["orderId"] for o in _sells(rig, "f1")] == [placed["orderId"]]  # the cancelled leg: nothing sent


@pytest.mark.parametrize("change,expected", [
    (lambda c: c["followers"][0].update(legs="sell_first"), "followers[0].legs: must be one of parallel, buy_first"),
    (lambda c: (c["followers"][0].update(legs="buy_first"), c["copy"].update(leg_window_seconds=0)),
     "followers[0].legs: buy_first needs copy.leg_window_seconds above 0"),
    (lambda c: c["copy"].update(buy_first_wait_seconds=0), "copy.buy_first_wait_seconds: must be"),
])
def test_a_bad_leg_order_is_a_config_error_naming_the_key(change, expected):
    raw = yaml.safe_load((ROOT / "config.yaml").read_text())
    raw.setdefault("copy", {})
    change(raw)
    with pytest.raises(ConfigError, match=expected.replace("[", r"\[").replace("]", r"\]")):
        parse(raw)


def test_the_shipped_config_leaves_every_follower_parallel():
    config = load(ROOT / "config.yaml")
    assert {f.legs for f in config.followers} == {"parallel"}
    assert config.copy.buy_first_wait_seconds == 30.0


def test_sigkill_while_a_sell_leg_is_held_places_it_exactly_once_after_restart(tmp_path: Path):
    exchange, urls, accounts = start_paper_process("--accounts", "2", "--no-price-walk", "--unlimited")
    copier: subprocess.Popen | None = None
    try:
        (leader_id, leader_token), (follower_id, follower_token) = accounts
        path = write_live_config(tmp_path, urls, accounts, ratio=1.0)
        config = yaml.safe_load(path.read_text())
        config["followers"][0]["legs"] = "buy_first"
        config["copy"] = {"leg_window_seconds": 2.0, "buy_first_wait_seconds": 120}
        path.write_text(yaml.safe_dump(config))
        db = tmp_path / "copytrader.db"
        copier = start_copier_process(path)
        wait_until(lambda: copier_ready(db), 30, message="copier ready")
        leader = client(urls["REST"], leader_id, leader_token, timeout=10)
        follower = client(urls["REST"], follower_id, follower_token, timeout=10)

        def place(security: str, side: str) -> str:
            price = float(paper_control(urls["CONTROL"], "price", security_id=security))
            answer = leader.place_order(security_id=security, exchange_segment="NSE_FNO", transaction_type=side,
                                        quantity=75, order_type="LIMIT", product_type="MARGIN",
                                        price=round(price * (0.9 if side == "BUY" else 1.1), 1))
            assert answer["status"] == "success", answer
            return answer["data"]["orderId"]

        def book() -> list[dict]:
            return follower.get_order_list()["data"] or []

        sell = place(PE, "SELL")
        buy = place(CE, "BUY")
        buy_cid = correlation_id(buy, "f1")
        wait_until(lambda: any(o["correlationId"] == buy_cid for o in book()), 20, message="the BUY leg copied")
        wait_until(lambda: _held(db, sell), 20, message="the SELL leg held")
        os.kill(copier.pid, signal.SIGKILL)
        copier.wait(10)
        assert [o for o in book() if o["transactionType"] == "SELL"] == []
        bought = next(o for o in book() if o["correlationId"] == buy_cid)
        paper_control(urls["CONTROL"], "fill", client_id=follower_id, order_id=bought["orderId"])  # filled while the copier is down
        copier = start_copier_process(path)
        sell_cid = correlation_id(sell, "f1")
        wait_until(lambda: any(o["correlationId"] == sell_cid for o in book()), 30, message="the SELL leg placed")
        wait_until(lambda: not _held(db, sell), 10, message="released")
        wait_until(lambda: copier_ready(db), 30, message="copier ready again")
        counts = Counter(o["correlationId"] for o in book())
        assert counts[sell_cid] == 1 and counts[buy_cid] == 1 and len(counts) == 2
        placements = [r for r in paper_control(urls["CONTROL"], "request_log", client_id=follower_id)
                      if r["method"] == "POST" and r["path"].endswith("/orders") and r["status"] == 200]
        assert len(placements) == 2  # one BUY, one SELL: nothing placed twice
    finally:
        end_processes(copier, exchange)


def _held(db: Path, leader_order_id: str) -> bool:
    try:
        with sqlite3.connect(db, timeout=1) as conn:
            row = conn.execute("select held from follower_order where leader_order_id = ? and follower = 'f1'",
                               (leader_order_id,)).fetchone()
    except sqlite3.Error:
        return False
    return bool(row and row[0])
