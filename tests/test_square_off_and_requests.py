"""The pure parts of live follower control: which market orders square a follower off and when its
positions confirm it flat (trading/square_off.py), the queue operator commands reach the running
copier through (storage/control_requests.py), and sizing changes checked by the config's rules."""
from __future__ import annotations

import pytest

from copier.config import ConfigError
from copier.roster import sizing_change, sizing_with
from storage import Store
from trading.account import Position
from trading.orders import OrderType, Product, Side
from trading.sizing import SizingRule
from trading.square_off import closing_correlation_id, closing_orders, still_open


def position(security: str, net: int, product: Product | None = Product.INTRADAY, segment: str = "NSE_EQ") -> Position:
    return Position(segment, security, product, net)


# -- closing orders ---------------------------------------------------------------------------------
def test_closing_orders_sell_what_is_long_buy_back_what_is_short_at_market_in_the_same_product():
    orders, left = closing_orders([position("2885", 5), position("11536", -3, Product.CNC), position("1", 0)])
    assert left == []
    assert [(o.security_id, o.side, o.quantity, o.product, o.order_type) for o in orders] == [
        ("11536", Side.BUY, 3, Product.CNC, OrderType.MARKET), ("2885", Side.SELL, 5, Product.INTRADAY, OrderType.MARKET)]


def test_closing_orders_keep_to_the_segments_asked_for():
    held = [position("2885", 5), position("45105", 150, Product.MARGIN, "NSE_FNO")]
    orders, _left = closing_orders(held, segments=("NSE_FNO",))
    assert [(o.exchange_segment, o.security_id, o.side, o.quantity) for o in orders] == [("NSE_FNO", "45105", Side.SELL, 150)]
    assert still_open(held, ("NSE_FNO",)) == ["NSE_FNO 45105 MARGIN net +150"]


def test_a_cover_order_position_is_reported_and_left_alone():
    orders, left = closing_orders([position("2885", 5, Product.CO), position("11536", 2, None)])
    assert orders == []
    assert left == ["NSE_EQ 11536 unknown product net +2: not closed (close it by hand)",
                    "NSE_EQ 2885 CO net +5: not closed (close it by hand)"]


def test_a_closing_orders_correlation_id_is_derived_from_its_run_and_position():
    (terms,), _ = closing_orders([position("2885", 5)])
    first = closing_correlation_id(7, "f1", terms)
    assert first == closing_correlation_id(7, "f1", terms), "a restart must find the same id"
    assert first != closing_correlation_id(8, "f1", terms) and first != closing_correlation_id(7, "f2", terms)
    assert len(first) <= 25


def test_only_positions_all_flat_confirm_a_square_off():
    assert still_open([position("2885", 0), position("11536", 0, Product.CNC)]) == []
    assert still_open([position("2885", 0), position("11536", -1)]) == ["NSE_EQ 11536 INTRADAY net -1"]


# -- the request queue --------------------------------------------------------------------------------
@pytest.fixture
def store(tmp_path):
    store = Store(tmp_path / "copytrader.db")
    yield store
    store.close()


def test_two_commands_given_together_are_each_taken_once_in_order(store):
    first = store.requests.submit({"action": "pause", "follower": "f1"}, "alice")
    second = store.requests.submit({"action": "pause", "follower": "f2"}, "bob")
    taken = [store.requests.take(ttl=30), store.requests.take(ttl=30), store.requests.take(ttl=30)]
    assert [(r.id, r.command["follower"], r.by) for r in taken[:2]] == [(first, "f1", "alice"), (second, "f2", "bob")]
    assert taken[2] is None
    assert not store.requests.withdraw(first), "a taken request cannot be withdrawn: it is being carried out"
    store.requests.answer(first, True, "f1 paused")
    assert store.requests.answer_of(first).text == "f1 paused" and store.requests.answer_of(second) is None


def test_a_withdrawn_request_is_never_carried_out(store):
    request = store.requests.submit({"action": "reload"}, "alice")
    assert store.requests.withdraw(request)
    assert store.requests.take(ttl=30) is None


def test_a_request_no_copier_took_in_time_is_expired_not_carried_out_late(store):
    store.requests.submit({"action": "square-off", "all": True}, "alice")
    assert store.requests.take(ttl=-1.0) is None
    assert store.requests.take(ttl=30) is None


# -- sizing changes --------------------------------------------------------------------------------
def test_a_sizing_change_is_checked_by_the_configs_own_rules_and_names_the_key():
    rule = SizingRule(strategy="fixed_ratio", ratio=0.5)
    assert sizing_with(rule, {"ratio": 0.75}) == SizingRule(strategy="fixed_ratio", ratio=0.75)
    assert sizing_with(rule, {"strategy": "fixed_lots", "lots": 2}).lots == 2
    assert sizing_with(SizingRule(max_quantity=100), {"max_quantity": None}).max_quantity is None
    for changes, message in (({"ratio": 0}, "sizing.ratio: must be > 0"), ({"lots": 1.5}, "sizing.lots: must be a whole"),
                             ({"strategy": "risk_based"}, "sizing.risk_per_trade: must be > 0 for the risk_based"),
                             ({"ratoi": 1}, "sizing.ratoi: unknown key"), ({"strategy": "double"}, "sizing.strategy")):
        with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
            sizing_with(rule, changes)


def test_a_sizing_key_the_strategy_does_not_use_is_refused_naming_it_and_the_keys_it_uses():
    fixed_lots = SizingRule(strategy="fixed_lots", lots=1)
    with pytest.raises(ConfigError, match=r"sizing\.ratio: not used by strategy fixed_lots \(it uses lots"):
        sizing_change(fixed_lots, {"ratio": 2})
    # changing the strategy with its key is what the operator means
    assert sizing_change(fixed_lots, {"strategy": "fixed_ratio", "ratio": 2}).ratio == 2
    assert sizing_change(fixed_lots, {"max_quantity": 50}).max_quantity == 50


# -- the follower's state and its audit -------------------------------------------------------------
def test_a_sizing_change_leaves_who_paused_a_follower_and_when_as_they_were(store):
    paused = store.followers.pause("f1", "checking", "alice")
    store.followers.set_sizing("f1", {"ratio": 0.25}, "bob", "ratio=0.25")
    state = store.followers.state("f1")
    assert state.paused and (state.paused_by, state.paused_at) == ("alice", paused.paused_at)
    assert state.sizing_by == "bob"
