"""The copy state machine (trading/copy.py), row by row: every row of its transition table, every
event it refuses, and every branch of `decide`. Pure: no exchange, no actors, no clock."""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import pytest

from trading import copy as c
from trading.copy import Call, Phase
from trading.copy_records import event_of, record
from trading.orders import OrderStatus as S
from trading.orders import Leg, OrderTerms, OrderType, Product, Side, Validity, correlation_id
from trading.replay import fold_copy_events

T = OrderTerms("2885", "NSE_EQ", Side.BUY, Product.INTRADAY, OrderType.LIMIT, Validity.DAY, 10, price=1400.0)
T2 = T.with_changes(quantity=20, price=1401.0)
MARKET = T.with_changes(order_type=OrderType.MARKET, price=0.0)
NOW = 1_000.0


def seen(status: S, terms: OrderTerms | None = T, filled: int = 0, avg: float = 0.0, reason: str = "",
         order_id: str = "F1") -> c.OrderSeen:
    return c.OrderSeen(order_id, status, terms, filled, avg, reason=reason)


NEW = c.start(c.Submitted("L1", "f1", T))
PLACING = c.apply(NEW, c.PlaceSent())
OPEN = c.apply(PLACING, c.Placed("F1", S.PENDING, T))
UNKNOWN = c.apply(PLACING, c.OutcomeUnknown("timed out", at=NOW, absent_believed_from=NOW + 5))
MOVED = c.apply(OPEN, c.TargetChanged(T2))  # open, its target no longer what the broker holds
MODIFYING = c.apply(MOVED, c.ModifySent())
CANCELLING = c.apply(c.apply(OPEN, c.CancelRequested("leader cancelled")), c.CancelSent())
LOOKING_UP = c.apply(UNKNOWN, c.LookupSent())
SYNCING = c.apply(replace(NEW, lookup_needed=True), c.LookupSent())  # a stored copy looked up after a restart
READING = c.apply(OPEN, c.ReadSent())
TRADED = c.apply(OPEN, seen(S.TRADED, filled=10, avg=1400.0))
CANCELLED = c.apply(OPEN, seen(S.CANCELLED))
REJECTED = c.apply(PLACING, c.PlacementRefused("DH-906 order: bad price", "DH-906", "order"))
REJECTED_SILENT = replace(OPEN, status=S.REJECTED, rejection_recorded=False)  # seen rejected, no reason yet
# a super order: an entry with a target and a stop-loss leg that exit what it traded
SUPER = T.with_changes(super_order=True, target_price=1450.0, stop_loss_price=1350.0, trailing_jump=0.0)
SUPER_OPEN = c.apply(c.apply(c.start(c.Submitted("L1", "f1", SUPER)), c.PlaceSent()), c.Placed("F1", S.PENDING, SUPER))
SUPER_TRADED = c.apply(SUPER_OPEN, seen(S.TRADED, T, filled=10, avg=1400.0))  # its exit legs now work
PAUSED = c.start(c.Skipped("L1", "f1", T.with_changes(quantity=0), "follower_paused", "paused by alice"))
HELD = c.start(c.Submitted("L1", "f1", T.with_changes(side=Side.SELL), held=True))  # waiting for its BUY legs


@dataclass(frozen=True)
class Case:
    given: c.CopyState
    event: Any
    expect: dict[str, Any]
    why: str

    @property
    def id(self) -> str:
        after = self.expect.get("phase")
        arrow = f" -> {after.value}" if after is not None else ""
        return f"{c.phase(self.given).value} + {type(self.event).__name__}{arrow}: {self.why}"


def case(given: c.CopyState, event: Any, why: str, **expect: Any) -> Case:
    return Case(given, event, expect, why)


ROW_CASES = [
    # sends
    case(NEW, c.PlaceSent(), "a stored copy's placement goes out", phase=Phase.PLACING, call=Call.PLACE),
    case(MOVED, c.ModifySent(), "a modification goes out", phase=Phase.MODIFYING),
    case(OPEN, c.CancelSent(), "a cancel goes out", phase=Phase.CANCELLING),
    case(replace(NEW, lookup_needed=True), c.LookupSent(), "a restarted copy is asked for by correlation id",
         phase=Phase.LOOKING_UP),
    case(UNKNOWN, c.LookupSent(), "an unknown placement is looked up", phase=Phase.LOOKING_UP, status=S.UNKNOWN),
    case(replace(OPEN, broker_order_id=None, lookup_needed=True), c.LookupSent(),
         "a working copy without its broker id is looked up", phase=Phase.LOOKING_UP),
    case(OPEN, c.ReadSent(), "a working copy is read by its broker id", phase=Phase.READING),
    case(REJECTED_SILENT, c.ReadSent(), "a rejected copy is read for the broker's reason", phase=Phase.READING),
    # placement answers
    case(PLACING, c.Placed("F1", S.TRANSIT, T), "accepted: the broker holds it", phase=Phase.OPEN,
         status=S.PENDING, broker_order_id="F1", confirmed=T),
    case(PLACING, c.Placed("F1", None, T), "accepted without a status: the broker holds it", phase=Phase.OPEN),
    case(NEW, c.Placed("F1", S.PENDING, T), "an answer folded from storage, its send not stored",
         phase=Phase.OPEN, broker_order_id="F1"),
    case(replace(OPEN, confirmed=None), c.Placed("F1", S.TRANSIT, T),
         "its socket update came before the answer: only the terms are learnt", phase=Phase.OPEN, confirmed=T),
    case(TRADED, c.Placed("F1", S.PENDING, T), "filled before the answer arrived: stays filled",
         phase=Phase.CLOSED, status=S.TRADED),
    case(PLACING, c.PlacementRefused("DH-906 order: bad price", "DH-906", "order"), "refused: rejected",
         phase=Phase.CLOSED, status=S.REJECTED, rejection_recorded=False, error_code="DH-906"),
    case(replace(NEW, found_absent=6), c.PlacementRefused("NOT_PLACED other: never took effect", "NOT_PLACED", "other"),
         "absent after every attempt: given up as rejected", phase=Phase.CLOSED, status=S.REJECTED),
    case(PLACING, c.OutcomeUnknown("timed out", NOW, NOW + 5), "no answer: unknown, never sent again",
         phase=Phase.UNKNOWN, unknown_since=NOW, absent_believed_from=NOW + 5),
    case(replace(PLACING, status=S.PENDING, broker_order_id="F1"), c.OutcomeUnknown("timed out", NOW, NOW),
         "no answer, but its own update came first: it exists, its terms are looked up",
         phase=Phase.OPEN, lookup_needed=True),
    case(NEW, c.OutcomeUnknown("HTTP-502", NOW, NOW), "folded from storage", phase=Phase.UNKNOWN),
    case(NEW, c.SkippedLate(6.0, 5.0, "MARKET"), "decided too late to send", phase=Phase.CLOSED,
         status=S.SKIPPED, skip_reason=c.TOO_LATE),
    case(PLACING, c.SkippedLate(6.0, 5.0, "MARKET"), "the rate limiter found it too late to send",
         phase=Phase.CLOSED, status=S.SKIPPED, call=Call.NONE),
    # modify and cancel answers
    case(MODIFYING, c.ModifyAccepted(T2), "modified: the broker holds the new terms", phase=Phase.OPEN,
         modifications=1, confirmed=T2),
    case(MOVED, c.ModifyAccepted(T2), "folded from storage", phase=Phase.OPEN, modifications=1),
    case(TRADED, c.ModifyAccepted(T2), "filled before the answer: stays filled, counted",
         phase=Phase.CLOSED, modifications=1),
    case(CANCELLING, c.CancelAccepted(S.CANCELLED), "cancelled, says the answer", phase=Phase.CLOSED,
         status=S.CANCELLED),
    case(CANCELLING, c.CancelAccepted(None), "cancel taken; the socket will say when", phase=Phase.OPEN),
    case(OPEN, c.CancelAccepted(S.CANCELLED), "folded from storage", phase=Phase.CLOSED, status=S.CANCELLED),
    case(CANCELLED, c.CancelAccepted(S.CANCELLED), "its socket update came first", phase=Phase.CLOSED,
         status=S.CANCELLED),
    # failed calls
    case(MODIFYING, c.CallFailed(Call.MODIFY, "DH-906 order: too late", NOW), "modify refused: looked up",
         phase=Phase.OPEN, lookup_needed=True, last_error="DH-906 order: too late"),
    case(MODIFYING, c.CallFailed(Call.MODIFY, "DH-901 auth: token", NOW, auth=True), "modify refused the token: "
         "not looked up (the account is paused)", phase=Phase.OPEN, lookup_needed=False),
    case(CANCELLING, c.CallFailed(Call.CANCEL, "DH-906 order: traded", NOW), "cancel refused: looked up",
         phase=Phase.OPEN, lookup_needed=True),
    case(LOOKING_UP, c.CallFailed(Call.LOOKUP, "timed out", NOW), "an unknown placement's lookup got no answer: "
         "again after a pause", phase=Phase.UNKNOWN, next_lookup=NOW + c.LOOKUP_BACKOFF_FIRST,
         unknown_lookups_failed=1),
    case(SYNCING, c.CallFailed(Call.LOOKUP, "timed out", NOW), "a lookup failed: again after a pause",
         phase=Phase.NEW, lookup_failures=1, lookup_after=NOW + c.LOOKUP_RETRY_SECONDS),
    case(replace(READING, lookup_failures=c.LOOKUP_ATTEMPTS - 1), c.CallFailed(Call.READ, "timed out", NOW),
         "the last lookup failed: given up and flagged", phase=Phase.OPEN, lookups_given_up=True,
         anomaly="lookup_failed", lookup_needed=False),
    case(READING, c.CallFailed(Call.READ, "DH-901 auth: token", NOW, auth=True),
         "refused the token: not asked again", phase=Phase.OPEN, lookup_needed=False),
    case(c.apply(REJECTED_SILENT, c.ReadSent()), c.CallFailed(Call.READ, "timed out", NOW),
         "the rejection's reason cannot be read: recorded without it", phase=Phase.CLOSED,
         last_error="rejected (the broker's reason could not be read: timed out)"),
    case(NEW, c.CallFailed(Call.LOOKUP, "timed out", NOW), "folded from storage", phase=Phase.NEW,
         lookup_failures=1),
    case(UNKNOWN, c.CallFailed(Call.LOOKUP, "timed out", NOW), "folded from storage", phase=Phase.UNKNOWN),
    case(OPEN, c.CallFailed(Call.MODIFY, "DH-906 order: x", NOW), "folded from storage", phase=Phase.OPEN,
         last_error="DH-906 order: x"),
    case(CANCELLED, c.CallFailed(Call.CANCEL, "DH-906 order: cancelled", NOW), "folded from storage",
         phase=Phase.CLOSED),
    # lookups and reads
    case(LOOKING_UP, c.OrderFound("F1", seen(S.PENDING)), "the unknown placement landed: adopted",
         phase=Phase.OPEN, broker_order_id="F1", confirmed=T, status=S.PENDING),
    case(SYNCING, c.OrderFound("F1", seen(S.TRADED, filled=10, avg=1400.0)),
         "found filled after a restart: adopted as filled", phase=Phase.CLOSED, filled_qty=10),
    case(READING, c.OrderFound("F1", seen(S.PART_TRADED, filled=4, avg=1400.0)), "read: partly filled",
         phase=Phase.OPEN, status=S.PART_TRADED, filled_qty=4),
    case(c.apply(REJECTED_SILENT, c.ReadSent()), c.OrderFound("F1", seen(S.REJECTED, reason="RMS: margin")),
         "read: the broker's reason for the rejection", phase=Phase.CLOSED, last_error="RMS: margin"),
    case(NEW, c.OrderFound("F7"), "folded from an older record without the order", phase=Phase.NEW,
         broker_order_id="F7"),
    case(UNKNOWN, c.OrderFound("F7", seen(S.PENDING, order_id="F7")), "folded from storage",
         phase=Phase.OPEN, broker_order_id="F7"),
    case(OPEN, c.OrderFound("F1", seen(S.PENDING, T2)), "folded from storage", phase=Phase.OPEN),
    case(REJECTED_SILENT, c.OrderFound("F1", seen(S.REJECTED)), "no reason given: recorded as such",
         phase=Phase.CLOSED, last_error="rejected (the broker gave no reason)"),
    case(c.apply(UNKNOWN, c.LookupSent()), c.NotFound(sent_at=NOW + 1),
         "absent, asked too soon after the failure: not believed, asked again later", phase=Phase.UNKNOWN,
         next_lookup=NOW + 5, found_absent=0),
    case(c.apply(UNKNOWN, c.LookupSent()), c.NotFound(sent_at=NOW + 6), "absent, and believed: placed again",
         phase=Phase.NEW, found_absent=1),
    case(UNKNOWN, c.NotFound(), "folded from storage: believed", phase=Phase.NEW, found_absent=1),
    case(SYNCING, c.NotFound(sent_at=NOW), "a stored copy never reached the broker: placed next",
         phase=Phase.NEW, lookup_needed=False),
    case(c.apply(NEW, c.Resumed(NOW, NOW + 10)), c.NotFound(sent_at=NOW + 1),
         "resumed: absent too soon, the last incarnation's placement may be on its way: asked again later",
         phase=Phase.NEW, lookup_needed=True, lookup_after=NOW + 10),
    case(c.apply(NEW, c.Resumed(NOW, NOW + 10)), c.NotFound(sent_at=NOW + 11), "resumed: absent, and believed",
         phase=Phase.NEW, lookup_needed=False),
    case(NEW, c.NotFound(), "nothing to learn", phase=Phase.NEW),
    case(replace(OPEN, lookup_needed=True), c.NotFound(), "a working copy the broker does not know: left as is",
         phase=Phase.OPEN, lookup_needed=False),
    # snapshots of the order, in every phase
    case(NEW, seen(S.PENDING), "its own update before the placement's answer", phase=Phase.OPEN,
         broker_order_id="F1"),
    case(PLACING, seen(S.TRADED, filled=10, avg=1400.0), "filled while its placement is answered",
         phase=Phase.PLACING, status=S.TRADED, filled_qty=10),
    case(UNKNOWN, seen(S.PENDING), "an unknown placement's own update: it exists", phase=Phase.OPEN),
    case(OPEN, seen(S.PART_TRADED, filled=3, avg=1399.0), "part filled", phase=Phase.OPEN,
         status=S.PART_TRADED, filled_qty=3, avg_price=1399.0),
    case(MODIFYING, seen(S.PENDING, T2), "the new terms seen before the answer: not yet confirmed",
         phase=Phase.MODIFYING, confirmed=T),
    case(CANCELLING, seen(S.CANCELLED), "cancelled while its cancel is answered", phase=Phase.CANCELLING,
         status=S.CANCELLED),
    case(LOOKING_UP, seen(S.PENDING), "its update arrives while it is looked up", phase=Phase.LOOKING_UP,
         status=S.PENDING, confirmed=T),
    case(READING, seen(S.PENDING, T2), "terms learnt while read", phase=Phase.READING, confirmed=T2),
    case(CANCELLED, seen(S.PART_TRADED, filled=2, avg=1400.0),
         "a late fill after the cancel: the fill counts, the status stays", phase=Phase.CLOSED,
         status=S.CANCELLED, filled_qty=2),
    # the leader, the operator, and the copy's own decisions
    *[case(given, c.TargetChanged(T2), "the leader changed its order", target=T2)
      for given in (NEW, PLACING, UNKNOWN, OPEN, MODIFYING, CANCELLING, LOOKING_UP, READING)],
    *[case(given, c.CancelRequested("leader cancelled"), "to be cancelled", cancel_requested=True)
      for given in (NEW, PLACING, UNKNOWN, OPEN, MODIFYING, CANCELLING, LOOKING_UP, READING)],
    case(replace(NEW, cancel_requested=True), c.Aborted(), "cancelled before it was sent", phase=Phase.CLOSED,
         status=S.CANCELLED),
    case(OPEN, c.ReplaceStarted(), "past the cap: cancelled, to be placed afresh", phase=Phase.OPEN,
         cancel_requested=True, replacing=True, anomaly="replacing"),
    case(replace(CANCELLED, replacing=True, modifications=25, cancel_requested=True), c.Replaced(),
         "placed afresh under the next correlation id", phase=Phase.NEW, generation=1,
         correlation_id=correlation_id("L1", "f1", 1), modifications=0, broker_order_id=None, replacing=False),
    case(REJECTED, c.Retried(), "an operator's retry: placed afresh", phase=Phase.NEW, generation=1,
         last_error=None, correlation_id=correlation_id("L1", "f1", 1)),
    case(PAUSED, c.CaughtUp(T2), "skipped while paused, placed on resume with catch-up", phase=Phase.NEW,
         status=S.PENDING_PLACEMENT, generation=1, target=T2, skip_reason=None, last_error=None,
         correlation_id=correlation_id("L1", "f1", 1)),
    case(HELD, c.Released(), "a held SELL leg's BUY legs filled: placed next", phase=Phase.NEW, held=False),
    case(HELD, c.HedgeRefused("BUY leg L2 rejected"), "a held SELL leg's BUY legs failed: never placed",
         phase=Phase.CLOSED, status=S.SKIPPED, skip_reason="hedge_not_filled", last_error="BUY leg L2 rejected",
         held=False),
    case(replace(HELD, cancel_requested=True), c.Aborted(), "a held leg the leader cancelled: nothing was sent",
         status=S.CANCELLED, held=False),
    case(HELD, c.TargetChanged(T2), "a held leg the leader modified: released with the new terms", target=T2,
         held=True),
    case(HELD, c.Resumed(NOW, NOW + 5), "a restart: a held leg was never sent, so it is not looked up",
         lookup_needed=False, held=True),
    *[case(given, c.Flagged("lagging"), "flagged", anomaly="lagging")
      for given in (NEW, PLACING, UNKNOWN, OPEN, MODIFYING, CANCELLING, LOOKING_UP, READING, TRADED)],
    case(REJECTED, c.RejectionRecorded(), "its skip or dead letter is stored", rejection_recorded=True),
    case(NEW, c.Resumed(NOW, NOW + 5), "a restart: looked up before it is placed", lookup_needed=True,
         absent_believed_from=NOW + 5),
    case(UNKNOWN, c.Resumed(NOW + 50, NOW + 55), "a restart: a lookup finding nothing waits for the settle time",
         unknown_since=NOW + 50, absent_believed_from=NOW + 55),
    case(OPEN, c.Resumed(NOW, NOW, sync=False), "a restart told not to sync", lookup_needed=False),
    case(REJECTED_SILENT, c.Resumed(NOW, NOW), "a restart: a rejection without its reason is still to record",
         rejection_recorded=False),
    *[case(given, c.LegSeen(Leg.TARGET, S.PENDING), "a super order's exit leg seen at the broker",
           target_leg=S.PENDING)
      for given in (NEW, PLACING, UNKNOWN, OPEN, MODIFYING, CANCELLING, LOOKING_UP, READING, TRADED)],
    case(replace(SUPER_TRADED, stop_loss_leg=S.CANCELLED), c.LegSeen(Leg.STOP_LOSS, S.PENDING),
         "nothing follows the end of an exit leg", stop_loss_leg=S.CANCELLED),
    case(SUPER_TRADED, c.LegSeen(Leg.TARGET, S.TRADED), "the target traded: the stop-loss still works",
         phase=Phase.OPEN, target_leg=S.TRADED),
    case(replace(SUPER_TRADED, stop_loss_leg=S.CANCELLED), c.LegSeen(Leg.TARGET, S.TRADED),
         "both exit legs over: the super order is done", phase=Phase.CLOSED),
    case(replace(SUPER_TRADED, call=Call.CANCEL), c.CancelAccepted(S.CANCELLED, Leg.TARGET),
         "an exit leg cancelled on its own", target_leg=S.CANCELLED, stop_loss_leg=None),
    case(replace(SUPER_TRADED, call=Call.CANCEL), c.CallFailed(Call.CANCEL, "DH-906 leg traded", NOW,
                                                               leg=Leg.STOP_LOSS),
         "an exit leg the broker will not cancel is over", stop_loss_leg=S.CANCELLED),
    case(replace(SUPER_TRADED, call=Call.MODIFY, target=SUPER.with_changes(target_price=1460.0)),
         c.CallFailed(Call.MODIFY, "DH-906 bad price", NOW, leg=Leg.TARGET),
         "a leg's modification refused for good: the leg keeps its price", target=SUPER),
    *[case(given, c.SyncRequested(), "the reconciler asks for a fresh look", lookup_needed=True)
      for given in (NEW, PLACING, UNKNOWN, OPEN, MODIFYING, CANCELLING, LOOKING_UP, READING)],
    *[case(replace(given, lookups_given_up=given.status is not S.TRADED), c.NewsArrived(),
           "news of the order: looked up once more", lookups_given_up=False)
      for given in (NEW, PLACING, UNKNOWN, OPEN, MODIFYING, CANCELLING, LOOKING_UP, READING, TRADED)],
]


@pytest.mark.parametrize("row", ROW_CASES, ids=[r.id for r in ROW_CASES])
def test_each_row_of_the_table_moves_the_copy_as_it_says(row: Case):
    after = c.apply(row.given, row.event)
    for name, expected in row.expect.items():
        actual = c.phase(after) if name == "phase" else getattr(after, name)
        assert actual == expected, f"{name}: {actual!r}, expected {expected!r}"


def test_every_row_of_the_table_has_a_case():
    covered = {(c.phase(r.given), type(r.event)) for r in ROW_CASES}
    missing = sorted(f"{p.value} + {e.__name__}" for p, e in set(c.TRANSITIONS) - covered)
    assert not missing, missing


EVENTS = [c.PlaceSent(), c.ModifySent(), c.CancelSent(), c.LookupSent(), c.ReadSent(), c.Placed("F1", S.PENDING, T),
          c.PlacementRefused("x", "DH-906", "order"), c.OutcomeUnknown("x", NOW, NOW), c.SkippedLate(6, 5),
          c.ModifyAccepted(T2), c.CancelAccepted(S.CANCELLED), c.CallFailed(Call.LOOKUP, "x", NOW),
          c.OrderFound("F1", seen(S.PENDING)), c.NotFound(), seen(S.PENDING), c.TargetChanged(T2),
          c.CancelRequested("x"), c.Aborted(), c.ReplaceStarted(), c.Replaced(), c.Retried(), c.CaughtUp(T2),
          c.Released(), c.HedgeRefused("x"), c.Flagged("x"),
          c.RejectionRecorded(), c.Resumed(NOW, NOW), c.SyncRequested(), c.NewsArrived(),
          c.LegSeen(Leg.TARGET, S.PENDING)]
PHASES = {Phase.NEW: NEW, Phase.PLACING: PLACING, Phase.UNKNOWN: UNKNOWN, Phase.OPEN: OPEN,
          Phase.MODIFYING: MODIFYING, Phase.CANCELLING: CANCELLING, Phase.LOOKING_UP: LOOKING_UP,
          Phase.READING: READING, Phase.CLOSED: TRADED}
REFUSED = [(phase, event) for phase in PHASES for event in EVENTS if (phase, type(event)) not in c.TRANSITIONS]


@pytest.mark.parametrize("phase,event", REFUSED, ids=[f"{p.value} refuses {type(e).__name__}" for p, e in REFUSED])
def test_an_event_the_table_does_not_allow_raises_a_named_error(phase: Phase, event: Any):
    with pytest.raises(c.InvalidCopyEvent):
        c.apply(PHASES[phase], event)


def test_every_event_type_is_in_the_table():
    assert {type(e) for e in EVENTS} == {key[1] for key in c.TRANSITIONS}


def test_a_second_send_while_one_is_in_flight_is_refused():
    with pytest.raises(c.InvalidCopyEvent):
        c.apply(PLACING, c.PlaceSent())


def test_replacing_a_copy_that_is_not_cancelled_is_refused():
    with pytest.raises(c.InvalidCopyEvent):
        c.apply(TRADED, c.Replaced())


def test_releasing_or_refusing_a_copy_that_is_not_held_is_refused():
    for event in (c.Released(), c.HedgeRefused("x")):
        with pytest.raises(c.InvalidCopyEvent):
            c.apply(NEW, event)


def test_catching_up_a_copy_that_was_not_skipped_is_refused():
    for closed in (TRADED, CANCELLED, REJECTED):
        with pytest.raises(c.InvalidCopyEvent):
            c.apply(closed, c.CaughtUp(T2))


# -- decide ----------------------------------------------------------------------------------------------
LEADER = c.Leader(open=True, seen_at=NOW - 1)
LATE_MARKET = c.Leader(open=True, seen_at=NOW - 6, place_by=NOW - 1)


@dataclass(frozen=True)
class Decides:
    given: c.CopyState
    expected: Any
    why: str
    leader: c.Leader = LEADER
    rules: c.Rules = c.Rules()


DECISIONS = [
    Decides(PLACING, None, "one call at a time: a placement is in flight"),
    Decides(replace(OPEN, lookups_given_up=True, lookup_needed=True), None, "lookups given up: left alone"),
    Decides(UNKNOWN, c.Lookup(not_before=0.0), "an unknown placement is looked up, never placed"),
    Decides(replace(UNKNOWN, next_lookup=NOW + 2), c.Lookup(not_before=NOW + 2), "looked up after its backoff"),
    Decides(replace(NEW, lookup_needed=True, lookup_after=NOW + 3), c.Wait(NOW + 3), "a failed lookup backs off"),
    Decides(replace(NEW, lookup_needed=True), c.Lookup(), "a stored copy is looked up before it is placed"),
    Decides(replace(OPEN, lookup_needed=True), c.Read(), "a working copy is read by its broker order id"),
    Decides(replace(NEW, cancel_requested=True), c.Abort(), "cancelled before it was sent: aborted"),
    Decides(HELD, None, "a held SELL leg is not sent"),
    Decides(replace(HELD, lookup_needed=True), None, "a held SELL leg is not looked up: it was never sent"),
    Decides(HELD, None, "a held MARKET leg is not skipped late while held (its hold has its own deadline)",
            leader=LATE_MARKET),
    Decides(replace(HELD, cancel_requested=True), c.Abort(), "a held leg the leader cancelled: aborted, nothing sent"),
    Decides(c.apply(HELD, c.Released()), c.Place(T.with_changes(side=Side.SELL)), "a released leg is placed"),
    Decides(replace(NEW, found_absent=6), c.GiveUp(6), "absent after every placement: given up"),
    Decides(NEW, c.SkipLate(6.0, 5.0), "too old to send: skipped", leader=LATE_MARKET),
    Decides(NEW, c.Place(T), "a stored copy is placed"),
    Decides(NEW, c.Place(T, NOW + 4), "a MARKET copy is placed with the time it must leave by",
            leader=c.Leader(seen_at=NOW - 1, place_by=NOW + 4)),
    Decides(replace(OPEN, broker_order_id=None), None, "working without a broker id: nothing to act on"),
    Decides(replace(OPEN, cancel_requested=True), c.Cancel(), "to be cancelled: cancelled"),
    Decides(OPEN, None, "the broker holds the target: nothing to do"),
    Decides(replace(OPEN, confirmed=None), None, "terms not yet confirmed: wait for them"),
    Decides(replace(MOVED, target=T.with_changes(quantity=4), filled_qty=4), c.RequestCancel("resized_below_filled"),
            "re-sized at or below what filled: the rest is cancelled"),
    Decides(replace(MOVED, modifications=25), c.StartReplace(), "past the cap, replace configured: cancel first",
            rules=c.Rules(replace_after_cap=True)),
    Decides(replace(MOVED, modifications=25, filled_qty=2), c.FlagCap(25),
            "past the cap with fills: flagged, not replaced", rules=c.Rules(replace_after_cap=True)),
    Decides(replace(MOVED, modifications=25, anomaly="modification_cap"), None, "the cap flagged once"),
    Decides(MOVED, c.Modify(T2), "the leader changed its order: modified"),
    Decides(REJECTED, c.RecordRejection("DH-906 order: bad price", "DH-906", "order"),
            "refused: why is recorded"),
    Decides(REJECTED_SILENT, c.Read(), "rejected without a reason: the broker is asked for it"),
    Decides(replace(REJECTED_SILENT, broker_order_id=None), c.RecordRejection("rejected", "REJECTED", None),
            "rejected, nothing to ask: recorded as such"),
    Decides(replace(CANCELLED, replacing=True), c.Replace(), "cancelled to be replaced: placed afresh"),
    Decides(replace(CANCELLED, replacing=True), None, "cancelled to be replaced, but the leader's order closed",
            leader=c.Leader(open=False)),
    Decides(TRADED, None, "filled: done"),
    Decides(replace(SUPER_OPEN, target=SUPER.with_changes(price=1399.0)), c.Modify(SUPER.with_changes(price=1399.0),
                                                                                      Leg.ENTRY),
            "a super order's entry changed while it rests: the entry restates the whole order"),
    Decides(replace(SUPER_OPEN, target=SUPER.with_changes(target_price=1460.0)),
            c.Modify(SUPER.with_changes(target_price=1460.0), Leg.TARGET),
            "only the leader's target moved: the target leg alone is modified"),
    Decides(replace(SUPER_TRADED, target=SUPER.with_changes(stop_loss_price=1360.0, trailing_jump=1.0)),
            c.Modify(SUPER.with_changes(stop_loss_price=1360.0, trailing_jump=1.0), Leg.STOP_LOSS),
            "the entry traded and the stop-loss moved: its leg is modified, trailing jump and all"),
    Decides(replace(SUPER_TRADED, target=SUPER.with_changes(target_price=0.0)), c.Cancel(Leg.TARGET),
            "the leader cancelled its target leg: the copy's target leg is cancelled"),
    Decides(replace(SUPER_TRADED, target=SUPER.with_changes(stop_loss_price=0.0, trailing_jump=0.0)),
            c.Cancel(Leg.STOP_LOSS), "the leader cancelled its stop-loss leg: the copy's is cancelled"),
    Decides(replace(SUPER_TRADED, target=SUPER.with_changes(target_price=1460.0), target_leg=S.CANCELLED), None,
            "a cancelled exit leg is never added again"),
    Decides(replace(SUPER_TRADED, cancel_requested=True), c.Cancel(),
            "the leader's cancel after the entry traded: the exit legs still open are cancelled"),
]


@pytest.mark.parametrize("d", DECISIONS, ids=[d.why for d in DECISIONS])
def test_decide_names_the_one_thing_a_copy_needs_next(d: Decides):
    assert c.decide(d.given, d.leader, NOW, d.rules) == d.expected


@pytest.mark.parametrize("order_type,expected", [
    (OrderType.MARKET, NOW + 5), (OrderType.STOP_LOSS_MARKET, NOW + 5), (OrderType.LIMIT, None),
    (OrderType.STOP_LOSS, None)], ids=["MARKET expires", "SL-M expires", "LIMIT never", "SL never"])
def test_only_orders_that_execute_at_the_market_have_a_deadline(order_type, expected):
    assert c.placement_deadline(order_type, NOW, 5.0) == expected
    assert c.placement_deadline(order_type, NOW, 0.0) is None


def test_a_copy_belongs_to_its_own_order_not_one_an_earlier_generation_left():
    assert c.belongs(OPEN, "F1", OPEN.correlation_id)
    assert not c.belongs(OPEN, "F9", None)
    assert not c.belongs(OPEN, "F1", correlation_id("L1", "f1", 1))


# -- records: what is stored folds back to what was live -------------------------------------------------
def test_the_stored_records_of_a_live_history_fold_back_to_the_same_copy():
    steps: list[Any] = [c.PlaceSent(), seen(S.PENDING), c.Placed("F1", S.TRANSIT, T), c.TargetChanged(T2),
                        c.ModifySent(), c.ModifyAccepted(T2), seen(S.PART_TRADED, T2, 5, 1400.0),
                        c.CancelRequested("leader cancelled"), c.CancelSent(), seen(S.CANCELLED, T2, 5, 1400.0),
                        c.CancelAccepted(S.CANCELLED)]
    first = c.Submitted("L1", "f1", T)
    state = c.start(first)
    records = [record(None, first, state)]
    for event in steps:
        after = c.apply(state, event)
        records.append(record(state, event, after))
        state = after
    stored = [r for r in records if r is not None]
    assert [kind for kind, _ in stored] == ["SUBMITTED", "ACCEPTED", "PLACED", "TARGET_CHANGED", "MODIFY_ACKED",
                                            "PARTIALLY_FILLED", "CANCEL_REQUESTED", "CANCELLED", "CANCEL_ACKED"]
    fold = fold_copy_events(stored, "L1", "f1")
    assert not fold.refused
    assert fold.state is not None
    for name in ("status", "filled_qty", "modifications", "broker_order_id", "cancel_requested", "target"):
        assert getattr(fold.state, name) == getattr(state, name), name


def test_every_stored_kind_reads_back_as_an_event():
    for kind, payload in [("SKIPPED_LATE", {"age": 6.1, "limit": 5}), ("FLAGGED", {"anomaly": "lagging"}),
                          ("CALL_FAILED", {"call": "modify", "error": "x"}), ("REPLACED", {}), ("RETRIED", {}),
                          ("NOT_PLACED", {"placements": 1}), ("CANCEL_REQUESTED", {"replacing": True}),
                          ("RELEASED", {}), ("HEDGE_REFUSED", {"detail": "BUY leg L2 rejected"}),
                          ("CAUGHT_UP", record(PAUSED, c.CaughtUp(T2), c.apply(PAUSED, c.CaughtUp(T2)))[1])]:
        assert event_of(kind, payload, "L1", "f1") is not None, kind


# -- a slice of a copy above the freeze quantity: the same table, the same decisions -------------------
def _as_slice(state: c.CopyState, part: int = 2) -> c.CopyState:
    """`state` as slice `part` of its copy: its own correlation id, derived from the copy's."""
    return replace(state, part=part, correlation_id=c.correlation_id(state.leader_order_id, state.follower,
                                                                     state.generation, part))


def _as_copy(state: c.CopyState, like: c.CopyState) -> c.CopyState:
    return replace(state, part=like.part, correlation_id=like.correlation_id)


@pytest.mark.parametrize("row", ROW_CASES, ids=[r.id for r in ROW_CASES])
def test_each_row_of_the_table_moves_a_slice_as_it_moves_a_copy_keeping_its_place(row: Case):
    whole = c.apply(row.given, row.event)
    sliced = c.apply(_as_slice(row.given), row.event)
    assert _as_copy(sliced, whole) == whole
    assert sliced.part == 2 and sliced.key == "f1#2"
    # placed afresh (operator retry, replace past the cap): the next generation of the same slice
    assert sliced.correlation_id == c.correlation_id("L1", "f1", sliced.generation, 2)


@pytest.mark.parametrize("d", DECISIONS, ids=[d.why for d in DECISIONS])
def test_decide_names_for_a_slice_what_it_names_for_a_copy(d: Decides):
    assert c.decide(_as_slice(d.given), d.leader, NOW, d.rules) == d.expected


def test_a_slice_belongs_to_its_own_order_not_to_another_slice_of_its_copy():
    sliced = _as_slice(OPEN)
    assert c.belongs(sliced, "F1", sliced.correlation_id)
    assert not c.belongs(sliced, "F1", OPEN.correlation_id)  # the first slice's (the copy's own) id
    assert not c.belongs(sliced, "F1", _as_slice(OPEN, part=1).correlation_id)


class _NoWalk(dict):
    """Copies by part key that refuse a walk over all of them."""

    def values(self):  # type: ignore[override]
        raise AssertionError("walked every copy to find one follower's")


def test_a_follower_whose_copy_is_one_order_is_found_by_its_key_without_walking_every_copy():
    copies = _NoWalk({f"f{n}": replace(OPEN, follower=f"f{n}") for n in range(1000)})
    assert c.parts_of(copies, "f7", frozenset()) == [copies["f7"]]
    assert c.parts_of(copies, "nobody", frozenset()) == []


def test_a_sliced_copy_has_its_slices_first_first_even_when_the_first_is_missing():
    two, one = _as_slice(OPEN, part=2), _as_slice(OPEN, part=1)
    other = replace(OPEN, follower="f2")
    copies = {two.key: two, "f2": other, one.key: one}  # f1's first slice never stored (adopted alone)
    assert c.sliced_followers(copies.values()) == {"f1"}
    assert c.parts_of(copies, "f1", {"f1"}) == [one, two]
    assert c.parts_of({**copies, "f1": OPEN}, "f1", {"f1"}) == [OPEN, one, two]
    assert c.parts_of(copies, "f2", {"f1"}) == [other]
