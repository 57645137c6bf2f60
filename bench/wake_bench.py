"""What one hand-off between threads costs on this machine, warm and after a pause.

A copy crosses several threads (docs/design.md, "A copy is a chain of threads"). At the leader's
real pace a thread on that chain has slept about 100 ms when it is woken, and on a virtual
machine waking a thread that has slept costs several times what waking one that just ran does.
This bench prints, p50 and p99 over --rounds hand-offs each:

- a pipe between two threads (the kernel alone), back to back and after each pause;
- a `queue.Queue` between two threads (the kernel and the GIL), the same two ways;
- an ask to an idle pooled actor (supervisors/pool.py): answered on the asker's thread, as the
  order actors ask the sizing actor, against the same ask answered by a pool thread.

    python bench/wake_bench.py [--rounds 200] [--pause-ms 100]
"""
from __future__ import annotations

import argparse
import os
import queue
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from supervisors import Address  # noqa: E402
from supervisors.pool import ActorPool, PooledActor  # noqa: E402


def measure(rounds: int, pause: float, once: Callable[[], float]) -> tuple[float, float]:
    """p50, p99 in µs of `once()` (which returns its own µs), with `pause` seconds before each."""
    once()
    samples = []
    for _ in range(rounds):
        if pause:
            time.sleep(pause)
        samples.append(once())
    samples.sort()
    return statistics.median(samples), samples[min(len(samples) - 1, int(len(samples) * 0.99))]


def pipe_handoff() -> tuple[Callable[[], float], Callable[[], None]]:
    """One way, from writing a byte to the other thread reading it."""
    there_r, there_w = os.pipe()
    back_r, back_w = os.pipe()

    def echo() -> None:
        while os.read(there_r, 1) == b"x":
            os.write(back_w, time.perf_counter_ns().to_bytes(8, "little"))

    threading.Thread(target=echo, daemon=True).start()

    def once() -> float:
        start = time.perf_counter_ns()
        os.write(there_w, b"x")
        return (int.from_bytes(os.read(back_r, 8), "little") - start) / 1e3

    return once, lambda: os.write(there_w, b"q") and None


def queue_handoff() -> tuple[Callable[[], float], Callable[[], None]]:
    """One way, from `put` to the other thread's `get` returning."""
    there: queue.Queue[Any] = queue.Queue()
    back: queue.Queue[int] = queue.Queue()

    def echo() -> None:
        while there.get() is not None:
            back.put(time.perf_counter_ns())

    threading.Thread(target=echo, daemon=True).start()

    def once() -> float:
        start = time.perf_counter_ns()
        there.put(1)
        return (back.get() - start) / 1e3

    return once, lambda: there.put(None)


class Sizer(PooledActor):
    def on_receive(self, message: Any) -> Any:
        return message


def pooled_ask(pool: ActorPool, on_pool: bool) -> Callable[[], float]:
    """The whole ask, there and back; `on_pool`: answered by a pool thread, as before asks to an
    idle actor ran on the asker's thread."""
    ref = pool.spawn(Sizer(Address("sizing"), None))
    ref.ask("started", timeout=5)

    def once() -> float:
        start = time.perf_counter_ns()
        if on_pool:
            ref.ask("size", block=False).result(5)
        else:
            ref.ask("size", timeout=5)
        return (time.perf_counter_ns() - start) / 1e3

    return once


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--rounds", type=int, default=200)
    p.add_argument("--pause-ms", type=float, default=100.0, help="the pause before each hand-off (the leader's pace)")
    args = p.parse_args()
    pause = args.pause_ms / 1e3
    print(f"thread hand-offs, µs, {args.rounds} each; {os.cpu_count()} CPUs, load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"  {'':<52} {'back to back':>17}   {f'after {args.pause_ms:.0f} ms':>17}")
    print(f"  {'':<52} {'p50':>8} {'p99':>8}   {'p50':>8} {'p99':>8}")
    rows: list[tuple[str, Callable[[], float]]] = []
    stops = []
    for name, make in (("pipe, one way (the kernel)", pipe_handoff), ("queue.Queue, one way (kernel and GIL)", queue_handoff)):
        once, stop = make()
        rows.append((name, once))
        stops.append(stop)
    pool = ActorPool(1, name="bench").start()
    rows.append(("pooled ask to an idle actor, answered by the pool", pooled_ask(pool, on_pool=True)))
    rows.append(("pooled ask to an idle actor, on the asker's thread", pooled_ask(pool, on_pool=False)))
    for name, once in rows:
        warm = measure(args.rounds, 0.0, once)
        cold = measure(args.rounds, pause, once)
        print(f"  {name:<52} {warm[0]:>8.1f} {warm[1]:>8.1f}   {cold[0]:>8.1f} {cold[1]:>8.1f}")
    for stop in stops:
        stop()
    pool.stop()


if __name__ == "__main__":
    main()
