"""Multi-leg strategies in the sizing actor: derivative orders on one underlying within the leg
window are one strategy. Later legs keep the first leg's lot ratio per follower (trading/strategy.py),
or are not placed and unwind the legs that were."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from actors.messages import SizeCopies, SizeDecision, SizedCopies
from trading.sizing import scale_disclosed
from trading.strategy import leg_quantity


@dataclass
class Strategy:
    """The latest multi-leg strategy on one underlying: its first leg, as the leader placed it and
    as each follower's copy was sized."""

    group_id: str
    first_leader_qty: int
    first_copy_qty: dict[str, int]
    last_leg_at: float


Drop = Callable[..., SizeDecision]  # (request, reason, detail, unwind=False): a copy not made, its capital freed


def size_legs(strategies: dict[tuple[str, str], Strategy], message: SizeCopies, decisions: list[SizeDecision],
              leg_window: float, now: float, drop: Drop) -> SizedCopies:
    """The decisions for one leader order, kept as they are unless it is a later leg of a strategy
    (`strategies`, by leader account and underlying, is updated: two leaders' orders are never
    legs of one strategy)."""
    if not message.requests:
        return SizedCopies(())
    instrument = message.requests[0].instrument
    if not instrument.is_derivative or leg_window <= 0:
        return SizedCopies(tuple(decisions))
    key = (message.requests[0].leader, instrument.underlying)
    strategy = strategies.get(key)
    leader_qty = message.requests[0].terms.quantity
    if strategy is None or now - strategy.last_leg_at > leg_window:
        strategies[key] = Strategy(
            message.leader_order_id, leader_qty,
            {r.follower: d.quantity for r, d in zip(message.requests, decisions)}, now)
        return SizedCopies(tuple(decisions), message.leader_order_id)
    strategy.last_leg_at = now
    out = []
    for request, decision in zip(message.requests, decisions):
        first = strategy.first_copy_qty.get(request.follower, 0)
        if first <= 0:  # the first leg was not copied here: nothing is naked, copy no leg
            out.append(drop(request, "strategy_leg_not_copied", "the strategy's first leg was not copied"))
        else:
            # the ratio, not the leg's own rule, sets a later leg's quantity; its own decision
            # still counts when it says the capital is not there
            quantity = leg_quantity(strategy.first_leader_qty, first, leader_qty, instrument.lot_size)
            if quantity is None:
                out.append(drop(request, "strategy_ratio", (
                    f"leader legs {strategy.first_leader_qty} and {leader_qty}: the first leg's copy of {first} "
                    "leaves no whole number of lots for this one"), unwind=True))
            elif decision.skip_reason and decision.skip_reason != "size_rounds_to_zero":
                out.append(SizeDecision(0, 0, 0.0, decision.skip_reason, decision.detail, unwind=True))
            else:
                disclosed = scale_disclosed(leader_qty, request.terms.disclosed_qty, quantity, instrument.lot_size)
                out.append(SizeDecision(quantity, disclosed, decision.reserved))
    return SizedCopies(tuple(out), strategy.group_id)

