"""Copies above the exchange's freeze quantity: cut into slices within it, each its own broker order
under a correlation id derived from the copy's, modified, cancelled, filled and reconciled as one
copy. Counted on the follower's book at the paper exchange (which enforces NSE's freeze limits)."""
from __future__ import annotations

import io
from pathlib import Path

from rich.console import Console

from app.live_view import render
from observability import metrics
from storage import Store
from storage import models as m
from tests.conftest import Rig, client, run_command, start_rig, wait_until
from tests.faultproxy import LATE

NIFTY_CE = "45105"  # NIFTY 24000 CE, lot 75; NSE's freeze quantity for NIFTY options: 1800
BANKNIFTY_CE = "46201"  # lot 35; freeze quantity 600 (595 in whole lots)
DOUBLE = [{"name": "f1", "sizing": {"strategy": "fixed_ratio", "ratio": 2.0}, "funds": 50_000_000}]


def _place_option(rig: Rig, quantity: int, security: str = NIFTY_CE, marketable: bool = False) -> str:
    ltp = rig.exchange.price(security)
    price = round(ltp * (1.05 if marketable else 0.5), 1)
    return rig.place(security_id=security, segment="NSE_FNO", quantity=quantity, price=price, product="MARGIN")


def _rows(rig: Rig, leader_order_id: str, follower: str = "f1") -> list[m.FollowerOrder]:
    return rig.store.read(lambda: list(m.FollowerOrder.select().where(
        (m.FollowerOrder.leader_order_id == leader_order_id) & (m.FollowerOrder.follower == follower))
        .order_by(m.FollowerOrder.id)))


def _slices_on_book(rig: Rig, leader_order_id: str, follower: str = "f1") -> list[dict]:
    """The follower's orders that are slices of its copy of `leader_order_id`, in slice order."""
    ids = [row.correlation_id for row in _rows(rig, leader_order_id, follower)]
    book = {entry["correlationId"]: entry for entry in rig.follower_book(follower)}
    return [book[cid] for cid in ids if cid in book]


def _open_quantities(rig: Rig, leader_order_id: str) -> list[int]:
    return [o["quantity"] for o in _slices_on_book(rig, leader_order_id) if o["orderStatus"] in ("PENDING", "TRANSIT")]


def _refusals(rig: Rig, follower: str = "f1") -> list[dict]:
    return [r for r in rig.exchange.request_log(rig.follower_ids[follower]) if r.get("status", 200) >= 400]


def _counted(family) -> float:
    return family.labels("f1")._value.get()


def test_a_copy_above_the_freeze_quantity_is_placed_as_slices_within_it(make_rig):
    rig = make_rig(followers=DOUBLE)
    sliced, slices_before = _counted(metrics.SLICED_COPIES), _counted(metrics.COPY_SLICES)
    leader_id = _place_option(rig, 1500)  # 20 lots; ratio 2: 3000 units, over NIFTY's 1800

    slices = wait_until(lambda: len(_slices_on_book(rig, leader_id)) == 2 and _slices_on_book(rig, leader_id),
                        message="two slices on the follower's book")
    assert [s["quantity"] for s in slices] == [1800, 1200]
    assert all(s["orderStatus"] == "PENDING" for s in slices)
    assert len({s["correlationId"] for s in slices}) == 2  # each slice its own correlation id
    assert len(rig.follower_book()) == 2
    assert _refusals(rig) == []  # nothing was sent above the freeze quantity
    # the dashboards count the copy as sliced once, and each of its slices
    assert (_counted(metrics.SLICED_COPIES) - sliced, _counted(metrics.COPY_SLICES) - slices_before) == (1, 2)


def test_B_2_an_exit_right_after_a_sliced_entry_waits_for_every_slice(make_rig):
    """The leader buys 1500 and sells them at once; f1's copy of the buy is two slices, and its
    broker takes the second (1200) 3 s after the first. The exit waits for both slices to reach
    the broker before it sells: never more than f1 holds (a short sale of options its margin may
    not cover: refused, it would leave f1 holding what its leader sold)."""
    rig = make_rig(followers=DOUBLE, proxied=["f1"], exchange={"fill_tranche_qty": 3000})  # each fills whole
    f1 = rig.follower_ids["f1"]
    held = rig.proxies["f1"].hang("POST /orders", seconds=3.0, forward=LATE, count=1, body_has='"quantity": 1200')
    _place_option(rig, 1500, marketable=True)
    held_by = lambda account: sum(p["netQty"] for p in rig.exchange.positions(account) if p["securityId"] == NIFTY_CE)
    wait_until(lambda: held_by(rig.config.leader.client_id) == 1500, message="the leader's buy filled")
    wait_until(lambda: held.hits == 1, message="the second slice of f1's copy on its way")
    ltp = rig.exchange.price(NIFTY_CE)
    rig.place(security_id=NIFTY_CE, segment="NSE_FNO", quantity=1500, price=round(ltp * 0.95, 1), product="MARGIN",
              side="SELL")
    orders = wait_until(lambda: (lambda book: book if len(book) == 4 else None)(rig.exchange.orders(f1)), timeout=15,
                        message=lambda: f"f1's slices of both: {rig.exchange.orders(f1)}")
    # the exchange numbers orders as they reach it: f1's position after each, in that order
    held_after, position = [], 0
    for order in sorted(orders, key=lambda o: int(o["orderId"])):
        position += order["quantity"] * (1 if order["transactionType"] == "BUY" else -1)
        held_after.append(position)
    assert held_after[1] == 3000 and min(held_after) >= 0 and held_after[-1] == 0, held_after  # both buys first


def test_slices_are_whole_lots_within_the_freeze_quantity(make_rig):
    rig = make_rig(followers=DOUBLE)
    leader_id = _place_option(rig, 560, security=BANKNIFTY_CE)  # 16 lots of 35; ratio 2: 1120 units, limit 600

    slices = wait_until(lambda: len(_slices_on_book(rig, leader_id)) == 2 and _slices_on_book(rig, leader_id),
                        message="two slices")
    assert [s["quantity"] for s in slices] == [595, 525]  # 17 lots, then the 15 left
    assert _refusals(rig) == []


def test_a_copy_within_the_freeze_quantity_stays_one_order(make_rig):
    rig = make_rig(followers=DOUBLE)
    leader_id = _place_option(rig, 900)  # 1800: at the limit

    copy = rig.follower_copy(leader_id)
    assert copy["quantity"] == 1800
    assert len(_rows(rig, leader_id)) == 1 and len(rig.follower_book()) == 1


def test_the_leaders_price_change_moves_every_slice(make_rig):
    rig = make_rig(followers=DOUBLE)
    leader_id = _place_option(rig, 1500)
    wait_until(lambda: len(_slices_on_book(rig, leader_id)) == 2, message="two slices")
    new_price = round(rig.exchange.price(NIFTY_CE) * 0.45, 1)

    rig.modify(leader_id, price=new_price)

    wait_until(lambda: [s["price"] for s in _slices_on_book(rig, leader_id)] == [new_price, new_price],
               message=lambda: f"both slices at {new_price}: {_slices_on_book(rig, leader_id)}")
    assert [s["quantity"] for s in _slices_on_book(rig, leader_id)] == [1800, 1200]
    assert len(rig.follower_book()) == 2 and _refusals(rig) == []


def test_a_larger_leader_quantity_adds_a_slice_and_a_smaller_one_cancels_slices(make_rig):
    rig = make_rig(followers=[{**DOUBLE[0], "sizing": {"strategy": "fixed_ratio", "ratio": 3.0}}])
    leader_id = _place_option(rig, 900)  # 2700: 1800 + 900
    wait_until(lambda: len(_slices_on_book(rig, leader_id)) == 2, message="two slices")

    slices_before = _counted(metrics.COPY_SLICES)
    rig.modify(leader_id, quantity=1500)  # 4500: 1800 + 1800 + 900
    wait_until(lambda: _open_quantities(rig, leader_id) == [1800, 1800, 900],
               message=lambda: f"re-sliced to 1800, 1800, 900: {_slices_on_book(rig, leader_id)}")
    assert _counted(metrics.COPY_SLICES) - slices_before == 1  # the slice the re-slicing added

    rig.modify(leader_id, quantity=300)  # 900: the first slice alone, the others cancelled
    wait_until(lambda: _open_quantities(rig, leader_id) == [900],
               message=lambda: f"re-sliced to 900: {_slices_on_book(rig, leader_id)}")
    statuses = [s["orderStatus"] for s in _slices_on_book(rig, leader_id)]
    assert statuses == ["PENDING", "CANCELLED", "CANCELLED"]
    assert len(rig.follower_book()) == 3 and _refusals(rig) == []


def test_the_leaders_cancel_cancels_every_slice(make_rig):
    rig = make_rig(followers=DOUBLE)
    leader_id = _place_option(rig, 1500)
    wait_until(lambda: len(_slices_on_book(rig, leader_id)) == 2, message="two slices")

    rig.cancel(leader_id)

    wait_until(lambda: [s["orderStatus"] for s in _slices_on_book(rig, leader_id)] == ["CANCELLED", "CANCELLED"],
               message=lambda: f"both slices cancelled: {_slices_on_book(rig, leader_id)}")


def test_fills_add_up_across_slices(make_rig):
    rig = make_rig(followers=DOUBLE)
    leader_id = _place_option(rig, 1500, marketable=True)

    wait_until(lambda: [s["orderStatus"] for s in _slices_on_book(rig, leader_id)] == ["TRADED", "TRADED"],
               message=lambda: f"both slices traded: {_slices_on_book(rig, leader_id)}")
    position = wait_until(lambda: next((p for p in rig.exchange.positions(rig.follower_ids["f1"])
                                        if p["securityId"] == NIFTY_CE), None), message="the follower's position")
    assert position["netQty"] == 3000
    wait_until(lambda: sum(r.filled_qty for r in _rows(rig, leader_id)) == 3000, message="stored fills add up")
    fills = rig.store.read(lambda: sum(f.quantity for f in m.Fill.select().where(
        (m.Fill.leader_order_id == leader_id) & (m.Fill.account == "f1"))))
    assert fills == 3000


def test_freeze_quantities_from_the_config_replace_the_shipped_table(make_rig):
    rig = make_rig(followers=DOUBLE, exchange={"freeze_limits": {"NIFTY": 900}},
                   config={"freeze_limits": {"NIFTY": 900}})
    leader_id = _place_option(rig, 900)  # 1800 units: two slices of 900 under the lower limit

    slices = wait_until(lambda: len(_slices_on_book(rig, leader_id)) == 2 and _slices_on_book(rig, leader_id),
                        message="two slices of 900")
    assert [s["quantity"] for s in slices] == [900, 900]
    assert _refusals(rig) == []


def test_the_reconciler_and_the_orders_command_show_slices_under_their_copy(make_rig, tmp_path: Path):
    rig = make_rig(followers=DOUBLE)
    leader_id = _place_option(rig, 1500)
    wait_until(lambda: len(_slices_on_book(rig, leader_id)) == 2, message="two slices")
    wait_until(lambda: all(r.broker_order_id for r in _rows(rig, leader_id)), message="both slices placed")

    report = run_command(rig, tmp_path, "reconcile")
    assert report.returncode == 0, report.stdout + report.stderr  # no divergence: the slices make up the copy

    listing = run_command(rig, tmp_path, "orders")
    assert listing.returncode == 0, listing.stderr
    lines = listing.stdout.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith(leader_id))
    copy, first, second = (line.split() for line in lines[at + 1:at + 4])
    assert copy == ["f1", "3000", "PENDING", "2", "slices"], listing.stdout
    assert (first[:4], second[:4]) == (["slice", "1", "1800", "PENDING"], ["slice", "2", "1200", "PENDING"])


def test_the_reconciler_checks_every_slice_of_a_copy(make_rig, tmp_path: Path):
    rig = make_rig(followers=DOUBLE)
    leader_id = _place_option(rig, 1500)
    wait_until(lambda: len(_slices_on_book(rig, leader_id)) == 2, message="two slices")
    first = _slices_on_book(rig, leader_id)[0]
    follower = rig.config.followers[0]
    answer = client(rig.exchange, follower.client_id, follower.access_token).cancel_order(first["orderId"])
    assert answer["status"] == "success", answer  # the follower cancels the first slice by hand

    report = run_command(rig, tmp_path, "reconcile")

    assert report.returncode == 3, report.stdout + report.stderr
    assert "copy_cancelled_leader_open" in report.stdout and "slice 1 of 2" in report.stdout, report.stdout


def test_the_live_view_shows_a_sliced_copy_with_its_slices(make_rig):
    rig = make_rig(followers=DOUBLE)
    leader_id = _place_option(rig, 1500)
    wait_until(lambda: len(_slices_on_book(rig, leader_id)) == 2, message="two slices")
    wait_until(lambda: all(r.status == "PENDING" for r in _rows(rig, leader_id)), message="both slices stored open")

    console = Console(file=io.StringIO(), width=120, height=24, force_terminal=False, color_system=None)
    console.print(render(rig.store, rig.config))

    row = next(line for line in console.file.getvalue().splitlines() if leader_id in line)
    assert "3000 PENDING 2 slices" in row, row


def test_replay_rebuilds_every_slice_from_its_own_events(make_rig, tmp_path: Path):
    rig = make_rig(followers=DOUBLE)
    leader_id = _place_option(rig, 1500)
    wait_until(lambda: len(_slices_on_book(rig, leader_id)) == 2, message="two slices")
    rig.modify(leader_id, price=round(rig.exchange.price(NIFTY_CE) * 0.45, 1))
    wait_until(lambda: all(r.modifications == 1 for r in _rows(rig, leader_id)), message="both slices modified")

    replay = run_command(rig, tmp_path, "replay", leader_id)

    assert replay.returncode == 0, replay.stdout + replay.stderr
    assert "copy for f1 slice 2" in replay.stdout and "NO" not in replay.stdout, replay.stdout


def _placements(rig: Rig, follower: str = "f1") -> int:
    """Placement requests the follower's account received (answered or not)."""
    return sum(1 for r in rig.exchange.request_log(rig.follower_ids[follower])
               if r["method"] == "POST" and r["path"].rstrip("/").endswith("/orders"))


def test_with_slicing_switched_off_a_copy_above_the_freeze_quantity_is_a_recorded_skip(make_rig):
    rig = make_rig(followers=DOUBLE, config={"copy": {"slice_above_freeze_limit": False}})
    leader_id = _place_option(rig, 1500)  # 3000 units, over NIFTY's 1800

    skip = rig.wait_skip(leader_id, "f1")
    assert skip.reason == "above_freeze_quantity", skip.reason
    assert "3000 units" in skip.detail and "1800" in skip.detail, skip.detail
    within = _place_option(rig, 900)  # 1800: still copied, whole
    assert rig.follower_copy(within)["quantity"] == 1800
    assert len(rig.follower_book()) == 1 and _refusals(rig) == []


def test_sliced_placements_whose_answers_are_lost_are_looked_up_slice_by_slice_never_sent_again(make_rig):
    rig = make_rig(followers=DOUBLE)
    rig.exchange.faults.fail_after_effect(1.0, client_id=rig.follower_ids["f1"], paths=("POST /orders",))
    leader_id = _place_option(rig, 1500)  # 1800 + 1200: both placed, neither answer arrives

    wait_until(lambda: [(r.status, bool(r.broker_order_id)) for r in _rows(rig, leader_id)]
               == [("PENDING", True), ("PENDING", True)], timeout=20,
               message=lambda: f"both slices found and adopted: {[(r.status, r.broker_order_id) for r in _rows(rig, leader_id)]}")
    assert [s["quantity"] for s in _slices_on_book(rig, leader_id)] == [1800, 1200]
    assert len(rig.follower_book()) == 2
    assert _placements(rig) == 2  # one request per slice, none sent again


def test_after_a_restart_the_leaders_changes_reach_every_slice(make_rig):
    rig = make_rig(followers=[{**DOUBLE[0], "sizing": {"strategy": "fixed_ratio", "ratio": 3.0}}])
    leader_id = _place_option(rig, 900)  # 2700: 1800 + 900
    wait_until(lambda: all(r.broker_order_id for r in _rows(rig, leader_id)) and len(_rows(rig, leader_id)) == 2,
               message="two slices placed")
    rig.copier.stop()
    start_rig(rig)

    rig.modify(leader_id, quantity=1500)  # 4500: 1800 + 1800 + 900
    wait_until(lambda: _open_quantities(rig, leader_id) == [1800, 1800, 900],
               message=lambda: f"re-sliced to 1800, 1800, 900: {_slices_on_book(rig, leader_id)}")
    rig.cancel(leader_id)
    wait_until(lambda: [s["orderStatus"] for s in _slices_on_book(rig, leader_id)] == ["CANCELLED"] * 3,
               message=lambda: f"every slice cancelled: {_slices_on_book(rig, leader_id)}")
    assert len(rig.follower_book()) == 3 and _placements(rig) == 3 and _refusals(rig) == []


def test_a_part_filled_slice_keeps_its_fill_when_the_leader_shrinks_its_order(make_rig):
    rig = make_rig(followers=[{**DOUBLE[0], "sizing": {"strategy": "fixed_ratio", "ratio": 3.0}}])
    leader_id = _place_option(rig, 900)  # 2700: 1800 + 900
    wait_until(lambda: len(_slices_on_book(rig, leader_id)) == 2, message="two slices")
    first = _slices_on_book(rig, leader_id)[0]
    rig.exchange.fill(rig.follower_ids["f1"], first["orderId"], qty=1200)
    wait_until(lambda: _rows(rig, leader_id)[0].filled_qty == 1200, message="the fill stored")

    rig.modify(leader_id, quantity=525)  # 1575: the first slice (1200 of it filled) takes it all

    wait_until(lambda: [(s["quantity"], s["orderStatus"]) for s in _slices_on_book(rig, leader_id)]
               == [(1575, "PART_TRADED"), (900, "CANCELLED")],
               message=lambda: f"first slice cut to 1575, second cancelled: {_slices_on_book(rig, leader_id)}")
    assert len(rig.follower_book()) == 2 and _refusals(rig) == []


def test_a_refused_slice_is_dead_lettered_and_an_operators_retry_places_that_slice_again(make_rig, tmp_path: Path):
    rig = make_rig(followers=DOUBLE, config={"copy": {"sweep_seconds": 0.2}})
    rig.exchange.reject_next(rig.follower_ids["f1"], error_code="DH-905", message="Invalid quantity")
    leader_id = _place_option(rig, 1500)  # 1800 + 1200: the first to arrive is refused
    letter = wait_until(lambda: rig.store.read(lambda: m.DeadLetter.get_or_none(m.DeadLetter.leader_order_id == leader_id)),
                        message="a dead letter")
    refused = next(r for r in _rows(rig, leader_id) if r.correlation_id == letter.correlation_id)
    wait_until(lambda: len(_open_quantities(rig, leader_id)) == 1, message="the other slice placed")

    assert run_command(rig, tmp_path, "dlq", "retry", str(letter.id)).returncode == 0

    wait_until(lambda: sorted(_open_quantities(rig, leader_id)) == [1200, 1800],
               message=lambda: f"both slices open: {_slices_on_book(rig, leader_id)}")
    again = next(r for r in _rows(rig, leader_id) if r.part == refused.part)
    assert again.generation == 1 and again.correlation_id != refused.correlation_id
    assert len(rig.follower_book()) == 2 and _placements(rig) == 3  # refused before any order existed


def test_a_filled_naked_leg_above_the_freeze_quantity_is_flattened_in_slices(make_rig):
    rig = make_rig(followers=DOUBLE, config={"copy": {"flatten_naked_legs": True, "leg_window_seconds": 2.0}})
    call = _place_option(rig, 1500, marketable=True)  # 3000 at the follower: 1800 + 1200, both fill
    wait_until(lambda: [r.status for r in _rows(rig, call)] == ["TRADED", "TRADED"], message="the sliced leg filled")
    rig.exchange.reject_next(rig.follower_ids["f1"], error_code="DH-906", message="RMS: order rejected")
    put_price = round(rig.exchange.price("45106") * 1.1, 1)
    rig.place(security_id="45106", segment="NSE_FNO", side="SELL", quantity=150, price=put_price, product="MARGIN")

    def net() -> int | None:
        return next((p["netQty"] for p in rig.exchange.positions(rig.follower_ids["f1"])
                     if p["securityId"] == NIFTY_CE), None)

    wait_until(lambda: net() == 0, message=lambda: f"the naked call (3000) flattened: net {net()}, "
                                                   f"refusals {_refusals(rig)}")
    closing = [o for o in rig.follower_book() if o["securityId"] == NIFTY_CE and o["transactionType"] == "SELL"]
    assert sorted(o["quantity"] for o in closing) == [1200, 1800], closing
    assert len(_refusals(rig)) == 1  # the put's injected refusal only: nothing above the freeze quantity


def test_a_start_with_an_empty_database_adopts_every_slice_of_a_copy(make_rig, tmp_path: Path):
    rig = make_rig(followers=DOUBLE)
    leader_id = _place_option(rig, 1500)  # 1800 + 1200
    wait_until(lambda: len(_slices_on_book(rig, leader_id)) == 2, message="two slices")
    rig.copier.stop()
    rig.store.close()
    for path in tmp_path.glob("copytrader.db*"):  # the database is lost
        path.unlink()
    rig.store = Store(rig.config.storage.path, retry_seconds=rig.config.storage.retry_seconds)
    start_rig(rig)

    wait_until(lambda: [(r.part, bool(r.broker_order_id)) for r in _rows(rig, leader_id)] == [(0, True), (1, True)],
               message=lambda: f"both slices adopted: {[(r.part, r.broker_order_id) for r in _rows(rig, leader_id)]}")
    rig.cancel(leader_id)
    wait_until(lambda: [s["orderStatus"] for s in _slices_on_book(rig, leader_id)] == ["CANCELLED", "CANCELLED"],
               message=lambda: f"both adopted slices cancelled: {_slices_on_book(rig, leader_id)}")
    assert len(rig.follower_book()) == 2 and _placements(rig) == 2


def test_a_copy_caught_up_after_a_pause_is_placed_in_slices_and_cancelled_whole(make_rig, tmp_path: Path):
    from tests.test_follower_control import answering

    rig = answering(make_rig(followers=DOUBLE))
    assert run_command(rig, tmp_path, "follower", "pause", "f1").returncode == 0
    leader_id = _place_option(rig, 1500)  # 3000 when caught up: 1800 + 1200
    assert rig.wait_skip(leader_id, "f1").reason == "follower_paused"

    resumed = run_command(rig, tmp_path, "follower", "resume", "f1", "--catch-up")
    assert resumed.returncode == 0, resumed.stderr

    wait_until(lambda: sorted(_open_quantities(rig, leader_id)) == [1200, 1800],
               message=lambda: f"caught up as two slices: {rig.follower_book()}, refusals {_refusals(rig)}")
    assert _refusals(rig) == []
    rig.cancel(leader_id)
    wait_until(lambda: [o["orderStatus"] for o in rig.follower_book()] == ["CANCELLED", "CANCELLED"],
               message=lambda: f"both slices cancelled: {rig.follower_book()}")
