"""The rate limiter's windows as pure arithmetic: a simulated clock, one call after another."""
from __future__ import annotations

from actors.rate_limiter import SlidingWindows


def _send_times(windows: SlidingWindows, arrivals: list[float]) -> list[float]:
    """Each call leaves when it has arrived, the call before it has left, and the windows admit it."""
    sent: list[float] = []
    for arrival in arrivals:
        now = max(arrival, sent[-1] if sent else arrival)
        now += windows.wait_time(now)
        windows.take(now)
        sent.append(now)
    return sent


def test_a_leader_just_under_the_brokers_rate_is_copied_without_lag():
    windows = SlidingWindows([(10, 1.0), (1000, 60.0)])
    arrivals = [i / 9.8 for i in range(600)]  # a minute at 98% of the broker's 10 orders a second
    lag = [s - a for s, a in zip(_send_times(windows, arrivals), arrivals)]
    assert max(lag) < 1e-9, f"a call held back {max(lag) * 1000:.1f} ms"


def test_at_exactly_the_brokers_rate_lag_grows_by_no_more_than_the_jitter_margin():
    windows = SlidingWindows([(10, 1.0), (1000, 60.0)])
    arrivals = [i * 0.1 for i in range(600)]  # 10 orders a second for a minute
    lag = [s - a for s, a in zip(_send_times(windows, arrivals), arrivals)]
    assert max(lag) <= 60 * 0.02 + 1e-6, f"lag grew to {max(lag) * 1000:.0f} ms in a minute"


def test_a_burst_is_paced_evenly_not_sent_a_window_at_a_time():
    windows = SlidingWindows([(10, 1.0)])
    sent = _send_times(windows, [0.0] * 25)
    gaps = [b - a for a, b in zip(sent, sent[1:])]
    assert min(gaps) >= 0.075, f"two calls {min(gaps) * 1000:.0f} ms apart"
    assert sent[-1] <= 2.5, f"25 calls took {sent[-1]:.2f} s at 10/s"


def test_a_call_arriving_a_little_early_is_not_held_back():
    windows = SlidingWindows([(10, 1.0)])
    arrivals = [i / 9.8 + (0.004 if i % 2 else -0.004) for i in range(1, 200)]  # just under 10/s, with jitter
    lag = [s - a for s, a in zip(_send_times(windows, arrivals), arrivals)]
    assert max(lag) < 1e-9, f"a call held back {max(lag) * 1000:.1f} ms"


def test_no_window_ever_holds_more_than_its_limit():
    limits = [(10, 1.0), (250, 60.0)]
    windows = SlidingWindows(limits)
    sent = _send_times(windows, [i * 0.05 for i in range(400)])  # faster than either limit
    for limit, span in limits:
        worst = max(sum(1 for t in sent if start <= t < start + span) for start in sent)
        assert worst <= limit, f"{worst} calls within {span:.0f} s (limit {limit})"
