"""Quotes, operator and risk controls, storage news, and the other actors' timers, questions and commands."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # annotations only: nothing here is imported at run time
    from actors.messages.sizing import CapitalSnapshot, PositionsSnapshot
    from broker.gateway import Answer
    from trading.filters import CopyWindow, Filters
    from trading.risk import RiskLimits
    from trading.sizing import SizingRule

from trading.kill_switch import KillSwitchState



# -- order actor <-> quotes -------------------------------------------------------------------------
@dataclass(frozen=True)
class QuoteWanted:
    """Order actor -> QuoteActor: the last traded price of an instrument, for a leader order that
    names no price (the board had no fresh one)."""

    exchange_segment: str
    security_id: str
    reply_to: Any  # Address of the order actor


@dataclass(frozen=True)
class QuotePrice:
    """QuoteActor -> order actor: the answer; price 0 when none could be had (no data plan, no
    data for the instrument, a failed request)."""

    exchange_segment: str
    security_id: str
    price: float


# -- operator and risk controls ----------------------------------------------------------------------
@dataclass(frozen=True)
class CancelCopies:
    """Router -> every order actor with open copies (kill switch): cancel them all; or only those
    of `follower` (in `segments`, when given), for a square-off or a follower removed; or only
    those of leader order `leader_order_id` (sizing: an exit closed the position it opened)."""

    reason: str
    follower: str | None = None
    segments: tuple[str, ...] = ()
    leader_order_id: str | None = None

    def covers(self, follower: str, segment: str) -> bool:
        return (self.follower is None or follower == self.follower) and (not self.segments or segment in self.segments)


@dataclass(frozen=True)
class ProtectCopy:
    """Sizing -> router -> order actor of a leader exit that waits for its price (a stop-loss, a
    target): `follower`'s copy of an earlier order of that leader, resting when the exit was sized,
    filled since; the follower's copy of the exit grows, sized as the exit was from what the
    follower holds now (`held`) and the leader's position before the exit (`before`), for the
    exit's quantity as it is now (placed, when the follower held nothing then)."""

    leader_order_id: str
    follower: str
    held: int
    before: int


@dataclass(frozen=True)
class ReduceCopy:
    """Sizing -> router -> order actor of a wholly filled leader order: `follower`'s copy of it
    still rests, and leader exit `exit_order_id` sold `exit_quantity` of the leader's `before`, not
    all of it: what rests of the copy shrinks by the same fraction (as the follower's exit took that
    fraction of what it held), so that once filled it is the follower's share of what the leader keeps."""

    leader_order_id: str
    follower: str
    before: int
    exit_quantity: int
    exit_order_id: str


@dataclass(frozen=True)
class SyncCopies:
    """Router -> order actor (reconciler repair): look the open copies up at the broker again
    and converge from what it says."""

    leader_order_id: str


@dataclass(frozen=True)
class UnwindStrategy:
    """Order actor -> router: a leg of strategy `group_id` cannot be placed for `follower`; the
    strategy's other legs must not be left naked there."""

    group_id: str
    follower: str
    reason: str
    failed_leg: str


@dataclass(frozen=True)
class UnwindLeg:
    """Router -> order actor of a leg: cancel the follower's copy if open, flatten it if filled
    (when configured), and alert."""

    follower: str
    reason: str


@dataclass(frozen=True)
class RetryCopy:
    """Router -> order actor: an operator asked to retry a dead-lettered copy."""

    follower: str
    dead_letter_id: int
    correlation_id: str = ""  # the refused order's: which slice of the copy, when it has several


# -- operators' control of followers (actors/follower_control.py) ------------------------------------
@dataclass(frozen=True)
class PauseCopying:
    """Ask sizing: copy nothing new to `follower` (each new leader order a recorded skip with
    `detail`) until resumed. Copies already placed go on following the leader."""

    follower: str
    detail: str


@dataclass(frozen=True)
class ResumeCopying:
    """Ask sizing: copy new leader orders to `follower` again."""

    follower: str


@dataclass(frozen=True)
class ChangeSizing:
    """Ask sizing: size `follower`'s copies by `rule` from now on."""

    follower: str
    rule: SizingRule


@dataclass(frozen=True)
class FollowerAdded:
    """Ask sizing: a follower added while the copier runs, with its rules and first readings."""

    follower: str
    rule: SizingRule
    limits: RiskLimits
    filters: Filters
    copy_window: CopyWindow | None
    capital: CapitalSnapshot | None = None
    positions: PositionsSnapshot | None = None


@dataclass(frozen=True)
class FollowerRemoved:
    """Tell sizing: the follower is no longer copied to; forget it."""

    follower: str


@dataclass(frozen=True)
class CatchUpCopy:
    """Control actor -> router -> order actor: `follower`'s copy of this order was skipped while it
    was paused; the order is still open: size it now and place it (a resume with catch-up)."""

    leader_order_id: str
    follower: str


@dataclass(frozen=True)
class PollControl:
    """Timer -> follower control actor: take operators' requests, finish what waits."""


@dataclass(frozen=True)
class StartSquareOff:
    """Follower control actor -> square-off actor: carry out the stored run `run_id`."""

    run_id: int


@dataclass(frozen=True)
class SquareOffTick:
    """Timer -> square-off actor: check the runs under way."""


@dataclass(frozen=True)
class PositionsRead:
    """A square-off's reading of a follower's positions, made on a thread of its own: the
    broker's answer."""

    run_id: int
    answer: Answer  # of a Listing of trading.account.Position


# -- storage -> feed ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class StorageRecovered:
    """Storage takes writes again after being down: what could not be stored meanwhile is caught up."""


# -- the other actors' own messages: timers, questions, commands --------------------------------------
# One class each, so a handler matches on a type, never on a string. Timer messages are told by
# the copier's one `Timers` service (supervisors/timers.py).
@dataclass(frozen=True)
class IsConnected:
    """Ask a feed: is its order-update socket logged in? Answers a bool."""


@dataclass(frozen=True)
class Backfill:
    """Ask a feed to read its account's order book now; answers how many updates were new."""


@dataclass(frozen=True)
class Reconnect:
    """Token actor -> feed: the account's token works again: stop waiting out the socket's backoff."""


@dataclass(frozen=True)
class FreeCapital:
    """Ask sizing: each follower's capital free for new copies, by follower."""


@dataclass(frozen=True)
class PollKillSwitch:
    """Timer -> kill switch: read the switch's stored state (an operator command may have set it)."""


@dataclass(frozen=True)
class EngageKillSwitch:
    """Turn the kill switch on from inside the copier (a risk rule, repeated broker failures)."""

    reason: str
    by: str


@dataclass(frozen=True)
class BrokerFailure:
    """A follower's placement failed for good: counted towards the kill switch's failure limit."""

    follower: str
    reason: str


@dataclass(frozen=True)
class KillSwitchStatus:
    """Ask the kill switch actor for its current `KillSwitchState`."""


@dataclass(frozen=True)
class Reconcile:
    """Timer, or an ask -> reconciler: compare the books with storage now; answers the divergences."""


@dataclass(frozen=True)
class AnswerReconcileRequests:
    """Timer -> reconciler: answer a report an operator command asked for through storage."""


@dataclass(frozen=True)
class PollForever:
    """Timer -> forever actor: read the leader's forever orders."""


@dataclass(frozen=True)
class CheckTokens:
    """Timer -> token actor: look at the token file and try paused accounts' tokens again."""


@dataclass(frozen=True)
class RenewTokens:
    """Timer -> token actor: renew the leader's token (`leader`) or every follower's; answers
    {account: renewed}."""

    leader: bool = False


@dataclass(frozen=True)
class AskQuotes:
    """Timer -> quote actor: an account's request window has room again: ask what is wanted."""


@dataclass(frozen=True)
class RefreshAccounts:
    """Timer -> sizing: read every account's funds and positions again."""


# -- shards: the stream between the leader feed process and the follower shards -----------------------
@dataclass(frozen=True)
class PublishPending:
    """Timer -> stream publisher (the feed process): publish the stored updates the stream server has
    not confirmed yet, oldest first."""


@dataclass(frozen=True)
class PublishKillSwitch:
    """Kill switch (of a shard) -> stream control: this shard turned the switch on (a risk rule,
    broker failures), or has it on while the stream server lost it; publish it so that every other
    shard turns its own on."""

    state: KillSwitchState
