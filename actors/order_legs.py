"""Leg order for option strategies, in the order actor: a `legs: buy_first` follower's copy of a
SELL leg is stored held (actors/order_sighting.py) and placed only once the strategy's BUY legs
filled at its broker, or never (a recorded `hedge_not_filled` skip). The rules are pure
(trading/leg_order.py); this module reads what they need from storage (the other legs are other
order actors' copies), asks them while a copy is held, and applies their verdict as events.

A held copy is stored (`held`), so a restart resumes it held; its release is stored before its
placement is sent, and from then on it is an ordinary copy (looked up after a restart, placed once).
"""
from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from actors.order_timers import HoldCheck
from actors.order_part import OrderPart
from observability import metrics
from storage.legs import held_legs, strategy_leg_copies
from trading import copy as c
from trading.leg_order import HEDGE_NOT_FILLED, BuyLeg, Hold, HoldView, Refuse, Release, hold_deadline, verdict, \
    window_closes
from trading.orders import OrderStatus

if TYPE_CHECKING:
    from actors.order import OrderActor
    from actors.order_plan import Plan

log = logging.getLogger("actors.order")
# A held leg asks again this often besides when its verdict says (a BUY leg's fill is news in
# another order actor: reading storage on a short beat is simpler than routing that news here).
POLL_SECONDS = 0.2


class HeldLegs(OrderPart):
    def __init__(self, actor: "OrderActor") -> None:
        super().__init__(actor)
        self.followers: set[str] | None = None  # whose copies were held after the last operation (None: not yet)
        self.asking = False  # a HoldCheck is pending

    def held(self) -> dict[str, list[c.CopyState]]:
        """The held copies by follower (every slice of a copy is held together)."""
        out: dict[str, list[c.CopyState]] = {}
        for copy in self.actor.copies.values():
            if copy.held:
                out.setdefault(copy.follower, []).append(copy)
        return out

    def watch(self) -> None:
        """After each operation is stored: keep asking while a copy is held, and count the held legs
        (from storage, when this order's changed: right across restarts and other orders)."""
        held = self.held()
        changed = set(held) ^ (self.followers or set())
        self.followers = set(held)
        for follower in changed:
            metrics.LEGS_HELD.labels(follower).set(held_legs(self.actor.ctx.store, follower))
        if held and not self.asking:
            self.asking = True
            self.actor.after(POLL_SECONDS, HoldCheck(), name="hold_check")

    def check(self) -> None:
        """Each held copy's verdict, from its strategy's legs as stored now."""
        actor = self.actor
        self.asking = False
        held = self.held()
        leader = actor.leader
        if not held or leader is None:
            return
        policy = actor.ctx.policy
        legs = strategy_leg_copies(actor.ctx.store, leader.group_id) if leader.group_id else []
        last_seen = max([leader.seen_at, *(leg.seen_at for leg in legs)])
        deadline = hold_deadline(leader.seen_at, policy.buy_first_wait_seconds, actor.leader_view().place_by)
        now = time.time()
        verdicts = {}
        for follower in held:
            buys = tuple(BuyLeg(leg.leader_order_id, tuple(OrderStatus(p.status) for p in leg.copies.get(follower, [])),
                                next((p.reason for p in leg.copies.get(follower, []) if p.reason), ""))
                         for leg in legs if leg.side == "BUY" and leg.leader_order_id != actor.leader_order_id)
            view = HoldView(buys, window_closes(last_seen, policy.leg_window_seconds), deadline,
                            policy.buy_first_wait_seconds)
            verdicts[follower] = verdict(view, now)
        if any(not isinstance(v, Hold) for v in verdicts.values()):
            actor.operate(lambda plan: [self._carry_out(plan, held[f], v) for f, v in verdicts.items()])
        self.watch()  # still held: ask again

    def refuse(self, plan: "Plan", follower: str, detail: str) -> bool:
        """Refuse `follower`'s held copy (its strategy is unwound); False when none is held."""
        parts = [part for part in plan.parts(follower) if part.held]
        if parts:
            self._carry_out(plan, parts, Refuse(detail))
        return bool(parts)

    def _carry_out(self, plan: "Plan", parts: list[c.CopyState], decided: object) -> None:
        actor = self.actor
        follower = parts[0].follower
        if isinstance(decided, Release):
            for part in parts:
                plan.apply(part.key, c.Released())
            plan.then(lambda: log.info("leader order %s: follower %s: SELL leg released, its BUY legs filled "
                                       "(or none came)", actor.leader_order_id, follower, extra=actor.fields(follower)))
        elif isinstance(decided, Refuse):
            for part in parts:
                plan.apply(part.key, c.HedgeRefused(decided.detail))
            plan.skip(follower, HEDGE_NOT_FILLED, decided.detail)

            def announce() -> None:
                metrics.SKIPS.labels(follower, HEDGE_NOT_FILLED).inc()
                log.warning("leader order %s: follower %s skipped: %s (%s)", actor.leader_order_id, follower,
                            HEDGE_NOT_FILLED, decided.detail, extra=actor.fields(follower))

            plan.then(announce)
