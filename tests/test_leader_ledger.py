"""The position each leader order found, from the leader's updates in the order they came, row by row;
and, for an order seen late, from the broker's position less what filled after it was placed."""
from __future__ import annotations

from datetime import date

from actors.account_reader import leader_before
from actors.leader_ledger import LeaderLedger
from broker.gateway import Answer
from tests.conftest import RELIANCE, TCS
from trading.account import BookFill, Listing, Position
from trading.leader_position import before_placed

from trading.orders import OrderStatus, OrderTerms, OrderType, OrderUpdate, Product, Side, Validity

S = OrderStatus
KEY = ("NSE_EQ", RELIANCE)
DAY = date(2026, 11, 27)


def _update(order_id: str, side: Side, qty: int, filled: int = 0, security: str = RELIANCE, leg: str = "",
            source: str = "socket") -> OrderUpdate:
    terms = OrderTerms(security, "NSE_EQ", side, Product.INTRADAY, OrderType.MARKET, Validity.DAY, qty, 0.0)
    status = S.TRADED if filled == qty else S.PART_TRADED if filled else S.PENDING
    return OrderUpdate(order_id, status, terms, filled_qty=filled, leg=leg, source=source)


def _ledger(carried: int = 0) -> LeaderLedger:
    ledger = LeaderLedger()
    ledger.carry("leader", {KEY: carried}, DAY)
    ledger.book("leader", [], DAY)
    return ledger


def test_each_order_finds_the_fills_told_before_it_and_not_those_after():
    ledger = _ledger(carried=5)
    ledger.see("leader", _update("1", Side.BUY, 20), DAY)
    ledger.see("leader", _update("1", Side.BUY, 20, filled=20), DAY)
    ledger.see("leader", _update("2", Side.SELL, 20), DAY)  # the exit, seen before the buy after it
    ledger.see("leader", _update("2", Side.SELL, 20, filled=20), DAY)
    ledger.see("leader", _update("3", Side.BUY, 20, filled=20), DAY)  # first seen filled
    assert [ledger.found("leader", order, KEY) for order in "123"] == [5, 25, 5]


def test_a_resting_order_filled_after_a_later_one_was_placed_is_not_in_what_that_one_found():
    ledger = _ledger()
    ledger.see("leader", _update("1", Side.BUY, 20), DAY)  # rests
    ledger.see("leader", _update("2", Side.SELL, 20), DAY)  # a short entry, not the exit of a buy
    ledger.see("leader", _update("1", Side.BUY, 20, filled=20), DAY)
    assert ledger.found("leader", "2", KEY) == 0


def test_an_update_seen_twice_or_late_counts_once():
    ledger = _ledger()
    ledger.see("leader", _update("1", Side.BUY, 20, filled=10), DAY)
    ledger.see("leader", _update("1", Side.BUY, 20, filled=20), DAY)
    ledger.see("leader", _update("1", Side.BUY, 20, filled=10), DAY)  # an older one, late
    ledger.see("leader", _update("1", Side.BUY, 20, filled=20), DAY)  # the same one again
    ledger.see("leader", _update("2", Side.SELL, 5), DAY)
    assert ledger.found("leader", "2", KEY) == 20


def test_the_book_read_at_start_counts_fills_once_and_not_in_what_their_own_order_found():
    ledger = _ledger()
    ledger.book("leader", [BookFill("1", KEY, 20), BookFill("2", KEY, -5)], DAY)
    ledger.see("leader", _update("2", Side.SELL, 10, filled=5), DAY)  # seen after the book told its fill
    ledger.see("leader", _update("1", Side.BUY, 20, filled=20), DAY)
    ledger.see("leader", _update("3", Side.SELL, 15), DAY)
    assert ledger.found("leader", "2", KEY) == 20
    assert ledger.found("leader", "3", KEY) == 15


def test_an_order_first_seen_in_the_book_after_the_socket_missed_it_is_not_known():
    ledger = _ledger()
    ledger.see("leader", _update("2", Side.SELL, 20, filled=20, source="book"), DAY)  # the book: newest first
    ledger.see("leader", _update("1", Side.BUY, 20, filled=20, source="book"), DAY)
    ledger.see("leader", _update("3", Side.SELL, 5), DAY)
    assert ledger.found("leader", "1", KEY) is None and ledger.found("leader", "2", KEY) is None
    assert ledger.found("leader", "3", KEY) == 0  # their fills count all the same


def test_a_super_orders_legs_count_apart_and_in_its_own_position():
    ledger = _ledger()
    ledger.see("leader", _update("1", Side.BUY, 20, filled=20), DAY)
    ledger.see("leader", _update("1", Side.SELL, 20, filled=20, leg="TARGET_LEG"), DAY)
    ledger.see("leader", _update("2", Side.BUY, 10), DAY)
    assert ledger.found("leader", "1", KEY) == 0
    assert ledger.found("leader", "2", KEY) == 0


def test_an_order_is_wholly_filled_once_an_update_says_it_traded():
    ledger = _ledger()
    ledger.see("leader", _update("1", Side.BUY, 20, filled=12), DAY)
    assert not ledger.traded("leader", "1")  # the leader still rests 8 of it
    ledger.see("leader", _update("1", Side.BUY, 20, filled=20), DAY)
    assert ledger.traded("leader", "1")
    ledger.see("leader", _update("2", Side.BUY, 20), DAY)
    ledger.see("leader", _update("2", Side.SELL, 20, filled=20, leg="TARGET_LEG"), DAY)
    assert not ledger.traded("leader", "2")  # a super order's leg traded, not its entry
    assert not ledger.traded("other", "1")


def test_instruments_and_accounts_are_apart():
    ledger = _ledger()
    ledger.carry("leader:b", {KEY: 7}, DAY)
    ledger.book("leader:b", [], DAY)
    ledger.see("leader", _update("1", Side.BUY, 20, filled=20, security=TCS), DAY)
    ledger.see("leader", _update("2", Side.SELL, 10), DAY)
    ledger.see("leader:b", _update("3", Side.SELL, 10), DAY)
    assert ledger.found("leader", "2", KEY) == 0
    assert ledger.found("leader", "1", ("NSE_EQ", TCS)) == 0
    assert ledger.found("leader:b", "3", KEY) == 7


def test_not_known_until_what_was_carried_in_and_the_book_are_read_and_the_order_seen():
    ledger = LeaderLedger()
    ledger.see("leader", _update("1", Side.BUY, 20, filled=20), DAY)  # seen before the book was read
    ledger.carry("leader", {}, DAY)
    assert ledger.wants_book("leader", DAY)
    ledger.book("leader", [BookFill("0", KEY, 5), BookFill("1", KEY, 20)], DAY)  # 0 filled before the start
    assert not ledger.wants_book("leader", DAY)
    ledger.see("leader", _update("2", Side.SELL, 20), DAY)
    assert ledger.found("leader", "2", KEY) == 25
    assert ledger.found("leader", "1", KEY) is None  # the book may count orders placed after it
    assert ledger.found("leader", "9", KEY) is None


def test_a_new_day_starts_empty():
    ledger = _ledger()
    ledger.see("leader", _update("1", Side.BUY, 20, filled=20), DAY)
    later = date(2026, 11, 30)
    assert ledger.wants_book("leader", later)  # and what was carried into the new day, read again
    ledger.carry("leader", {KEY: 20}, later)
    ledger.book("leader", [], later)
    ledger.see("leader", _update("2", Side.SELL, 20), later)
    assert ledger.found("leader", "2", KEY) == 20  # yesterday's buy is in what was carried, once


def test_an_order_seen_after_later_ones_filled_found_the_broker_position_less_their_fills_and_its_own():
    book = [BookFill("105", KEY, -14), BookFill("104", KEY, 14), BookFill("103", KEY, -20),
            BookFill("102", KEY, 10), BookFill("101", KEY, 20), BookFill("100", KEY, 6),
            BookFill("99", ("NSE_EQ", TCS), 50)]
    now = 6 + 20 + 10 - 20 + 14 - 14  # carried in none; every order above filled
    assert before_placed(now, book, "101", KEY) == 6  # the buy of 20 reduces nothing: not an exit
    assert before_placed(now, book, "103", KEY) == 36  # the sale of 20 sold 20 of 36
    assert before_placed(now, book, "105", KEY) == 30  # and the sale of 14, 14 of 30


def test_an_order_not_in_the_book_or_ids_that_give_no_order_leave_the_position_before_it_unknown():
    assert before_placed(10, [BookFill("7", KEY, 10)], "8", KEY) is None
    assert before_placed(10, [BookFill("A7", KEY, 10), BookFill("8", KEY, 0)], "8", KEY) is None
    assert before_placed(10, [BookFill("7:TARGET_LEG", KEY, -5), BookFill("7", KEY, 15), BookFill("8", KEY, 0)],
                         "8", KEY) == 10


class _Leader:
    """A leader's gateway as the lookup reads it: its order book, then its positions, then its book
    again; `filling`: fills landing between the reads (one per book read, then none)."""

    def __init__(self, book: list[BookFill], net: int, filling: list[list[BookFill]] | None = None) -> None:
        self.book, self.net, self.filling = book, net, list(filling or [])

    def book_fills(self) -> Answer:
        if self.filling:
            for fill in self.filling.pop(0):
                self.book = [fill, *self.book]
                self.net += fill.filled
        return Answer(data=Listing(tuple(self.book)))

    def positions(self) -> Answer:
        return Answer(data=Listing((Position("NSE_EQ", RELIANCE, Product.INTRADAY, self.net),)))

    def order(self, order_id: str) -> Answer:  # (the lookup on main read the order alone)
        [fill] = [f for f in self.book if f.order_id == order_id]
        return Answer(data=_update(order_id, Side.BUY if fill.filled > 0 else Side.SELL, abs(fill.filled),
                                   filled=abs(fill.filled)))


def test_the_broker_lookup_of_an_order_seen_late_takes_out_the_fills_of_the_orders_placed_after_it():
    book = [BookFill("103", KEY, -20), BookFill("102", KEY, 10), BookFill("101", KEY, 20), BookFill("100", KEY, 6)]
    before, positions = leader_before(_Leader(book, net=16), "101", KEY, 1)
    assert before == 6 and positions is not None and positions.positions[KEY] == 16


def test_the_lookup_reads_again_when_a_fill_lands_between_its_reads():
    gateway = _Leader([BookFill("101", KEY, 20), BookFill("100", KEY, 6)], net=26,
                      filling=[[], [BookFill("102", KEY, 10)]])  # the second book read has a new fill
    before, _positions = leader_before(gateway, "101", KEY, 1)
    assert before == 6


def test_an_update_routed_again_from_storage_is_not_in_the_order_the_socket_told():
    """An update stored by a copier killed before acting on it is routed again by the next one,
    once that one has read the book: later orders' fills are counted by then, so the position it
    would find is theirs (the buy of 20 below found -18 where the leader held 52)."""
    ledger = _ledger()
    ledger.book("leader", [BookFill("34", KEY, 72), BookFill("35", KEY, 20), BookFill("36", KEY, -90)], DAY)
    ledger.see("leader", _update("35", Side.BUY, 20), DAY, live=False)
    assert ledger.found("leader", "35", KEY) is None
    ledger.see("leader", _update("37", Side.BUY, 4), DAY)  # a live one still finds its place
    assert ledger.found("leader", "37", KEY) == 2
