"""Feed -> router -> order actor: order updates, and questions to the router and order actors."""
from __future__ import annotations

from dataclasses import dataclass

from trading.leader import LEADER, is_leader, leader_account, leader_label  # noqa: F401 - the actors' account names
from trading.orders import OrderUpdate


# -- feed -> router -> order actor ----------------------------------------------------------------
@dataclass(frozen=True)
class OrderUpdateReceived:
    """An order update, already stored in the inbox as `event_id` (not yet done)."""

    account: str  # LEADER or a follower name
    event_id: int
    update: OrderUpdate
    stored: bool = False  # routed again from storage (not done yet), not as it arrived


@dataclass(frozen=True)
class RouteStored:
    """Router: (re)route every stored update not yet done (after a restart or on a sweep)."""


@dataclass(frozen=True)
class OrderActorWanted:  # ask the router: the Address of a leader order's running actor, or None
    leader_order_id: str


@dataclass(frozen=True)
class CopiesMade:
    """Order actor -> router, before it places them: these copies (follower, correlation id) are
    this leader order's, so their followers' updates are routed without asking storage whose
    they are."""

    leader_order_id: str
    copies: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class OrderActorIdle:
    """Order actor -> router: my order is finished and I have nothing in flight; stop me."""

    leader_order_id: str


@dataclass(frozen=True)
class CopiesWanted:
    """Ask an order actor: {"leader": its status, "copies": {follower: (status, call in flight or None)}}."""
