"""Replay: rebuild an order's state from its stored events alone.

The order actor stores every event that changed an order, with a sequence number. Folding those
events through the same state machines the actor uses (trading/leader.py for the leader's order,
trading/copy.py for each copy) must give exactly the state the actor stored; `python run.py replay
ORDER_ID` shows the history and says whether it does.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Any, Iterable

from trading import copy as c
from trading.copy_records import event_of
from trading.leader import apply_update, first_seen, update_from_record
from trading.lifecycle import InvalidTransition
from trading.orders import terms_to_dict

Records = Iterable[tuple[str, dict[str, Any]]]


@dataclass
class CopyFold:
    """A copy folded from its records; `refused`: records `apply` did not allow (with why)."""

    state: c.CopyState | None = None
    refused: list[str] = field(default_factory=list)


def fold_leader(events: Records, order_id: str = "") -> dict[str, Any]:
    """(kind, payload) records of a leader order -> {status, filled_qty, avg_price, terms}."""
    state = None
    for kind, payload in events:
        update = update_from_record(order_id, payload)
        if kind == "SEEN" or state is None:
            state = first_seen(update)
            continue
        if kind == "EXITS_CHANGED":  # a super order's target, stop-loss or jump, read from the broker
            state = replace(state, terms=update.terms)
            continue
        try:
            state = apply_update(state, update)
        except InvalidTransition:
            pass  # the actor refused it too: it never changed the stored state
    if state is None:
        return {}
    return {"status": state.status.value, "filled_qty": state.filled_qty, "avg_price": state.avg_price,
            "terms": terms_to_dict(state.terms)}


def fold_copy_events(events: Records, leader_order_id: str = "", follower: str = "") -> CopyFold:
    fold = CopyFold()
    for kind, payload in events:
        event = event_of(kind, payload, leader_order_id, follower)
        if event is None:
            fold.refused.append(f"{kind}: not an event this version knows")
        elif isinstance(event, (c.Submitted, c.Skipped)):
            fold.state = c.start(event)
        elif fold.state is None:
            fold.refused.append(f"{kind}: before the copy's first event")
        else:
            try:
                fold.state = c.apply(fold.state, event)
            except c.InvalidCopyEvent as exc:
                fold.refused.append(f"{kind}: {exc}")
    return fold


def comparable_copy(state: c.CopyState | None) -> dict[str, Any]:
    if state is None:
        return {}
    return {"status": state.status.value, "filled_qty": state.filled_qty, "modifications": state.modifications,
            "broker_order_id": state.broker_order_id, "cancel_requested": state.cancel_requested,
            "target": terms_to_dict(state.target)}


def fold_copy(events: Records, leader_order_id: str = "", follower: str = "") -> dict[str, Any]:
    """(kind, payload) records of a follower copy -> {status, target, filled_qty, modifications, ...}."""
    return comparable_copy(fold_copy_events(events, leader_order_id, follower).state)


def stored_leader_state(row: Any) -> dict[str, Any]:
    return {"status": row.status, "filled_qty": row.filled_qty, "avg_price": row.avg_price,
            "terms": json.loads(row.terms)}


def stored_copy_state(row: Any) -> dict[str, Any]:
    return {"status": row.status, "filled_qty": row.filled_qty, "modifications": row.modifications,
            "broker_order_id": row.broker_order_id, "cancel_requested": bool(row.cancel_requested),
            "target": json.loads(row.target)}
