"""Replay (B.9): rebuild an order's state from its stored events alone.

The order actor appends every lifecycle event to the per-order event store with a sequence
number. Folding those events through the same state machine must give exactly the state the
actor stored; `python run.py replay ORDER_ID` shows the history and says whether it does.
"""
from __future__ import annotations

import json
from typing import Any, Iterable

from trading.lifecycle import InvalidTransition, OrderEvent, next_state
from trading.orders import OrderStatus

_STATE_EVENTS = {e.value for e in OrderEvent} - {"SUBMITTED", "SKIPPED"}


def fold_leader(events: Iterable[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """(kind, payload) pairs of a leader order -> {status, filled_qty, avg_price, terms}."""
    state: dict[str, Any] = {}
    for kind, payload in events:
        if kind == "SEEN":
            state = {"status": payload["status"], "filled_qty": payload["filled_qty"],
                     "avg_price": payload["avg_price"], "terms": payload["terms"]}
            continue
        state["status"] = next_state(OrderStatus(state["status"]), OrderEvent(kind)).value
        state["filled_qty"] = max(state["filled_qty"], payload["filled_qty"])
        state["avg_price"] = payload["avg_price"] or state["avg_price"]
        state["terms"] = payload["terms"]
    return state


def fold_copy(events: Iterable[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """(kind, payload) pairs of a follower copy -> {status, target, filled_qty, modifications, ...}."""
    state: dict[str, Any] = {"status": OrderStatus.PENDING_PLACEMENT.value, "filled_qty": 0, "modifications": 0,
                             "broker_order_id": None, "cancel_requested": False, "target": None}
    for kind, payload in events:
        if kind in ("SUBMITTED", "SKIPPED"):
            state.update(status=payload["status"], target=payload["target"])
        elif kind == "TARGET_CHANGED":
            state["target"] = payload
        elif kind in ("PLACED", "FOUND_BY_CORRELATION_ID"):
            state["broker_order_id"] = payload.get("broker_order_id") or state["broker_order_id"]
        elif kind == "RETRIED":
            state.update(status=OrderStatus.PENDING_PLACEMENT.value, broker_order_id=None)
        elif kind == "REPLACED":
            state.update(status=OrderStatus.PENDING_PLACEMENT.value, broker_order_id=None, modifications=0,
                         cancel_requested=False)
        elif kind == "CANCEL_REQUESTED":
            state["cancel_requested"] = True
        elif kind == "MODIFY_ACKED":
            state["modifications"] += 1
        elif kind in _STATE_EVENTS:
            try:
                state["status"] = next_state(OrderStatus(state["status"]), OrderEvent(kind)).value
            except InvalidTransition:
                pass  # the actor refused it too: it never changed the stored state
            if "filled_qty" in payload:
                state["filled_qty"] = max(state["filled_qty"], payload["filled_qty"])
            if payload.get("order_id") and not state["broker_order_id"]:
                state["broker_order_id"] = payload["order_id"]
    return state


def stored_leader_state(row: Any) -> dict[str, Any]:
    return {"status": row.status, "filled_qty": row.filled_qty, "avg_price": row.avg_price,
            "terms": json.loads(row.terms)}


def stored_copy_state(row: Any) -> dict[str, Any]:
    return {"status": row.status, "filled_qty": row.filled_qty, "modifications": row.modifications,
            "broker_order_id": row.broker_order_id, "cancel_requested": bool(row.cancel_requested),
            "target": json.loads(row.target)}
