"""A copy window per follower: new placements only within the follower's hours (exchange time),
while copies already placed, and exits, follow the leader at any hour."""
from __future__ import annotations

from datetime import datetime, time, timedelta, timezone
from pathlib import Path

import pytest
import yaml

from observability import metrics
from copier.config import ConfigError, load, parse
from tests.conftest import LEADER_ID, RELIANCE, ROOT, wait_until
from trading.filters import OUTSIDE_COPY_WINDOW, CopyWindow

IST = timezone(timedelta(hours=5, minutes=30))
WEDNESDAY = datetime(2026, 11, 25, tzinfo=IST)
WINDOW = CopyWindow(time(9, 20), time(15, 10))


def _ist(hour: int, minute: int, second: int = 0) -> datetime:
    return WEDNESDAY.replace(hour=hour, minute=minute, second=second)


# -- the rule ------------------------------------------------------------------------------------

@pytest.mark.parametrize("at", [_ist(9, 20), _ist(12, 0), _ist(15, 9, 59)])
def test_a_new_order_inside_the_window_is_copied(at: datetime) -> None:
    assert WINDOW.refusal(at, exit=False) is None


@pytest.mark.parametrize("at,shown", [(_ist(9, 19, 59), "09:19:59"), (_ist(15, 10), "15:10:00"),
                                      (_ist(15, 25, 7), "15:25:07"), (_ist(0, 5), "00:05:00")])
def test_a_new_order_outside_the_window_is_refused_naming_the_window_and_the_time(at: datetime, shown: str) -> None:
    detail = WINDOW.refusal(at, exit=False)
    assert detail is not None
    assert "09:20-15:10 IST" in detail and f"{shown} IST" in detail


@pytest.mark.parametrize("at", [_ist(9, 0), _ist(15, 10), _ist(15, 29)])
def test_an_exit_outside_the_window_is_copied(at: datetime) -> None:
    assert WINDOW.refusal(at, exit=True) is None


def test_the_window_is_read_in_exchange_time_whatever_the_clock_zone() -> None:
    assert WINDOW.refusal(datetime(2026, 11, 25, 4, 30, tzinfo=timezone.utc), exit=False) is None  # 10:00 IST
    assert "15:30:00 IST" in (WINDOW.refusal(datetime(2026, 11, 25, 10, 0, tzinfo=timezone.utc), exit=False) or "")


def test_a_time_without_a_zone_is_refused_rather_than_guessed() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        WINDOW.refusal(datetime(2026, 11, 25, 10, 0), exit=False)


@pytest.mark.parametrize("start,end", [(time(15, 10), time(9, 20)), (time(10, 0), time(10, 0))])
def test_a_window_must_start_before_it_ends(start: time, end: time) -> None:
    with pytest.raises(ValueError, match="before"):
        CopyWindow(start, end)


# -- the config key ------------------------------------------------------------------------------

def _config(window) -> dict:
    raw = yaml.safe_load((ROOT / "config.yaml").read_text())
    raw["followers"][0]["copy_window"] = window
    return raw


def test_the_config_key_gives_the_follower_its_window() -> None:
    config = parse(_config({"start": "09:20", "end": "15:10"}))
    assert config.followers[0].copy_window == WINDOW
    assert config.followers[1].copy_window is None


@pytest.mark.parametrize("window,expected", [
    ({"start": "9.20", "end": "15:10"}, "followers[0].copy_window.start: must be a time"),
    ({"start": "09:20", "end": "25:00"}, "followers[0].copy_window.end: must be a time"),
    ({"start": "09:20", "end": 910}, "followers[0].copy_window.end: must be a time"),
    ({"start": "15:10", "end": "09:20"}, "followers[0].copy_window.start: must be before end (15:10 >= 09:20)"),
    ({"start": "10:00", "end": "10:00"}, "followers[0].copy_window.start: must be before end"),
    ({"start": "09:20"}, "followers[0].copy_window.end: is required"),
    ({"end": "15:10"}, "followers[0].copy_window.start: is required"),
    ({"start": "09:20", "end": "15:10", "stop": "15:20"}, "followers[0].copy_window.stop: unknown key"),
    ("09:20-15:10", "followers[0].copy_window: must be a mapping"),
])
def test_a_bad_copy_window_names_the_key(window, expected: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse(_config(window))
    assert expected in str(error.value)


def test_an_unquoted_time_that_yaml_reads_as_a_number_is_explained(tmp_path: Path) -> None:
    text = (ROOT / "config.yaml").read_text().replace(
        "    funds: 1000000            # paper mode only\n",
        "    funds: 1000000            # paper mode only\n    copy_window: {start: 09:20, end: 15:10}\n", 1)
    assert "copy_window" in text
    path = tmp_path / "unquoted.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as error:
        load(path)
    assert "followers[0].copy_window.end: must be a time" in str(error.value)
    assert 'write "15:10"' in str(error.value)


# -- end to end, against the paper exchange ------------------------------------------------------

class Clock:
    """The copier's exchange clock, moved by the test."""

    def __init__(self, at: datetime) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at


WINDOWED = {"name": "f1", "sizing": {"strategy": "fixed_ratio", "ratio": 0.5},
            "copy_window": {"start": "09:20", "end": "15:10"}}
ALWAYS = {"name": "f2", "sizing": {"strategy": "fixed_ratio", "ratio": 0.5}}


def _skips_counted(follower: str = "f1") -> float:
    return metrics.SKIPS.labels(follower, OUTSIDE_COPY_WINDOW)._value.get()


def _position(rig, account: str) -> int:
    client_id = rig.follower_ids.get(account, account)
    return sum(p["netQty"] for p in rig.exchange.positions(client_id) if p["securityId"] == RELIANCE)


def test_a_leader_order_outside_the_copy_window_is_a_recorded_skip_with_nothing_on_the_books(make_rig):
    rig = make_rig(followers=[WINDOWED, ALWAYS], clock=Clock(_ist(15, 20, 30)))
    counted = _skips_counted()
    leader_id = rig.place(quantity=10)
    assert rig.follower_copy(leader_id, "f2")["quantity"] == 5  # the window is f1's alone
    skip = rig.wait_skip(leader_id, "f1")
    assert skip.reason == "outside_copy_window"
    assert "09:20-15:10 IST" in skip.detail and "15:20:30 IST" in skip.detail
    assert rig.follower_book("f1") == [] and rig.follower_placements("f1") == 0
    # counted once the skip is stored (after its transaction): waited for, not read at once
    wait_until(lambda: _skips_counted() == counted + 1, 5, message="one skip counted")


def test_a_leader_order_inside_the_copy_window_is_copied(make_rig):
    rig = make_rig(followers=[WINDOWED], clock=Clock(_ist(9, 20)))
    leader_id = rig.place(quantity=10)
    assert rig.follower_copy(leader_id)["quantity"] == 5
    assert rig.skips(leader_id) == []


def test_a_copy_placed_inside_the_window_follows_the_leaders_modify_and_cancel_after_it_closed(make_rig):
    clock = Clock(_ist(15, 5))
    rig = make_rig(followers=[WINDOWED], clock=clock)
    leader_id = rig.place(quantity=10)
    rig.follower_copy(leader_id)
    clock.at = _ist(15, 30)
    price = round(rig.exchange.price(RELIANCE) * 0.95, 1)
    rig.modify(leader_id, quantity=30, price=price)
    rig.wait_copy(leader_id, lambda c: c["quantity"] == 15 and c["price"] == price, message="modified after the window")
    rig.cancel(leader_id)
    rig.wait_copy(leader_id, lambda c: c["orderStatus"] == "CANCELLED", message="cancelled after the window")
    assert rig.skips(leader_id) == []
    late = rig.place(quantity=10)  # while a new order at this hour is not copied
    assert rig.wait_skip(late, "f1").reason == "outside_copy_window"
    assert rig.follower_placements("f1") == 1


def test_an_exit_outside_the_copy_window_is_copied_sized_as_an_exit(make_rig):
    clock = Clock(_ist(10, 0))
    rig = make_rig(followers=[WINDOWED], clock=clock)
    entry = rig.place(order_type="MARKET", quantity=100)
    rig.wait_row(entry, lambda r: r.status == "TRADED", message="entry copied and filled")
    wait_until(lambda: _position(rig, "f1") == 50, message="follower holds 50")
    clock.at = _ist(15, 20)
    more = rig.place(order_type="MARKET", quantity=20)  # adds to the position: a new placement
    assert rig.wait_skip(more, "f1").reason == "outside_copy_window"
    wait_until(lambda: _position(rig, LEADER_ID) == 120, message="leader holds 120")
    exit_order = rig.place(order_type="MARKET", quantity=60, side="SELL")  # half of the leader's 120
    assert rig.follower_copy(exit_order)["quantity"] == 25  # half of its own 50, not 0.5 x 60
    wait_until(lambda: _position(rig, "f1") == 25, message="follower holds 25")
    assert rig.skips(exit_order) == []


def test_a_strategy_leg_outside_the_window_unwinds_the_legs_placed_inside_it(make_rig):
    clock = Clock(_ist(15, 9, 30))
    rig = make_rig(followers=[WINDOWED], config={"copy": {"leg_window_seconds": 5.0}}, clock=clock)
    call_price = round(rig.exchange.price("45105") * 0.9, 1)
    call = rig.place(security_id="45105", segment="NSE_FNO", quantity=150, price=call_price, product="MARGIN")
    rig.follower_copy(call)
    clock.at = _ist(15, 10)
    put_price = round(rig.exchange.price("45106") * 1.1, 1)
    put = rig.place(security_id="45106", segment="NSE_FNO", side="SELL", quantity=150, price=put_price,
                    product="MARGIN")
    assert rig.wait_skip(put, "f1").reason == "outside_copy_window"
    rig.wait_copy(call, lambda c: c["orderStatus"] == "CANCELLED", message="the naked leg cancelled")
    assert rig.follower_placements("f1") == 1
