"""Every account's order-update socket is read by one thread of the copier, which also pings them:
followers add sockets, not threads; a socket that stops answering is closed and connected again;
and a frame that stops half-way holds the other sockets up no longer than the read timeout."""
from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

from paper import realtime
from tests.conftest import LEADER_ID, wait_until

ROOT = Path(__file__).resolve().parent.parent
# Code a thread that reads, pings or connects a socket runs: the websocket client library, our
# socket module, or the feed (whose socket thread this was).
SOCKET_CODE = (str(Path(sys.modules["websocket"].__file__).parent), str(ROOT / "broker" / "sockets.py"),
               str(ROOT / "actors" / "feed.py"))


def _followers(count: int) -> list[dict]:
    return [{"name": f"f{i + 1}", "sizing": {"strategy": "fixed_ratio", "ratio": 0.5}, "funds": 5_000_000}
            for i in range(count)]


def _socket_threads() -> list[str]:
    """Names of the threads whose stack runs socket code (see SOCKET_CODE)."""
    frames = sys._current_frames()
    found = []
    for thread in threading.enumerate():
        frame = frames.get(thread.ident)  # type: ignore[arg-type]
        while frame is not None:
            if frame.f_code.co_filename.startswith(SOCKET_CODE):
                found.append(thread.name)
                break
            frame = frame.f_back
    return sorted(found)


def test_followers_add_sockets_but_no_socket_threads(make_rig):
    before = _socket_threads()
    two = make_rig(followers=_followers(2))
    with_two = _socket_threads()
    two.copier.stop()
    wait_until(lambda: _socket_threads() == before, 10,
               message=f"the stopped copier's socket threads ended (left: {_socket_threads()})")

    twelve = make_rig(followers=_followers(12))
    assert twelve.exchange.socket_count() == 13
    # The feed actor's thread runs feed code while it handles a frame (the twelve logins just
    # answered): a moment's extra thread, where a thread per socket would stay.
    wait_until(lambda: len(_socket_threads()) <= len(with_two), 5,
               message=lambda: f"as many socket threads with 12 followers as with 2 ({with_two}): {_socket_threads()}")


def test_a_socket_that_stops_answering_pings_is_closed_and_connected_again(make_rig):
    rig = make_rig(config={"feed": {"ping_interval_seconds": 0.3, "ping_timeout_seconds": 0.5}})
    f1 = rig.follower_ids["f1"]
    leader_logins, f1_logins = len(rig.exchange.socket_logins(LEADER_ID)), len(rig.exchange.socket_logins(f1))

    rig.exchange.faults.ignore_pings(f1)
    wait_until(lambda: len(rig.exchange.socket_logins(f1)) > f1_logins, 10,
               message="f1's silent socket closed and connected again")
    assert rig.exchange.faults.counts().get("unanswered_ping", 0) >= 1

    rig.exchange.faults.clear()  # pings answered again: the socket stays up

    def settled() -> bool:
        logins = rig.exchange.socket_logins(f1)
        return rig.exchange.socket_count(f1) == 1 and realtime.monotonic() - logins[-1] > 2.0

    wait_until(settled, 10, message="f1's socket stays connected once its pings are answered")
    # the leader's socket answered every ping: never taken for dead
    assert len(rig.exchange.socket_logins(LEADER_ID)) == leader_logins
    assert rig.follower_copy(rig.place(quantity=10))["quantity"] == 5


def test_a_half_sent_frame_holds_up_other_sockets_at_most_the_read_timeout(make_rig):
    read_timeout = 1.0
    rig = make_rig(followers=_followers(2), config={"feed": {"read_timeout_seconds": read_timeout}})
    f1 = rig.follower_ids["f1"]
    f1_logins = len(rig.exchange.socket_logins(f1))

    started = time.monotonic()
    rig.exchange.faults.stall_sockets(f1)  # f1's socket: half a frame, then nothing
    leader_order = rig.place(quantity=10)
    assert rig.follower_copy(leader_order, "f2")["quantity"] == 5
    took = time.monotonic() - started
    assert took < read_timeout + 4.0, f"the leader's order reached f2 after {took:.1f}s"  # margin for a loaded box

    wait_until(lambda: len(rig.exchange.socket_logins(f1)) > f1_logins, read_timeout + 10,
               message="f1's stalled socket closed and connected again")
    assert rig.follower_copy(leader_order, "f1")["quantity"] == 5
    assert {name: len(rig.follower_book(name)) for name in ("f1", "f2")} == {"f1": 1, "f2": 1}
