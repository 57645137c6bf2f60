"""Putting two snapshots of one order in order without a sequence number, row by row."""
from __future__ import annotations

import pytest

from trading.ordering import Ordering, order_of
from trading.orders import OrderStatus, OrderTerms, OrderType, OrderUpdate, Product, Side, Validity

S = OrderStatus
T0, T1 = "2026-03-02 10:30:00", "2026-03-02 10:30:01"


def snap(status: OrderStatus = S.PENDING, qty: int = 10, price: float = 1420.0, filled: int = 0,
         at: str = T0, sequence: int | None = None) -> OrderUpdate:
    terms = OrderTerms("2885", "NSE_EQ", Side.BUY, Product.INTRADAY, OrderType.LIMIT, Validity.DAY, qty, price)
    return OrderUpdate("L1", status, terms, filled_qty=filled, updated_at=at, sequence=sequence)


@pytest.mark.parametrize("applied, update, expected", [
    # the exchange's sequence decides whenever both have one, whatever the clock says
    (snap(sequence=3, at=T1), snap(qty=20, sequence=4, at=T0), Ordering.NEWER),
    (snap(sequence=4), snap(qty=20, sequence=3), Ordering.STALE),
    (snap(sequence=4), snap(sequence=4), Ordering.STALE),
    # otherwise a later second decides
    (snap(at=T0), snap(qty=20, at=T1), Ordering.NEWER),
    (snap(at=T1), snap(S.CANCELLED, at=T0), Ordering.STALE),
    # within one second: fills only grow
    (snap(S.PART_TRADED, filled=4), snap(qty=20, filled=0), Ordering.STALE),
    (snap(), snap(S.PART_TRADED, qty=20, filled=4), Ordering.NEWER),
    # the state already applied
    (snap(qty=20), snap(qty=20), Ordering.SAME),
    # nothing follows a terminal state
    (snap(S.CANCELLED), snap(qty=20), Ordering.STALE),
    # same terms, both open: the status only moves forward
    (snap(S.TRANSIT), snap(S.PENDING), Ordering.NEWER),
    (snap(S.PENDING), snap(S.TRANSIT), Ordering.STALE),
    # two different terms in one second: either may be the later
    (snap(qty=30), snap(qty=20), Ordering.AMBIGUOUS),
    (snap(price=1421.0), snap(price=1422.0), Ordering.AMBIGUOUS),
    # a cancel in the second of the open state applied: the last frame, or a late one
    (snap(qty=20), snap(S.CANCELLED, qty=10), Ordering.AMBIGUOUS),
    (snap(qty=20), snap(S.CANCELLED, qty=20), Ordering.AMBIGUOUS),
    (snap(S.TRANSIT), snap(S.REJECTED), Ordering.AMBIGUOUS),
    # no timestamps at all: arrival order, as before
    (snap(at=""), snap(qty=20, at=""), Ordering.NEWER),
])
def test_a_snapshot_is_placed_against_the_one_applied(applied, update, expected):
    assert order_of(applied, update) == expected
