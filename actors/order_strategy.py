"""Strategy legs: when one leg of a multi-leg strategy cannot be placed for a follower, its other
legs there must not stay naked. The failing leg's order actor asks the router to unwind the
strategy; every other leg's actor cancels its open copy and, when that copy already filled,
closes it with a MARKET order (`copy.flatten_naked_legs`) or alerts.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from actors.messages import CopyPlaced, PlaceCopy, PlacementUnknown, UnwindLeg, UnwindStrategy
from actors.order_part import OrderPart
from observability import metrics
from trading import copy as c
from trading.orders import OrderType, Side, Validity, correlation_id

if TYPE_CHECKING:
    from actors.order import OrderActor
    from actors.order_plan import Plan

log = logging.getLogger("actors.order")


def flatten_correlation_id(leader_order_id: str, follower: str, part: int = 0) -> str:
    """The correlation id of the order that closes a naked strategy leg (one per leg and follower;
    one per slice when what filled is above the freeze quantity)."""
    return correlation_id(leader_order_id + ":flatten" + (f"#{part}" if part else ""), follower)


class Legs(OrderPart):
    def __init__(self, actor: "OrderActor") -> None:
        super().__init__(actor)
        self._flattening: set[str] = set()  # correlation ids of the flattening orders sent

    def unwind_strategy(self, follower: str, reason: str) -> None:
        """This leg cannot be placed for `follower`: the router unwinds the strategy's other legs there."""
        actor = self.actor
        group_id = actor.leader.group_id if actor.leader else None
        if not group_id:
            return
        actor.ctx.alert("critical", f"strategy:{follower}",
                        f"follower {follower}: a leg ({actor.leader_order_id}) of strategy {group_id} "
                        f"could not be placed ({reason}); unwinding its other legs")
        if actor.supervisor is not None:
            actor.supervisor.tell(UnwindStrategy(group_id, follower, reason, actor.leader_order_id))

    def unwind_leg(self, request: UnwindLeg) -> None:
        actor = self.actor
        parts = actor.parts_of(request.follower)  # every slice of the follower's copy of this leg
        if not parts:
            return
        copy = parts[0]
        follower = request.follower

        if any(part.held for part in parts):  # a held SELL leg: refused with what its BUY legs say, when they do
            actor.held_legs.check()

        def build(plan: "Plan") -> None:
            actor.held_legs.refuse(plan, follower, f"its strategy was unwound ({request.reason})")
            for part in plan.parts(follower):
                if not part.status.is_terminal and not part.cancel_requested:
                    plan.apply(part.key, c.CancelRequested(f"strategy unwound: {request.reason}"))
            filled = sum(part.filled_qty for part in parts)
            if filled <= 0 or copy.anomaly in ("flattened", "naked_leg"):
                return
            if actor.ctx.policy.flatten_naked_legs:
                plan.apply(copy.key, c.Flagged("flattened"))
                plan.then(lambda: self._flatten(copy, filled))
            else:
                plan.apply(copy.key, c.Flagged("naked_leg"))
                plan.then(lambda: actor.ctx.alert(
                    "critical", f"naked:{follower}",
                    f"follower {follower}: {filled} filled of leg {actor.leader_order_id} is left without its "
                    "strategy; close it (or set copy.flatten_naked_legs)"))

        actor.operate(build)

    def _flatten(self, copy: c.CopyState, filled: int) -> None:
        """Close what filled with MARKET orders: one, or slices within the freeze quantity (the
        exchange would refuse the whole of a sliced copy's fills in one order)."""
        actor = self.actor
        target = copy.target
        opposite = target.with_changes(side=Side.SELL if target.side == Side.BUY else Side.BUY, quantity=filled,
                                       order_type=OrderType.MARKET, price=0.0, trigger_price=0.0, disclosed_qty=0,
                                       validity=Validity.DAY, amo=False, amo_time=None)
        instrument = actor.ctx.instruments.get(target.exchange_segment, target.security_id)
        for part, terms in enumerate(actor.slices.targets(instrument, opposite)):
            cid = flatten_correlation_id(actor.leader_order_id, copy.follower, part)
            self._flattening.add(cid)
            actor.ctx.limiters[copy.follower].tell(PlaceCopy(
                account=copy.follower, leader_order_id=actor.leader_order_id, correlation_id=cid,
                reply_to=actor.address, terms=terms))

    def is_flatten(self, follower: str, cid: str) -> bool:
        return cid == flatten_correlation_id(self.actor.leader_order_id, follower) or cid in self._flattening

    def on_flatten_answer(self, answer: Any) -> None:
        follower = answer.command.account
        actor = self.actor
        placed = isinstance(answer, CopyPlaced)
        error = getattr(answer, "error", None)
        outcome = f"placed as {answer.broker_order_id}" if placed else f"failed: {error or 'too late'}"
        if isinstance(answer, PlacementUnknown):
            outcome = f"has an unknown outcome ({error}); check {follower}'s order book"
        log.warning("follower %s: flattening order for naked leg %s %s", follower, actor.leader_order_id,
                    outcome, extra=actor.fields(follower))
        metrics.FOLLOWER_ORDERS.labels(follower, "flatten", "placed" if placed else "failed").inc()
