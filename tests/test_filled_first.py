"""A follower's copy that fills in the same exchange second as the leader's order did not fill
first, whichever socket's news reaches the copier first; one that fills earlier did."""
from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

from tests.conftest import LEADER_ID


class ExchangeClock:
    """The paper exchange's clock, moved by the test: fills it stamps in one second share it."""

    def __init__(self) -> None:
        self.now = datetime.now(timezone.utc).replace(microsecond=0)

    def __call__(self) -> datetime:
        return self.now


def resting(rig) -> tuple[str, str]:
    leader_id = rig.place(quantity=10)
    rig.follower_copy(leader_id)
    row = rig.wait_row(leader_id, lambda r: r.broker_order_id is not None, message="placement answer stored")
    return leader_id, row.broker_order_id


def test_a_copy_filled_in_the_same_second_as_the_leader_is_not_an_anomaly(make_rig):
    clock = ExchangeClock()
    rig = make_rig(exchange={"clock": clock})
    leader_id, copy_id = resting(rig)
    rig.exchange.fill(rig.follower_ids["f1"], copy_id)  # the follower's news goes out first
    rig.exchange.fill(LEADER_ID, leader_id)
    rig.wait_row(leader_id, lambda r: r.status == "TRADED", message="copy filled")
    rig.wait_row(leader_id, lambda r: rig.store.leader_order(leader_id).status == "TRADED", message="leader filled")
    deadline = time.monotonic() + 3.0  # longer than the copier waits for the leader's fill
    while time.monotonic() < deadline:
        assert rig.copy_row(leader_id).anomaly is None, "same-second fills were taken for the follower filling first"
        time.sleep(0.05)


def test_a_copy_filled_a_second_before_the_leader_is_an_anomaly(make_rig):
    clock = ExchangeClock()
    rig = make_rig(exchange={"clock": clock})
    leader_id, copy_id = resting(rig)
    rig.exchange.fill(rig.follower_ids["f1"], copy_id)
    clock.now += timedelta(seconds=1)
    rig.exchange.fill(LEADER_ID, leader_id)
    row = rig.wait_row(leader_id, lambda r: r.anomaly == "follower_filled_first", message="anomaly")
    assert row.status == "TRADED"
