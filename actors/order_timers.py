"""What an order actor tells itself through the copier's timer service (supervisors/timers.py).
These never travel between actors, so they live beside the order actor, not in actors/messages/."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PriceWaitOver:
    """The wait for a price of an order that names none (MARKET) is over: decide without one."""


@dataclass(frozen=True)
class SizingOverdue:
    """A first sighting's sizing, waiting for a reading, did not come in time: a crash, retried."""


@dataclass(frozen=True)
class LagCheck:
    """The leader's order filled a while ago: alert for copies still open."""


@dataclass(frozen=True)
class UnknownCheck:
    """Alert for copies whose placement's outcome is still unknown."""


@dataclass(frozen=True)
class LookupDue:
    """A copy backing off after a failed lookup may be looked up again."""


@dataclass(frozen=True)
class RereadDue:
    """Read the leader's order from the broker again (the last read failed)."""


@dataclass(frozen=True)
class FilledFirstDue:
    """The grace for the leader's fill to arrive after a follower's is over: judge which came first."""


@dataclass(frozen=True)
class SuperReadDue:
    """Read the leader's super order again (it is live, or the last read failed)."""


@dataclass(frozen=True)
class HoldCheck:
    """Ask again whether a held SELL leg's BUY legs filled (actors/order_legs.py)."""
