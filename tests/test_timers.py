"""The timer service: one thread for every delayed and periodic message."""
from __future__ import annotations

import queue
import threading
import time

import pytest

from supervisors.timers import Timers
from tests.conftest import wait_until


class Inbox:
    def __init__(self) -> None:
        self.got: queue.Queue = queue.Queue()

    def tell(self, message) -> None:
        self.got.put((time.monotonic(), message))


def test_messages_arrive_in_due_order_not_in_the_order_they_were_set():
    timers, inbox = Timers().start(), Inbox()
    try:
        timers.after(0.3, inbox, "late")
        timers.after(0.1, inbox, "early")
        first, second = inbox.got.get(timeout=2), inbox.got.get(timeout=2)
        assert [first[1], second[1]] == ["early", "late"]
    finally:
        timers.stop()


def test_a_cancelled_timer_never_fires():
    timers, inbox = Timers().start(), Inbox()
    try:
        timers.after(0.05, inbox, "cancelled").cancel()
        timers.after(0.2, inbox, "kept")
        assert inbox.got.get(timeout=2)[1] == "kept"
        assert inbox.got.empty()
    finally:
        timers.stop()


def test_a_periodic_timer_repeats_until_cancelled_without_drifting():
    timers, inbox = Timers().start(), Inbox()
    try:
        start = time.monotonic()
        handle = timers.every(0.05, inbox, "tick")
        ticks = [inbox.got.get(timeout=2)[0] for _ in range(10)]
        handle.cancel()
        assert ticks[-1] - start < 0.05 * 10 + 0.2, "ten ticks of 50 ms took far longer than 0.5 s"
        wait_until(lambda: timers.pending() == 0, 2, message="the cancelled timer dropped")
    finally:
        timers.stop()


def test_thousands_of_timers_share_one_thread():
    timers, inbox = Timers().start(), Inbox()
    try:
        before = set(threading.enumerate())  # (threads an earlier test left may end meanwhile)
        for i in range(5000):
            timers.after(60, inbox, i)
        assert set(threading.enumerate()) - before == set()
        assert timers.pending() == 5000
    finally:
        timers.stop()


def test_a_failing_recipient_does_not_stop_the_others():
    class Broken:
        def tell(self, message) -> None:
            raise RuntimeError("recipient gone")

    timers, inbox = Timers().start(), Inbox()
    try:
        timers.after(0.01, Broken(), "lost")
        timers.after(0.05, inbox, "delivered")
        assert inbox.got.get(timeout=2)[1] == "delivered"
    finally:
        timers.stop()


class Owner:
    def __init__(self) -> None:
        self.alive = True

    def is_alive(self) -> bool:
        return self.alive


def test_the_timers_of_an_owner_that_stopped_never_fire_again():
    timers, inbox, owner = Timers().start(), Inbox(), Owner()
    try:
        timers.every(0.05, inbox, "poll", owner=owner)
        timers.after(0.3, inbox, "retry", owner=owner)
        assert inbox.got.get(timeout=2)[1] == "poll"
        owner.alive = False  # the actor crashed or stopped: its timers go with it
        wait_until(lambda: timers.pending() == 0, 2, message="the stopped owner's timers dropped")
        while not inbox.got.empty():
            inbox.got.get()
        with pytest.raises(queue.Empty):  # nothing arrives, though both were due within 0.4 s
            inbox.got.get(timeout=0.4)
    finally:
        timers.stop()
