"""Admission of calls inside an account's rate windows (per second, minute, hour, day), counted as
the broker counts them. Used by actors/rate_limiter.py."""
from __future__ import annotations

from collections import deque


class SlidingWindows:
    """Admission inside several windows at once: [(limit, seconds), ...]. Not thread-safe: its
    owner holds a lock.

    Calls are paced to the tightest window (per second): one every seconds/limit, with
    `tolerance` seconds of slack so that a call arriving a little early (socket jitter) is not
    held back, and a burst leaves at the broker's pace instead of a window's worth at once. Every
    window is also counted a little longer than the broker's (`paced_margin` on the tightest,
    `margin` on the others), because the broker counts arrivals and a call leaves here a little
    before it arrives there. Why these margins, and what they cost: docs/design.md.

        windows = SlidingWindows([(10, 1.0), (250, 60.0)])    # 10 a second, 250 a minute
        now = time.monotonic()
        if windows.wait_time(now) == 0:
            windows.take(now)                                   # counted: send the call now
    """

    def __init__(self, limits: list[tuple[int, float]], margin: float = 0.05, paced_margin: float = 0.02,
                 tolerance: float = 0.02) -> None:
        active = sorted(((int(n), float(s)) for n, s in limits if n > 0), key=lambda w: w[1])
        self.spacing = active[0][1] / active[0][0] if active else 0.0
        self.tolerance = min(tolerance, self.spacing)
        self.limits = [(n, s + (margin if i else paced_margin)) for i, (n, s) in enumerate(active)]
        self._stamps: list[deque[float]] = [deque() for _ in self.limits]
        self._due = float("-inf")  # when the next call is due at the paced rate

    def _trim(self, now: float) -> None:
        for (_, span), stamps in zip(self.limits, self._stamps):
            while stamps and now - stamps[0] >= span:
                stamps.popleft()

    def wait_time(self, now: float) -> float:
        """Seconds until one more call fits (0 when it fits now)."""
        self._trim(now)
        wait = self._due - self.tolerance - now
        for (limit, span), stamps in zip(self.limits, self._stamps):
            if len(stamps) >= limit:
                wait = max(wait, stamps[len(stamps) - limit] + span - now)
        return max(wait, 0.0)

    def take(self, now: float) -> None:
        self._due = max(self._due, now) + self.spacing
        for stamps in self._stamps:
            stamps.append(now)

    def release(self, at: float) -> None:
        """Uncount the call taken at `at`: the broker refused it as rate limited, so it did not
        count it either, and the retry must not pay for it twice."""
        for stamps in self._stamps:
            for i in range(len(stamps) - 1, -1, -1):
                if stamps[i] == at:
                    del stamps[i]
                    break
        self._due -= self.spacing

    def headroom(self, now: float) -> int:
        """Calls still allowed in the tightest window."""
        self._trim(now)
        return min((limit - len(stamps) for (limit, _), stamps in zip(self.limits, self._stamps)), default=0)
