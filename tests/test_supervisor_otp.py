"""Supervision as OTP has it, on a toy tree: restart types, one restart intensity per supervisor,
children started and terminated while it runs, and an escalation that stops every child (the
last started first) before it is reported. The copier's own tree: periodic work runs on the one
timer thread, and a child stopped on purpose stays stopped."""
from __future__ import annotations

import threading
from typing import Any

import pykka
import pytest
from cryptography.fernet import Fernet

from observability import metrics
from supervisors import Address, ChildSpec, Escalated, Restart, Supervised, Supervisor
from tests.conftest import wait_until


class Toy(Supervised):
    """Raises on "crash", stops itself on "finish"; records its stop in `stopped`."""

    def __init__(self, address: Address, supervisor: Address | None, stopped: list[str]) -> None:
        super().__init__(address, supervisor)
        self.stopped = stopped

    def on_receive(self, message: Any) -> Any:
        if message == "crash":
            raise RuntimeError(f"{self.address.name} crashed")
        if message == "finish":
            self.actor_ref.stop(block=False)
        if message == "urn":
            return self.actor_urn
        return None

    def on_stop(self) -> None:
        super().on_stop()
        self.stopped.append(self.address.name)


class Tree:
    def __init__(self, ids: list[str], *, max_restarts: int = 5, period: float = 30.0,
                 restart: Restart = Restart.PERMANENT) -> None:
        self.stopped: list[str] = []
        self.escalations: list[tuple[Escalated, list[str]]] = []  # with the children stopped by then
        self.restarts: list[str] = []
        self.top = Address("top")
        self.ref = Supervisor.start("top", [self.spec(child_id, restart) for child_id in ids], address=self.top,
                                    max_restarts=max_restarts, period=period,
                                    on_restart=lambda kind, error: self.restarts.append(error),
                                    on_escalate=lambda e: self.escalations.append((e, list(self.stopped))))
        self.top.bind(self.ref)
        self.addresses = self.ref.proxy().start_children().get(timeout=10)

    def spec(self, child_id: str, restart: Restart = Restart.PERMANENT) -> ChildSpec:
        return ChildSpec(child_id, lambda a: Toy.start(a, self.top, self.stopped), kind="toy", restart=restart)

    def crash(self, address: Address) -> None:
        old = address.ref
        address.tell("crash")
        wait_until(lambda: not old.is_alive(), message=f"{address.name} crashed")

    def restarted(self, address: Address, old_urn: str) -> bool:
        ref = address.ref
        return ref is not None and ref.actor_urn != old_urn and ref.is_alive()


@pytest.fixture
def tree():
    trees: list[Tree] = []

    def build(*args: Any, **kwargs: Any) -> Tree:
        trees.append(Tree(*args, **kwargs))
        return trees[-1]

    yield build
    for t in trees:
        try:
            t.ref.stop(timeout=5)
        except pykka.ActorDeadError:
            pass


def test_restart_intensity_counts_the_restarts_of_every_child_of_a_supervisor_together(tree):
    t = tree(["a", "b"], max_restarts=3)
    a, b = t.addresses["a"], t.addresses["b"]
    for address in (a, b, a):  # three restarts within the period, of two different children
        urn = address.ref.actor_urn
        t.crash(address)
        wait_until(lambda: t.restarted(address, urn), message=f"{address.name} restarted")
    assert t.escalations == []
    t.crash(b)  # the fourth restart of the supervisor: past its intensity, whichever child crashed
    wait_until(lambda: t.escalations, message="escalation")
    assert t.escalations[0][0].child_id == "b" and len(t.restarts) == 3


def test_an_escalation_stops_every_child_last_started_first_before_it_is_reported(tree):
    t = tree(["first", "second", "third"], max_restarts=0)
    t.crash(t.addresses["first"])
    wait_until(lambda: t.escalations, message="escalation")
    escalation, stopped_by_then = t.escalations[0]
    assert escalation.child_id == "first"
    assert stopped_by_then == ["third", "second"]
    assert not any(address.ref is not None and address.ref.is_alive() for address in t.addresses.values())


def test_a_permanent_child_is_restarted_even_when_it_stops_normally(tree):
    t = tree(["worker"], restart=Restart.PERMANENT)
    worker = t.addresses["worker"]
    urn = worker.ref.actor_urn
    worker.tell("finish")
    wait_until(lambda: t.restarted(worker, urn), message="the permanent child restarted")


def test_a_transient_child_is_restarted_after_a_crash_and_stays_stopped_when_it_finishes(tree):
    t = tree(["order"], restart=Restart.TRANSIENT)
    order = t.addresses["order"]
    urn = order.ref.actor_urn
    t.crash(order)
    wait_until(lambda: t.restarted(order, urn), message="the transient child restarted after its crash")
    order.tell("finish")
    wait_until(lambda: t.ref.proxy().which_children().get(timeout=5) == [], message="the finished child forgotten")
    assert order.ref is None or not order.ref.is_alive()


def test_a_temporary_child_is_never_restarted(tree):
    t = tree(["once"], restart=Restart.TEMPORARY)
    once = t.addresses["once"]
    t.crash(once)
    wait_until(lambda: t.ref.proxy().which_children().get(timeout=5) == [], message="the crashed child forgotten")
    assert t.restarts == [] and t.escalations == []


def test_start_child_starts_a_child_once_and_finds_it_the_second_time(tree):
    t = tree([])
    supervisor = t.ref.proxy()
    first = supervisor.start_child(t.spec("order:1", Restart.TRANSIENT)).get(timeout=5)
    urn = first.ask("urn")
    again = supervisor.start_child(t.spec("order:1", Restart.TRANSIENT)).get(timeout=5)
    assert again is first and again.ask("urn") == urn  # found, not started twice
    assert [c.child_id for c in supervisor.which_children().get(timeout=5)] == ["order:1"]
    t.crash(first)  # supervised like a static child
    wait_until(lambda: t.restarted(first, urn), message="the dynamic child restarted after its crash")


def test_terminate_child_stops_it_for_good_and_forgets_it(tree):
    t = tree(["feed", "router"])
    supervisor = t.ref.proxy()
    feed = t.addresses["feed"]
    assert supervisor.terminate_child("feed").get(timeout=10) is True
    assert t.stopped == ["feed"]
    assert [c.child_id for c in supervisor.which_children().get(timeout=5)] == ["router"]
    assert feed.ref is None  # nothing restarts it
    assert supervisor.terminate_child("feed").get(timeout=5) is False  # no such child any more
    assert t.restarts == [] and t.escalations == []


# -- the copier's tree ---------------------------------------------------------------------------------
PER_ACTOR_TIMER_THREADS = ("kill-switch-poll", "token-check", "token-renewal", "leader-token-renewal",
                           "reconcile-requests", "reconciler", "forever-poll", "router-sweep")


def test_the_copiers_periodic_work_runs_on_one_timer_thread(make_rig, monkeypatch):
    monkeypatch.setenv("COPYTRADER_TOKEN_KEY", Fernet.generate_key().decode())  # renewal stores tokens
    rig = make_rig(config={"tokens": {"renew_every_minutes": 60, "renew_leader_every_minutes": 60}})
    names = [thread.name for thread in threading.enumerate()]
    assert not [name for name in names if name in PER_ACTOR_TIMER_THREADS], names
    # and the periodic work is done: the kill switch notices an operator's switch within its poll
    rig.store.settings.set_kill_switch(True, "test", "operator")
    wait_until(lambda: metrics.KILL_SWITCH._value.get() == 1, message="the kill switch actor polled it")


def test_a_copier_child_terminated_on_purpose_is_not_restarted(make_rig):
    rig = make_rig()
    feed = rig.copier.address("feed:f1")
    assert rig.copier.terminate_child("feed:f1") is True
    wait_until(lambda: rig.exchange.socket_count(rig.follower_ids["f1"]) == 0, message="follower socket closed")
    assert feed.ref is None
