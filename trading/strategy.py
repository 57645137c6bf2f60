"""Multi-leg strategies: derivative orders on one underlying placed within a short window
are legs of one strategy. A follower gets every leg in the same lot ratio as the leader, or none:
a leg that cannot keep the ratio (or is refused) unwinds the legs already placed."""
from __future__ import annotations


def leg_quantity(first_leader_qty: int, first_copy_qty: int, leader_qty: int, lot_size: int) -> int | None:
    """The follower quantity of a later leg that keeps the first leg's ratio, in whole lots; None
    when no whole number of lots does (e.g. the first leg was halved from 2 lots to 1 and this
    leg is 1 lot: half a lot cannot be traded)."""
    if first_leader_qty <= 0 or first_copy_qty <= 0 or leader_qty <= 0:
        return None
    lots = leader_qty * first_copy_qty / first_leader_qty / max(1, lot_size)
    whole = round(lots)
    if whole <= 0 or abs(lots - whole) > 1e-9:
        return None
    return whole * max(1, lot_size)
