"""Scenarios 1.*: every field of a leader placement reaches the follower, sized."""
from __future__ import annotations

from tests.conftest import RELIANCE, wait_until


def test_1_1_1_market_order(rig):
    leader_id = rig.place(order_type="MARKET", quantity=10)
    copy = rig.follower_copy(leader_id)
    assert copy["orderType"] == "MARKET"
    assert copy["quantity"] == 5  # fixed_ratio 0.5
    assert copy["transactionType"] == "BUY" and copy["securityId"] == RELIANCE
