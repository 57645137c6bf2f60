"""A copy placed later than its leader order, in that order's actor.

A resume with catch-up: the follower's copy, skipped while it was paused, is sized now from the
leader's order as it stands and placed like any copy (trading/copy.py `CaughtUp`: the next
generation's correlation id, stored before it is sent). Only a leader order still open is caught
up; a copy skipped for any other reason, or already caught up, is left alone. The copy's own rules
then apply as to every copy: a MARKET order seen longer ago than `copy.max_delay_seconds` is
skipped as too late rather than sent at today's price.

An exit that waits for its price grows (`ProtectCopy`, from the sizing actor): the follower's copy
of the leader's entry rested when the exit was sized, and has filled since. A copy skipped then,
the follower holding nothing, is placed the same way; one resting at its broker is modified. Only
while the leader's exit rests unfilled: once it trades, its copy is on its way to doing so too.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from actors.messages import CatchUpCopy, ProtectCopy, SizeCopy
from actors.sizing import NO_POSITION_TO_EXIT
from actors.sizing_control import FOLLOWER_PAUSED
from trading import copy as c
from trading.orders import OrderStatus

if TYPE_CHECKING:
    from actors.order import OrderActor
    from actors.order_plan import Plan

log = logging.getLogger("actors.order")


def catch_up(actor: "OrderActor", request: CatchUpCopy) -> None:
    follower = request.follower
    copy, leader = actor.copies.get(follower), actor.leader
    if (copy is None or leader is None or copy.status is not OrderStatus.SKIPPED
            or copy.skip_reason != FOLLOWER_PAUSED or not leader.state.status.is_open):
        return
    terms = leader.state.terms
    ctx = actor.ctx
    instrument = ctx.instruments.get(terms.exchange_segment, terms.security_id)
    if instrument is None:
        return
    refused = _refused(actor)
    if refused is not None:  # as for a new order: nothing goes out while copying is off or the market shut
        actor.operate(lambda plan: plan.skip(follower, *refused))
        return
    decision = actor.ask_sizing(SizeCopy(follower, c.correlation_id(actor.leader_order_id, follower, copy.generation + 1),
                                         terms, instrument, leader.state.avg_price, leader.state.filled_qty,
                                         actor.leader_order_id, new_order=True, leader=actor.leader_account))

    def build(plan: "Plan") -> None:
        if decision.skip_reason:
            plan.skip(follower, decision.skip_reason, decision.detail)
        else:  # (above the freeze quantity: placed in slices, actors/order_slices.py)
            actor.slices.catch_up(plan, follower, instrument, terms.with_changes(
                quantity=decision.quantity, disclosed_qty=decision.disclosed_qty))

    actor.operate(build)
    log.info("leader order %s: %s caught up after its pause: %s", actor.leader_order_id, follower,
             f"skipped ({decision.skip_reason}: {decision.detail})" if decision.skip_reason
             else f"{decision.quantity} placed", extra=actor.fields(follower))


def protect(actor: "OrderActor", request: ProtectCopy) -> None:
    follower, leader = request.follower, actor.leader
    if leader is None or not leader.state.status.is_open or leader.state.filled_qty:
        return
    parts = actor.parts_of(follower)
    terms = leader.state.terms
    instrument = actor.ctx.instruments.get(terms.exchange_segment, terms.security_id)
    if not parts or instrument is None or _refused(actor) is not None:
        return
    target = terms.with_changes(quantity=request.quantity, disclosed_qty=0)
    first = parts[0]
    if first.status is OrderStatus.SKIPPED and first.skip_reason == NO_POSITION_TO_EXIT:
        actor.operate(lambda plan: actor.slices.catch_up(plan, follower, instrument, target))
    elif (all(not p.status.is_terminal and not p.cancel_requested and not p.filled_qty for p in parts)
          and sum(p.target.quantity for p in parts) < request.quantity):
        actor.operate(lambda plan: actor.slices.retarget(plan, follower, target, instrument))
    else:
        return
    log.info("leader order %s: %s's exit grows to %d: its copy of the order before filled", actor.leader_order_id,
             follower, request.quantity, extra=actor.fields(follower))


def _refused(actor: "OrderActor") -> tuple[str, str] | None:
    ctx = actor.ctx
    off = ctx.copying_enabled()
    if off:
        return off, "copying is switched off"
    if ctx.calendar is None or actor.leader is None:
        return None
    terms = actor.leader.state.terms
    verdict = ctx.calendar.check_order(terms.exchange_segment, terms.order_type.value, terms.amo, ctx.clock())
    return None if verdict.allowed else (verdict.reason or "market_closed", verdict.detail)
