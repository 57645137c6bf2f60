"""Reconciliation: compare what the broker's books hold with what the copier stored, and
each copy with its leader's order as the broker holds it now.

The second matters because the copier's own view of a leader order can be wrong without any
book disagreeing with storage: updates it never heard, or heard in the wrong order, leave the
copies faithful to a stale view. So every open copy is compared with the leader's current order:
its quantity with the leader's quantity re-sized by the follower's rule, its price, trigger and
order type, and its status with the leader's.

And each follower's position with its leaders': whatever made a copy wrong (an exit sized before
a copy ahead of it reached the broker, a copy refused, a hand trade), a follower that holds an
instrument its leaders are flat in, or holds the other side, is at risk its leaders are not.

Pure: the reconciler actor (and `run.py reconcile`) fetch the books and the stored copies and
call `find_divergences`; storing, alerting and repairing are theirs.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Collection, Iterable, Mapping

from trading.account import PositionKey
from trading.orders import OrderStatus, OrderTerms, OrderType, OrderUpdate
from trading.sizing import SizingRule, size_order

MISSING_REPLICATION = "missing_replication"  # a copyable leader order with no copy recorded
MISSING_FOLLOWER_ORDER = "missing_follower_order"  # a copy the copier placed, absent from the follower's book
STATUS_MISMATCH = "status_mismatch"  # the leader's order is finished, its copy is still open
QUANTITY_MISMATCH = "quantity_mismatch"  # an open copy whose quantity is not the leader's order's, sized
COPY_TERMS_MISMATCH = "copy_terms_mismatch"  # an open copy whose price, trigger or order type is not the leader's
COPY_CANCELLED_LEADER_OPEN = "copy_cancelled_leader_open"  # a copy cancelled, not by design, while its leader is open
COPY_OPEN_LEADER_FILLED = "copy_open_leader_filled"  # a copy still open well after its leader's order filled
OUTCOME_UNKNOWN = "outcome_unknown"  # a copy whose placement's outcome the copier does not know yet
# a follower holds, in an instrument copied to it today, what its leaders do not: none, or the other side
POSITION_AGAINST_LEADER = "position_against_leader"
KINDS = (MISSING_REPLICATION, MISSING_FOLLOWER_ORDER, STATUS_MISMATCH, QUANTITY_MISMATCH, COPY_TERMS_MISMATCH,
         COPY_CANCELLED_LEADER_OPEN, COPY_OPEN_LEADER_FILLED, OUTCOME_UNKNOWN, POSITION_AGAINST_LEADER)

_FINISHED = (OrderStatus.CANCELLED, OrderStatus.REJECTED, OrderStatus.EXPIRED)
_PRICED = (OrderType.LIMIT, OrderType.STOP_LOSS)
_TRIGGERED = (OrderType.STOP_LOSS, OrderType.STOP_LOSS_MARKET)

# follower, the leader's order as it is now -> the copy's quantity by the follower's rule, or None
Resize = Callable[[str, OrderUpdate], "int | None"]  # (follower, the leader's order): its copy's quantity


@dataclass(frozen=True)
class StoredCopy:
    leader_order_id: str
    follower: str
    correlation_id: str
    status: str
    target_quantity: int
    placed: bool  # the broker acknowledged it (it has a broker order id)
    sized_for: int | None = None  # the leader quantity the copier last sized it for (None: not known)
    cancel_requested: bool = False  # the copier asked for its cancel
    leader_status: str = ""  # the leader order's status as the copier stored it
    leader_filled_at: float | None = None  # when the copier saw the leader's order filled (epoch seconds)
    part: int = 0  # which slice of a copy above the freeze quantity (trading/freeze.py)


def rule_quantity(rule: SizingRule, leader: OrderTerms, lot_size: int) -> int | None:
    """The follower quantity its sizing rule alone makes of the leader's order; None when the rule
    needs more than the order (capital_proportional: both accounts' capital) or refuses it."""
    if rule.strategy == "capital_proportional":
        return None
    sized = size_order(rule, leader.quantity, leader.disclosed_qty, lot_size, leader.price or leader.trigger_price,
                       leader.trigger_price, None)
    return None if sized.skip_reason else sized.quantity


@dataclass(frozen=True)
class Divergence:
    kind: str
    leader_order_id: str | None
    follower: str | None
    detail: str


def find_divergences(leader_book: Iterable[OrderUpdate], follower_books: Mapping[str, Iterable[OrderUpdate]],
                     copies: Iterable[StoredCopy], known_leader_orders: set[str], followers: list[str],
                     *, resize: Resize | None = None, now: float = 0.0, fill_grace_seconds: float = 30.0,
                     ) -> list[Divergence]:
    """Every divergence between the books and storage, in a stable order. `resize` re-sizes a copy
    for a leader quantity it was not sized for; a copy still open `fill_grace_seconds` after the
    copier saw its leader's order fill (at `now`) is reported."""
    by_leader: dict[str, dict[str, list[StoredCopy]]] = {}  # leader order -> follower -> its slices
    for copy in sorted(copies, key=lambda stored: stored.part):
        by_leader.setdefault(copy.leader_order_id, {}).setdefault(copy.follower, []).append(copy)
    # a super order's exit legs share its order and correlation ids: its entry stands for it
    books = {name: {u.correlation_id: u for u in book if u.correlation_id and not u.exit_leg}
             for name, book in follower_books.items()}
    out: list[Divergence] = []
    for leader in leader_book:
        if leader.exit_leg:
            continue
        known = by_leader.get(leader.order_id, {})
        if leader.status == OrderStatus.REJECTED:
            continue
        if leader.order_id not in known_leader_orders:
            if leader.status not in _FINISHED:
                out.append(Divergence(MISSING_REPLICATION, leader.order_id, None,
                                      f"leader order {leader.status.value} never seen by the copier"))
            continue
        for follower in followers:
            parts = known.get(follower)
            if not parts:
                continue  # an order-level skip (instrument, market hours...) was recorded instead
            held: list[tuple[StoredCopy, OrderUpdate]] = []
            for copy in parts:
                at_broker = _compare(out, leader, copy, books.get(follower, {}), len(parts), now, fill_grace_seconds)
                if at_broker is not None:
                    held.append((copy, at_broker))
            if leader.status.is_open:
                out.extend(_against_leader(leader, held, resize))
    out.extend(_unknown_outcomes([c for known in by_leader.values() for parts in known.values() for c in parts],
                                 books))
    return out


def _named(copy: StoredCopy, slices: int) -> str:
    """How a divergence names the copy: `copy`, or `slice 2 of 3 of the copy` for a sliced one."""
    return f"slice {copy.part + 1} of {slices} of the copy" if slices > 1 else "copy"


def _compare(out: list[Divergence], leader: OrderUpdate, copy: StoredCopy, book: Mapping[str, OrderUpdate],
             slices: int, now: float, fill_grace_seconds: float) -> OrderUpdate | None:
    """One copy (or slice of one) against the follower's book and the leader's status; returns its
    order on the book when both it and the leader's order are open (to be compared with the
    leader's terms), else None."""
    follower, name = copy.follower, _named(copy, slices)
    if copy.status in ("SKIPPED",) or not copy.placed:
        return None
    at_broker = book.get(copy.correlation_id)
    if at_broker is None:
        out.append(Divergence(MISSING_FOLLOWER_ORDER, leader.order_id, follower,
                              f"{name} {copy.correlation_id} is not in {follower}'s order book"))
        return None
    if leader.status in _FINISHED and at_broker.status.is_open:
        out.append(Divergence(STATUS_MISMATCH, leader.order_id, follower,
                              f"leader {leader.status.value}, {name} still {at_broker.status.value}"))
    elif leader.status.is_open and at_broker.status == OrderStatus.CANCELLED:
        if _cancelled_by_design(copy):
            return None
        why = (f"the copier took the leader's order for {copy.leader_status}" if copy.cancel_requested
               else "not by the copier")
        out.append(Divergence(COPY_CANCELLED_LEADER_OPEN, leader.order_id, follower,
                              f"{name} CANCELLED ({why}) while the leader's order is {leader.status.value}; "
                              "not placed again"))
    elif leader.status == OrderStatus.TRADED and at_broker.status.is_open:
        if copy.leader_filled_at is None or now - copy.leader_filled_at >= fill_grace_seconds:
            seen = ("the copier has not seen the fill" if copy.leader_filled_at is None
                    else f"filled {now - copy.leader_filled_at:.0f}s ago")
            out.append(Divergence(COPY_OPEN_LEADER_FILLED, leader.order_id, follower,
                                  f"leader TRADED ({seen}), {name} still {at_broker.status.value}"))
    elif leader.status.is_open and (at_broker.status.is_open or slices > 1):
        return at_broker  # (a closed slice still counts in the copy's quantity)
    return None


def _unknown_outcomes(copies: Iterable[StoredCopy], books: Mapping[str, Mapping[str, OrderUpdate]]) -> list[Divergence]:
    """Copies whose placement's outcome is unknown, with what the follower's book says of them
    (the copier keeps looking them up; it adopts the order, or places it once it is known absent)."""
    out = []
    for copy in copies:
        if copy.status != OrderStatus.UNKNOWN.value:
            continue
        at_broker = books.get(copy.follower, {}).get(copy.correlation_id)
        seen = (f"in {copy.follower}'s order book as {at_broker.status.value} (order {at_broker.order_id})"
                if at_broker is not None else f"not in {copy.follower}'s order book")
        out.append(Divergence(OUTCOME_UNKNOWN, copy.leader_order_id, copy.follower,
                              f"placement of copy {copy.correlation_id} has an unknown outcome (being looked up); {seen}"))
    return out


def _cancelled_by_design(copy: StoredCopy) -> bool:
    """The copier cancelled it on purpose while the leader's order was open as far as it knew
    (kill switch, strategy unwind, re-sized below its fills, cancel and replace)."""
    return copy.cancel_requested and not (copy.leader_status and OrderStatus(copy.leader_status) in _FINISHED)


def _against_leader(leader: OrderUpdate, held: list[tuple[StoredCopy, OrderUpdate]],
                    resize: Resize | None) -> list[Divergence]:
    """A copy against its open leader order: its quantity re-sized (summed over its slices), then
    the terms of each of its open orders, copied as they are. `held`: each slice of the copy (one
    for most copies) with its order on the follower's book."""
    out: list[Divergence] = []
    if not held:
        return out
    wanted = leader.terms.quantity
    copy = held[0][0]
    sliced = len(held) > 1 or copy.part > 0
    if copy.sized_for is None or copy.sized_for == wanted:
        for part, at_broker in held:
            holds = at_broker.terms.quantity if at_broker.status.is_open else at_broker.filled_qty
            if at_broker.status.is_open and holds != part.target_quantity:
                name = f"slice {part.part + 1}" if sliced else "copy"
                out.append(Divergence(QUANTITY_MISMATCH, leader.order_id, part.follower,
                                      f"{name} holds {holds}, sizing asked for {part.target_quantity}"))
    else:
        holds = sum(at_broker.terms.quantity if at_broker.status.is_open else at_broker.filled_qty
                    for _part, at_broker in held)
        expected = resize(copy.follower, leader) if resize is not None else None
        if expected is None:
            out.append(Divergence(QUANTITY_MISMATCH, leader.order_id, copy.follower,
                                  f"copy holds {holds}, sized for the leader's {copy.sized_for}; "
                                  f"the leader's order is {wanted} now"))
        elif holds != expected:
            out.append(Divergence(QUANTITY_MISMATCH, leader.order_id, copy.follower,
                                  f"copy holds {holds}; the leader's order is {wanted} now, which "
                                  f"{copy.follower}'s sizing makes {expected}"))
    for part, at_broker in held:
        if at_broker.status.is_open:
            out.extend(_terms_against_leader(leader, at_broker, part, f"slice {part.part + 1}" if sliced else "copy"))
    return out


def _terms_against_leader(leader: OrderUpdate, at_broker: OrderUpdate, copy: StoredCopy, name: str) -> list[Divergence]:
    theirs, ours = leader.terms, at_broker.terms
    differences = []
    if theirs.order_type != ours.order_type:
        differences.append(f"order type {ours.order_type.value}, the leader's {theirs.order_type.value}")
    if theirs.order_type in _PRICED and round(theirs.price, 4) != round(ours.price, 4):
        differences.append(f"price {ours.price:g}, the leader's {theirs.price:g}")
    if theirs.order_type in _TRIGGERED and round(theirs.trigger_price, 4) != round(ours.trigger_price, 4):
        differences.append(f"trigger {ours.trigger_price:g}, the leader's {theirs.trigger_price:g}")
    if differences:
        return [Divergence(COPY_TERMS_MISMATCH, leader.order_id, copy.follower, f"{name} " + "; ".join(differences))]
    return []


def positions_against_leaders(leaders: Mapping[str, Mapping[PositionKey, int]],
                              followers: Mapping[str, Mapping[PositionKey, int]], follows: Callable[[str, str], bool],
                              copied: Mapping[str, Collection[PositionKey]], settling: Collection[PositionKey],
                              seen_before: Collection[tuple[str, PositionKey]] | None = (),
                              ) -> tuple[list[Divergence], set[tuple[str, PositionKey]]]:
    """Followers holding, in an instrument copied to them today (`copied`: a copy of theirs
    filled in it), what every leader they follow is flat in, or the side opposite to all of them.
    Instruments with an order still open in any book (`settling`) are left for a later round, and
    a follower is reported only when it was found so in the round before too (`seen_before`; None:
    at once, no copier running): a leader's exit whose copy is on its way looks the same for a
    moment. Returns the divergences and what was found this round (the next round's `seen_before`)."""
    found: list[Divergence] = []
    seen: set[tuple[str, PositionKey]] = set()
    for follower, held in sorted(followers.items()):
        theirs = [positions for leader, positions in sorted(leaders.items()) if follows(follower, leader)]
        for key in sorted(set(copied.get(follower, ()))):
            quantity = held.get(key, 0)
            if not theirs or quantity == 0 or key in settling:
                continue
            leader_quantities = [positions.get(key, 0) for positions in theirs]
            sides = {q > 0 for q in leader_quantities if q}
            if sides and sides != {quantity < 0}:
                continue  # (a leader holds the follower's side: its size is the sizing rule's)
            seen.add((follower, key))
            if seen_before is None or (follower, key) in seen_before:
                what = "none" if not sides else f"{sum(leader_quantities)}"
                found.append(Divergence(POSITION_AGAINST_LEADER, None, follower,
                                        f"{follower} holds {quantity} of {key[0]} {key[1]} while its leader "
                                        f"holds {what}"))
    return found, seen
