"""What a leader's exit does to its followers' copies left resting of the position it exits, in
the sizing actor (actors/sizing.py; `OnTheirWay` remembers the copies).

A follower's copy still resting unfilled at its broker, of a leader order that has wholly filled,
is the follower's share of what its leader holds, not yet in what the follower holds
(trading/copies_on_way.py `share_of_held`). A follower's exit is sized from what it holds, so
such a copy needs the exit's hand too:

- an exit of all of the position, at the market or filling, cancels them (the sizing actor's
  `_cancel_resting`: it waits for the cancels, then sells what each follower holds);
- an exit of a part of it shrinks what rests of them by the fraction it sells (`ReduceCopy`), so
  that once filled they are the follower's share of what the leader keeps;
- an exit that waits for its price (a stop-loss, a target) leaves them (the leader still holds
  what they follow); the follower's copy of it grows as they fill (`ProtectCopy`: placed when the
  follower held nothing, else modified), and its first fill cancels or shrinks them as above.
  Fills that no socket brought count too (`FillUncounted`, and every reading of positions).
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from actors.messages import CancelCopies, FillUncounted, PositionsSnapshot, ProtectCopy, ReduceCopy, SizeCopy, is_leader
from trading import risk
from trading.copies_on_way import Protection
from trading.orders import OrderType

if TYPE_CHECKING:
    from actors.sizing import SizingActor

log = logging.getLogger("actors.sizing")
MAX_EXITS_KEPT = 100_000  # exits that shrank their followers' resting copies (the oldest forgotten first)


class RestingCopies:
    """Kept in the sizing actor's thread, like everything it holds."""

    def __init__(self, actor: "SizingActor") -> None:
        self.actor = actor
        self._reduced: dict[str, None] = {}  # exits that shrank their followers' resting copies (`exit_sized`)

    def traded(self, leader: str, leader_order_id: str) -> bool:
        """Whether the ledger saw that leader order wholly filled."""
        ledger = self.actor.ledger
        return ledger is not None and ledger.traded(leader, leader_order_id)

    def executing(self, request: SizeCopy) -> bool:
        """Whether its leader order is at the market or has begun to fill (else it waits for its price)."""
        ledger = self.actor.ledger
        return request.terms.order_type is OrderType.MARKET or bool(
            ledger is not None and ledger.filled(request.leader, request.leader_order_id))

    def exit_sized(self, first: SizeCopy, before: int | None, followers: tuple[str, ...]) -> None:
        """An exit's copies were sized (`first` the first request, `before` the leader's position
        before it): one that waits for its price is remembered, to grow and to act once it fills;
        one of a part of the position at the market shrinks its followers' resting copies."""
        actor = self.actor
        if actor.router is None or actor.ledger is None or before is None or not risk.reduces(first.terms, before):
            return
        key = risk.position_key(first.terms)
        if not self.executing(first):
            protection = Protection(first.leader_order_id, key, before, first.terms.quantity, first.instrument.lot_size)
            actor.on_way.waits_for_price(first.leader, protection)
            for follower in followers:
                actor.on_way.protect(follower, first.leader, protection, self.traded)
        elif first.terms.quantity < abs(before) and first.leader_order_id not in self._reduced:
            if len(self._reduced) >= MAX_EXITS_KEPT:
                del self._reduced[next(iter(self._reduced))]
            self._reduced[first.leader_order_id] = None  # (asked again after its order actor crashed: once)
            self._reduce(first.leader_order_id, before, first.terms.quantity, actor.on_way.resting_shares(
                followers, first.leader, key, first.leader_order_id, actor.exit_reading_seconds,
                actor.answer_wait_seconds, self.traded))

    def cancel(self, exit_order_id: str, copies: list[tuple[str, str]]) -> None:
        """Cancel `copies` ((follower, leader order id) each): exit `exit_order_id` closed the position."""
        router = self.actor.router
        assert router is not None
        for follower, leader_order_id in copies:
            log.info("leader order %s closes its position: %s's copy of leader order %s still rests, cancelled",
                     exit_order_id, follower, leader_order_id)
            router.tell(CancelCopies(f"leader order {exit_order_id} closed the position it opened",
                                     follower=follower, leader_order_id=leader_order_id))

    def fill_seen(self, account: str, leader_order_id: str) -> None:
        """A fill the socket brought, of `account`'s order copying (or being) `leader_order_id`."""
        if not leader_order_id:
            return
        if is_leader(account):
            self._price_exit_filled(leader_order_id)
        else:
            for grows in self.actor.on_way.protections(account, leader_order_id):
                self._grow(account, grows)

    def fill_uncounted(self, fill: FillUncounted) -> None:
        """A fill that came by no socket: the leader's first of an exit that waits for its price is
        acted on; a follower's of a copy such an exit grows with is in the next reading of its
        positions, made now."""
        if is_leader(fill.account):
            self._price_exit_filled(fill.leader_order_id)
        elif self.actor.on_way.protections(fill.account, fill.leader_order_id):
            self.actor.read_all()

    def positions_read(self, snapshot: PositionsSnapshot) -> None:
        """A reading of a follower's positions holds the fills no socket brought: its exits grow."""
        for grows in self.actor.on_way.protections_read(snapshot.account, snapshot.fetched_ns):
            self._grow(snapshot.account, grows)

    def _price_exit_filled(self, exit_order_id: str) -> None:
        """The leader's exit that waited for its price began to fill: its followers' copies still
        resting of the orders it exits are cancelled when it closes the position, else shrunk by its
        fraction. Sized when it was placed, it could not: its leader held what they follow."""
        actor = self.actor
        found = actor.on_way.price_exit_filled(exit_order_id)
        if found is None or actor.router is None:
            return
        leader, exit_ = found
        if exit_.quantity >= abs(exit_.before):
            self.cancel(exit_order_id, actor.on_way.shares(actor.rules, leader, exit_, self.traded, cancel=True))
        else:
            self._reduce(exit_order_id, exit_.before, exit_.quantity,
                         actor.on_way.shares(actor.rules, leader, exit_, self.traded))

    def _reduce(self, exit_order_id: str, before: int, quantity: int, copies: list[tuple[str, str]]) -> None:
        """Shrink `copies` ((follower, leader order id) each) by the fraction the exit sells."""
        router = self.actor.router
        assert router is not None
        for follower, leader_order_id in copies:
            log.info("leader order %s sells %d of %d: %s's copy of leader order %s still rests, reduced as much",
                     exit_order_id, quantity, abs(before), follower, leader_order_id)
            router.tell(ReduceCopy(leader_order_id, follower, before, quantity, exit_order_id))

    def _grow(self, follower: str, grows: Protection) -> None:
        """The exit's copy grows from what `follower` holds now, sized as the exit was."""
        actor = self.actor
        held = actor.positions.quantity(follower, grows.key)
        if (risk.exit_quantity(grows.before, grows.quantity, held, grows.lot_size) > 0 and actor.router is not None
                and actor.on_way.grows_from(follower, grows.exit_order_id, held)):
            log.info("leader order %s grows: %s holds %d", grows.exit_order_id, follower, held)
            actor.router.tell(ProtectCopy(grows.exit_order_id, follower, held, grows.before))

