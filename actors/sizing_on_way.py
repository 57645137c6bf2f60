"""The sizing actor's memory of each follower's copies on their way (actors/sizing.py): an exit
right after an order whose copy has not reached the broker, or not filled there yet, waits for it,
else the follower's positions miss what that copy does (trading/copies_on_way.py says how long).
Copies come in sized (`sized`) or from an order actor that looks them up before placing them again
(`in_doubt`: after a restart, or an unanswered placement), are due later when the rate limiter
sends them again (`retried`, `paused`), and leave once ended: filled, or cancelled, rejected,
skipped (`arrived`). An exit held longer than usual holds up the requests after it on its
underlying (its lane): `hold_lane` / `lane_held` say until when. An exit that waits for its price
while a follower's copy of an earlier order rests grows as that copy fills (`protect`,
`protections`)."""
from __future__ import annotations

import math
import time
from collections import deque
from typing import Callable, Iterable

from actors.messages import CopyInDoubt, CopyResting, SizeCopy
from trading import risk
from trading.account import PositionKey
from trading.copies_on_way import CopyOnWay, Protection, held_until, resting, share_of_held

MAX_ON_WAY_KEPT = 1_000  # a follower's copies remembered for the exits that wait for them (oldest forgotten first)
MAX_PRICE_EXITS_KEPT = 10_000  # exits waiting for their price remembered (oldest forgotten first)


class OnTheirWay:
    """Kept in the sizing actor's thread, like everything it holds."""

    def __init__(self, followers: Iterable[str]) -> None:
        self._copies: dict[str, dict[str, CopyOnWay]] = {name: {} for name in followers}  # by correlation id
        self._held: dict[str, float] = {}  # lane -> until when (monotonic) an exit in it holds it
        # follower -> leader order -> the exits that grow as the follower's copy of that order fills
        self._protecting: dict[str, dict[str, list[Protection]]] = {}
        self._grown: dict[tuple[str, str], int] = {}  # (follower, exit) -> what the follower held when it last grew
        # follower -> exits their order actors told of, with their leaders (`exit_told`): they also
        # grow with the copies loaded resting afterwards (order actors load in any order)
        self._told_exits: dict[str, deque[tuple[str, Protection]]] = {}
        # follower -> (when, exit): exits whose copy to grow with ended then; its last fill may have
        # come by no socket (the follower's was down), and is in the first positions read after it
        self._ended: dict[str, list[tuple[int, Protection]]] = {}
        # exit order id -> (its leader, it): exits that wait for their price, until they begin to fill
        self._price_exits: dict[str, tuple[str, Protection]] = {}

    def sized(self, request: SizeCopy) -> None:
        """A copy sized (a re-size of one still remembered changes nothing)."""
        if request.correlation_id not in self._copies.get(request.follower, {}):
            self._keep(request.follower, request.correlation_id,
                       CopyOnWay(risk.position_key(request.terms), request.leader, request.leader_order_id,
                                 request.leader_filled, time.monotonic()))

    def in_doubt(self, copies: Iterable[CopyInDoubt]) -> None:
        """Copies looked up before they are placed (again): on their way until that is over."""
        now, wall = time.monotonic(), time.time()
        for copy in copies:
            self._copies.get(copy.follower, {}).pop(copy.correlation_id, None)  # (kept in the order told)
            self._keep(copy.follower, copy.correlation_id,
                       CopyOnWay(copy.key, copy.leader, copy.leader_order_id, copy.leader_filled, now,
                                 now + max(0.0, copy.believed_from - wall)))

    def resting(self, copies: Iterable[CopyResting], traded: Callable[[str, str], bool]) -> None:
        """Copies loaded open at their brokers: they hold no exit (they are long at their brokers),
        an exit that closes its leader's position cancels them (`cancel_resting`), and the exits
        told waiting for their price grow with them (`exit_told`)."""
        for copy in copies:
            if copy.correlation_id not in self._copies.get(copy.follower, {}):
                kept = CopyOnWay(copy.key, copy.leader, copy.leader_order_id, 0, -math.inf,
                                 leader_traded=copy.leader_traded)
                self._keep(copy.follower, copy.correlation_id, kept)
                for leader, protection in self._told_exits.get(copy.follower, ()):
                    if share_of_held(kept, leader, protection.key, protection.exit_order_id, traded):
                        self._grows(copy.follower, copy.leader_order_id, protection)

    def retried(self, follower: str, correlation_id: str, retry_at: float) -> bool:
        """A copy's placement sent again at `retry_at` (monotonic): its answer is due from then.
        Whether it was here."""
        kept = self._copies.get(follower, {})
        copy = kept.get(correlation_id)
        if copy is None:
            return False
        kept[correlation_id] = copy._replace(sized_at=max(copy.sized_at, retry_at))
        return True

    def paused(self, follower: str, until: float) -> bool:
        """None of `follower`'s placements is sent before `until` (monotonic): their answers are
        due from then. Whether it has any on its way."""
        kept = self._copies.get(follower, {})
        for cid, copy in kept.items():
            kept[cid] = copy._replace(sized_at=max(copy.sized_at, until))
        return bool(kept)

    def arrived(self, copies: Iterable[tuple[str, str]]) -> bool:
        """Copies ((follower, correlation id) each) ended: whether any was here."""
        return any([self._forget(follower, cid) for follower, cid in copies])

    def held_until(self, followers: Iterable[str], key: PositionKey, exit_order_id: str, exit_wait: float,
                   answer_wait: float, filled: Callable[[str, str], int | None]) -> float | None:
        """Until when (monotonic) an exit of `followers` waits for their copies (None: it need not)."""
        return held_until((copy for follower in followers for copy in self._copies.get(follower, {}).values()),
                          key, exit_order_id, time.monotonic(), exit_wait, answer_wait, filled)

    def cancel_resting(self, followers: Iterable[str], leader: str, key: PositionKey, exit_order_id: str,
                       exit_wait: float, answer_wait: float, traded: Callable[[str, str], bool]
                       ) -> list[tuple[str, str]]:
        """The copies an exit that closes its leader's position cancels (`resting`), as (follower,
        leader order id) once each: each holds the exit again, until its cancel is answered."""
        now = time.monotonic()
        return self._cancel(followers, lambda copy: resting(copy, leader, key, exit_order_id, now, exit_wait,
                                                            answer_wait, traded))

    def resting_shares(self, followers: Iterable[str], leader: str, key: PositionKey, exit_order_id: str,
                       exit_wait: float, answer_wait: float, traded: Callable[[str, str], bool]
                       ) -> list[tuple[str, str]]:
        """The copies an exit finds resting (`resting`), as (follower, leader order id) once each."""
        now = time.monotonic()
        return self._select(followers, lambda copy: resting(copy, leader, key, exit_order_id, now, exit_wait,
                                                            answer_wait, traded))

    def waits_for_price(self, leader: str, protection: Protection) -> None:
        """Its exit waits for its price (a stop-loss, a target): `price_exit_filled` once it fills."""
        if len(self._price_exits) >= MAX_PRICE_EXITS_KEPT:  # (the oldest: nearly always cancelled long ago)
            del self._price_exits[next(iter(self._price_exits))]
        self._price_exits[protection.exit_order_id] = (leader, protection)

    def price_exit_filled(self, exit_order_id: str) -> tuple[str, Protection] | None:
        """An exit that waited for its price began to fill: it (with its leader), once, or None."""
        return self._price_exits.pop(exit_order_id, None)

    def shares(self, followers: Iterable[str], leader: str, protection: Protection, traded: Callable[[str, str], bool],
               cancel: bool = False) -> list[tuple[str, str]]:
        """The followers' copies that are their share of what `leader` holds in its exit's
        instrument (`share_of_held`), whether they rest or are still on their way, as (follower,
        leader order id) once each; `cancel`: marked as asked to be cancelled."""
        def which(copy: CopyOnWay) -> bool:
            return share_of_held(copy, leader, protection.key, protection.exit_order_id, traded)
        return self._cancel(followers, which) if cancel else self._select(followers, which)

    def _select(self, followers: Iterable[str], which: Callable[[CopyOnWay], bool]) -> list[tuple[str, str]]:
        """`which` of the followers' copies, as (follower, leader order id) once each."""
        return list(dict.fromkeys((follower, copy.leader_order_id) for follower in followers
                                  for copy in self._copies.get(follower, {}).values() if which(copy)))

    def _cancel(self, followers: Iterable[str], which: Callable[[CopyOnWay], bool]) -> list[tuple[str, str]]:
        """Mark `which` of the followers' copies as asked to be cancelled: each holds an exit again,
        until its cancel is answered. As (follower, leader order id), once each."""
        now, asked = time.monotonic(), {}
        for follower in followers:
            kept = self._copies.get(follower, {})
            for cid, copy in kept.items():
                if which(copy):
                    kept[cid] = copy._replace(sized_at=now, doubt_until=None, cancelling=True)
                    asked[(follower, copy.leader_order_id)] = None
        return list(asked)

    def protect(self, follower: str, leader: str, protection: Protection, traded: Callable[[str, str], bool]) -> bool:
        """Its exit waits for its price: it grows as `follower`'s copies that are its share of what
        `leader` holds fill (`share_of_held`). Whether it has any."""
        shares = self.shares([follower], leader, protection, traded)
        for _follower, order_id in shares:
            self._grows(follower, order_id, protection)
        return bool(shares)

    def exit_told(self, followers: Iterable[str], leader: str, protection: Protection,
                  traded: Callable[[str, str], bool]) -> None:
        """An exit's order actor says it waits for its price (`protect`, `waits_for_price`): a new
        incarnation of it, before or after those of the orders whose copies rest (`resting`), or one
        whose leader changed the exit's quantity (it replaces what was told before)."""
        self.waits_for_price(leader, protection)
        for follower in followers:
            self.protect(follower, leader, protection, traded)
            loaded = self._told_exits.setdefault(follower, deque(maxlen=MAX_ON_WAY_KEPT))
            for told in [told for told in loaded if told[1].exit_order_id == protection.exit_order_id]:
                loaded.remove(told)  # (told again: its leader changed it, or its actor restarted after a crash)
            loaded.append((leader, protection))

    def _grows(self, follower: str, leader_order_id: str, protection: Protection) -> None:
        exits = self._protecting.setdefault(follower, {}).setdefault(leader_order_id, [])
        exits[:] = [*(told for told in exits if told.exit_order_id != protection.exit_order_id), protection]

    def protections(self, follower: str, leader_order_id: str) -> list[Protection]:
        """The exits that grow as `follower`'s copy of `leader_order_id` fills."""
        return self._protecting.get(follower, {}).get(leader_order_id, []) if self._protecting else []

    def protections_read(self, follower: str, fetched_ns: int) -> list[Protection]:
        """The exits to grow from `follower`'s positions fetched at `fetched_ns` (monotonic): a fill
        of a copy they grow with may have come by no socket (the follower's was down), and is in
        them. Those whose copy has ended since, once, if it ended before they were fetched."""
        exits = [grows for told in self._protecting.get(follower, {}).values() for grows in told]
        ended = self._ended.get(follower)
        if ended:
            self._ended[follower] = [(at, grows) for at, grows in ended if at >= fetched_ns]
            exits += [grows for at, grows in ended if at < fetched_ns]
        return list({grows.exit_order_id: grows for grows in exits}.values())

    def grows_from(self, follower: str, exit_order_id: str, held: int) -> bool:
        """Whether `exit_order_id` grows from what `follower` holds: not when it grew from as much
        before (every reading asks)."""
        if self._grown.get((follower, exit_order_id)) == held:
            return False
        if len(self._grown) >= MAX_PRICE_EXITS_KEPT:
            del self._grown[next(iter(self._grown))]
        self._grown[(follower, exit_order_id)] = held
        return True

    def hold_lane(self, lane: str, until: float) -> None:
        now = time.monotonic()
        self._held = {other: held for other, held in self._held.items() if held > now}
        self._held[lane] = max(self._held.get(lane, 0.0), until)

    def release_lane(self, lane: str) -> None:
        """No exit in `lane` waits for copies any more: the requests that join it are not told it is held."""
        self._held.pop(lane, None)

    def lane_held(self, lane: str) -> float:
        """How much longer (seconds) `lane` is held (0: it is not)."""
        return max(0.0, self._held.get(lane, 0.0) - time.monotonic())

    def _keep(self, follower: str, correlation_id: str, copy: CopyOnWay) -> None:
        kept = self._copies.setdefault(follower, {})
        if len(kept) >= MAX_ON_WAY_KEPT:  # (by then the oldest holds no exit: its answer is long due)
            self._forget(follower, next(iter(kept)))
        kept[correlation_id] = copy

    def _forget(self, follower: str, correlation_id: str) -> bool:
        """The copy ended, or is forgotten: whether it was here. Its exits grow no more."""
        copy = self._copies.get(follower, {}).pop(correlation_id, None)
        if copy is None:
            return False
        exits = self._protecting.get(follower, {}).pop(copy.leader_order_id, None) if self._protecting else None
        if exits:
            now = time.monotonic_ns()
            self._ended.setdefault(follower, []).extend((now, grows) for grows in exits)
        return True
