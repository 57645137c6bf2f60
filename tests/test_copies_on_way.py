"""How long an exit waits for its followers' copies on their way (trading/copies_on_way.py), row
by row: the exit of leader order X in RELIANCE, now 100.0, exit wait 3 s, the broker answers a
placement within 5 s."""
from __future__ import annotations

import pytest

from trading.copies_on_way import CopyOnWay, held_until

KEY, OTHER = ("NSE_EQ", "2885"), ("NSE_EQ", "11536")
NOW, WAIT, ANSWER = 100.0, 3.0, 5.0


def _copy(order: str = "A", key: tuple[str, str] = KEY, filled_then: int = 10, sized_at: float = 99.9,
          doubt_until: float | None = None) -> CopyOnWay:
    return CopyOnWay(key, "leader", order, filled_then, sized_at, doubt_until)


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
]


@pytest.mark.parametrize("why, copies, fills, expected", ROWS, ids=[row[0] for row in ROWS])
def test_B_2_an_exit_waits_for_its_followers_copies_on_their_way(why, copies, fills, expected):
    assert held_until(copies, KEY, "X", NOW, WAIT, ANSWER, lambda _leader, order: fills.get(order)) == expected
