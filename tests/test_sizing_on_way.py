"""Which exits that wait for their price grow as a follower's copy fills, as the sizing actor
remembers them (actors/sizing_on_way.py): the leader's stop-loss X for its position in RELIANCE,
and f1's copy of the leader's filled buy A, resting at its broker."""
from __future__ import annotations

import time

import pytest

from actors.messages import CopyResting, SizeCopy
from actors.sizing_on_way import OnTheirWay
from trading.copies_on_way import Protection
from trading.instruments import Instrument
from trading.orders import OrderTerms, OrderType, Product, Side, Validity

KEY = ("NSE_EQ", "2885")
STOP = Protection("X", KEY, 20, 20, 1)
TRADED = {"A", "B"}


def _traded(_leader: str, order_id: str) -> bool:
    return order_id in TRADED


def _resting(order_id: str = "A") -> CopyResting:
    return CopyResting("f1", f"cid-{order_id}", KEY, "leader", order_id, leader_traded=True)


def _sized(on_way: OnTheirWay, order_id: str) -> None:
    terms = OrderTerms("2885", "NSE_EQ", Side.BUY, Product.INTRADAY, OrderType.MARKET, Validity.DAY, 10)
    instrument = Instrument("2885", "NSE_EQ", "RELIANCE", "EQUITY", 1, 0.05)
    on_way.sized(SizeCopy("f1", f"cid-{order_id}", terms, instrument, 0.0, 10, order_id))


@pytest.mark.parametrize("stop_first", [True, False], ids=["the stop's actor loads first", "the buy's loads first"])
def test_B_2_a_stop_loaded_after_a_restart_knows_the_copy_loaded_resting_in_either_order(stop_first):
    on_way = OnTheirWay(["f1"])
    steps = [lambda: on_way.exit_told(["f1"], "leader", STOP, _traded),
             lambda: on_way.resting([_resting()], _traded)]
    for step in steps if stop_first else reversed(steps):
        step()
    assert on_way.protections("f1", "A") == [STOP]
    assert on_way.price_exit_filled("X") == ("leader", STOP)


def test_B_2_a_stop_grows_only_with_the_copies_resting_when_it_was_sized():
    """A buy after the stop adds to a position the stop does not cover (the leader's stop stays
    for 20): its copy's fills leave the stop as it is."""
    on_way = OnTheirWay(["f1"])
    on_way.resting([_resting()], _traded)
    assert on_way.protect("f1", "leader", STOP, _traded)
    _sized(on_way, "B")
    assert (on_way.protections("f1", "A"), on_way.protections("f1", "B")) == ([STOP], [])


def test_B_2_a_stop_grows_no_more_once_the_copy_ended():
    on_way = OnTheirWay(["f1"])
    on_way.resting([_resting()], _traded)
    on_way.protect("f1", "leader", STOP, _traded)
    on_way.protect("f1", "leader", STOP, _traded)  # (told twice: once)
    assert on_way.protections("f1", "A") == [STOP]
    assert on_way.arrived([("f1", "cid-A")])
    assert on_way.protections("f1", "A") == []


def test_B_2_a_stop_that_fills_is_told_once_with_the_copies_that_are_the_followers_share_of_the_position():
    """Its first fill finds f1's copies of the leader's filled buys, resting or still on their way
    (the sizing actor cancels them, or shrinks them for a stop of a part of the position)."""
    on_way = OnTheirWay(["f1"])
    on_way.resting([_resting()], _traded)
    _sized(on_way, "B")
    on_way.waits_for_price("leader", STOP)
    assert on_way.price_exit_filled("X") == ("leader", STOP)
    assert on_way.price_exit_filled("X") is None  # (its later fills)
    assert on_way.shares(["f1"], "leader", STOP, _traded) == [("f1", "A"), ("f1", "B")]
    assert on_way.shares(["f1"], "leader", STOP, _traded, cancel=True) == [("f1", "A"), ("f1", "B")]
    assert on_way.shares(["f1"], "leader", STOP, _traded) == []  # (asked to be cancelled: not again)


def test_B_2_a_stop_told_again_once_its_leader_changed_it_replaces_what_was_told():
    on_way = OnTheirWay(["f1"])
    on_way.resting([_resting()], _traded)
    on_way.exit_told(["f1"], "leader", STOP, _traded)
    halved = STOP._replace(quantity=10)
    on_way.exit_told(["f1"], "leader", halved, _traded)
    assert on_way.protections("f1", "A") == [halved]
    assert on_way.price_exit_filled("X") == ("leader", halved)


def test_B_2_a_stop_grows_with_the_first_positions_read_after_its_copy_ended():
    """Its last fill may have come by no socket (the follower's was down): the first positions
    read after the copy ended hold it; one read before does not."""
    on_way = OnTheirWay(["f1"])
    on_way.resting([_resting()], _traded)
    on_way.protect("f1", "leader", STOP, _traded)
    before = time.monotonic_ns()
    on_way.arrived([("f1", "cid-A")])
    assert on_way.protections_read("f1", before) == []
    assert on_way.protections_read("f1", time.monotonic_ns()) == [STOP]
    assert on_way.protections_read("f1", time.monotonic_ns()) == []  # (once)


def test_B_2_a_stop_grows_from_every_positions_reading_while_its_copy_rests_once_for_each_holding():
    """A fill no socket brought is in the next reading, however little of the copy it filled; a
    reading that finds the follower holding what it held before changes nothing."""
    on_way = OnTheirWay(["f1"])
    on_way.resting([_resting()], _traded)
    on_way.protect("f1", "leader", STOP, _traded)
    assert on_way.protections_read("f1", time.monotonic_ns()) == [STOP]
    assert on_way.protections_read("f1", time.monotonic_ns()) == [STOP]
    assert [on_way.grows_from("f1", "X", held) for held in (4, 4, 10)] == [True, False, True]
