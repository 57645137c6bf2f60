"""A follower's reserved capital is the sum of its reservations, whatever was reserved, replaced,
released or pruned (sizing reads the total for every copy instead of summing them each time)."""
from __future__ import annotations

import pytest

from actors.reservations import Reservation, Reservations


def test_the_total_follows_every_change_to_the_reservations():
    reserved = Reservations()
    reserved["a"] = Reservation(100.0, 1.0)
    reserved["b"] = Reservation(250.5, 2.0)
    assert reserved.total == 350.5
    reserved["a"] = Reservation(40.0, 3.0)  # a re-size replaces its own reservation
    assert reserved.total == 290.5
    assert reserved.pop("b", None) == Reservation(250.5, 2.0)
    assert reserved.pop("missing", None) is None
    assert reserved.total == 40.0
    del reserved["a"]
    assert reserved.total == 0.0 and not reserved
    with pytest.raises(KeyError):
        reserved.pop("a")


def test_many_small_reservations_released_leave_no_rounding_behind():
    reserved = Reservations()
    for i in range(1000):
        reserved[str(i)] = Reservation(0.1 * (i % 7) + 1e-3, float(i))
    assert reserved.total == pytest.approx(sum(r.amount for r in reserved.values()))
    for key in list(reserved):
        reserved.pop(key)
    assert reserved.total == 0.0
