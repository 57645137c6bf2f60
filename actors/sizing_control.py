"""Operators' changes to followers, as the sizing actor applies them (actors/sizing.py): every new
copy is sized there, one at a time, so a pause, a new sizing rule or a follower added or removed
takes effect from the next leader order sized, never in the middle of one.

The follower control actor asks (never tells) these, so it answers the operator only once the
change is in force. It stores each change first: a sizing actor restarted meanwhile starts from
what storage and the wiring hold (copier/roster.py), the change included."""
from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any

from actors.messages import ChangeSizing, FollowerAdded, FollowerRemoved, PauseCopying, ResumeCopying
from actors.reservations import Reservations

if TYPE_CHECKING:
    from actors.sizing import SizingActor

FOLLOWER_PAUSED = "follower_paused"  # the skip reason of a new leader order while its follower is paused
CONTROLS = (PauseCopying, ResumeCopying, ChangeSizing, FollowerAdded, FollowerRemoved)


def apply_control(sizing: "SizingActor", message: Any) -> None:
    """Runs in the sizing actor's thread, like every size request."""
    follower = message.follower
    if isinstance(message, PauseCopying):
        sizing.paused[follower] = message.detail
    elif isinstance(message, ResumeCopying):
        sizing.paused.pop(follower, None)
    elif isinstance(message, ChangeSizing):
        sizing.rules[follower] = message.rule
    elif isinstance(message, FollowerAdded):
        sizing.paused.pop(follower, None)  # (its stored pause, if any, is asked for next)
        sizing.rules[follower] = message.rule
        sizing.limits[follower] = message.limits
        sizing.filters[follower] = message.filters
        if message.copy_window is not None:
            sizing.copy_windows[follower] = message.copy_window
        sizing.recent_orders.setdefault(follower, deque(maxlen=1000))
        sizing.reservations.setdefault(follower, Reservations())
        if message.capital is not None:
            sizing.on_receive(message.capital)  # as any reading: the reservations and limits follow
        if message.positions is not None:
            sizing.on_receive(message.positions)
    elif isinstance(message, FollowerRemoved):
        for table in (sizing.rules, sizing.limits, sizing.filters, sizing.copy_windows, sizing.recent_orders,
                      sizing.reservations, sizing.capital, sizing.start_of_day):
            table.pop(follower, None)
        # an order actor that read the followers before the removal may still ask: a skip, not a crash
        sizing.paused[follower] = f"follower {follower} was removed"
