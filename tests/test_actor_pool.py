"""The pool that runs order actors (supervisors/pool.py) keeps what Pykka gave each actor on
a thread of its own: one message at a time, in order; a crash stops that actor alone and tells its
supervisor which message; an asked message's failure goes back to the asker."""
from __future__ import annotations

import threading
import time
from typing import Any

import pykka
import pytest

from supervisors.pool import ActorPool, PooledActor, run_handing_off
from supervisors import Address
from supervisors.supervisor import ChildFailed
from tests.conftest import wait_until


class Inbox:
    def __init__(self) -> None:
        self.told: list[Any] = []

    def tell(self, message: Any) -> None:
        self.told.append(message)


class Recorder(PooledActor):
    def __init__(self, name: str, supervisor: Inbox | None = None) -> None:
        super().__init__(Address(name), supervisor)  # type: ignore[arg-type]
        self.seen: list[Any] = []
        self.busy = False
        self.overlapped = False
        self.stopped = False

    def on_receive(self, message: Any) -> Any:
        if self.busy:
            self.overlapped = True
        self.busy = True
        try:
            if message == "boom":
                raise RuntimeError("boom")
            time.sleep(0.0005)
            self.seen.append(message)
            return f"got {message}"
        finally:
            self.busy = False

    def on_stop(self) -> None:
        self.stopped = True


@pytest.fixture
def pool():
    pool = ActorPool(threads=4, name="test-orders").start()
    yield pool
    pool.stop(timeout=5)


def test_each_actor_handles_its_messages_one_at_a_time_in_the_order_told(pool):
    actors = [Recorder(f"order:{i}") for i in range(20)]
    refs = [pool.spawn(actor) for actor in actors]
    for n in range(50):
        for ref in refs:
            ref.tell(n)
    wait_until(lambda: all(len(a.seen) == 50 for a in actors), 20, message="every message handled")
    assert all(a.seen == list(range(50)) for a in actors)
    assert not any(a.overlapped for a in actors)


def test_a_crash_stops_that_actor_alone_and_tells_its_supervisor_the_message(pool):
    supervisor = Inbox()
    crashing, other = Recorder("order:1", supervisor), Recorder("order:2", supervisor)
    crash_ref, other_ref = pool.spawn(crashing), pool.spawn(other)
    crash_ref.tell("boom")
    crash_ref.tell("after")  # dropped with the crashed actor's mailbox, as Pykka drops it
    other_ref.tell("still here")
    wait_until(lambda: supervisor.told and other.seen, 5, message="the crash reported, the other actor served")
    [failure] = supervisor.told
    assert isinstance(failure, ChildFailed) and failure.child_id == "order:1" and failure.message == "boom"
    assert failure.actor_urn == crash_ref.actor_urn and not crash_ref.is_alive() and other_ref.is_alive()
    assert crashing.seen == [] and other.seen == ["still here"]
    with pytest.raises(pykka.ActorDeadError):
        crash_ref.tell("too late")  # an Address parks it for the next incarnation


def test_an_asked_message_that_fails_answers_the_asker_and_the_actor_lives_on(pool):
    ref = pool.spawn(Recorder("order:1"))
    with pytest.raises(RuntimeError, match="boom"):
        ref.ask("boom", timeout=5)
    assert ref.ask("next", timeout=5) == "got next" and ref.is_alive()


def test_a_start_that_fails_is_reported_as_a_crash(pool):
    class FailsToStart(Recorder):
        def started(self) -> None:
            raise RuntimeError("no storage")

    supervisor = Inbox()
    ref = pool.spawn(FailsToStart("order:1", supervisor))
    wait_until(lambda: supervisor.told, 5, message="the failed start reported")
    assert "no storage" in supervisor.told[0].error and not ref.is_alive()


def test_stop_comes_after_what_was_told_before_and_a_stopped_actor_takes_nothing_more(pool):
    actor = Recorder("order:1")
    ref = pool.spawn(actor)
    for n in range(10):
        ref.tell(n)
    assert ref.stop(timeout=5) is True
    assert actor.seen == list(range(10)) and actor.stopped
    with pytest.raises(pykka.ActorDeadError):
        ref.tell(11)


def test_a_thousand_actors_run_on_the_pools_threads(pool):
    before = threading.active_count()
    refs = [pool.spawn(Recorder(f"order:{i}")) for i in range(1000)]
    for ref in refs:
        ref.tell("hello")
    wait_until(lambda: all(ref.qsize() == 0 for ref in refs), 20, message="every actor served")
    assert threading.active_count() <= before


class Batcher(Recorder):
    """Takes numbers in batches; a gate holds its first message so that the next ones queue up."""

    def __init__(self, name: str, supervisor: Inbox | None = None) -> None:
        super().__init__(name, supervisor)
        self.gate = threading.Event()
        self.batches: list[list[Any]] = []

    def on_receive(self, message: Any) -> Any:
        if message == "hold":
            self.gate.wait(5)
        return super().on_receive("boom" if message == 13 else message)

    def takes_in_batch(self, message: Any) -> bool:
        return isinstance(message, int)

    def on_receive_batch(self, messages: list[Any]) -> None:
        self.batches.append(list(messages))
        super().on_receive_batch(messages)  # one by one, a failure raised as CrashedOn


def test_told_messages_an_actor_takes_in_batch_come_together_in_order_and_an_ask_splits_them(pool):
    actor = Batcher("order:1")
    ref = pool.spawn(actor)
    ref.tell("hold")
    for n in (1, 2, 3):
        ref.tell(n)
    answers: list[Any] = []
    asking = threading.Thread(target=lambda: answers.append(ref.ask("between")))
    asking.start()
    wait_until(lambda: len(ref._mailbox) == 4, 5, message="the ask queued behind 1, 2, 3")
    for n in (4, 5):
        ref.tell(n)
    actor.gate.set()
    asking.join(5)
    assert answers == ["got between"]
    wait_until(lambda: actor.seen == ["hold", 1, 2, 3, "between", 4, 5], 5, message="every message handled")
    assert actor.batches == [[1, 2, 3], [4, 5]]


def test_a_crash_in_a_batch_is_reported_on_the_message_that_raised_and_drops_the_rest(pool):
    supervisor = Inbox()
    actor = Batcher("order:1", supervisor)
    ref = pool.spawn(actor)
    ref.tell("hold")
    for message in (1, 13, 2):
        ref.tell(message)
    actor.gate.set()
    failure = wait_until(lambda: supervisor.told[0] if supervisor.told else None, 5, message="the crash reported")
    assert isinstance(failure, ChildFailed) and failure.message == 13
    assert actor.batches == [[1, 13, 2]] and actor.seen == ["hold", 1] and not ref.is_alive()


class Exits(Recorder):
    """A handler that raises a BaseException, not an Exception (a library calling sys.exit())."""

    def on_receive(self, message: Any) -> Any:
        if message == "exit":
            raise SystemExit("a library called sys.exit()")
        return super().on_receive(message)


def test_a_base_exception_in_a_handler_is_that_actors_crash_not_a_stuck_mailbox(pool):
    supervisor = Inbox()
    ref = pool.spawn(Exits("order:1", supervisor))
    ref.tell("exit")
    failure = wait_until(lambda: supervisor.told[0] if supervisor.told else None, 5,
                         message="the SystemExit reported as a crash (so the supervisor restarts the actor)")
    assert isinstance(failure, ChildFailed) and failure.message == "exit" and "SystemExit" in failure.error
    assert not ref.is_alive()
    other = pool.spawn(Recorder("order:2"))
    assert other.ask("next", timeout=5) == "got next"  # the pool thread went on


class Threads(Recorder):
    """Notes the thread each message ran on; "hold" waits for its gate, "tell" tells itself "late"."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.threads: dict[Any, int] = {}
        self.gate = threading.Event()

    def on_receive(self, message: Any) -> Any:
        self.threads[message] = threading.get_ident()
        if message == "hold":
            self.gate.wait(5)
        if message == "tell":
            assert self.actor_ref is not None
            self.actor_ref.tell("late")
        return super().on_receive(message)


def test_an_ask_to_an_idle_actor_is_answered_on_the_askers_own_thread(pool):
    actor = Threads("sizing")
    ref = pool.spawn(actor)
    wait_until(lambda: ref.qsize() == 0 and not ref._scheduled, 5, message="started and idle")
    assert ref.ask("size", timeout=5) == "got size"
    assert actor.threads["size"] == threading.get_ident()  # no thread woken, none waited for
    with pytest.raises(RuntimeError, match="boom"):
        ref.ask("boom", timeout=5)  # a failure still goes back to the asker; the actor lives on
    assert ref.is_alive() and ref.ask("again", timeout=5) == "got again"


def test_an_ask_to_a_busy_actor_waits_its_turn_behind_what_was_told_before(pool):
    actor = Threads("sizing")
    ref = pool.spawn(actor)
    ref.tell("hold")
    ref.tell(1)
    answers: list[Any] = []
    asking = threading.Thread(target=lambda: answers.append(ref.ask("size", timeout=5)))
    asking.start()
    wait_until(lambda: ref.qsize() == 2, 5, message="the ask queued behind 1")
    actor.gate.set()
    asking.join(5)
    assert answers == ["got size"] and actor.seen == ["hold", 1, "size"] and not actor.overlapped
    assert actor.threads["size"] != asking.ident  # run on the pool, in its turn


def test_what_is_told_while_an_ask_runs_on_the_askers_thread_runs_after_it_on_the_pool(pool):
    actor = Threads("sizing")
    ref = pool.spawn(actor)
    wait_until(lambda: ref.qsize() == 0 and not ref._scheduled, 5, message="started and idle")
    assert ref.ask("tell", timeout=5) == "got tell"
    wait_until(lambda: "late" in actor.seen, 5, message="the message told meanwhile handled")
    assert actor.seen == ["tell", "late"] and not actor.overlapped
    assert actor.threads["late"] != threading.get_ident()


def test_an_ask_interrupted_on_the_askers_thread_leaves_the_actor_answering(pool):
    class Interrupted(Recorder):
        def on_receive(self, message: Any) -> Any:
            if message == "interrupt":
                raise KeyboardInterrupt  # Ctrl-C in the asker's thread (a reload's ask from the main one)
            return super().on_receive(message)

    ref = pool.spawn(Interrupted("sizing"))
    wait_until(lambda: ref.qsize() == 0 and not ref._scheduled, 5, message="started and idle")
    with pytest.raises(KeyboardInterrupt):
        ref.ask("interrupt", timeout=5)
    assert ref.ask("after", timeout=2) == "got after"


class Relay(PooledActor):
    """Tells `to` what it is told (inline: a hand-off), noting each step and its thread."""

    def __init__(self, name: str, log: list[Any], to: Any = None, supervisor: Inbox | None = None,
                 fragile: bool = False) -> None:
        super().__init__(Address(name), supervisor)  # type: ignore[arg-type]
        self.log, self.to, self.fragile = log, to, fragile

    def on_receive(self, message: Any) -> Any:
        if message == "boom" and self.fragile:
            raise RuntimeError("boom")
        self.log.append((self.address.name, message, threading.get_ident()))
        if self.to is not None:
            self.to.tell(message, inline=True)
            self.log.append((self.address.name, f"told {message}", threading.get_ident()))
        return None


def _idle(ref: Any) -> bool:
    return ref.qsize() == 0 and not ref._scheduled


def test_a_hand_off_runs_the_idle_actors_turn_on_the_telling_thread_once_its_handler_returns(pool):
    log: list[Any] = []
    last = pool.spawn(Relay("order", log))
    middle = pool.spawn(Relay("router", log, to=last))
    first = pool.spawn(Relay("feed", log, to=middle))
    wait_until(lambda: all(_idle(r) for r in (first, middle, last)), 5, message="started and idle")
    first.tell("update")
    wait_until(lambda: len(log) == 5, 5, message="relayed to the end")
    assert [(name, what) for name, what, _thread in log] == [
        ("feed", "update"), ("feed", "told update"), ("router", "update"), ("router", "told update"),
        ("order", "update")]  # each turn after the handler that handed it off, never inside it
    assert len({thread for _name, _what, thread in log}) == 1  # one thread, none woken


def test_a_hand_off_to_a_busy_actor_waits_its_turn_behind_what_it_was_told_before(pool):
    log: list[Any] = []
    busy = Threads("order")
    last = pool.spawn(busy)
    first = pool.spawn(Relay("feed", log, to=last))
    wait_until(lambda: _idle(first) and _idle(last), 5, message="started and idle")
    last.tell("hold")
    last.tell(1)
    first.tell(2)
    wait_until(lambda: last.qsize() == 2, 5, message="handed off behind 1")
    busy.gate.set()
    wait_until(lambda: busy.seen == ["hold", 1, 2], 5, message="all handled")
    assert not busy.overlapped and busy.threads[2] != log[0][2]  # run on the pool, in its turn


def test_a_hand_off_outside_a_pooled_handler_is_an_ordinary_tell(pool):
    actor = Threads("order")
    ref = pool.spawn(actor)
    wait_until(lambda: _idle(ref), 5, message="started and idle")
    actor.gate.set()
    ref.tell("x", inline=True)
    wait_until(lambda: actor.seen == ["x"], 5, message="handled")
    assert actor.threads["x"] != threading.get_ident()  # a pool thread's, not the caller's


def test_a_socket_readers_hand_off_runs_the_turn_on_the_reader_once_its_callback_returns(pool):
    actor = Threads("feed")
    ref = pool.spawn(actor)
    wait_until(lambda: _idle(ref), 5, message="started and idle")
    actor.gate.set()
    order: list[str] = []

    def on_frame() -> None:
        ref.tell("frame", inline=True)
        order.append("callback returned")

    run_handing_off(on_frame)
    order.append("after")
    assert actor.seen == ["frame"] and order == ["callback returned", "after"]
    assert actor.threads["frame"] == threading.get_ident()


def test_a_crash_in_a_handed_off_turn_stops_that_actor_alone_and_the_telling_one_goes_on(pool):
    log: list[Any] = []
    supervisor = Inbox()
    last = pool.spawn(Relay("order", log, supervisor=supervisor, fragile=True))
    order = Address("order")  # as the copier's actors hold each other: a dead one's messages are parked
    order.bind(last)
    first = pool.spawn(Relay("feed", log, to=order))
    wait_until(lambda: _idle(first) and _idle(last), 5, message="started and idle")
    first.tell("boom")
    wait_until(lambda: not last.is_alive(), 5, message="the handed-off actor crashed")
    assert [type(m).__name__ for m in supervisor.told] == ["ChildFailed"] and supervisor.told[0].message == "boom"
    first.tell("after")  # the telling actor lives on; its next hand-off finds the dead one
    wait_until(lambda: ("feed", "after") in [(n, w) for n, w, _t in log], 5, message="the feed went on")
    assert first.is_alive()


def test_an_actor_spawned_by_hand_off_starts_on_the_spawning_thread(pool):
    log: list[Any] = []
    started: list[int] = []

    class Spawner(PooledActor):
        def on_receive(self, message: Any) -> Any:
            child = Relay("order", log)
            child.started = lambda: started.append(threading.get_ident())  # type: ignore[method-assign]
            ref = pool.spawn(child, inline=True)
            ref.tell(message, inline=True)
            log.append(("router", "spawned", threading.get_ident()))

    spawner = pool.spawn(Spawner(Address("router"), None))
    wait_until(lambda: _idle(spawner), 5, message="started and idle")
    spawner.tell("update")
    wait_until(lambda: len(log) == 2, 5, message="the child handled it")
    assert [(n, w) for n, w, _t in log] == [("router", "spawned"), ("order", "update")]
    assert started == [log[0][2]] and log[1][2] == log[0][2]  # its start, then its first message, here
