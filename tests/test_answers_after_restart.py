"""Placements sent before a restart and answered (or landing) after it: a copy is never placed
twice. An order actor restarted while calls of its previous incarnation still wait at the rate
limiter (a crash, or storage that went down) gets their answers: each is news of the copy, but
none may end the call the new incarnation has in flight. A copier restarted while a placement is
on its way believes a lookup that finds nothing only once the broker can no longer act on it.
Counted on the exchange's books (the paper exchange refuses a correlation id used before; Dhan
would take it: a second order)."""
from __future__ import annotations

import dataclasses

from actors.feed import store_and_route
from actors.messages import LEADER
from broker.parsing import from_order_book
from tests.conftest import LEADER_ID, start_rig, wait_until
from tests.faultproxy import LATE, NEVER

DH_908 = '{"errorType": "Internal_Server_Error", "errorCode": "DH-908", "errorMessage": "internal server error"}'


def test_an_answer_to_a_call_an_earlier_incarnation_left_queued_never_lets_a_copy_be_placed_twice(make_rig):
    rig = make_rig(config={"rate_limits": {"orders_per_second": 1}}, proxied=["f1"])
    earlier = rig.place(quantity=10, price=1300.0)
    rig.follower_copy(earlier)  # the follower's window is full for a second: the next placement waits
    refused = rig.proxies["f1"].respond("POST /orders", 500, DH_908, forward=NEVER, count=1)
    order = rig.place(quantity=10, price=1301.0)
    rig.wait_row(order, lambda row: True, message="the copy stored, its placement queued")

    # an update that crashes the order actor: it restarts (three times, then the update is parked)
    # while its placement still waits at the rate limiter, and each incarnation looks the copy up
    seen = from_order_book(rig.exchange.order(LEADER_ID, order), source="socket")
    crashing = dataclasses.replace(seen, terms=seen.terms.with_changes(price=1302.0), avg_price=float("nan"),
                                   sequence=(rig.store.leader_order(order).sequence or 0) + 1)
    assert store_and_route(rig.store, rig.copier.address("router"), LEADER, crashing)

    copy = rig.follower_copy(order, timeout=15)  # the queued placement refused (DH-908), then placed once
    assert refused.hits == 1 and copy["quantity"] == 5
    rig.cancel(order)
    rig.wait_copy(order, lambda c: c["orderStatus"] == "CANCELLED", message="the leader's cancel reached the copy")
    placements = [r for r in rig.exchange.request_log(rig.follower_ids["f1"])
                  if r["method"] == "POST" and r["path"] == "/orders"]
    assert [(r["status"], r["error_code"]) for r in placements] == [(200, None), (200, None)]  # none refused as a reuse
    assert [o["orderStatus"] for o in rig.follower_book()] == ["PENDING", "CANCELLED"]


def test_a_placement_still_on_its_way_when_the_copier_restarts_is_adopted_never_placed_again(make_rig):
    rig = make_rig(config={"broker": {"timeout_seconds": 1.0}}, proxied=["f1"])
    proxy = rig.proxies["f1"]
    held = proxy.hang("POST /orders", 1.5, forward=LATE, count=1)  # reaches the exchange 1.5 s after it was sent
    order = rig.place(quantity=10, price=1301.0)
    wait_until(lambda: held.hits == 1, message="the placement on its way")
    rig.copier.stop()
    start_rig(rig)  # looks the copy up at once: nothing there yet

    wait_until(lambda: [c for c in proxy.calls_to("POST /orders") if c["action"] == "hang"], 10,
               message="the held placement delivered")
    copy = rig.follower_copy(order, timeout=15)
    rig.cancel(order)
    rig.wait_copy(order, lambda c: c["orderStatus"] == "CANCELLED", message="the leader's cancel reached the copy")
    placements = [(r["status"], r["error_code"]) for r in rig.exchange.request_log(rig.follower_ids["f1"])
                  if r["method"] == "POST" and r["path"] == "/orders"]
    assert placements == [(200, None)] and copy["quantity"] == 5  # the late one, adopted; none refused as a reuse
    assert len(rig.follower_book()) == 1
