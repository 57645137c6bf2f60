"""Pre-trade risk limits, position-aware exits and the daily-loss trigger of the kill switch."""
from __future__ import annotations

from observability import metrics
from actors.sizing import SIZING_TIMEOUT
from storage import models as m
from tests.conftest import LEADER_ID, RELIANCE, TCS, client, start_rig, wait_until
from tests.faultproxy import LATE, NEVER


def _position(rig, account_id: str, security: str = RELIANCE) -> int:
    return sum(p["netQty"] for p in rig.exchange.positions(account_id) if p["securityId"] == security)


def _leader_row(rig, order_id: str) -> m.LeaderOrder:
    """The leader's order as the copier stored it (once it has)."""
    return rig.store.read(lambda: m.LeaderOrder.get(m.LeaderOrder.order_id == order_id))


def _hand(rig, follower="f1"):
    """The follower trading in its own account, as its owner would (the copier did not place these)."""
    cfg = next(f for f in rig.config.followers if f.name == follower)
    return client(rig.exchange, cfg.client_id, cfg.access_token)


def _market(dhan, side: str, quantity: int, security: str = RELIANCE) -> None:
    answer = dhan.place_order(security_id=security, exchange_segment="NSE_EQ", transaction_type=side,
                              quantity=quantity, order_type="MARKET", product_type="INTRADAY", price=0)
    assert answer["status"] == "success", answer


def test_B_2_followers_reduce_their_own_position_by_the_leader_fraction(rig):
    f1 = rig.follower_ids["f1"]
    entry = rig.place(order_type="MARKET", quantity=100)
    rig.wait_row(entry, lambda r: r.status == "TRADED", message="entry copied and filled")
    _market(_hand(rig), "BUY", 30)  # the follower's own extra 30: it now holds 80, not 50
    wait_until(lambda: _position(rig, f1) == 80, message="follower holds 80")

    half = rig.place(order_type="MARKET", quantity=50, side="SELL")  # the leader closes 50%
    assert rig.follower_copy(half)["quantity"] == 40  # 50% of its own 80, not 0.5 x 50
    wait_until(lambda: _position(rig, f1) == 40, message="follower holds 40")

    _market(_hand(rig), "SELL", 30)  # the follower now holds 10
    wait_until(lambda: _position(rig, f1) == 10, message="follower holds 10")
    rest = rig.place(order_type="MARKET", quantity=50, side="SELL")  # the leader closes the rest
    assert rig.follower_copy(rest)["quantity"] == 10  # never more than it holds, never a reversal
    wait_until(lambda: _position(rig, f1) == 0, message="follower flat")


RACING = {"broker": {"timeout_seconds": 1.0}}  # an exit waits for a copy's fill 2.5 s at most


def _racing_exit(rig, f1: str) -> str:
    """Dhan's socket may lag its REST answers: the follower's entry fill, made before the exit's
    positions reading began and so in it, reaches the copier while that reading is answered. (The
    exit waits for the copier to see its followers' copies fill, so the socket lags longer than
    that wait: 3 s.) The leader sells half: an exit that closes its position would cancel the
    copy it still waits for, and learn its fill from that cancel's answer."""
    rig.exchange.faults.delay_messages(3.0, client_id=f1)
    rig.place(order_type="MARKET", quantity=20)
    wait_until(lambda: _position(rig, f1) == 10, message="the follower's copy filled at the exchange")
    rig.exchange.faults.delay_answers(0.9, client_id=f1, paths="GET /positions")
    return rig.place(order_type="MARKET", quantity=10, side="SELL")


def test_B_2_a_fill_the_socket_brings_while_positions_are_read_is_not_counted_twice(make_rig):
    rig = make_rig(config=RACING)
    f1 = rig.follower_ids["f1"]
    exit_order = _racing_exit(rig, f1)
    assert rig.follower_copy(exit_order, timeout=15)["quantity"] == 5  # half what it holds, not half of 10 twice
    wait_until(lambda: _position(rig, f1) == 5, timeout=15, message="the follower holds half")
    assert any(r["path"].endswith("/orders") and r["method"] == "GET" for r in rig.exchange.request_log(f1))


def test_B_2_an_exit_whose_order_book_cannot_be_read_sells_only_what_surely_is_held(make_rig):
    rig = make_rig(proxied=["f1"], config=RACING)
    f1 = rig.follower_ids["f1"]
    refused = rig.proxies["f1"].respond("GET /orders", 500, '{"errorType": "Internal"}', forward=NEVER)
    exit_order = _racing_exit(rig, f1)
    assert rig.follower_copy(exit_order, timeout=15)["quantity"] == 5  # half the reading's 10, not of 10 + its fill
    assert refused.hits >= 1


def test_B_2_an_exit_read_after_the_leaders_next_order_filled_sells_what_the_follower_holds(rig):
    f1, leader = rig.follower_ids["f1"], rig.config.leader.client_id
    entry = rig.place(order_type="MARKET", quantity=20)
    rig.wait_row(entry, lambda r: r.status == "TRADED", message="entry copied and filled")
    # Dhan's socket may lag: the leader takes its profit and buys again before the copier hears of
    # the sale, so the positions read for the sale already count the buy after it.
    rig.exchange.faults.delay_messages(1.0, client_id=leader)
    exit_order = rig.place(order_type="MARKET", quantity=20, side="SELL")
    again = rig.place(order_type="MARKET", quantity=20)
    assert rig.follower_copy(exit_order, timeout=15)["quantity"] == 10  # all it holds, as its leader sold all
    rig.wait_row(again, lambda r: r.status == "TRADED", timeout=15, message="the buy again copied and filled")
    assert _position(rig, f1) == 10


def test_B_2_an_exit_whose_sizing_outlasts_its_order_actors_patience_is_still_sized_before_the_next_order(make_rig):
    rig = make_rig(config={"broker": {"timeout_seconds": 15},  # a broker slow to answer, not a dead one
                           "copy": {"exit_reading_seconds": 15}})
    f1 = rig.follower_ids["f1"]
    entry = rig.place(quantity=20, price=_through(rig, "BUY"))
    rig.wait_row(entry, lambda r: r.status == "TRADED", message="entry copied and filled")
    # the follower's positions answer after the order actor stopped waiting for its exit's size
    rig.exchange.faults.delay_answers(SIZING_TIMEOUT + 1.0, client_id=f1, paths="GET /positions")
    exit_order = rig.place(quantity=20, side="SELL", price=_through(rig, "SELL"))
    again = rig.place(quantity=20, price=_through(rig, "BUY"))  # sized after the exit, as it came after it
    assert rig.follower_copy(exit_order, timeout=20)["quantity"] == 10
    rig.wait_row(again, lambda r: r.status == "TRADED", timeout=20, message="the buy again copied and filled")
    assert _position(rig, f1) == 10


def test_B_2_an_exit_whose_follower_positions_cannot_be_read_sells_what_the_follower_holds(make_rig):
    rig = make_rig(config={"broker": {"timeout_seconds": 1}})
    f1 = rig.follower_ids["f1"]
    entry = rig.place(order_type="MARKET", quantity=20)
    rig.wait_row(entry, lambda r: r.status == "TRADED", message="entry copied and filled")
    rig.exchange.faults.delay_answers(3.0, client_id=f1, paths="GET /positions")  # past the broker's timeout
    exit_order = rig.place(order_type="MARKET", quantity=20, side="SELL")
    assert rig.follower_copy(exit_order, timeout=15)["quantity"] == 10  # as its fills say, not a skip
    wait_until(lambda: _position(rig, f1) == 0, timeout=15, message="the follower flat with its leader")


def test_B_2_one_followers_slow_broker_does_not_hold_up_the_others_exits(make_rig):
    rig = make_rig(followers=[{"name": f, "sizing": {"strategy": "fixed_ratio", "ratio": 0.5}} for f in ("f1", "f2")],
                   config={"copy": {"exit_reading_seconds": 1}})
    f1, f2 = rig.follower_ids["f1"], rig.follower_ids["f2"]
    entry = rig.place(order_type="MARKET", quantity=20)
    for follower in ("f1", "f2"):
        rig.wait_row(entry, lambda r: r.status == "TRADED", follower=follower, message="entry copied and filled")
    rig.exchange.faults.delay_answers(8.0, client_id=f2, paths="GET /positions")  # f2's broker hangs
    exit_order = rig.place(order_type="MARKET", quantity=20, side="SELL")
    assert rig.follower_copy(exit_order, "f1", timeout=3)["quantity"] == 10  # f1 does not wait for f2
    assert rig.follower_copy(exit_order, "f2", timeout=3)["quantity"] == 10  # f2 as the copier counted it
    wait_until(lambda: _position(rig, f1) == _position(rig, f2) == 0, message="both flat with their leader")


def _through(rig, side: str) -> float:
    """A LIMIT price that trades at once (a late copy of a LIMIT order is still sent)."""
    return round(rig.exchange.price(RELIANCE) * (1.05 if side == "BUY" else 0.95), 1)


def test_B_2_follower_holding_nothing_skips_the_exit(rig):
    entry = rig.place(order_type="MARKET", quantity=20)
    rig.wait_row(entry, lambda r: r.status == "TRADED", message="entry filled")
    _market(_hand(rig), "SELL", 10)  # the follower closed its copy by hand
    wait_until(lambda: _position(rig, rig.follower_ids["f1"]) == 0, message="follower flat")
    exit_order = rig.place(order_type="MARKET", quantity=20, side="SELL")
    assert rig.wait_skip(exit_order, "f1").reason == "no_position_to_exit"


def test_5_7_position_and_value_limits_skip_with_the_rule_named(make_rig):
    rig = make_rig(followers=[{"name": "f1", "sizing": {"strategy": "fixed_ratio", "ratio": 1.0},
                               "risk": {"max_order_value": 50_000, "max_open_positions": 1,
                                        "max_quantity_per_instrument": 40}}])
    big = rig.place(quantity=40, price=1450.0)  # 58,000 of value
    assert rig.wait_skip(big, "f1").reason == "max_order_value"
    first = rig.place(order_type="MARKET", quantity=20)
    rig.wait_row(first, lambda r: r.status == "TRADED", message="first position open")
    other = rig.place(security_id=TCS, quantity=5, price=round(rig.exchange.price(TCS) * 0.97, 1))
    assert rig.wait_skip(other, "f1").reason == "max_open_positions"
    more = rig.place(quantity=30, price=1450.0)  # 20 held + 30 > 40
    assert rig.wait_skip(more, "f1").reason == "max_quantity_per_instrument"
    assert rig.follower_placements("f1") == 1


def test_daily_loss_limit_turns_the_kill_switch_on(make_rig):
    rig = make_rig(followers=[{"name": "f1", "sizing": {"strategy": "fixed_ratio", "ratio": 1.0},
                               "risk": {"max_daily_loss": 1_000}}],
                   config={"copy": {"funds_refresh_seconds": 1}})
    entry = rig.place(order_type="MARKET", quantity=100)
    rig.wait_row(entry, lambda r: r.status == "TRADED", message="position open")
    rig.exchange.set_price(RELIANCE, round(rig.exchange.price(RELIANCE) - 20, 1))  # -2,000 unrealised
    wait_until(lambda: metrics.KILL_SWITCH._value.get() == 1, timeout=10, message="kill switch on")
    # the gauge is set a moment before the alert is stored (and is one per process): wait for the alert
    alert = wait_until(lambda: rig.store.read(lambda: m.Alert.get_or_none(m.Alert.key == "kill_switch")), timeout=10,
                       message="the kill switch's alert stored")
    assert alert is not None and "daily loss limit of f1" in alert.message
    assert rig.wait_skip(rig.place(quantity=10)).reason == "kill_switch_on"


def test_filters_skip_what_a_follower_does_not_copy(make_rig):
    rig = make_rig(followers=[
        {"name": "opts", "sizing": {"strategy": "fixed_ratio", "ratio": 1.0}, "filters": {"options_only": True}},
        {"name": "nobank", "sizing": {"strategy": "fixed_ratio", "ratio": 1.0},
         "filters": {"deny_symbols": ["RELIANCE"], "allow_segments": ["NSE_EQ"]}}])
    equity = rig.place(quantity=10)
    tcs = rig.place(security_id=TCS, quantity=10, price=round(rig.exchange.price(TCS) * 0.97, 1))
    option = rig.place(security_id="45105", segment="NSE_FNO", quantity=75, product="MARGIN",
                       price=round(rig.exchange.price("45105") * 0.9, 1))
    assert rig.wait_skip(equity, "opts").detail.endswith("filters.options_only")
    assert rig.follower_copy(option, "opts")["quantity"] == 75
    assert rig.wait_skip(equity, "nobank").reason == "filtered"
    assert rig.wait_skip(option, "nobank").detail.endswith("filters.allow_segments")
    assert rig.follower_copy(tcs, "nobank")["quantity"] == 10


def _both_copied_and_flat(rig, timeout: float) -> None:
    """The leader bought and sold; f1 has a copy of each on its book and is flat."""
    f1 = rig.follower_ids["f1"]
    wait_until(lambda: _position(rig, LEADER_ID) == 0, message="the leader bought and sold")
    wait_until(lambda: len(rig.exchange.orders(f1)) == 2, timeout,
               message=lambda: f"f1's copies of both: {rig.exchange.orders(f1)}, skips {list(m.Skip.select().dicts())}")
    wait_until(lambda: _position(rig, f1) == 0, 5, message=lambda: f"f1 flat, holds {_position(rig, f1)}")


def _exit_right_after_a_late_copy(rig, seconds: float, timeout: float) -> None:
    """The leader buys 20 at the market and sells them at once, while f1's broker takes the copy of
    the buy `seconds` late: f1 ends with a copy of each on its book, flat."""
    held = rig.proxies["f1"].hang("POST /orders", seconds=seconds, forward=LATE, count=1)
    rig.place(order_type="MARKET", quantity=20)
    wait_until(lambda: held.hits == 1, message="the copy's placement on its way")
    rig.place(order_type="MARKET", quantity=20, side="SELL")
    _both_copied_and_flat(rig, timeout)


def test_B_2_an_exit_right_after_an_entry_whose_copy_is_still_on_its_way_sells_the_copy_once_filled(make_rig):
    """The leader buys 20 and sells them at once (a scalp, or a backfill after a restart that
    routes both within milliseconds); the follower's copy of the buy reaches its broker 1 s late.
    The exit waits for that copy to fill and sells the 10 it brought, never 'nothing to reduce'."""
    _exit_right_after_a_late_copy(make_rig(proxied=["f1"]), 1.0, 10)


def test_B_2_an_exit_right_after_an_entry_whose_copy_fills_in_parts_waits_for_the_rest(make_rig):
    """The follower copies at twice the leader's size, and the exchange fills 250 a tick (50 ms):
    the leader's buy of 1000 fills in four ticks, f1's copy of 2000 in eight. The leader sells as
    soon as its buy has filled: the exit waits for f1's copy to fill and sells the 2000 it
    brought, where it read what had filled so far and left f1 holding the rest while its leader
    is flat."""
    rig = make_rig(followers=[{"name": "f1", "sizing": {"strategy": "fixed_ratio", "ratio": 2.0}, "funds": 50_000_000}],
                   exchange={"fill_tranche_qty": 250})
    f1 = rig.follower_ids["f1"]
    rig.place(quantity=1000, price=_through(rig, "BUY"))
    wait_until(lambda: _position(rig, LEADER_ID) == 1000, interval=0.01, message="the leader's buy filled")
    rig.place(quantity=1000, side="SELL", price=_through(rig, "SELL"))
    wait_until(lambda: _position(rig, LEADER_ID) == 0, message="the leader sold")
    wait_until(lambda: len(rig.exchange.orders(f1)) == 2, 15,
               message=lambda: f"f1's copies of both: {rig.exchange.orders(f1)}, skips {list(m.Skip.select().dicts())}")
    wait_until(lambda: _position(rig, f1) == 0, 5, message=lambda: f"f1 flat, holds {_position(rig, f1)}")


def test_B_2_an_exit_right_after_an_entry_whose_broker_is_slow_to_answer_waits_for_the_copy(make_rig):
    """As above, but the follower's broker takes 2.5 s to take the copy of the buy: slower than an
    exit waits for a reading, well inside the broker timeout (5 s). The copy is not lost, so the
    exit waits for it (as long as its placement is answered within the timeout) and sells the 10
    it brought, where it would have found nothing to reduce and left f1 long while its leader is
    flat."""
    _exit_right_after_a_late_copy(make_rig(proxied=["f1"]), 2.5, 15)


def test_B_2_an_exit_right_after_an_entry_whose_copy_the_broker_throttles_waits_for_it(rig):
    """The follower's broker throttles the copy of the leader's buy (DH-904: its rate used up, by
    another app say) for about 10 s, longer than a placement is answered: a LIMIT copy is still
    sent, late. The copy is on its way all that time, and the exit waits for it: it sells the 10
    the copy brought, where it would have found nothing to reduce."""
    rig.exchange.reject_next(rig.follower_ids["f1"], error_code="DH-904", message="Too many requests", count=9)
    rig.place(quantity=20, price=_through(rig, "BUY"))
    wait_until(lambda: _position(rig, LEADER_ID) == 20, message="the leader's buy filled")
    rig.place(quantity=20, side="SELL", price=_through(rig, "SELL"))
    _both_copied_and_flat(rig, 25)


def test_B_2_an_exit_of_an_entry_queued_behind_a_throttled_placement_waits_for_it(rig):
    """As above, and the leader then buys TCS and sells it: f1's copy of that buy waits behind the
    throttled one (its broker's rate is used up for every order), and the exit of TCS waits for it
    as long: it sells the 10 that copy brought."""
    f1 = rig.follower_ids["f1"]
    rig.exchange.reject_next(f1, error_code="DH-904", message="Too many requests", count=9)
    rig.place(quantity=20, price=_through(rig, "BUY"))
    rig.place(security_id=TCS, quantity=20, price=round(rig.exchange.price(TCS) * 1.05, 1))
    wait_until(lambda: _position(rig, LEADER_ID, TCS) == 20, message="the leader's buy of TCS filled")
    rig.place(security_id=TCS, quantity=20, side="SELL", price=round(rig.exchange.price(TCS) * 0.95, 1))
    wait_until(lambda: _position(rig, LEADER_ID, TCS) == 0, message="the leader sold TCS")
    wait_until(lambda: len(rig.exchange.orders(f1)) == 3, 25,
               message=lambda: f"f1's copies of all three: {rig.exchange.orders(f1)}, skips {list(m.Skip.select().dicts())}")
    wait_until(lambda: (_position(rig, f1), _position(rig, f1, TCS)) == (10, 0), 5,
               message=lambda: f"f1 long RELIANCE, flat TCS: {_position(rig, f1)}, {_position(rig, f1, TCS)}")


def _entry_resting_at_f1(rig, f1_filled: int = 0) -> str:
    """The leader's LIMIT buy of 20 fills; f1's copy of it (10) rests at its broker with `f1_filled`
    of it traded (the price touched the limit long enough for the leader only). Its order id."""
    f1 = rig.follower_ids["f1"]
    entry = rig.place(quantity=20)  # 3% under the market: it rests
    copy = rig.follower_copy(entry)
    rig.wait_row(entry, lambda r: r.broker_order_id is not None, message="the copy at its broker")
    if f1_filled:
        rig.exchange.fill(f1, copy["orderId"], qty=f1_filled)
        wait_until(lambda: _position(rig, f1) == f1_filled, message=f"f1 holds {f1_filled}")
    rig.exchange.fill(LEADER_ID, entry)
    wait_until(lambda: _position(rig, LEADER_ID) == 20, message="the leader's buy filled")
    return copy["orderId"]


def _stop_while_entry_rests(rig, quantity: int = 20, trigger: float = 0.9) -> tuple[str, str, float]:
    """`_entry_resting_at_f1`, then the leader's stop-loss to sell `quantity` of its 20, its trigger
    `trigger` times the market: f1 holds nothing yet, so its copy is a recorded skip. (f1's resting
    copy's order id, the stop's, its trigger price.)"""
    copy_id = _entry_resting_at_f1(rig)
    trigger_price = round(rig.exchange.price(RELIANCE) * trigger, 1)
    stop = rig.place(order_type="STOP_LOSS_MARKET", side="SELL", quantity=quantity, trigger_price=trigger_price)
    assert rig.wait_skip(stop, "f1", timeout=15).reason == "no_position_to_exit"
    return copy_id, stop, trigger_price


def _cancelled_at_f1(rig, order_id: str) -> None:
    """f1's resting order `order_id` ends cancelled at its broker."""
    f1 = rig.follower_ids["f1"]
    wait_until(lambda: rig.exchange.order(f1, order_id)["orderStatus"] == "CANCELLED", 15,
               message=lambda: f"f1's resting order cancelled: {rig.exchange.order(f1, order_id)}")


def test_B_2_a_full_exit_cancels_its_entrys_copy_still_resting_at_the_follower(make_rig):
    """The leader sells all 20 at the market while f1's copy of the buy still rests: f1 holds
    nothing to sell, and the copy would buy 10 the next time the price comes down, leaving f1 long
    while its leader is flat. The exit cancels it."""
    rig = make_rig(config=RACING)
    f1 = rig.follower_ids["f1"]
    copy_id = _entry_resting_at_f1(rig)
    exit_order = rig.place(order_type="MARKET", quantity=20, side="SELL")
    wait_until(lambda: _position(rig, LEADER_ID) == 0, message="the leader sold")
    _cancelled_at_f1(rig, copy_id)
    assert rig.wait_skip(exit_order, "f1").reason == "no_position_to_exit"
    assert _position(rig, f1) == 0


def test_B_2_a_full_exit_cancels_the_rest_of_its_entrys_copy_and_sells_what_filled(make_rig):
    """As above, with 4 of f1's 10 filled: the exit cancels the other 6 and sells the 4."""
    rig = make_rig(config=RACING)
    f1 = rig.follower_ids["f1"]
    copy_id = _entry_resting_at_f1(rig, f1_filled=4)
    exit_order = rig.place(order_type="MARKET", quantity=20, side="SELL")
    _cancelled_at_f1(rig, copy_id)
    assert rig.follower_copy(exit_order)["quantity"] == 4
    wait_until(lambda: _position(rig, f1) == 0, message=lambda: f"f1 flat, holds {_position(rig, f1)}")


def test_B_2_a_full_exit_after_a_restart_cancels_its_entrys_copy_the_last_run_left_resting(make_rig):
    """As above, the copier restarted while f1's copy rested: the new run cancels it too."""
    rig = make_rig(config=RACING)
    copy_id = _entry_resting_at_f1(rig)
    rig.copier.stop()
    start_rig(rig)
    exit_order = rig.place(order_type="MARKET", quantity=20, side="SELL")
    _cancelled_at_f1(rig, copy_id)
    assert rig.wait_skip(exit_order, "f1").reason == "no_position_to_exit"


def test_B_2_a_full_exit_cancels_the_copy_of_a_partial_exit_still_resting(make_rig):
    """The leader sells half of its 20 with a LIMIT order that fills where f1's copy of it (5)
    rests, then sells the rest at the market: f1 sells the 10 it holds and its resting sale is
    cancelled, where it would have sold 5 more once the price came up: short while its leader is
    flat."""
    rig = make_rig(config=RACING)
    f1 = rig.follower_ids["f1"]
    entry = rig.place(order_type="MARKET", quantity=20)
    rig.wait_row(entry, lambda r: r.status == "TRADED", message="entry copied and filled")
    half = rig.place(quantity=10, side="SELL")  # 3% over the market: it rests
    resting = rig.follower_copy(half)
    assert resting["quantity"] == 5
    rig.wait_row(half, lambda r: r.broker_order_id is not None, message="the copy at its broker")
    rig.exchange.fill(LEADER_ID, half)
    wait_until(lambda: _position(rig, LEADER_ID) == 10, message="the leader sold half")
    rest = rig.place(order_type="MARKET", quantity=10, side="SELL")
    _cancelled_at_f1(rig, resting["orderId"])
    assert rig.follower_copy(rest)["quantity"] == 10
    wait_until(lambda: _position(rig, f1) == 0, message=lambda: f"f1 flat, holds {_position(rig, f1)}")


def test_B_2_a_protective_stop_for_the_whole_position_leaves_its_entrys_copy_resting(make_rig):
    """The leader's LIMIT buy fills where f1's copy rests, and the leader places a stop-loss for
    all 20 at once: the stop waits for its trigger, the leader still holds the 20, and f1's resting
    copy is its share of them (it may still fill). The stop cancels nothing; f1 holds nothing to
    protect yet, so its stop is a recorded skip."""
    rig = make_rig(config=RACING)
    f1 = rig.follower_ids["f1"]
    copy_id, stop, _trigger = _stop_while_entry_rests(rig)
    assert rig.exchange.order(f1, copy_id)["orderStatus"] == "PENDING"


def test_B_2_a_protective_stop_placed_while_its_entrys_copy_rests_protects_what_the_copy_fills(make_rig):
    """As above; then f1's copy fills, 4 and later the other 6. f1 gets a stop for what it holds
    each time (4, then 10), where it was left long with no stop while its leader was protected;
    and when the price falls through the trigger, both sell out."""
    rig = make_rig(config=RACING)
    f1 = rig.follower_ids["f1"]
    copy_id, stop, trigger = _stop_while_entry_rests(rig)
    rig.exchange.fill(f1, copy_id, qty=4)
    protection = rig.wait_copy(stop, lambda e: e["quantity"] == 4, timeout=15, message="f1's stop for the 4 it holds")
    assert (protection["orderType"], protection["transactionType"], protection["triggerPrice"]) == \
        ("STOP_LOSS_MARKET", "SELL", trigger)
    rig.exchange.fill(f1, copy_id)
    rig.wait_copy(stop, lambda e: e["quantity"] == 10, timeout=15, message="f1's stop for the 10 it holds")
    rig.exchange.set_price(RELIANCE, round(trigger * 0.99, 1))
    wait_until(lambda: (_position(rig, LEADER_ID), _position(rig, f1)) == (0, 0), timeout=15,
               message=lambda: f"both stopped out: leader {_position(rig, LEADER_ID)}, f1 {_position(rig, f1)}")


def test_B_2_a_protective_stop_that_closes_the_position_cancels_its_entrys_copy_still_resting(make_rig):
    """As above, with the stop's trigger above the buy's limit: the price falls to the trigger and
    the leader is stopped out of its 20 while f1's copy still rests, unfilled. The copy is
    cancelled when the stop fills: left, it would buy 10 as the price fell on, its leader flat."""
    rig = make_rig(config=RACING)
    f1 = rig.follower_ids["f1"]
    copy_id, _stop, trigger = _stop_while_entry_rests(rig, 20, trigger=0.99)  # (the buy's limit: 0.97)
    rig.exchange.set_price(RELIANCE, round(trigger * 0.995, 1))
    wait_until(lambda: _position(rig, LEADER_ID) == 0, message="the leader stopped out")
    _cancelled_at_f1(rig, copy_id)
    assert _position(rig, f1) == 0


def test_B_2_a_protective_stop_that_closes_the_position_while_the_sockets_are_down_cancels_its_entrys_copy(make_rig):
    """As above, the leader stopped out while the order sockets are down: its stop's fill comes
    from its order book once they are back, and cancels f1's copy all the same."""
    rig = make_rig(config=RACING)
    copy_id, _stop, trigger = _stop_while_entry_rests(rig, 20, trigger=0.99)
    rig.exchange.faults.refuse_reconnects(2.0)
    rig.exchange.faults.drop_sockets()
    wait_until(lambda: rig.exchange.socket_count(LEADER_ID) == 0, message="the leader's socket down")
    rig.exchange.set_price(RELIANCE, round(trigger * 0.995, 1))
    wait_until(lambda: _position(rig, LEADER_ID) == 0, message="the leader stopped out")
    _cancelled_at_f1(rig, copy_id)


def test_B_2_a_protective_stop_for_half_the_position_that_fills_halves_its_entrys_copy_still_resting(make_rig):
    """As above, the stop for half the 20: the leader keeps 10, and f1's copy still resting (10)
    becomes 5, its share of them."""
    rig = make_rig(config=RACING)
    f1 = rig.follower_ids["f1"]
    copy_id, _stop, trigger = _stop_while_entry_rests(rig, 10, trigger=0.99)
    rig.exchange.set_price(RELIANCE, round(trigger * 0.995, 1))
    wait_until(lambda: _position(rig, LEADER_ID) == 10, message="the leader stopped out of half")
    wait_until(lambda: rig.exchange.order(f1, copy_id)["quantity"] == 5, timeout=15,
               message=lambda: f"f1's resting copy halved: {rig.exchange.order(f1, copy_id)['quantity']}")
    assert rig.exchange.order(f1, copy_id)["orderStatus"] == "PENDING"


def test_B_2_a_protective_stop_grows_with_fills_its_followers_socket_missed(make_rig):
    """As above, with the order sockets down each time f1's copy fills (4, then the other 6): the
    fills come from f1's order book once they are back, and the copier's count of what f1 holds
    leaves such fills to a reading of f1's positions, made then. f1's stop grows from it, where it
    stayed a skip (or grew 30 s later, at the next periodic reading)."""
    rig = make_rig(config=RACING)
    f1 = rig.follower_ids["f1"]
    copy_id, stop, _trigger = _stop_while_entry_rests(rig)
    for filled, holds in ((4, 4), (None, 10)):
        rig.exchange.faults.refuse_reconnects(2.0)
        rig.exchange.faults.drop_sockets()
        wait_until(lambda: rig.exchange.socket_count(f1) == 0, message="f1's socket down")
        rig.exchange.fill(f1, copy_id, qty=filled)
        rig.wait_copy(stop, lambda e, holds=holds: e["quantity"] == holds, timeout=20,
                      message=f"f1's stop for the {holds} it holds")


def test_B_2_a_protective_stop_placed_before_a_restart_protects_what_the_entrys_copy_fills_after_it(make_rig):
    """As above, with the copier restarted between the stop and f1's fills: the next run knows
    the stop waits for its price and f1's copy is its share of what the leader holds."""
    rig = make_rig(config=RACING)
    f1 = rig.follower_ids["f1"]
    copy_id, stop, _trigger = _stop_while_entry_rests(rig)
    rig.copier.stop()
    start_rig(rig)
    rig.exchange.fill(f1, copy_id, qty=4)
    rig.wait_copy(stop, lambda e: e["quantity"] == 4, timeout=15, message="f1's stop for the 4 it holds")
    rig.exchange.fill(f1, copy_id)
    rig.wait_copy(stop, lambda e: e["quantity"] == 10, timeout=15, message="f1's stop for the 10 it holds")


def test_B_2_a_protective_stop_whose_quantity_the_leader_changes_stays_within_what_the_follower_holds(rig):
    """f1 holds 4 (its copy bought 10, its owner sold 6 by hand): its copy of the leader's stop for
    all 20 sells those 4. The leader changes its stop to 18 (and moves its trigger): f1's stays
    at 4, nine tenths of 4 rounded up, where re-sized as a new order (half of 18) it sold 9 it
    did not hold and left f1 short 5 once triggered."""
    f1 = rig.follower_ids["f1"]
    entry = rig.place(order_type="MARKET", quantity=20)
    rig.wait_row(entry, lambda r: r.status == "TRADED", message="entry copied and filled")
    _market(_hand(rig), "SELL", 6)
    wait_until(lambda: _position(rig, f1) == 4, message="f1 holds 4")
    market = rig.exchange.price(RELIANCE)
    stop = rig.place(order_type="STOP_LOSS_MARKET", side="SELL", quantity=20, trigger_price=round(market * 0.9, 1))
    assert rig.follower_copy(stop, timeout=15)["quantity"] == 4
    moved = round(market * 0.91, 1)
    rig.modify(stop, quantity=18, trigger_price=moved)
    copy = rig.wait_copy(stop, lambda e: e["triggerPrice"] == moved, timeout=15, message="f1's stop moved")
    assert copy["quantity"] == 4


def test_B_2_a_stop_the_leader_halves_while_its_entrys_copy_rests_grows_to_half_what_the_copy_fills(make_rig):
    """The leader's stop for its 20, placed while f1's copy of the buy rests, becomes a stop for 10:
    f1's copy fills 10, and its stop sells 5, where it sold all 10 as the stop first was."""
    rig = make_rig(config=RACING)
    f1 = rig.follower_ids["f1"]
    copy_id, stop, _trigger = _stop_while_entry_rests(rig)
    rig.modify(stop, quantity=10)
    wait_until(lambda: _leader_row(rig, stop).quantity == 10, message="the copier saw the stop changed")
    rig.exchange.fill(f1, copy_id)
    copy = rig.follower_copy(stop, timeout=15)
    assert copy["quantity"] == 5


def test_B_2_a_target_for_half_the_position_grows_to_half_what_the_entrys_copy_fills(make_rig):
    """The leader's take-profit sells half its 20 (a LIMIT 5% over the market) while f1's copy of
    the buy rests; f1's copy fills: its target sells half the 10 it holds."""
    rig = make_rig(config=RACING)
    f1 = rig.follower_ids["f1"]
    copy_id = _entry_resting_at_f1(rig)
    price = round(rig.exchange.price(RELIANCE) * 1.05, 1)
    target = rig.place(side="SELL", quantity=10, price=price)
    assert rig.wait_skip(target, "f1", timeout=15).reason == "no_position_to_exit"
    rig.exchange.fill(f1, copy_id)
    copy = rig.wait_copy(target, lambda e: e["quantity"] == 5, timeout=15, message="f1's target for half its 10")
    assert (copy["orderType"], copy["price"], copy["orderStatus"]) == ("LIMIT", price, "PENDING")


def test_B_2_a_protective_stop_cancelled_before_its_entrys_copy_fills_is_not_placed_for_the_follower(make_rig):
    """The leader places two stops for its 20 while f1's copy of the buy rests, and takes the first
    back; then f1's copy fills. f1 gets a stop for its 10 from the second, none from the first."""
    rig = make_rig(config=RACING)
    f1 = rig.follower_ids["f1"]
    copy_id = _entry_resting_at_f1(rig)
    stops = [rig.place(order_type="STOP_LOSS_MARKET", side="SELL", quantity=20,
                       trigger_price=round(rig.exchange.price(RELIANCE) * fraction, 1)) for fraction in (0.9, 0.85)]
    for stop in stops:
        assert rig.wait_skip(stop, "f1", timeout=15).reason == "no_position_to_exit"
    rig.cancel(stops[0])
    wait_until(lambda: _leader_row(rig, stops[0]).status == "CANCELLED",
               message="the copier saw the first stop cancelled")
    rig.exchange.fill(f1, copy_id)
    rig.wait_copy(stops[1], lambda e: e["quantity"] == 10, timeout=15, message="f1's stop for its 10")
    assert rig.follower_order_now(stops[0]) is None
    assert rig.copy_row(stops[0]).status == "SKIPPED"


def test_B_2_a_partial_exit_reduces_its_entrys_copy_still_resting_by_the_same_fraction(make_rig):
    """The leader sells half: it still holds 10. f1 sells half the 4 it holds, and its copy's 6
    still resting are its share of 20 no more: they become 3 (the copy 7, 4 of them filled), where
    once filled they left f1 holding 8 against its leader's 10."""
    rig = make_rig(config=RACING)
    f1 = rig.follower_ids["f1"]
    copy_id = _entry_resting_at_f1(rig, f1_filled=4)
    exit_order = rig.place(order_type="MARKET", quantity=10, side="SELL")
    assert rig.follower_copy(exit_order, timeout=15)["quantity"] == 2  # half of the 4 it holds
    wait_until(lambda: rig.exchange.order(f1, copy_id)["quantity"] == 7, timeout=15,
               message=lambda: f"f1's resting copy reduced to 7: {rig.exchange.order(f1, copy_id)['quantity']}")
    assert rig.exchange.order(f1, copy_id)["orderStatus"] == "PART_TRADED"
    rig.exchange.fill(f1, copy_id)
    wait_until(lambda: _position(rig, f1) == 5, message=lambda: f"f1 holds half its leader's 10: {_position(rig, f1)}")


def test_B_2_a_market_exit_held_past_the_copy_delay_for_a_copy_in_doubt_is_still_sent(make_rig):
    """The follower's broker takes the copy of the leader's MARKET buy 3.5 s late, past the broker
    timeout (2 s): the copy is in doubt and looked up, and the MARKET exit after it waits for it
    longer than a MARKET copy may be late (3 s). A late entry is skipped (its price has moved on);
    a late exit is still sent: skipped, it would leave f1 holding the 10 its leader sold."""
    rig = make_rig(proxied=["f1"], config={"broker": {"timeout_seconds": 2}, "copy": {"max_delay_seconds": 3}})
    _exit_right_after_a_late_copy(rig, 3.5, 20)


def test_B_2_an_exit_right_after_a_restart_waits_for_the_entry_copy_the_last_run_was_placing(make_rig):
    """The copier stops while its copy of the leader's buy is on its way (the broker takes it 3 s
    later); the leader sells as the next run starts. That run looks the copy up before placing it
    again, and the exit waits for the lookup to find it: it sells the 10 the copy brought, where it
    would have found nothing to reduce."""
    rig = make_rig(proxied=["f1"], config={"broker": {"timeout_seconds": 1.5}})
    held = rig.proxies["f1"].hang("POST /orders", seconds=3.0, forward=LATE, count=1)
    rig.place(order_type="MARKET", quantity=20)
    wait_until(lambda: held.hits == 1, message="the copy's placement on its way")
    rig.copier.stop()
    start_rig(rig)
    rig.place(order_type="MARKET", quantity=20, side="SELL")
    _both_copied_and_flat(rig, 15)


def test_B_2_an_exit_placed_as_a_restarted_copier_reads_the_leaders_account_is_sized_as_one(rig):
    """The copier restarts and the leader at once sells the 20 it holds (a LIMIT order that rests,
    then fills), while the copier's first reading of the leader's account waits at its broker:
    its positions answer flat (the sale is in them). Seen before the leader's order book was read,
    the sale's position before it is not counted, so it is asked of the broker: f1 sells all it
    holds (40, 30 of them bought by hand), where the sale was taken for a new short of 10."""
    f1 = rig.follower_ids["f1"]
    entry = rig.place(order_type="MARKET", quantity=20)
    rig.wait_row(entry, lambda r: r.status == "TRADED", message="entry copied and filled")
    _market(_hand(rig), "BUY", 30)
    wait_until(lambda: _position(rig, f1) == 40, message="f1 holds 40")
    rig.copier.stop()
    rig.exchange.faults.delay_effects(1.0, client_id=LEADER_ID, paths="GET /positions", count=1)
    start_rig(rig)
    exit_order = rig.place(quantity=20, side="SELL")  # 3% over the market: it rests
    rig.exchange.fill(LEADER_ID, exit_order)
    copy = rig.follower_copy(exit_order, timeout=15)
    assert (copy["transactionType"], copy["quantity"]) == ("SELL", 40)


def test_B_2_an_exit_held_for_a_copy_in_doubt_longer_than_its_order_actors_patience_crashes_nothing(make_rig):
    """As above, but the placement the last run sent never reached the broker: with a 3 s broker
    timeout, the next run believes it absent and places the copy 6 s after it started, longer than
    an order actor waits for a size. The exit waits for it all the same, and the buy after it (in
    its lane) waits for the exit, their order actors told so: none crashes, the exit sells what
    the copy brought, and the buy is copied after it."""
    rig = make_rig(proxied=["f1"], config={"broker": {"timeout_seconds": 3}})
    f1 = rig.follower_ids["f1"]
    held = rig.proxies["f1"].hang("POST /orders", seconds=3.5, forward=NEVER, count=1)
    rig.place(quantity=20, price=_through(rig, "BUY"))  # (a MARKET copy would be too late to place again)
    wait_until(lambda: held.hits == 1, message="the copy's placement on its way")
    rig.copier.stop()
    start_rig(rig)
    restarts = metrics.ACTOR_RESTARTS.labels("order")._value.get()
    exit_order = rig.place(quantity=20, side="SELL", price=_through(rig, "SELL"))
    again = rig.place(quantity=10, price=_through(rig, "BUY"))
    wait_until(lambda: _position(rig, LEADER_ID) == 10, message="the leader bought, sold and bought")
    assert rig.follower_copy(exit_order, timeout=20)["quantity"] == 10, list(m.Skip.select().dicts())
    assert rig.follower_copy(again, timeout=20)["quantity"] == 5
    wait_until(lambda: _position(rig, f1) == 5, 5, message=lambda: f"f1 holds 5, not {_position(rig, f1)}")
    assert metrics.ACTOR_RESTARTS.labels("order")._value.get() == restarts


def test_B_2_orders_traded_in_and_out_while_the_leaders_socket_was_down_leave_the_follower_its_share(rig):
    """Caught up from the leader's order book after its socket came back, each order is copied as
    the trade it was when placed: the sale of everything, two buys after it, and the sale of half
    of those (the position each found is the broker's less what filled after it was placed)."""
    f1 = rig.follower_ids["f1"]
    entry = rig.place(quantity=20, price=_through(rig, "BUY"))
    rig.wait_row(entry, lambda r: r.status == "TRADED", message="entry copied and filled")
    rig.exchange.faults.refuse_reconnects(2.0)
    rig.exchange.faults.drop_sockets()
    wait_until(lambda: rig.exchange.socket_count() == 0, message="the sockets down")
    placed = [rig.place(quantity=quantity, side=side, price=_through(rig, side))
              for side, quantity in (("SELL", 20), ("BUY", 10), ("BUY", 6), ("SELL", 8))]
    wait_until(lambda: _position(rig, LEADER_ID) == 8, message="the leader traded while the copier could not hear")
    copies = [rig.follower_copy(order, timeout=15)["quantity"] for order in placed]
    assert copies == [10, 5, 3, 4], list(m.Skip.select().dicts())
    wait_until(lambda: _position(rig, f1) == 4, message=lambda: f"f1 holds half of 8, not {_position(rig, f1)}")
