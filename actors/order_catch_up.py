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
while the leader's exit rests unfilled: once it trades, its copy is on its way to doing so too. A
new incarnation of such an exit tells the sizing actor of it (`ExitWaiting`), so a restart in
between changes nothing, and so does one whose leader changed its quantity.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from actors.messages import CatchUpCopy, ExitWaiting, ProtectCopy, ReduceCopy, SizeCopy
from actors.sizing import NO_POSITION_TO_EXIT
from actors.sizing_control import FOLLOWER_PAUSED
from trading import copy as c
from trading.copies_on_way import Protection
from trading.instruments import Instrument
from trading.orders import OrderStatus, OrderType
from trading.risk import exit_quantity, position_key

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
    """The follower's copy of this exit, which waits for its price, grows to what it now holds
    sized as the exit is (`ProtectCopy`): placed when it was skipped, else modified; never shrunk."""
    follower, leader = request.follower, actor.leader
    instrument = _waiting_for_price(actor)
    if leader is None or instrument is None or _refused(actor) is not None:
        return
    parts = actor.parts_of(follower)
    grows = _grows(parts)
    terms = leader.state.terms
    quantity = exit_quantity(request.before, terms.quantity, request.held, instrument.lot_size)
    target = terms.with_changes(quantity=quantity, disclosed_qty=0)
    if grows == _SKIPPED and quantity > 0:
        actor.operate(lambda plan: actor.slices.catch_up(plan, follower, instrument, target))
    elif grows == _RESTING and sum(p.target.quantity for p in parts) < quantity:
        actor.operate(lambda plan: actor.slices.retarget(plan, follower, target, instrument))
    else:
        return
    log.info("leader order %s: %s's exit grows to %d: its copy of the order before filled", actor.leader_order_id,
             follower, quantity, extra=actor.fields(follower))


def reduce_resting(actor: "OrderActor", request: ReduceCopy) -> None:
    """What still rests of the follower's copy of this (wholly filled) leader order shrinks by the
    fraction its leader's exit sold (`ReduceCopy`), rounded as an exit is; all of it cancelled when
    that leaves none."""
    follower, leader = request.follower, actor.leader
    if leader is None or leader.state.status is not OrderStatus.TRADED:
        return
    terms = leader.state.terms
    instrument = actor.ctx.instruments.get(terms.exchange_segment, terms.security_id)
    parts = actor.parts_of(follower)
    live = [p for p in parts if not p.status.is_terminal and not p.cancel_requested]
    if instrument is None or not live:
        return
    rests = sum(p.target.quantity - p.filled_qty for p in live)
    fewer = exit_quantity(request.before, request.exit_quantity, rests if request.before > 0 else -rests,
                          instrument.lot_size)
    if fewer <= 0:
        return
    why = f"leader order {request.exit_order_id} sold {request.exit_quantity} of {abs(request.before)}"
    if fewer >= rests:
        actor.operate(lambda plan: [plan.apply(p.key, c.CancelRequested(why)) for p in live])
    else:
        whole = sum(p.target.quantity if p in live else p.filled_qty for p in parts)
        target = live[0].target.with_changes(quantity=whole - fewer)
        actor.operate(lambda plan: actor.slices.retarget(plan, follower, target, instrument))
    log.info("leader order %s: %s's copy rests %d fewer: %s", actor.leader_order_id, follower, fewer, why,
             extra=actor.fields(follower))


def tell_exit_waiting(actor: "OrderActor") -> None:
    """An exit that waits for its price tells the sizing actor so, with the followers whose copies
    of it may grow: a new incarnation of it (the sizing actor's memory of the exit ended with the
    last run), or one whose leader changed its quantity (the fraction it sells)."""
    leader, instrument = actor.leader, _waiting_for_price(actor)
    if leader is None or instrument is None or not leader.reduces_position or leader.position_before is None:
        return
    followers = tuple(dict.fromkeys(copy.follower for copy in actor.copies.values()
                                    if _grows(actor.parts_of(copy.follower)) is not None))
    terms = leader.state.terms
    protection = Protection(actor.leader_order_id, position_key(terms), leader.position_before, terms.quantity,
                            instrument.lot_size)
    actor.ctx.sizing.tell(ExitWaiting(actor.leader_account, protection, followers))


_SKIPPED, _RESTING = "skipped", "resting"


def _grows(parts: list[c.CopyState]) -> str | None:
    """How a follower's copy (its slices) of an exit that waits for its price grows: placed, as it
    was skipped for holding nothing (`_SKIPPED`); modified, as it rests unfilled (`_RESTING`); or
    not at all (None)."""
    if not parts:
        return None
    if parts[0].status is OrderStatus.SKIPPED and parts[0].skip_reason == NO_POSITION_TO_EXIT:
        return _SKIPPED
    if all(not p.status.is_terminal and not p.cancel_requested and not p.filled_qty for p in parts):
        return _RESTING
    return None


def _waiting_for_price(actor: "OrderActor") -> Instrument | None:
    """The instrument of the actor's leader order while that order waits for its price (open, at a
    price or trigger, nothing filled); else None."""
    leader = actor.leader
    if (leader is None or not leader.state.status.is_open or leader.state.filled_qty
            or leader.state.terms.order_type is OrderType.MARKET):
        return None
    terms = leader.state.terms
    return actor.ctx.instruments.get(terms.exchange_segment, terms.security_id)


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
