"""The sizing actor never waits on the broker: funds and positions are read on other threads and
told to it, so an order actor asking for a size is never held up by another order's broker call.
An exit still waits for positions read after the leader's order arrived (a follower may have
traded by hand since the last reading), without holding up anything else."""
from __future__ import annotations

import itertools
import threading
import time
from concurrent.futures import Future
from typing import Any

import pykka
import pytest

from actors.messages import LEADER, ExitReadingDue, FillSeen, FreeCapital, SizeCopies, SizeCopy, SizedCopies
from actors.sizing import POSITIONS_UNREAD, SizingActor, ask_sizing
from broker.gateway import Answer
from supervisors import Address, Timers
from supervisors.pool import ActorPool, PooledRef
from tests.conftest import RELIANCE, TCS, wait_until
from tests.faultproxy import FIRST
from trading.account import BookFill, Funds, Listing, Position
from trading.instruments import Instrument
from trading.orders import OrderStatus, OrderTerms, OrderType, OrderUpdate, Product, Side, Validity
from trading.sizing import SizingRule

INFY = "1594"
PATIENT = {"copy": {"exit_reading_seconds": 10}}  # exits wait for a positions read as slow as these tests make it
SHARES = {RELIANCE: Instrument(RELIANCE, "NSE_EQ", "RELIANCE", "EQUITY", 1, 0.05, underlying="RELIANCE"),
          TCS: Instrument(TCS, "NSE_EQ", "TCS", "EQUITY", 1, 0.05, underlying="TCS"),
          INFY: Instrument(INFY, "NSE_EQ", "INFY", "EQUITY", 1, 0.05, underlying="INFY")}


class FakeAccount:
    """An account's gateway as the sizing actor uses it. Its readings are taken when asked for and
    answered once `gate` is set (clear it to hold the broker's answers back)."""

    def __init__(self, available: float = 10_000_000.0, held: dict[str, int] | None = None) -> None:
        self.gate = threading.Event()
        self.gate.set()
        self.book_gate = threading.Event()  # the same for its order book
        self.book_gate.set()
        self.available = available
        self.held = dict(held or {})  # security id -> net quantity
        self.filled = 0  # what a lookup of any order answers as filled
        self.position_reads = 0
        self.book_reads = 0
        self.filled_since: list[BookFill] = []  # orders filled after the positions were read

    def fund_limit(self) -> Answer:
        funds = Funds(self.available, self.available)
        self.gate.wait(10)
        return Answer(data=funds)

    def positions(self) -> Answer:
        self.position_reads += 1
        held = tuple(Position("NSE_EQ", sid, Product.INTRADAY, qty, day_bought=max(qty, 0), day_sold=max(-qty, 0))
                     for sid, qty in self.held.items())  # (all of it bought or sold today)
        self.gate.wait(10)
        return Answer(data=Listing(held))

    def order(self, order_id: str) -> Answer:
        return Answer(data=OrderUpdate(order_id, OrderStatus.TRADED, _terms(Side.SELL, 1), filled_qty=self.filled))

    def book_fills(self) -> Answer:
        """One order a security for what is held, and the orders filled since (`filled_since`)."""
        self.book_reads += 1
        held = tuple(BookFill(f"H-{sid}", ("NSE_EQ", sid), qty) for sid, qty in self.held.items())
        self.book_gate.wait(10)
        return Answer(data=Listing(held + tuple(self.filled_since)))


def _terms(side: Side, quantity: int, security_id: str = RELIANCE) -> OrderTerms:
    return OrderTerms(security_id, "NSE_EQ", side, Product.INTRADAY, OrderType.LIMIT, Validity.DAY, quantity, 1000.0)


def _order(leader_order_id: str, side: Side, quantity: int, security_id: str = RELIANCE) -> SizeCopies:
    request = SizeCopy("f1", f"CT{leader_order_id}", _terms(side, quantity, security_id), SHARES[security_id], 0.0,
                       0, leader_order_id)
    return SizeCopies((request,), leader_order_id)


def _sent(address: Address, message: Any) -> Future:
    """Ask without waiting: the request is in the actor's inbox when this returns."""
    assert address.ref is not None
    return address.ref.ask(message, block=False)


def _answer(future: Future, timeout: float = 10.0) -> Any:
    answer = future.result(timeout)
    return answer.get(timeout=timeout) if isinstance(answer, pykka.Future) else answer


def _first_readings_in(sizing: Address) -> None:
    wait_until(lambda: sizing.ask(FreeCapital(), timeout=5) != {"f1": None}, message="the first readings")


def _unanswered(future: pykka.Future) -> bool:
    try:
        future.get(timeout=0)
    except pykka.Timeout:
        return True
    return False


def _quantity(sized: SizedCopies) -> int | str:
    [decision] = sized.decisions
    return decision.skip_reason or decision.quantity


def _exit_waiting(start_sizing) -> tuple[Address, "FakeAccount", Future]:
    """The leader holds 100 and its follower 60; the leader's SELL 50 waits for the follower's
    positions, which its broker holds back (`follower.gate`)."""
    leader, follower = FakeAccount(held={RELIANCE: 100}), FakeAccount(held={RELIANCE: 60})
    sizing = start_sizing(leader, follower)
    _first_readings_in(sizing)
    follower.gate.clear()
    exit_order = _sent(sizing, _order("2", Side.SELL, 50))
    wait_until(lambda: follower.position_reads == 2, message="the exit's positions read is in flight")
    return sizing, follower, exit_order


@pytest.fixture
def start_sizing():
    started: list[PooledRef] = []
    accounts: list[FakeAccount] = []
    pool = ActorPool(1, name="sizing").start()

    timers = Timers().start()

    def start(leader: FakeAccount, follower: FakeAccount, exit_reading_seconds: float = 60.0,
              timed: Any = None) -> Address:
        """`timed`: the timers the actor is given (default: the fixture's own)."""
        accounts.extend([leader, follower])
        address = Address("sizing")
        started.append(pool.spawn(SizingActor(address, None, {"f1": SizingRule("fixed_ratio", 0.5)},
                                              {LEADER: leader, "f1": follower}, refresh_seconds=3600,
                                              timers=timed or timers, exit_reading_seconds=exit_reading_seconds)))
        address.bind(started[-1])
        return address

    yield start
    for account in accounts:
        account.gate.set()
        account.book_gate.set()
    for ref in started:
        ref.stop()
    pool.stop()
    timers.stop()


def test_the_sizing_actor_answers_while_its_first_readings_are_in_flight(start_sizing):
    leader, follower = FakeAccount(), FakeAccount(available=500.0)
    leader.gate.clear()
    follower.gate.clear()
    sizing = start_sizing(leader, follower)
    early = _sent(sizing, _order("1", Side.BUY, 10))  # 5 shares at 1,000 intraday: 1,000 of margin
    assert sizing.ask(FreeCapital(), timeout=2) == {"f1": None}  # answered now: nothing is read yet
    held_back = early.result(2)  # handled, and answered with a promise: it waits for the readings
    assert isinstance(held_back, pykka.Future) and _unanswered(held_back)
    leader.gate.set()
    follower.gate.set()
    assert _quantity(_answer(early)) == "insufficient_capital"  # sized once the funds were read, not before


def test_an_order_is_sized_while_another_orders_exit_waits_for_its_positions(start_sizing):
    leader, follower = FakeAccount(held={RELIANCE: 100}), FakeAccount(held={RELIANCE: 60})
    sizing = start_sizing(leader, follower)
    _first_readings_in(sizing)
    follower.gate.clear()  # the follower's broker is slow from now on

    exit_order = _sent(sizing, _order("2", Side.SELL, 50))  # the leader closes half of its 100
    wait_until(lambda: follower.position_reads == 2, message="the exit's positions read is in flight")
    other = ask_sizing(sizing, _order("3", Side.BUY, 10, TCS), timeout=2)  # another instrument: not held up
    assert _quantity(other) == 5
    follower.gate.set()
    assert _quantity(_answer(exit_order)) == 30  # half of the 60 it holds


def test_an_exit_is_sized_from_positions_read_after_the_leader_order_arrived(start_sizing):
    leader, follower = FakeAccount(held={RELIANCE: 100}), FakeAccount(held={RELIANCE: 100})
    sizing = start_sizing(leader, follower)
    _first_readings_in(sizing)
    follower.held = {RELIANCE: 40}  # sold 60 by hand since the last reading: the copier did not see it
    assert _quantity(ask_sizing(sizing, _order("2", Side.SELL, 50), timeout=5)) == 20  # half of 40, not of 100
    assert _quantity(ask_sizing(sizing, _order("3", Side.SELL, 100), timeout=5)) == 40  # never past zero


def test_an_order_on_the_same_instrument_is_sized_after_an_exit_waiting_for_its_positions(start_sizing):
    leader, follower = FakeAccount(held={RELIANCE: 100}), FakeAccount(held={RELIANCE: 60})
    sizing = start_sizing(leader, follower)
    _first_readings_in(sizing)
    follower.gate.clear()
    exit_order = _sent(sizing, _order("2", Side.SELL, 50))
    again = _sent(sizing, _order("3", Side.BUY, 10))  # the leader buys back at once
    sizing.ask(FreeCapital(), timeout=2)  # both were handled
    held_back = again.result(2)
    assert isinstance(held_back, pykka.Future) and _unanswered(held_back)  # it keeps its place behind the exit
    follower.gate.set()
    assert _quantity(_answer(exit_order)) == 30
    assert _quantity(_answer(again)) == 5


def test_exits_that_come_while_an_exits_positions_are_read_share_the_next_reading(start_sizing):
    leader = FakeAccount(held={RELIANCE: 100, TCS: 100, INFY: 100})
    follower = FakeAccount(held={RELIANCE: 60, TCS: 40, INFY: 20})
    sizing = start_sizing(leader, follower)
    _first_readings_in(sizing)
    follower.gate.clear()
    first = _sent(sizing, _order("2", Side.SELL, 50))
    wait_until(lambda: follower.position_reads == 2, message="the first exit's positions read is in flight")
    later = [_sent(sizing, _order("3", Side.SELL, 50, TCS)), _sent(sizing, _order("4", Side.SELL, 100, INFY))]
    sizing.ask(FreeCapital(), timeout=2)  # both were handled
    assert follower.position_reads == 2  # they wait for the next reading, begun once this one is in
    follower.gate.set()
    assert [_quantity(_answer(f)) for f in (first, *later)] == [30, 20, 20]
    assert follower.position_reads == 3  # one reading for both


def test_a_request_asked_again_by_a_restarted_order_actor_keeps_its_place(start_sizing):
    """An order actor that gave up waiting for its exit's sizing restarts and asks again: its
    request is sized where the first one waited, not after the orders that came since."""
    sizing, follower, given_up = _exit_waiting(start_sizing)
    after = _sent(sizing, _order("3", Side.BUY, 10))  # the leader buys back at once
    again = _sent(sizing, _order("2", Side.SELL, 50))  # the exit's order actor, restarted
    sizing.ask(FreeCapital(), timeout=2)  # all three were handled
    follower.gate.set()
    assert _quantity(_answer(again)) == 30  # sized from the reading its first request waited for
    assert _quantity(_answer(after)) == 5
    assert follower.position_reads == 2
    with pytest.raises(RuntimeError, match="asked again"):
        _answer(given_up)


def test_a_fill_seen_while_an_exits_positions_are_read_is_counted_in_the_exit(start_sizing):
    sizing, follower, exit_order = _exit_waiting(start_sizing)
    # a copy of an earlier order fills after the broker took the reading: 60 + 20 held now
    follower.filled_since.append(BookFill("F-9", ("NSE_EQ", RELIANCE), 20))
    sizing.tell(FillSeen("f1", "NSE_EQ", RELIANCE, 20, time.monotonic_ns(), "F-9", 20))
    follower.gate.set()
    assert _quantity(_answer(exit_order)) == 40  # half of 80
    assert follower.book_reads == 1  # the fill seen while the positions were read: the book says it is new


def test_an_exit_stops_waiting_for_a_follower_not_read_in_time_and_sizes_it_as_known(start_sizing):
    leader, follower = FakeAccount(held={RELIANCE: 100}), FakeAccount(held={RELIANCE: 60})
    sizing = start_sizing(leader, follower, exit_reading_seconds=0.3)
    _first_readings_in(sizing)
    follower.gate.clear()  # its broker hangs
    assert _quantity(_answer(_sent(sizing, _order("2", Side.SELL, 50)), timeout=3)) == 30  # half of the 60 read
    assert _quantity(_answer(_sent(sizing, _order("3", Side.BUY, 20)), timeout=3)) == 10
    # the copy of 3 fills: sized after the last reading was answered, it is not in that reading
    sizing.tell(FillSeen("f1", "NSE_EQ", RELIANCE, 10, time.monotonic_ns(), "F-3", 10, leader_order_id="3"))
    assert _quantity(_answer(_sent(sizing, _order("4", Side.SELL, 50)), timeout=3)) == 35  # half of 60 + 10
    sizing.tell(FillSeen("f1", "NSE_EQ", RELIANCE, 20, time.monotonic_ns(), "F-9", 20))  # may be in that reading
    assert _quantity(_answer(_sent(sizing, _order("5", Side.SELL, 10)), timeout=3)) == POSITIONS_UNREAD
    follower.gate.set()
    assert follower.book_reads == 0  # a broker that does not answer is not asked for its book meanwhile


def test_a_follower_still_not_read_is_not_waited_for_again_by_the_exits_after(start_sizing):
    leader = FakeAccount(held={RELIANCE: 100, TCS: 100})
    follower = FakeAccount(held={RELIANCE: 60, TCS: 40})
    sizing = start_sizing(leader, follower, exit_reading_seconds=0.5)
    _first_readings_in(sizing)
    follower.gate.clear()  # its broker hangs
    first = _sent(sizing, _order("2", Side.SELL, 50))
    wait_until(lambda: follower.position_reads == 2, message="the first exit's positions read is in flight")
    second = _sent(sizing, _order("3", Side.SELL, 50, TCS))  # the leader squares off another position
    assert [_quantity(_answer(f, timeout=3)) for f in (first, second)] == [30, 20]
    assert follower.position_reads == 2  # the second exit did not ask the silent broker again
    follower.gate.set()
    later = (_order(str(n), Side.SELL, 10, TCS) for n in itertools.count(4))
    wait_until(lambda: _quantity(_answer(_sent(sizing, next(later)))) == 4 and follower.position_reads >= 3,
               message="its positions asked for again once its answer came")


def test_an_exit_stops_waiting_for_an_order_book_not_read_in_time_and_sells_what_surely_is_held(start_sizing):
    leader, follower = FakeAccount(held={RELIANCE: 100}), FakeAccount(held={RELIANCE: 60})
    sizing = start_sizing(leader, follower, exit_reading_seconds=1.0)
    _first_readings_in(sizing)
    follower.gate.clear()
    follower.book_gate.clear()  # its order book does not answer
    exit_order = _sent(sizing, _order("2", Side.SELL, 50))
    wait_until(lambda: follower.position_reads == 2, message="the exit's positions read is in flight")
    sizing.tell(FillSeen("f1", "NSE_EQ", RELIANCE, 20, time.monotonic_ns(), "F-9", 20))  # may be in the reading
    follower.gate.set()
    assert _quantity(_answer(exit_order, timeout=4)) == 30  # half of the 60 both the reading and 60 + 20 say
    assert follower.book_reads == 1


class _DueTimes:
    """Timers that also keep how long each `ExitReadingDue` was set to wait."""

    def __init__(self, timers: Timers) -> None:
        self.timers = timers
        self.waits: list[float] = []

    def after(self, delay: float, recipient: Any, message: Any, owner: Any = None) -> Any:
        if isinstance(message, ExitReadingDue):
            self.waits.append(delay)
        return self.timers.after(delay, recipient, message, owner)

    def every(self, period: float, recipient: Any, message: Any, owner: Any = None) -> Any:
        return self.timers.every(period, recipient, message, owner)


def test_an_exits_order_book_reading_has_only_what_is_left_of_its_deadline(start_sizing):
    leader, follower = FakeAccount(held={RELIANCE: 100}), FakeAccount(held={RELIANCE: 60})
    due = _DueTimes(Timers().start())
    try:
        sizing = start_sizing(leader, follower, exit_reading_seconds=2.0, timed=due)
        _first_readings_in(sizing)
        follower.gate.clear()  # a slow broker
        follower.book_gate.clear()  # and an order book that does not answer
        exit_order = _sent(sizing, _order("2", Side.SELL, 50))
        wait_until(lambda: follower.position_reads == 2, message="the exit's positions read is in flight")
        sizing.tell(FillSeen("f1", "NSE_EQ", RELIANCE, 20, time.monotonic_ns(), "F-9", 20))  # may be in the reading
        follower.gate.set()  # the positions come, some of the exit's time later
        assert _quantity(_answer(exit_order, timeout=10)) == 30  # what surely is held
        assert follower.book_reads == 1
        positions_wait, book_wait = due.waits
        assert book_wait < positions_wait <= 2.0  # the book has only what is left of the 2 s
    finally:
        due.timers.stop()


def test_a_copy_is_made_while_an_exit_waits_for_a_slow_positions_read(make_rig):
    rig = make_rig(proxied=["f1"], config=PATIENT)
    entry = rig.place(order_type="MARKET", quantity=20)
    rig.wait_row(entry, lambda r: r.status == "TRADED", message="entry copied and filled")
    slow = rig.proxies["f1"].hang("GET /positions", seconds=4, forward=FIRST, count=1)

    exit_order = rig.place(order_type="MARKET", quantity=20, side="SELL")  # the leader closes its position
    wait_until(lambda: slow.hits == 1, message="the exit's positions read is in flight")
    other = rig.place(security_id=TCS, quantity=10)
    assert rig.follower_copy(other, timeout=2.5)["quantity"] == 5  # not held up by the exit's broker call
    assert rig.follower_order_now(exit_order) is None  # the exit waits for its follower's position
    assert rig.follower_copy(exit_order, timeout=10)["quantity"] == 10


def test_exits_waiting_for_a_slow_positions_read_hold_up_no_other_order(make_rig):
    """More exits at once than the order actors have threads (a leader squaring off), all waiting
    on one slow positions read: a new order is copied meanwhile all the same."""
    rig = make_rig(proxied=["f1"], exchange={"rate_limits": {"per_second": None}}, config=PATIENT)  # a burst
    entry = rig.place(order_type="MARKET", quantity=40)
    rig.wait_row(entry, lambda r: r.status == "TRADED", message="entry copied and filled")
    slow = rig.proxies["f1"].hang("GET /positions", seconds=4, forward=FIRST, count=1)
    exits = [rig.place(order_type="MARKET", quantity=2, side="SELL") for _ in range(10)]
    wait_until(lambda: slow.hits == 1, message="the first exit's positions read is in flight")
    other = rig.place(security_id=TCS, quantity=10)
    assert rig.follower_copy(other, timeout=2.5)["quantity"] == 5  # not held up by the exits' broker call
    for exit_order in exits:  # and every exit is copied once its reading is in
        assert rig.follower_copy(exit_order, timeout=15)["transactionType"] == "SELL"


def test_the_leader_cancelling_an_exit_while_it_waits_for_its_reading_cancels_the_copy_made_after(make_rig):
    rig = make_rig(proxied=["f1"], config=PATIENT)
    entry = rig.place(order_type="MARKET", quantity=20)
    rig.wait_row(entry, lambda r: r.status == "TRADED", message="entry copied and filled")
    slow = rig.proxies["f1"].hang("GET /positions", seconds=2, forward=FIRST, count=1)
    exit_order = rig.place(order_type="STOP_LOSS_MARKET", side="SELL", quantity=20, trigger_price=1400.0)  # rests
    wait_until(lambda: slow.hits == 1, message="the exit's positions read is in flight")
    rig.cancel(exit_order)  # told to the order actor while its sizing waits: handled after it
    copy = rig.wait_copy(exit_order, lambda c: c["orderStatus"] == "CANCELLED", timeout=15,
                         message="the exit's copy, made once its reading came, then cancelled")
    assert copy["quantity"] == 10 and rig.follower_placements("f1") == 2


def test_a_sizing_answer_overdue_is_the_sizing_actors_unavailability_and_a_sizing_bug_is_not():
    """How a first sighting that waited for its sizing crashes decides whether its leader update
    is ever parked as poison (actors/dead_letters.py): an answer that never came is sizing being
    unavailable, as a blocked ask's timeout was; a bug in sizing is the bug, raised as it is."""
    from actors.dead_letters import is_unavailability
    from actors.order_sighting import FirstSighting, Sizing

    class Actor:  # a part refers to its actor weakly: something must hold it
        pass

    actor = Actor()
    sighting = FirstSighting(actor)  # type: ignore[arg-type]
    sighting.sizing = Sizing(pykka.ThreadingFuture(), lambda sized: None)
    assert sighting.on_sizing(overdue=False) is False  # not yet: still waiting
    with pytest.raises(RuntimeError, match="sizing unavailable") as overdue:
        sighting.on_sizing(overdue=True)
    assert is_unavailability(overdue.value)

    failed: pykka.Future = pykka.ThreadingFuture()
    try:
        raise ValueError("a bug in sizing")
    except ValueError:
        failed.set_exception()
    sighting.sizing = Sizing(failed, lambda sized: None)
    with pytest.raises(ValueError, match="a bug in sizing") as bug:
        sighting.on_sizing(overdue=False)
    assert not is_unavailability(bug.value)


def test_an_exit_is_read_as_one_when_a_fill_the_last_reading_held_is_seen_after_it(start_sizing):
    """A fill reaches the copier's socket after a positions reading began, yet the broker counted
    it in that reading: counted twice, the leader's 50 look like 0, and its closing SELL 50 like a
    new short. The order is sized from a fresh reading, never more than the follower holds."""
    leader, follower = FakeAccount(held={RELIANCE: 100}), FakeAccount(held={RELIANCE: 60})
    sizing = start_sizing(leader, follower)
    _first_readings_in(sizing)
    leader.held, leader.filled = {RELIANCE: 50}, 50  # the leader's SELL 50 filled when its exit is read
    assert _quantity(ask_sizing(sizing, _order("2", Side.SELL, 50), timeout=5)) == 30  # half of the 60
    sizing.tell(FillSeen(LEADER, "NSE_EQ", RELIANCE, -50, time.monotonic_ns(), "2", 50))  # its fill, seen only now

    follower.held = {RELIANCE: 10}  # its copy sold 30, and 20 were sold by hand
    leader.held = {RELIANCE: 0}  # the leader's closing SELL 50, filled when read
    assert _quantity(ask_sizing(sizing, _order("3", Side.SELL, 50), timeout=5)) == 10  # all it holds, no short
