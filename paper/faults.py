"""Fault injection: the broker misbehaviours a copier must survive (lost answers, late
answers, 5xx, dropped/refused/silent/stalled sockets, duplicated or reordered updates)."""
from __future__ import annotations

import random
import threading
from collections import Counter
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Callable, Iterable

from . import realtime

FAIL_MODES = ("DH-908", "DH-909", "close")


@dataclass
class _Rule:
    fraction: float
    client_id: str | None
    paths: tuple[str, ...] | None
    mode: str = ""
    seconds: float = 0.0
    count: int | None = None

    def matches(self, client_id: str | None, keys: Iterable[str]) -> bool:
        if self.client_id is not None and client_id != self.client_id:
            return False
        if self.paths is None:
            return True
        return any(fnmatchcase(k, p) for p in self.paths for k in keys)


def _paths(paths: str | Iterable[str] | None) -> tuple[str, ...] | None:
    if paths is None:
        return None
    return (paths,) if isinstance(paths, str) else tuple(paths)


class Faults:
    """Knobs are set from any thread; the REST and socket layers consult them per call/message.

    Paths are "METHOD /path" relative to /v2, e.g. "POST /orders", "PUT /orders/{orderId}",
    or glob patterns such as "PUT /orders/*"."""

    def __init__(self, on_drop: Callable[[], None] | None = None, seed: int | None = None,
                 on_stall: Callable[[str], None] | None = None) -> None:
        self._lock = threading.Lock()
        self._rng = random.Random(seed)
        self._on_drop = on_drop
        self._on_stall = on_stall
        self._counts: Counter[str] = Counter()
        self.clear()

    def clear(self) -> None:
        """Back to a well-behaved broker."""
        with self._lock:
            self._refuse_until = 0.0
            self._delays: list[_Rule] = []
            self._slow: list[_Rule] = []
            self._fails: list[_Rule] = []
            self._after: list[_Rule] = []
            self.duplicate_fraction = 0.0
            self.reorder_fraction = 0.0
            self.reorder_same_second = False
            self._silent: set[str | None] = set()  # accounts (None: every one) whose pings go unanswered
            self._lags: dict[str | None, float] = {}  # accounts (None: every one) whose messages lag

    def count(self, kind: str) -> None:
        """Note a fault that took effect (see `counts`)."""
        with self._lock:
            self._counts[kind] += 1

    def counts(self) -> dict[str, int]:
        """How often each fault took effect since the exchange started (`clear` keeps them), so a
        test can tell a fault that hit from one that was only switched on: "DH-908", "DH-909",
        "close" (failed before effect), "lost_answer", "delayed_answer", "refused_login",
        "dropped_sockets", "duplicated", "reordered", "unanswered_ping", "stalled_sockets", "lagged"."""
        with self._lock:
            return dict(self._counts)

    # --- socket knobs ---
    def drop_sockets(self) -> None:
        """Close every order-update socket now (clients must reconnect and resync)."""
        if self._on_drop:
            self.count("dropped_sockets")
            self._on_drop()

    def refuse_reconnects(self, seconds: float) -> None:
        with self._lock:
            self._refuse_until = realtime.monotonic() + seconds

    def refusing(self) -> bool:
        if realtime.monotonic() < self._refuse_until:
            self.count("refused_login")
            return True
        return False

    def ignore_pings(self, client_id: str | None = None) -> None:
        """The account's order-update sockets (None: every account's) stop answering websocket pings,
        as a connection that died somewhere on the way does; `clear` ends it."""
        with self._lock:
            self._silent.add(client_id)

    def answers_ping(self, client_id: str) -> bool:
        with self._lock:
            silent = None in self._silent or client_id in self._silent
            if silent:
                self._counts["unanswered_ping"] += 1
        return not silent

    def stall_sockets(self, client_id: str) -> None:
        """The account's order-update sockets send the first bytes of a frame and then nothing more
        (not the rest of it, not a pong, no other frame) until the client closes them."""
        if self._on_stall:
            self.count("stalled_sockets")
            self._on_stall(client_id)

    def delay_messages(self, seconds: float, client_id: str | None = None) -> None:
        """The account's order-update messages (None: every account's) leave `seconds` after the
        change they tell of, in order: Dhan's socket lagging its REST answers. `clear` ends it."""
        with self._lock:
            self._lags[client_id] = seconds

    def message_delay(self, client_id: str) -> float:
        with self._lock:
            seconds = self._lags.get(client_id, self._lags.get(None, 0.0))
            if seconds > 0:
                self._counts["lagged"] += 1
            return seconds

    def duplicate_messages(self, fraction: float) -> None:
        self.duplicate_fraction = fraction

    def reorder_messages(self, fraction: float, same_second: bool = False) -> None:
        """That fraction of socket messages is held back and sent after the next one. With
        `same_second`, only messages stamped with the same `LastUpdatedTime` change places: the
        reordering an order-update feed without sequence numbers cannot undo by time."""
        self.reorder_same_second = same_second
        self.reorder_fraction = fraction

    def roll(self, fraction: float) -> bool:
        if fraction <= 0:
            return False
        with self._lock:
            return self._rng.random() < fraction

    # --- REST knobs ---
    def delay_answers(self, seconds: float, client_id: str | None = None,
                      paths: str | Iterable[str] | None = ("POST /orders",), count: int | None = None) -> None:
        """The call takes effect at once but its answer arrives `seconds` late."""
        with self._lock:
            self._delays.append(_Rule(1.0, client_id, _paths(paths), seconds=seconds, count=count))

    def delay_effects(self, seconds: float, client_id: str | None = None,
                      paths: str | Iterable[str] | None = ("POST /orders",), count: int | None = None) -> None:
        """The call takes effect `seconds` after it arrives (a slow broker): a reading answers
        what holds then."""
        with self._lock:
            self._slow.append(_Rule(1.0, client_id, _paths(paths), seconds=seconds, count=count))

    def fail_fraction(self, fraction: float, mode: str = "DH-908", client_id: str | None = None,
                      paths: str | Iterable[str] | None = None, seed: int | None = None) -> None:
        """That fraction of matching calls fail before any effect ("close": no answer at all)."""
        if mode not in FAIL_MODES:
            raise ValueError(f"mode must be one of {FAIL_MODES}")
        with self._lock:
            if seed is not None:
                self._rng = random.Random(seed)
            self._fails.append(_Rule(fraction, client_id, _paths(paths), mode=mode))

    def fail_after_effect(self, fraction: float, client_id: str | None = None,
                          paths: str | Iterable[str] | None = ("POST /orders",)) -> None:
        """The call takes effect, then the connection closes: the client never learns the answer."""
        with self._lock:
            self._after.append(_Rule(fraction, client_id, _paths(paths)))

    def before_effect(self, client_id: str | None, keys: tuple[str, ...]) -> str | None:
        with self._lock:
            for r in self._fails:
                if r.matches(client_id, keys) and self._rng.random() < r.fraction:
                    self._counts[r.mode] += 1
                    return r.mode
        return None

    def lose_answer(self, client_id: str | None, keys: tuple[str, ...]) -> bool:
        with self._lock:
            lost = any(r.matches(client_id, keys) and self._rng.random() < r.fraction for r in self._after)
            if lost:
                self._counts["lost_answer"] += 1
            return lost

    def answer_delay(self, client_id: str | None, keys: tuple[str, ...]) -> float:
        return self._delay(self._delays, "delayed_answer", client_id, keys)

    def effect_delay(self, client_id: str | None, keys: tuple[str, ...]) -> float:
        return self._delay(self._slow, "delayed_effect", client_id, keys)

    def _delay(self, rules: list[_Rule], kind: str, client_id: str | None, keys: tuple[str, ...]) -> float:
        with self._lock:
            for r in rules:
                if r.matches(client_id, keys) and (r.count is None or r.count > 0):
                    if r.count is not None:
                        r.count -= 1
                    self._counts[kind] += 1
                    return r.seconds
        return 0.0
