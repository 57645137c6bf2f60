"""Every field of a leader placement reaches the follower, sized per follower."""
from __future__ import annotations

import pytest

from tests.conftest import RELIANCE, wait_until

NIFTY_CE_NEAR = "45105"  # NIFTY 24000 CE, 2026-12-01 expiry, lot 75
NIFTY_PE_NEAR = "45106"
NIFTY_CE_NEXT = "45111"  # the following week's expiry
NIFTY_FUT = "47001"


def test_1_1_1_market_order(rig):
    leader_id = rig.place(order_type="MARKET", quantity=10)
    copy = rig.follower_copy(leader_id)
    assert copy["orderType"] == "MARKET"
    assert copy["quantity"] == 5  # fixed_ratio 0.5
    assert copy["transactionType"] == "BUY" and copy["securityId"] == RELIANCE


def test_1_1_2_limit_order_same_price(rig):
    leader_id = rig.place(order_type="LIMIT", quantity=40, price=1450.5)
    copy = rig.follower_copy(leader_id)
    assert (copy["orderType"], copy["price"], copy["quantity"]) == ("LIMIT", 1450.5, 20)


def test_1_1_3_stop_loss_keeps_trigger_and_price(rig):
    leader_id = rig.place(order_type="STOP_LOSS", side="BUY", quantity=10, price=1560.0, trigger_price=1555.0)
    copy = rig.follower_copy(leader_id)
    assert (copy["orderType"], copy["triggerPrice"], copy["price"]) == ("STOP_LOSS", 1555.0, 1560.0)


def test_1_1_4_stop_loss_market_keeps_trigger(rig):
    leader_id = rig.place(order_type="STOP_LOSS_MARKET", side="SELL", quantity=10, trigger_price=1400.0)
    copy = rig.follower_copy(leader_id)
    assert (copy["orderType"], copy["triggerPrice"], copy["transactionType"]) == ("STOP_LOSS_MARKET", 1400.0, "SELL")


def test_1_2_1_intraday(rig):
    assert rig.follower_copy(rig.place(product="INTRADAY"))["productType"] == "INTRADAY"


def test_1_2_2_cnc(rig):
    assert rig.follower_copy(rig.place(product="CNC"))["productType"] == "CNC"


def test_1_2_3_margin(rig):
    price = round(rig.exchange.price(NIFTY_FUT) * 0.98, 1)
    leader_id = rig.place(security_id=NIFTY_FUT, segment="NSE_FNO", product="MARGIN", quantity=150, price=price)
    copy = rig.follower_copy(leader_id)
    assert (copy["productType"], copy["quantity"]) == ("MARGIN", 75)


def test_1_3_1_validity_day(rig):
    assert rig.follower_copy(rig.place(validity="DAY"))["validity"] == "DAY"


def test_1_3_2_validity_ioc_is_never_rewritten_to_day(rig):
    marketable = round(rig.exchange.price(RELIANCE) * 1.01, 1)
    leader_id = rig.place(validity="IOC", price=marketable)
    copy = rig.follower_copy(leader_id)
    assert copy["validity"] == "IOC"
    rig.wait_copy(leader_id, lambda c: c["orderStatus"] == "TRADED", message="IOC filled")


def _option(rig, security, side="BUY", lots=2):
    price = round(rig.exchange.price(security) * (0.9 if side == "BUY" else 1.1), 1)
    return rig.place(security_id=security, segment="NSE_FNO", side=side, quantity=75 * lots, price=price,
                     product="MARGIN")


def test_1_4_1_call_option_whole_lots(rig):
    copy = rig.follower_copy(_option(rig, NIFTY_CE_NEAR, lots=2))
    assert (copy["securityId"], copy["quantity"]) == (NIFTY_CE_NEAR, 75)


def test_1_4_2_put_option_whole_lots(rig):
    copy = rig.follower_copy(_option(rig, NIFTY_PE_NEAR, lots=4))
    assert (copy["securityId"], copy["quantity"]) == (NIFTY_PE_NEAR, 150)


def test_1_4_3_option_sell_whole_lots(make_rig):
    rig = make_rig(followers=[{"name": "f1", "sizing": {"strategy": "fixed_ratio", "ratio": 0.7}}])
    copy = rig.follower_copy(_option(rig, NIFTY_CE_NEAR, side="SELL", lots=3))
    # 3 lots * 0.7 = 2.1 lots -> 2 whole lots, never a fraction of a lot
    assert (copy["transactionType"], copy["quantity"]) == ("SELL", 150)
    assert copy["quantity"] % 75 == 0


def test_1_4_4_near_expiry_keeps_the_same_contract(rig):
    near = rig.follower_copy(_option(rig, NIFTY_CE_NEAR))
    following = rig.follower_copy(_option(rig, NIFTY_CE_NEXT))
    assert near["securityId"] == NIFTY_CE_NEAR and following["securityId"] == NIFTY_CE_NEXT


def test_1_5_1_disclosed_quantity_scaled(rig):
    leader_id = rig.place(quantity=100, disclosed_quantity=20)
    copy = rig.follower_copy(leader_id)
    assert (copy["quantity"], copy["disclosedQuantity"]) == (50, 10)


def test_1_5_1_disclosed_quantity_never_below_exchange_minimum(make_rig):
    rig = make_rig(followers=[{"name": "f1", "sizing": {"strategy": "fixed_ratio", "ratio": 0.3}}])
    leader_id = rig.place(quantity=100, disclosed_quantity=10)  # 10% of 30 = 3: the minimum
    copy = rig.follower_copy(leader_id)
    assert copy["quantity"] == 30 and copy["disclosedQuantity"] >= 3


def test_1_5_2_iceberg_keeps_ratio(rig):
    leader_id = rig.place(quantity=1000, disclosed_quantity=100)
    copy = rig.follower_copy(leader_id)
    assert (copy["quantity"], copy["disclosedQuantity"]) == (500, 50)


def test_6_4_amo_copied_with_same_amo_time(rig):
    rig.exchange.set_session("closed")
    leader_id = rig.place(after_market_order=True, amo_time="OPEN_30")
    copy = rig.follower_copy(leader_id)
    assert copy["afterMarketOrder"] is True
    assert copy.get("amoTime") == "OPEN_30"
