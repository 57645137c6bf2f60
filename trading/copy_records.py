"""A copy's events as stored records, and back: (kind, JSON payload) in the per-order event store.

The order actor stores a record for every event that changes what is stored of the copy (and for
every broker answer, changed or not); replay turns the records back into events and folds them
through `trading.copy.apply`. Kinds and payloads are those earlier versions wrote too, so their
event logs still replay (fields they lack take their defaults).
"""
from __future__ import annotations

import operator
from typing import Any

from trading import copy as c
from trading.orders import Leg, OrderStatus, OrderUpdate, terms_from_dict, terms_to_dict, update_to_dict

Record = tuple[str, dict[str, Any]]

# what storage keeps of a copy: a change of any of these is stored, with its record
_PERSISTED = ("status", "generation", "correlation_id", "broker_order_id", "target", "confirmed",
              "cancel_requested", "filled_qty", "avg_price", "modifications", "anomaly", "skip_reason",
              "last_error", "target_leg", "stop_loss_leg", "held")
# events that change only what is in memory: never stored
_UNSTORED = (c.PlaceSent, c.ModifySent, c.CancelSent, c.LookupSent, c.ReadSent, c.Resumed, c.SyncRequested,
             c.NewsArrived, c.RejectionRecorded)
_LIFECYCLE_KINDS = frozenset({"ACCEPTED", "TRIGGERED", "MODIFIED", "PARTIALLY_FILLED", "FILLED", "CANCELLED",
                              "REJECTED", "EXPIRED", "UPDATED"})


_persisted = operator.attrgetter(*_PERSISTED)


def persisted(state: c.CopyState) -> tuple:
    """What storage keeps of the copy (compared before and after every event, so read in C)."""
    return _persisted(state)


def _terms(terms: Any) -> dict[str, Any] | None:
    return terms_to_dict(terms) if terms is not None else None


def seen_payload(seen: c.OrderSeen) -> dict[str, Any]:
    return {"order_id": seen.order_id, "status": seen.status.value, "terms": _terms(seen.terms),
            "filled_qty": seen.filled_qty, "avg_price": seen.avg_price, "last_fill_price": seen.last_fill_price,
            "reason": seen.reason}


def record(before: c.CopyState | None, event: object, after: c.CopyState,
           update: OrderUpdate | None = None) -> Record | None:
    """The record that stores `event` (which moved the copy from `before` to `after`), or None when
    it changed nothing stored. `update`: for a snapshot, the whole update it came from (stored)."""
    if isinstance(event, c.Submitted):
        payload = {"status": OrderStatus.PENDING_PLACEMENT.value, "target": terms_to_dict(event.target),
                   "reason": None, "generation": event.generation}
        if event.adopted:
            payload["adopted"] = event.adopted
        if event.part:
            payload["part"] = event.part
        if event.held:
            payload["held"] = True
        return "SUBMITTED", payload
    if isinstance(event, c.Skipped):
        return "SKIPPED", {"status": OrderStatus.SKIPPED.value, "target": terms_to_dict(event.target),
                           "reason": event.reason, "detail": event.detail}
    assert before is not None
    if isinstance(event, _UNSTORED):
        return None
    if isinstance(event, c.CaughtUp):
        return "CAUGHT_UP", {"correlation_id": after.correlation_id, "generation": after.generation,
                             "target": terms_to_dict(event.target)}
    if isinstance(event, (c.Replaced, c.Retried)):
        return ("REPLACED" if isinstance(event, c.Replaced) else "RETRIED",
                {"correlation_id": after.correlation_id, "generation": after.generation})
    kind_payload = _always(event)
    if kind_payload is not None:
        return kind_payload
    if after is before or persisted(before) == persisted(after):
        return None
    if isinstance(event, c.Flagged):
        return "FLAGGED", {"anomaly": event.anomaly}
    if isinstance(event, c.Released):
        return "RELEASED", {}
    if isinstance(event, c.HedgeRefused):
        return "HEDGE_REFUSED", {"detail": event.detail}
    if isinstance(event, c.OutcomeUnknown):
        return "OUTCOME_UNKNOWN", {"error": event.error, "at": event.at,
                                   "absent_believed_from": event.absent_believed_from}
    if isinstance(event, c.NotFound):
        return "NOT_PLACED", {"placements": after.found_absent, "sent_at": event.sent_at}
    if isinstance(event, c.CallFailed):
        if after.lookups_given_up and not before.lookups_given_up:
            return "FLAGGED", {"anomaly": after.anomaly}
        payload = {"call": event.call.value, "error": event.error, "auth": event.auth, "transient": event.transient}
        if event.leg is not None:
            payload["leg"] = event.leg.value
        return "CALL_FAILED", payload
    if isinstance(event, c.LegSeen):
        return "LEG_SEEN", {"leg": event.leg.value, "status": event.status.value}
    if isinstance(event, c.OrderFound):
        if before.status in (OrderStatus.PENDING_PLACEMENT, OrderStatus.UNKNOWN):
            return "FOUND_BY_CORRELATION_ID", {
                "broker_order_id": event.broker_order_id,
                "order": seen_payload(event.order) if event.order is not None else None}
        if event.order is None:
            return None
        return _snapshot(before, event.order, update)
    if isinstance(event, c.OrderSeen):
        return _snapshot(before, event, update)
    return None


def _always(event: object) -> Record | None:
    """Records of the events stored whatever they changed (commands and broker answers)."""
    if isinstance(event, c.TargetChanged):
        return "TARGET_CHANGED", terms_to_dict(event.target)
    if isinstance(event, c.CancelRequested):
        return "CANCEL_REQUESTED", {"because": event.because}
    if isinstance(event, c.ReplaceStarted):
        return "CANCEL_REQUESTED", {"because": "modification cap: cancel and replace", "replacing": True}
    if isinstance(event, c.Aborted):
        return "CANCELLED", {"aborted_before_placement": True}
    if isinstance(event, c.SkippedLate):
        return "SKIPPED_LATE", {"age": round(event.age, 3), "limit": event.limit, "order_type": event.order_type}
    if isinstance(event, c.Placed):
        return "PLACED", {"broker_order_id": event.broker_order_id,
                          "status": event.status.value if event.status else None, "terms": _terms(event.terms)}
    if isinstance(event, c.PlacementRefused):
        return "REJECTED", {"error": event.error, "code": event.code, "reason": event.reason}
    if isinstance(event, c.ModifyAccepted):
        return "MODIFY_ACKED", {"terms": _terms(event.terms)}
    if isinstance(event, c.CancelAccepted):
        payload: dict[str, Any] = {"status": event.status.value if event.status else None}
        if event.leg is not None:
            payload["leg"] = event.leg.value
        return "CANCEL_ACKED", payload
    return None


def _snapshot(before: c.CopyState, seen: c.OrderSeen, update: OrderUpdate | None) -> Record:
    event, allowed = c.broker_transition(before, seen)
    kind = event.value if event is not None and allowed else "UPDATED"
    return kind, update_to_dict(update) if update is not None else seen_payload(seen)


def _seen_from(kind: str, payload: dict[str, Any]) -> c.OrderSeen:
    status = payload.get("status") or kind
    terms = payload.get("terms")
    return c.OrderSeen(order_id=str(payload.get("order_id") or ""), status=OrderStatus(status),
                       terms=terms_from_dict(terms) if terms else None,
                       filled_qty=int(payload.get("filled_qty") or 0), avg_price=float(payload.get("avg_price") or 0.0),
                       last_fill_price=float(payload.get("last_fill_price") or 0.0),
                       reason=str(payload.get("reason") or ""))


def event_of(kind: str, payload: dict[str, Any], leader_order_id: str, follower: str) -> object | None:
    """The event a stored record stands for (None: a kind this version does not know)."""
    p = payload
    if kind == "SUBMITTED":
        return c.Submitted(leader_order_id, follower, terms_from_dict(p["target"]), int(p.get("generation") or 0),
                           p.get("adopted"), int(p.get("part") or 0), bool(p.get("held")))
    if kind == "SKIPPED":
        return c.Skipped(leader_order_id, follower, terms_from_dict(p["target"]), p.get("reason") or "",
                         p.get("detail") or "")
    if kind == "TARGET_CHANGED":
        return c.TargetChanged(terms_from_dict(p))
    if kind == "CANCEL_REQUESTED":
        return c.ReplaceStarted() if p.get("replacing") else c.CancelRequested(p.get("because") or "")
    if kind == "CANCELLED" and p.get("aborted_before_placement"):
        return c.Aborted()
    if kind == "SKIPPED_LATE":
        return c.SkippedLate(float(p.get("age") or 0.0), float(p.get("limit") or 0.0), p.get("order_type") or "")
    if kind == "REPLACED":
        return c.Replaced()
    if kind == "RETRIED":
        return c.Retried()
    if kind == "CAUGHT_UP":
        return c.CaughtUp(terms_from_dict(p["target"]))
    if kind == "FLAGGED":
        return c.Flagged(p["anomaly"])
    if kind == "RELEASED":
        return c.Released()
    if kind == "HEDGE_REFUSED":
        return c.HedgeRefused(p.get("detail") or "")
    if kind == "PLACED":
        status = p.get("status")
        terms = p.get("terms")
        return c.Placed(p.get("broker_order_id") or "", _status_or_none(status),
                        terms_from_dict(terms) if terms else None)
    if kind == "REJECTED" and "error" in p and "order_id" not in p:
        return c.PlacementRefused(p["error"], p.get("code") or "", p.get("reason") or "")
    if kind == "OUTCOME_UNKNOWN":
        return c.OutcomeUnknown(p.get("error") or "", float(p.get("at") or 0.0),
                                float(p.get("absent_believed_from") or 0.0))
    if kind == "NOT_PLACED":
        sent_at = p.get("sent_at")
        return c.NotFound(float("inf") if sent_at is None else float(sent_at))
    if kind == "MODIFY_ACKED":
        return c.ModifyAccepted(terms_from_dict(p["terms"]) if p.get("terms") else None)
    if kind == "CANCEL_ACKED":
        return c.CancelAccepted(_status_or_none(p.get("status")), Leg(p["leg"]) if p.get("leg") else None)
    if kind == "CALL_FAILED":
        return c.CallFailed(c.Call(p["call"]), p.get("error") or "", auth=bool(p.get("auth")),
                            transient=bool(p.get("transient")), leg=Leg(p["leg"]) if p.get("leg") else None)
    if kind == "LEG_SEEN":
        return c.LegSeen(Leg(p["leg"]), OrderStatus(p["status"]))
    if kind == "FOUND_BY_CORRELATION_ID":
        order = p.get("order")
        return c.OrderFound(p.get("broker_order_id") or "", _seen_from("UPDATED", order) if order else None)
    if kind in _LIFECYCLE_KINDS:
        return _seen_from(kind, p)
    return None


def _status_or_none(value: Any) -> OrderStatus | None:
    try:
        return OrderStatus(value) if value else None
    except ValueError:
        return None
