"""What the sizing actor knows an account holds: a reading, and each fill counted once, by its
order, whatever the socket brings late or twice."""
from __future__ import annotations

from actors.messages import FillSeen, PositionsSnapshot
from actors.positions import KnownPositions
from tests.conftest import RELIANCE
from trading.account import BookFill

KEY = ("NSE_EQ", RELIANCE)


def _reading(held: int, fetched_ns: int, orders: dict[str, int] | None = None,
             carried: dict | None = None) -> PositionsSnapshot:
    return PositionsSnapshot("f1", {KEY: held}, 0.0, 0.0, fetched_ns, carried=carried, orders=orders)


def _fill(order_id: str, quantity: int, filled: int, received_ns: int) -> FillSeen:
    return FillSeen("f1", *KEY, quantity, received_ns, order_id, filled)


def test_a_fill_seen_twice_counts_once():
    known = KnownPositions()
    known.apply(_reading(0, 100))
    known.fill(_fill("7", 10, 10, 200))
    known.fill(_fill("7", 10, 10, 210))  # the same message again
    assert known.quantity("f1", KEY) == 10
    known.fill(_fill("7", 5, 15, 220))
    known.fill(_fill("7", 10, 10, 230))  # an older one, late
    assert known.quantity("f1", KEY) == 15


def test_a_fill_the_book_held_counts_only_beyond_it_however_late_it_is_seen():
    known = KnownPositions()
    known.apply(_reading(10, 100, orders={"7": 10}))  # order 7's 10 are in the reading
    known.fill(_fill("7", 10, 10, 150))  # its message, received after the reading began
    assert known.quantity("f1", KEY) == 10
    known.fill(_fill("7", -5, 5, 160))  # a SELL order: the sign is the side
    known.fill(_fill("8", 4, 4, 170))  # an order the book did not list: all of it
    assert known.quantity("f1", KEY) == 14


def test_a_fill_seen_before_the_reading_is_replayed_only_beyond_the_book():
    known = KnownPositions()
    known.apply(_reading(0, 100))
    known.fill(_fill("7", 6, 6, 150))
    known.fill(_fill("7", 4, 10, 160))
    known.apply(_reading(6, 140, orders={"7": 6}))  # the book had 6 of them
    assert known.quantity("f1", KEY) == 10


def test_without_the_book_the_fills_received_after_the_reading_began_count():
    known = KnownPositions()
    known.apply(_reading(10, 100))
    known.fill(_fill("7", 10, 10, 90))  # received before: in the reading
    known.fill(_fill("7", 5, 15, 150))  # its next fill, after: counted, and only its 5
    known.fill(_fill("8", 3, 3, 160))
    assert (known.quantity("f1", KEY), known.as_read("f1", KEY)) == (18, 10)
    assert not known.apply(_reading(0, 50))  # fetched before the one in hand: left out
    assert known.quantity("f1", KEY) == 18


def test_a_fill_that_raced_a_reading_counts_once_when_the_reading_is_taken_with_its_book():
    known = KnownPositions()
    known.apply(_reading(10, 100, carried={KEY: 0}))  # order 7's 10, as it turns out
    known.fill(_fill("7", 10, 10, 150))  # received after the reading began: in it or not?
    assert known.raced("f1", KEY) and known.quantity("f1", KEY) == 20
    assert known.apply_book("f1", [BookFill("7", KEY, 10), BookFill("8", KEY, -3)])  # 8 sold after the reading
    assert not known.raced("f1", KEY) and known.quantity("f1", KEY) == 7


def test_a_reading_that_does_not_say_what_was_carried_in_is_not_taken_with_a_book():
    known = KnownPositions()
    known.apply(_reading(10, 100))
    known.fill(_fill("7", 10, 10, 150))
    assert not known.apply_book("f1", [BookFill("7", KEY, 10)])
    assert known.raced("f1", KEY) and known.quantity("f1", KEY) == 20
