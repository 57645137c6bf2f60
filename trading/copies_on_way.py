"""How long an exit waits for its followers' copies still on their way.

An exit is sized from what each follower holds. A copy of an earlier leader order that has not
reached its broker yet, or not filled there yet, is not (wholly) in those positions: an entry it
brings, or an earlier exit it takes away, would be missed, and the follower sold nothing (nothing
to reduce) or the wrong fraction. The sizing actor (actors/sizing.py) remembers each follower's
copies until they end (filled, or cancelled, rejected, skipped) and asks `held_until` before it
reads an exit's positions."""
from __future__ import annotations

from typing import Callable, Iterable, NamedTuple

from trading.account import PositionKey


class CopyOnWay(NamedTuple):
    """A follower's copy sized (or loaded by a new incarnation) and not ended yet."""

    key: PositionKey
    leader: str
    leader_order_id: str
    filled_then: int  # the leader order's filled quantity when sized (or told of)
    sized_at: float  # monotonic: when sized, or sent again since (its answer is due from then)
    doubt_until: float | None = None  # monotonic: its placement is looked up first until about then
    cancelling: bool = False  # asked to be cancelled by an exit that closes its leader's position
    leader_traded: bool = False  # its leader order has wholly filled, as a new incarnation loaded it


def held_until(copies: Iterable[CopyOnWay], key: PositionKey, exit_order_id: str, now: float, exit_wait: float,
               answer_wait: float, filled: Callable[[str, str], int | None]) -> float | None:
    """Until when (monotonic) an exit of leader order `exit_order_id` in instrument `key` waits for
    `copies`, None when it need not wait for any. Only copies of leader orders that have filled
    count (`filled(leader, order id)`, None when not known: the copy's `filled_then`): their fills
    are in the leader's position. A copy the exit asked to cancel (`resting`) counts whatever the
    ledger knows: the exit reads the follower once it has ended.

    A copy holds it until it ends (the sizing actor forgets it then), at most until its placement
    is answered and filled: `answer_wait` (the broker's timeout) after it was sized, or after its
    lookups are believed when it is in doubt, and half an exit wait more. By then an unanswered
    placement is in doubt (told anew, it holds the exit longer), or the copy rests unfilled at its
    broker, or it was lost on its way (it is looked up): the exit goes on. A slow broker is waited
    for; it is not taken for a lost copy."""
    until: float | None = None
    for copy in copies:
        if copy.key != key or copy.leader_order_id == exit_order_id:
            continue
        held = _held(copy, exit_wait, answer_wait)
        if held <= now:
            continue
        known = filled(copy.leader, copy.leader_order_id)
        if copy.cancelling or (known if known is not None else copy.filled_then) != 0:
            until = held if until is None else max(until, held)
    return until


def resting(copy: CopyOnWay, leader: str, key: PositionKey, exit_order_id: str, now: float, exit_wait: float,
            answer_wait: float, traded: Callable[[str, str], bool]) -> bool:
    """Whether an exit of `leader`'s order `exit_order_id` that closes its position in `key`
    cancels `copy`: the follower's share of what the leader held (`share_of_held`), still not ended
    when `held_until` stopped holding the exit for it. It rests at its broker (or was lost on its
    way: its cancel finds nothing): left there, it would fill the next time the price comes by, and
    the follower hold what its leader has closed. The leader's own resting orders keep their
    copies (the leader rests its part of them too), and so do other leaders' orders."""
    return (share_of_held(copy, leader, key, exit_order_id, traded)
            and _held(copy, exit_wait, answer_wait) <= now)


class Protection(NamedTuple):
    """An exit of a leader's whose copies wait for its price (a stop-loss, a target), sized while a
    follower's copy of an earlier order of that leader rested (`share_of_held`): as that copy fills,
    what the follower holds grows, and its copy of the exit grows with it, sized as it was."""

    exit_order_id: str
    key: PositionKey
    before: int  # the leader's position before the exit
    quantity: int  # the exit's
    lot_size: int


def share_of_held(copy: CopyOnWay, leader: str, key: PositionKey, exit_order_id: str,
                  traded: Callable[[str, str], bool]) -> bool:
    """Whether `copy` is its follower's share of what `leader` holds in `key`, not yet (wholly) in
    what the follower holds: a copy of another of that leader's orders there, wholly filled, not
    asked to be cancelled. An exit of leader order `exit_order_id` that closes the position cancels
    it (`resting`); one that waits for its price grows as it fills (`Protection`): sized from what
    the follower held, a stop-loss would leave the part the copy fills later unprotected."""
    return (copy.key == key and copy.leader == leader and copy.leader_order_id != exit_order_id and not copy.cancelling
            and (copy.leader_traded or traded(copy.leader, copy.leader_order_id)))


def _held(copy: CopyOnWay, exit_wait: float, answer_wait: float) -> float:
    """Until when (monotonic) `copy` holds an exit: its placement answered and filled by then."""
    sent = copy.sized_at if copy.doubt_until is None else max(copy.sized_at, copy.doubt_until)
    return sent + answer_wait + exit_wait / 2
