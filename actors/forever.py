"""The forever-order actor: copies the leader's forever (GTT) orders, which the order
socket does not announce until they trigger, so they are polled.

Each leader forever order gets, per follower, a sized forever copy placed, modified and cancelled
as the leader's changes (converging a stored target onto the broker, like the order actor), all
through the follower's rate limiter. Placement is exactly-once: the copy's row is stored before it
is sent, and a placement that may have reached the broker is looked up by correlation id first.

When a leader forever order triggers, the broker creates an ordinary leader order; each
follower's own forever copy triggers by itself, so that order must not be copied again:
`triggered_forever` lets the order actor recognise it.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, replace
from typing import Any

import pykka

from actors.messages import (BrokerAnswer, CallFailed, CancelForever, CopyNotFound, CopyPlaced, LookupForever,
                             ModifyForever, PlaceForever, PollForever, ReleaseCapital, SizeCopy)
from actors.rate_limiter import RateLimiter
from observability import metrics
from broker.gateway import DhanGateway
from storage import Store
from storage.forever import OPEN, ForeverCopy
from supervisors import Address, Supervised, Timers
from trading.instruments import InstrumentMaster
from trading.orders import ForeverOrder, OrderUpdate, correlation_id, terms_from_dict, terms_to_dict

log = logging.getLogger(__name__)


def _to_json(order: ForeverOrder) -> str:
    return json.dumps({"order_id": order.order_id, "status": order.status, "order_flag": order.order_flag,
                       "terms": terms_to_dict(order.terms), "price1": order.price1,
                       "trigger_price1": order.trigger_price1, "quantity1": order.quantity1})


def _from_json(text: str) -> ForeverOrder:
    data = json.loads(text)
    return ForeverOrder(**{**data, "terms": terms_from_dict(data["terms"])})


def triggered_forever(store: Store, leader_gateway: DhanGateway, update: OrderUpdate) -> str | None:
    """The leader forever order whose trigger created `update`'s order, if the copier copied it."""
    terms = update.terms
    candidates = store.forever.leader_ids_of(terms.security_id, terms.side.value)
    if not candidates:
        return None  # the common case: no REST call at all
    listing = leader_gateway.forever_orders()
    if not listing.ok:
        log.warning("forever list unavailable while checking leader order %s: %s", update.order_id, listing.error)
        return None
    for forever in listing.data:
        if forever.order_id not in candidates or forever.status != "TRIGGERED":
            continue
        if forever.triggered_order_id in (None, update.order_id) and terms.quantity in (
                forever.terms.quantity, forever.quantity1):
            return forever.order_id
    return None


@dataclass
class _State:
    row: ForeverCopy
    in_flight: str | None = None
    needs_lookup: bool = False


class ForeverActor(Supervised):
    def __init__(self, address: Address, supervisor: Address | None, *, store: Store, leader: DhanGateway,
                 followers: list[str], limiters: dict[str, RateLimiter], sizing: Address,
                 instruments: InstrumentMaster, timers: Timers, poll_seconds: float = 5.0) -> None:
        super().__init__(address, supervisor)
        self.store, self.leader, self.followers = store, leader, followers
        self.limiters, self.sizing, self.instruments = limiters, sizing, instruments
        self.timers, self.poll_seconds = timers, poll_seconds
        self.copies: dict[str, _State] = {}

    def started(self) -> None:
        for row in self.store.forever.open():
            # a placement stored but maybe sent before a restart: look it up before anything else
            self.copies[row.correlation_id] = _State(row, needs_lookup=row.status == "PENDING_PLACEMENT")
        if self.poll_seconds > 0:
            self.timers.every(self.poll_seconds, self.address, PollForever(), owner=self.actor_ref)

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, PollForever):
            self._poll()
        elif isinstance(message, BrokerAnswer):
            self._on_reply(message)
        for state in list(self.copies.values()):
            self._converge(state)
        return None

    # -- the leader's forever orders ------------------------------------------------------------
    def _poll(self) -> None:
        if self.store.down:  # nothing could be recorded; the first poll after it is back catches up
            return
        answer = self.leader.forever_orders()
        if not answer.ok:
            log.warning("leader forever orders unavailable: %s", answer.error)
            return
        leader = {order.order_id: order for order in answer.data}
        for order in leader.values():
            for follower in self.followers:
                cid = correlation_id("FV" + order.order_id, follower)
                state = self.copies.get(cid)
                if state is None:
                    if order.status == "PENDING" and not self._known(cid):
                        self._new_copy(order, follower, cid)
                    continue
                self._leader_changed(state, order)
        for state in self.copies.values():  # deleted at the leader: cancel the copy
            if state.row.leader_forever_id not in leader and not state.row.cancel_requested:
                self._save(state, cancel_requested=True)

    def _known(self, cid: str) -> bool:
        return self.store.forever.known(cid)

    def _size(self, order: ForeverOrder, follower: str, cid: str) -> tuple[ForeverOrder | None, str]:
        instrument = self.instruments.get(order.terms.exchange_segment, order.terms.security_id)
        if instrument is None:
            return None, "unknown_instrument"
        try:
            decision = self.sizing.ask(SizeCopy(follower, cid, order.terms, instrument, order.terms.price), timeout=5)
            second = (self.sizing.ask(SizeCopy(follower, cid + "-1", order.terms.with_changes(quantity=order.quantity1),
                                               instrument, order.price1), timeout=5) if order.quantity1 else None)
        except (pykka.ActorDeadError, pykka.Timeout) as exc:
            raise RuntimeError(f"sizing unavailable: {exc}") from exc
        finally:  # a forever order blocks no margin until it triggers
            self.sizing.tell(ReleaseCapital(follower, cid))
            self.sizing.tell(ReleaseCapital(follower, cid + "-1"))
        if decision.skip_reason:
            return None, decision.skip_reason
        quantity1 = second.quantity if second is not None and not second.skip_reason else 0
        return replace(order, terms=order.terms.with_changes(quantity=decision.quantity, disclosed_qty=0),
                       quantity1=quantity1, correlation_id=cid), ""

    def _new_copy(self, order: ForeverOrder, follower: str, cid: str) -> None:
        target, reason = self._size(order, follower, cid)
        copy = ForeverCopy(leader_forever_id=order.order_id, follower=follower, correlation_id=cid,
                           status="PENDING_PLACEMENT", security_id=order.terms.security_id, side=order.terms.side.value,
                           leader_quantity=order.terms.quantity, leader=_to_json(order))
        if target is None:
            self.store.forever.add_skipped(copy, reason, "forever order not copied")
            metrics.SKIPS.labels(follower, reason).inc()
            return
        self.copies[cid] = _State(self.store.forever.add(replace(copy, target=_to_json(target))))

    def _leader_changed(self, state: _State, order: ForeverOrder) -> None:
        last = _from_json(state.row.leader)
        if order.status == "CANCELLED" and not state.row.cancel_requested:
            self._save(state, cancel_requested=True, leader=_to_json(order))
        elif order.status == "PENDING" and order.modifiable_view() != last.modifiable_view():
            target, reason = self._size(order, state.row.follower, state.row.correlation_id)
            if target is not None:
                self._save(state, target=_to_json(target), leader=_to_json(order))
        elif order.status != last.status:
            self._save(state, leader=_to_json(order))  # triggered: the copy triggers at the follower by itself

    # -- convergence -----------------------------------------------------------------------------
    def _converge(self, state: _State) -> None:
        row = state.row
        if state.in_flight or row.status not in OPEN:
            return
        to = dict(account=row.follower, leader_order_id=row.leader_forever_id, correlation_id=row.correlation_id,
                  reply_to=self.address)
        if state.needs_lookup:
            self._send(state, LookupForever(**to))
        elif row.status == "PENDING_PLACEMENT":
            if row.cancel_requested:
                self._save(state, status="CANCELLED")
            else:
                self._send(state, PlaceForever(**to, order=_from_json(row.target)))
        elif row.cancel_requested:
            self._send(state, CancelForever(**to, broker_order_id=row.follower_forever_id))
        elif row.target and row.target != row.confirmed:
            self._send(state, ModifyForever(**to, broker_order_id=row.follower_forever_id, order=_from_json(row.target)))

    def _send(self, state: _State, command: Any) -> None:
        state.in_flight = type(command).__name__
        self.limiters[state.row.follower].tell(command)

    def _on_reply(self, answer: Any) -> None:
        command = answer.command
        state = self.copies.get(command.correlation_id)
        if state is None:
            return
        state.in_flight = None
        row = state.row
        op = {PlaceForever: "forever_place", ModifyForever: "forever_modify", CancelForever: "forever_cancel",
              LookupForever: "forever_lookup"}[type(command)]
        if isinstance(answer, CallFailed):
            log.warning("follower %s: %s of forever copy %s failed: %s", row.follower, op, row.correlation_id,
                        answer.error)
            metrics.FOLLOWER_FAILURES.labels(row.follower, op, answer.error.reason).inc()
            if op == "forever_place" and not answer.error.transient:
                self._save(state, status="REJECTED", last_error=str(answer.error))
            elif op in ("forever_modify", "forever_cancel") and not answer.error.transient:
                self._save(state, last_error=str(answer.error), target=row.confirmed, cancel_requested=False)
            return
        if op == "forever_lookup":
            state.needs_lookup = False
            if not isinstance(answer, CopyNotFound):
                self._save(state, status="PENDING", follower_forever_id=answer.broker_order_id, confirmed=row.target)
        elif op == "forever_place":
            assert isinstance(answer, CopyPlaced)
            self._save(state, status="PENDING", follower_forever_id=answer.broker_order_id, confirmed=row.target)
            metrics.FOLLOWER_ORDERS.labels(row.follower, op, "placed").inc()
        elif op == "forever_modify":
            self._save(state, confirmed=_to_json(command.order))
        elif op == "forever_cancel":
            self._save(state, status="CANCELLED")

    def _save(self, state: _State, **fields: Any) -> None:
        state.row = self.store.forever.update(state.row, **fields)
        if state.row.status not in OPEN:
            self.copies.pop(state.row.correlation_id, None)
