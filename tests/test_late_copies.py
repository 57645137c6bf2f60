"""Copies are never sent late. Past the broker's rate, copies queue; a MARKET copy sent seconds
after the leader's order filled trades at a price the leader never saw. So a copy of a MARKET (or
stop-loss market) order older than `copy.max_delay_seconds` is skipped with its reason and an
alert, never sent; counted on the exchange's books."""
from __future__ import annotations

import time

import pytest
import yaml

from actors.messages import PlaceCopy, PlacementExpired
from actors.rate_limiter import RateLimiter
from app.commands import replay_order
from copier.config import ConfigError, parse
from broker.gateway import Answer
from storage import models as m
from tests.conftest import ROOT, wait_until
from trading.orders import OrderTerms, OrderType, Product, Side, Validity

BURST = 12
ONE_ORDER_A_SECOND = {"rate_limits": {"orders_per_second": 1}}


def _late_skips(rig, leader_ids: list[str]) -> list[m.Skip]:
    return [s for leader_id in leader_ids for s in rig.skips(leader_id, "f1") if s.reason == "copy_too_late"]


def test_a_burst_of_market_orders_above_the_followers_rate_skips_the_late_copies_never_places_them(make_rig):
    rig = make_rig(exchange={"rate_limits": {"per_second": 100}}, config=ONE_ORDER_A_SECOND)
    leader_ids = [rig.place(order_type="MARKET", quantity=2) for _ in range(BURST)]

    def accounted() -> bool:
        return rig.follower_placements("f1") + len(_late_skips(rig, leader_ids)) == BURST

    wait_until(accounted, 30, message=lambda: f"every copy placed or skipped as late: "
                                              f"{rig.follower_placements('f1')} placed, "
                                              f"{len(_late_skips(rig, leader_ids))} skipped")
    placed = rig.follower_placements("f1")
    assert 1 <= placed <= 8, f"{placed} of {BURST} copies placed at one order a second with a 5 s limit"
    assert len(rig.follower_book("f1")) == placed
    late = _late_skips(rig, leader_ids)
    assert late and all("not sent" in s.detail for s in late), [s.detail for s in late]
    skipped = {s.leader_order_id for s in late}
    for leader_id in skipped:
        assert rig.copy_row(leader_id).broker_order_id is None
        assert replay_order(rig.store, leader_id)[0], "the skip is in the copy's event log"
    alert = rig.store.read(lambda: m.Alert.get_or_none(m.Alert.key == "late:f1"))
    assert alert is not None and "not sent" in alert.message


def test_the_rate_limiter_answers_a_placement_past_its_time_as_expired_and_sends_nothing():
    class Gateway:
        account = "f1"
        sent: list[str] = []

        def send_place(self, terms, correlation_id):
            self.sent.append(correlation_id)
            return None

        def place(self, terms, correlation_id):
            self.sent.append(correlation_id)
            return Answer(data={"orderId": "F1", "orderStatus": "PENDING"})

    class Inbox:
        def __init__(self) -> None:
            self.told: list = []

        def tell(self, message) -> None:
            self.told.append(message)

    terms = OrderTerms("2885", "NSE_EQ", Side.BUY, Product.INTRADAY, OrderType.MARKET, Validity.DAY, 2)
    gateway, order_actor = Gateway(), Inbox()
    limiter = RateLimiter(gateway, order_limits=[(1, 1.0)], data_limits=[(20, 1.0)])  # type: ignore[arg-type]
    limiter.actor = Inbox()
    try:
        late = PlaceCopy(account="f1", leader_order_id="L1", correlation_id="CTLATE", reply_to=order_actor,
                         terms=terms, expires_at=time.time() - 0.1)
        limiter.tell(late)
        assert [type(m) for m in order_actor.told] == [PlacementExpired] and order_actor.told[0].command == late
        assert gateway.sent == [] and not limiter.queue
    finally:
        limiter.close()


@pytest.mark.parametrize("value,error", [(-1, "copy.max_delay_seconds: must be >= 0"),
                                         ("5s", "copy.max_delay_seconds: must be a number")])
def test_a_bad_max_delay_is_a_config_error_naming_the_key(value, error):
    raw = yaml.safe_load((ROOT / "config.yaml").read_text())
    assert parse(raw).copy.max_delay_seconds == 5.0  # the shipped default
    raw["copy"]["max_delay_seconds"] = value
    with pytest.raises(ConfigError, match=error):
        parse(raw)
