"""A leader order's state, as the fold of its updates (used live and by replay alike).

Which update is later, when the broker's stamps cannot say, is trading/ordering.py's question;
this module only applies an update already judged to be later.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from trading.lifecycle import OrderEvent, event_for_status, next_state
from trading.orders import OrderStatus, OrderTerms, OrderUpdate, terms_from_dict

LEADER = "leader"  # the account name of the leader (of the first of several) in messages and storage


def leader_account(name: str) -> str:
    """The account name of the leader called `name` in config: LEADER for the one leader of a
    `leader:` config (and for a leader named "leader"), `leader:NAME` for the others. Follower
    names hold no ':', so an account name says by itself whether it is a leader's."""
    if name in ("", LEADER) or name.startswith(LEADER + ":"):
        return name or LEADER
    return f"{LEADER}:{name}"


def is_leader(account: str) -> bool:
    return account == LEADER or account.startswith(LEADER + ":")


def leader_name(account: str) -> str:
    """The config's name of a leader account (`leader_account`'s inverse)."""
    return account.removeprefix(LEADER + ":")


def leader_label(account: str) -> str:
    """How messages name a leader account: "leader", or "leader alpha"."""
    return LEADER if account == LEADER else f"{LEADER} {leader_name(account)}"


@dataclass(frozen=True)
class LeaderState:
    order_id: str
    status: OrderStatus
    terms: OrderTerms
    filled_qty: int = 0
    avg_price: float = 0.0
    created_at: str = ""
    updated_at: str = ""
    sequence: int | None = None

    def as_update(self) -> OrderUpdate:
        """The snapshot applied last, to judge where a new one stands (trading/ordering.py)."""
        return OrderUpdate(self.order_id, self.status, self.terms, filled_qty=self.filled_qty,
                           updated_at=self.updated_at, sequence=self.sequence)


def first_seen(update: OrderUpdate) -> LeaderState:
    return LeaderState(update.order_id, update.status, update.terms, update.filled_qty, update.avg_price,
                       update.created_at, update.updated_at, update.sequence)


def leader_event(state: LeaderState, update: OrderUpdate) -> OrderEvent | None:
    """The lifecycle event `update` is for the order (None: nothing new). `next_state` then says
    whether the lifecycle allows it (`InvalidTransition` if not)."""
    changed = state.terms.modifiable_view() != update.terms.modifiable_view()
    return event_for_status(state.status, update.status, state.filled_qty, update.filled_qty, changed)


def apply_update(state: LeaderState, update: OrderUpdate) -> LeaderState:
    """The order after a later `update` (a snapshot): `InvalidTransition` if the lifecycle refuses
    its event; the same state when it carries nothing new."""
    event = leader_event(state, update)
    if event is None:
        return state
    return replace(state, status=next_state(state.status, event), terms=update.terms,
                   filled_qty=max(update.filled_qty, state.filled_qty), avg_price=update.avg_price or state.avg_price,
                   created_at=update.created_at or state.created_at, updated_at=update.updated_at,
                   sequence=update.sequence)


def update_from_record(order_id: str, payload: dict[str, Any]) -> OrderUpdate:
    """A stored leader event's payload as an update (records written at start-up carry only the
    status, fills and terms)."""
    return OrderUpdate(order_id=str(payload.get("order_id") or order_id), status=OrderStatus(payload["status"]),
                       terms=terms_from_dict(payload["terms"]), filled_qty=int(payload.get("filled_qty") or 0),
                       avg_price=float(payload.get("avg_price") or 0.0), created_at=payload.get("created_at") or "",
                       updated_at=payload.get("updated_at") or "", sequence=payload.get("sequence"))
