"""What each rate-limiter command does at the broker, and the answer it makes of the gateway's.

Runs on a broker worker thread (actors/rate_limiter.py). Every outcome is an answer message
(actors/messages/); nothing here raises on a broker failure. The gateway speaks Dhan; this
module only its domain answers (PlaceAck, OrderAck, Margin, OrderUpdate, ForeverOrder).
"""
from __future__ import annotations

import time
from typing import Any, Callable

from actors.messages import (BrokerCommand, CallFailed, CancelCopy, CancelForever, CopyCancelled, CopyModified,
                             CopyNotFound, CopyPlaced, CopyRejected, GetOrder, LookupCopy, LookupForever, ModifyCopy,
                             ModifyForever, OrderFound, PlaceCopy, PlaceForever, PlacementUnknown, ReadSuperOrder,
                             SuperOrderRead)
from broker.errors import BrokerError, ErrorKind
from broker.gateway import Answer, DhanGateway, order_ack, placement_ack


def placed(command: PlaceCopy, answer: Answer, sent_ns: int) -> Any:
    """The answer for a placement the broker answered with `answer` (raw, see placement_ack)."""
    ack = placement_ack(answer)
    if ack.ok:
        return CopyPlaced(command, ack.data.order_id, ack.data.status, sent_ns)
    assert ack.error is not None
    if ack.error.outcome_unknown:  # it may exist: looked up by the order actor, never sent again
        return PlacementUnknown(command, ack.error, sent_ns)
    return CopyRejected(command, ack.error, sent_ns)


def perform(gateway: DhanGateway, command: BrokerCommand, *, margin_check: bool,
            take_data_slot: Callable[[], bool]) -> Any:
    """Carry `command` out; its answer. `take_data_slot`: a second request inside one lookup
    (the order book), when the account's data window has room now."""
    if isinstance(command, PlaceCopy):  # retried only after a refusal (DH-904): no earlier attempt can exist
        if margin_check and command.attempt == 1:
            shortfall = _margin_shortfall(gateway, command)
            if shortfall is not None:
                return CopyRejected(command, shortfall)
        sent_ns = time.monotonic_ns()
        return placed(command, gateway.place(command.terms, command.correlation_id), sent_ns)
    if isinstance(command, ModifyCopy):
        if command.leg is not None:  # a super order's leg
            answer = gateway.modify_super(command.broker_order_id, command.leg, command.terms)
        else:
            answer = gateway.modify(command.broker_order_id, command.terms)
        return CopyModified(command) if answer.ok else CallFailed(command, _error(answer))
    if isinstance(command, CancelCopy):
        if command.leg is not None:
            answer = order_ack(gateway.cancel_super(command.broker_order_id, command.leg))
        else:
            answer = order_ack(gateway.cancel(command.broker_order_id))
        return CopyCancelled(command, answer.data.status) if answer.ok else CallFailed(command, _error(answer))
    if isinstance(command, ReadSuperOrder):
        listing = gateway.super_orders()
        if not listing.ok:
            return CallFailed(command, _error(listing))
        return SuperOrderRead(command, next((o for o in listing.data.entries
                                             if o.order_id == command.broker_order_id), None))
    if isinstance(command, LookupCopy):
        sent_at = time.time()  # a "not found" says nothing of requests that arrive later
        answer = gateway.order_by_correlation(command.correlation_id)
        if not answer.ok and answer.error is not None and answer.error.transient and take_data_slot():
            answer = gateway.order_in_book(command.correlation_id)  # the same question, another endpoint
        if not answer.ok:
            return CallFailed(command, _error(answer))
        return CopyNotFound(command, sent_at) if answer.data is None else OrderFound(command, answer.data)
    if isinstance(command, GetOrder):
        answer = gateway.order(command.broker_order_id)
        if answer.ok and answer.data is not None:
            return OrderFound(command, answer.data)
        return CallFailed(command, answer.error or BrokerError("DH-907", ErrorKind.DATA, "no such order"))
    return _perform_forever(gateway, command)


def _perform_forever(gateway: DhanGateway, command: BrokerCommand) -> Any:
    if isinstance(command, (PlaceForever, LookupForever)):
        if isinstance(command, LookupForever) or command.attempt > 1:  # placed already? (its answer may be lost)
            listing = gateway.forever_orders()
            if not listing.ok:
                return CallFailed(command, _error(listing))
            found = next((f for f in listing.data if f.correlation_id == command.correlation_id), None)
            if found is not None:
                return CopyPlaced(command, found.order_id, None)
            if isinstance(command, LookupForever):
                return CopyNotFound(command, time.time())
        assert isinstance(command, PlaceForever)
        ack = placement_ack(gateway.place_forever(command.order, command.correlation_id))
        return CopyPlaced(command, ack.data.order_id, ack.data.status) if ack.ok else CallFailed(command, _error(ack))
    if isinstance(command, ModifyForever):
        answer = gateway.modify_forever(command.broker_order_id, command.order)
        return CopyModified(command) if answer.ok else CallFailed(command, _error(answer))
    if isinstance(command, CancelForever):
        answer = order_ack(gateway.cancel_forever(command.broker_order_id))
        return CopyCancelled(command, answer.data.status) if answer.ok else CallFailed(command, _error(answer))
    raise TypeError(f"no broker operation for {type(command).__name__}")


def _error(answer: Answer) -> BrokerError:
    assert answer.error is not None
    return answer.error


def _margin_shortfall(gateway: DhanGateway, command: PlaceCopy) -> BrokerError | None:
    """With copy.margin_check: ask the broker's margin calculator first; a shortfall is a refusal
    before any order exists (then a recorded skip, never a retry)."""
    terms = command.terms
    answer = gateway.margin(terms, terms.price or terms.trigger_price)
    if not answer.ok:
        return None  # the calculator is advisory: without it, the broker's own check decides
    margin = answer.data
    if margin.shortfall > 0:
        return BrokerError("MARGIN", ErrorKind.ORDER, f"insufficient margin per the margin calculator: needs "
                           f"{margin.required:,.0f}, short by {margin.shortfall:,.0f}")
    return None
