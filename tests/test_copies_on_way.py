"""How long an exit waits for its followers' copies on their way, which of them an exit that
closes its leader's position cancels, and which an exit that waits for its price grows with
(trading/copies_on_way.py), row by row: the exit of leader order X in RELIANCE, now 100.0, exit
wait 3 s, the broker answers a placement within 5 s."""
from __future__ import annotations

import pytest

from trading.copies_on_way import CopyOnWay, held_until, resting, share_of_held

KEY, OTHER = ("NSE_EQ", "2885"), ("NSE_EQ", "11536")
NOW, WAIT, ANSWER = 100.0, 3.0, 5.0


def _copy(order: str = "A", key: tuple[str, str] = KEY, filled_then: int = 10, sized_at: float = 99.9,
          doubt_until: float | None = None, cancelling: bool = False) -> CopyOnWay:
    return CopyOnWay(key, "leader", order, filled_then, sized_at, doubt_until, cancelling)


ROWS = [
    # (why, copies, the fills the ledger knows by order, held until)
    ("nothing on its way", [], {}, None),
    ("a filled entry's copy sized just before: until its answer is due, and half an exit wait",
     [_copy()], {}, 99.9 + ANSWER + WAIT / 2),
    ("a slow broker is waited for: the answer is due 5 s after sizing", [_copy(sized_at=95.0)], {},
     95.0 + ANSWER + WAIT / 2),
    ("one in another instrument is not waited for", [_copy(key=OTHER)], {}, None),
    ("the exit's own copy is not waited for", [_copy(order="X")], {}, None),
    ("a leader order that has not filled moved no position", [_copy(filled_then=0)], {}, None),
    ("the ledger's fills since it was sized count", [_copy(filled_then=0)], {"A": 4}, 99.9 + ANSWER + WAIT / 2),
    ("nor do the ledger's, when it knows none filled", [_copy(filled_then=10)], {"A": 0}, None),
    ("one whose answer is long overdue was lost on its way (looked up)", [_copy(sized_at=NOW - ANSWER - WAIT / 2)],
     {}, None),
    ("one in doubt holds it until its lookups are believed and its placement again is answered",
     [_copy(sized_at=90.0, doubt_until=108.0)], {}, 108.0 + ANSWER + WAIT / 2),
    ("one whose doubt was over before it was told counts as sized then",
     [_copy(sized_at=99.0, doubt_until=95.0)], {}, 99.0 + ANSWER + WAIT / 2),
    ("one whose doubt is long over, sized long ago, is not waited for", [_copy(sized_at=80.0, doubt_until=85.0)],
     {}, None),
    ("the latest of several", [_copy(), _copy(order="B", doubt_until=104.0)], {}, 104.0 + ANSWER + WAIT / 2),
    ("one being cancelled holds it though the ledger knows nothing of its leader order (a restart)",
     [_copy(filled_then=0, sized_at=99.0, cancelling=True)], {}, 99.0 + ANSWER + WAIT / 2),
]


@pytest.mark.parametrize("why, copies, fills, expected", ROWS, ids=[row[0] for row in ROWS])
def test_B_2_an_exit_waits_for_its_followers_copies_on_their_way(why, copies, fills, expected):
    assert held_until(copies, KEY, "X", NOW, WAIT, ANSWER, lambda _leader, order: fills.get(order)) == expected


LONG_AGO = NOW - ANSWER - WAIT / 2  # its hold is over
CANCELS = [
    # (why, the copy, the leader orders wholly filled, cancelled)
    ("a filled leader order's copy still there when its hold is over rests: cancelled", _copy(sized_at=LONG_AGO),
     {"A"}, True),
    ("one still held for is waited for, not cancelled", _copy(), {"A"}, False),
    ("one in doubt is held for until its lookups are believed", _copy(sized_at=80.0, doubt_until=99.0), {"A"}, False),
    ("the leader's own order still rests: its copy is the follower's share of it", _copy(sized_at=LONG_AGO), set(),
     False),
    ("one in another instrument is left", _copy(key=OTHER, sized_at=LONG_AGO), {"A"}, False),
    ("the exit's own copy is left", _copy(order="X", sized_at=LONG_AGO), {"X"}, False),
    ("one asked to be cancelled already is not asked again", _copy(sized_at=LONG_AGO, cancelling=True), {"A"}, False),
    ("another leader's is left: that leader still holds it", _copy(sized_at=LONG_AGO)._replace(leader="other"),
     {"A"}, False),
    ("one a restarted copier loaded, of a leader order stored wholly filled (its fill seen by the last run)",
     _copy(sized_at=LONG_AGO)._replace(leader_traded=True), set(), True),
]


@pytest.mark.parametrize("why, copy, traded, expected", CANCELS, ids=[row[0] for row in CANCELS])
def test_B_2_an_exit_that_closes_its_leaders_position_cancels_the_copies_left_resting(why, copy, traded, expected):
    assert resting(copy, "leader", KEY, "X", NOW, WAIT, ANSWER, lambda _leader, order: order in traded) is expected


SHARES = [
    # (why, the copy, the leader orders wholly filled, the exit grows as it fills)
    ("a filled leader order's copy resting", _copy(sized_at=LONG_AGO), {"A"}, True),
    ("one still held for too: it is the follower's share whenever it fills", _copy(), {"A"}, True),
    ("the leader's own order still rests: its exit is the leader's to grow", _copy(), set(), False),
    ("one in another instrument", _copy(key=OTHER), {"A"}, False),
    ("the exit's own copy", _copy(order="X"), {"X"}, False),
    ("one being cancelled: it will not fill", _copy(cancelling=True), {"A"}, False),
    ("another leader's", _copy()._replace(leader="other"), {"A"}, False),
    ("one a restarted copier loaded, of a leader order stored wholly filled", _copy()._replace(leader_traded=True),
     set(), True),
]


@pytest.mark.parametrize("why, copy, traded, expected", SHARES, ids=[row[0] for row in SHARES])
def test_B_2_an_exit_that_waits_for_its_price_grows_as_its_followers_share_of_the_position_fills(why, copy, traded,
                                                                                               expected):
    assert share_of_held(copy, "leader", KEY, "X", lambda _leader, order: order in traded) is expected
