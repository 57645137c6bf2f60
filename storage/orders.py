"""What one order actor stores: its leader order, its follower copies, their events, and what they
leave behind (fills, skips, dead letters).

The actor's state lives in `trading` values (`LeaderState`, `CopyState`); this repository maps them
onto rows. Reads run on their own; every write runs inside the caller's transaction
(`Store.write`), which may run it again after a lock: so a write is given the state before and
after, never "what changed since the last call". Statements go through the store's cached
`insert`/`save` (this is the copier's hot path).
"""
from __future__ import annotations

import functools
import json
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from storage import models as m
from storage.store import Row, Store
from trading.copy import CopyState, part_key
from trading.leader import LEADER, LeaderState
from trading.orders import OrderStatus, OrderTerms, OrderUpdate, terms_from_dict, terms_to_dict, update_from_dict


@functools.lru_cache(maxsize=4096)
def _terms(text: str) -> OrderTerms:
    """Stored terms JSON -> OrderTerms; immutable, so one parse per distinct text is shared."""
    return terms_from_dict(json.loads(text))


@functools.lru_cache(maxsize=4096)
def _json(terms: OrderTerms) -> str:
    return json.dumps(terms_to_dict(terms))


@dataclass(frozen=True)
class StoredLeader:
    """A leader order as stored, with what its copies' decisions need besides its state."""

    state: LeaderState
    seen_at: float  # wall clock: when the copier first saw it
    group_id: str | None = None  # the multi-leg strategy it is a leg of (its first leg's order id)
    underlying: str | None = None
    account: str = LEADER  # the leader account it is an order of
    # sized as an exit (it reduced its leader's position): its copies are sent however late, since
    # a late exit costs some price where a skipped one leaves the position its leader closed
    reduces_position: bool = False
    position_before: int | None = None  # of an exit: the leader's position before it (its copies' fraction)


def copy_key(leader_order_id: str, follower: str, part: int = 0) -> str:
    """The event-store key of a follower copy (of one slice of it): stable across retries (its
    correlation id is not)."""
    return f"F:{leader_order_id}:{part_key(follower, part)}"


def leader_key(leader_order_id: str) -> str:
    return f"L:{leader_order_id}"


# CopyState field -> FollowerOrder column, for the fields stored as they are
_COPY_COLUMNS = ("status", "generation", "correlation_id", "broker_order_id", "cancel_requested", "filled_qty",
                 "avg_price", "modifications", "anomaly", "skip_reason", "last_error", "held")


class OrderRecords:
    def __init__(self, store: Store, leader_order_id: str) -> None:
        self.store = store
        self.leader_order_id = leader_order_id
        self._leader_row: m.LeaderOrder | None = None
        self._rows: dict[str, Row] = {}  # the copies as stored, by part key (trading.copy.part_key)
        self._seqs: dict[str, int] = {}  # last event-store sequence per key, counted here

    def commit(self, effect: Callable[[], None]) -> None:
        """One operation of the order actor (its events, the rows they change, the inbox events it
        acknowledges) in one transaction: stored whole or not at all."""
        self.store.write(effect)

    # -- reads -------------------------------------------------------------------------------------
    def load_leader(self) -> StoredLeader | None:
        if not self.store.has_leader_order(self.leader_order_id):
            return None
        row = self.store.leader_order(self.leader_order_id)
        self._leader_row = row
        state = LeaderState(row.order_id, OrderStatus(row.status), _terms(row.terms), row.filled_qty, row.avg_price,
                            row.created_at, row.updated_at, row.sequence)
        return StoredLeader(state, row.first_seen_at, row.group_id, row.underlying, row.account,
                            bool(row.reduces_position), row.position_before)

    def load_copies(self) -> list[CopyState]:
        copies = []
        fields = tuple(m.FollowerOrder._meta.fields)
        for row in self.store.follower_orders(self.leader_order_id):
            self._rows[part_key(row.follower, row.part)] = Row(m.FollowerOrder, row.id,
                                                               {name: getattr(row, name) for name in fields})
            copies.append(CopyState(
                leader_order_id=row.leader_order_id, follower=row.follower, correlation_id=row.correlation_id,
                target=_terms(row.target), status=OrderStatus(row.status), part=row.part, generation=row.generation,
                broker_order_id=row.broker_order_id, confirmed=_terms(row.confirmed) if row.confirmed else None,
                cancel_requested=bool(row.cancel_requested), filled_qty=row.filled_qty, avg_price=row.avg_price,
                modifications=row.modifications, anomaly=row.anomaly, replacing=row.anomaly == "replacing",
                skip_reason=row.skip_reason, last_error=row.last_error,
                target_leg=OrderStatus(row.target_leg) if row.target_leg else None,
                stop_loss_leg=OrderStatus(row.stop_loss_leg) if row.stop_loss_leg else None, held=bool(row.held)))
        return copies

    def adopted_copies(self) -> dict[str, tuple[int, OrderUpdate]]:
        """part key (trading.copy.part_key) -> (generation, its order) of the copies (slices) found
        at the brokers at a first start."""
        return {follower: (generation, update_from_dict(order))
                for follower, (generation, order) in self.store.adopted_copies(self.leader_order_id).items()}

    def unresolved_dead_letters(self) -> int:
        return self.store.unresolved_dead_letters()

    # -- writes, inside the caller's transaction ---------------------------------------------------------
    def create_leader(self, leader: StoredLeader, update: OrderUpdate) -> None:
        self._seqs[leader_key(self.leader_order_id)] = 0
        self._leader_row = self.store.create(
            m.LeaderOrder, order_id=self.leader_order_id, first_seen_at=leader.seen_at, group_id=leader.group_id,
            underlying=leader.underlying, symbol=update.symbol, account=leader.account,
            reduces_position=leader.reduces_position, position_before=leader.position_before,
            **self._leader_fields(leader.state))

    def save_leader(self, state: LeaderState) -> None:
        row = self._leader_row
        assert row is not None
        for name, value in self._leader_fields(state).items():
            setattr(row, name, value)
        self.store.save(row)

    @staticmethod
    def _leader_fields(state: LeaderState) -> dict[str, Any]:
        terms = state.terms
        fields = dict(status=state.status.value, security_id=terms.security_id, exchange_segment=terms.exchange_segment,
                      side=terms.side.value, quantity=terms.quantity, terms=_json(terms), filled_qty=state.filled_qty,
                      avg_price=state.avg_price, created_at=state.created_at, updated_at=state.updated_at,
                      sequence=state.sequence, last_event_at=time.time())
        if state.status is OrderStatus.TRADED:
            fields["filled_at"] = time.time()
        return fields

    def create_copy(self, state: CopyState, reserved: float = 0.0) -> None:
        self._seqs[copy_key(self.leader_order_id, state.follower, state.part)] = 0
        target = state.target
        self._rows[state.key] = self.store.add(
            m.FollowerOrder, leader_order_id=state.leader_order_id, follower=state.follower,
            correlation_id=state.correlation_id, generation=state.generation, part=state.part,
            status=state.status.value,
            security_id=target.security_id, side=target.side.value, quantity=target.quantity, target=_json(target),
            skip_reason=state.skip_reason, last_error=state.last_error, reserved=reserved,
            broker_order_id=state.broker_order_id, cancel_requested=state.cancel_requested, held=state.held)

    def save_copy(self, before: CopyState, after: CopyState, **measured: Any) -> None:
        """The copy's row moved from `before` to `after`; `measured`: placed_at, latency_ms, slippage."""
        row = self._rows[after.key]
        stored = row.values
        changes: dict[str, Any] = {}
        for name in _COPY_COLUMNS:
            value = getattr(after, name)
            column = value.value if name == "status" else value
            if value != getattr(before, name) or stored.get(name) != column:
                changes[name] = column
        if after.target != before.target or stored.get("target") is None:
            changes["target"] = _json(after.target)
            changes["quantity"] = after.target.quantity
        if after.confirmed != before.confirmed:
            changes["confirmed"] = _json(after.confirmed) if after.confirmed is not None else None
        for name in ("target_leg", "stop_loss_leg"):  # a super order's exit legs
            leg = getattr(after, name)
            if leg != getattr(before, name) or stored.get(name) != (leg.value if leg else None):
                changes[name] = leg.value if leg else None
        changes.update(measured)
        changes["updated_at"] = time.time()
        self.store.update(row, changes)

    def append(self, key: str, kind: str, payload: dict[str, Any]) -> None:
        """Append to the event store. This actor is the only writer of its orders' keys, so it
        counts their sequence itself (a rolled-back attempt leaves a gap, never a repeat)."""
        last = self._seqs.get(key)
        if last is None:
            last = self.store.last_seq(key)
        self.store.append_order_event(key, kind, payload, last + 1)
        self._seqs[key] = last + 1

    def done(self, event_ids: Iterable[int], outcome: str) -> None:
        self.store.mark_done(event_ids, outcome)

    def skip(self, follower: str | None, reason: str, detail: str) -> None:
        self.store.add(m.Skip, leader_order_id=self.leader_order_id, follower=follower, reason=reason, detail=detail)

    def dead_letter(self, follower: str, correlation_id: str, code: str, reason: str) -> None:
        self.store.add(m.DeadLetter, leader_order_id=self.leader_order_id, follower=follower,
                       correlation_id=correlation_id, operation="place", error_code=code, reason=reason)

    def fill(self, account: str, order_id: str, quantity: int, price: float, cumulative: int, exchange_time: str) -> None:
        self.store.add(m.Fill, account=account, order_id=order_id, leader_order_id=self.leader_order_id,
                       quantity=quantity, price=price, cumulative_qty=cumulative, exchange_time=exchange_time)

    def resolve_dead_letter(self, letter_id: int) -> None:
        """An operator's retry took the dead letter in hand."""
        self.store.db.execute_sql(
            'UPDATE "dead_letter" SET "resolved" = 1, "retry_count" = "retry_count" + 1, "next_retry_at" = NULL '
            'WHERE "id" = ?', (letter_id,))
