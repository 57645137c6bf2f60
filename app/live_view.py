"""The demo's live terminal view (rich): leader orders beside their follower copies.

One line per leader order, as many as the terminal has room for, so the view never scrolls;
log records print above it (through the view's console) rather than over it."""
from __future__ import annotations

import io
import logging
import sys
import threading
import time
from collections import deque
from typing import Any, Callable, Sequence

from rich.console import Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from copier.config import Config
from storage import Store
from storage.copies import by_follower, copy_quantity, copy_status
from trading.leader import leader_name

_COLOURS = {"TRADED": "green", "PENDING": "cyan", "PART_TRADED": "yellow", "CANCELLED": "dim",
            "REJECTED": "red", "SKIPPED": "magenta", "PENDING_PLACEMENT": "blue", "UNKNOWN": "bold red",
            "EXPIRED": "dim"}


# Indian traders' short names of the order types, so side, quantity and type fit narrow columns.
_TYPES = {"LIMIT": "LIMIT", "MARKET": "MARKET", "STOP_LOSS": "SL", "STOP_LOSS_MARKET": "SL-M"}
# Lines the view needs besides its rows: title, the header's three, the bottom border, the footer,
# and the line the cursor rests on.
_CHROME_LINES = 7


def _status(text: str | None) -> Text:
    text = text or "-"
    return Text(text, style=_COLOURS.get(text, ""))


def rows_for(height: int) -> int:
    """How many leader orders fit a terminal `height` lines high."""
    return max(1, height - _CHROME_LINES)


def render(store: Store, config: Config, limit: int = 18, metrics_url: str = "",
           followers: Sequence[str] | None = None) -> Any:
    """`followers`: those copied to now (followers are added and removed while the copier runs);
    the config's by default. A follower an operator paused is marked so in the title and its column."""
    recent = store.copies.recent(limit)
    leaders = [lo for lo, _copies in recent]
    copies = {lo.order_id: by_follower(rows) for lo, rows in recent}  # follower -> its slices
    names = list(followers) if followers is not None else [f.name for f in config.followers]
    paused = {name for name, state in store.followers.states().items() if state.paused}
    heading = {name: f"{name} (paused)" if name in paused else name for name in names}
    accounts = ", ".join(f"{a.label} {a.client_id}" for a in config.all_leaders)
    table = Table(title=f"{accounts} -> {', '.join(heading[n] for n in names)}",
                  expand=True)
    # Every cell stays on one line (a cut one ends in "…"); the order id is never cut, the symbol
    # and the copies give way first.
    order_width = max([len("leader order"), *(len(lo.order_id) for lo in leaders)])
    table.add_column("leader order", no_wrap=True, min_width=order_width)
    table.add_column("symbol", no_wrap=True, overflow="ellipsis", ratio=2)
    table.add_column("side qty type", no_wrap=True, overflow="ellipsis", min_width=13)
    table.add_column("leader", no_wrap=True, overflow="ellipsis")
    several = len(config.all_leaders) > 1  # then each order's status names its leader: "beta PENDING"
    for name in names:
        table.add_column(heading[name], no_wrap=True, overflow="ellipsis", ratio=2,
                         header_style="bold yellow" if name in paused else "bold")
    for lo in leaders:
        kind = _TYPES.get(lo.order_type, lo.order_type)
        status = _status(lo.status)
        if several:
            status = Text(f"{leader_name(lo.account)} ").append_text(status)
        cells = [lo.order_id, lo.symbol or lo.security_id, f"{lo.side} {lo.quantity} {kind}", status]
        for name in names:
            slices = copies.get(lo.order_id, {}).get(name)
            if not slices:
                cells.append(Text("-", style="dim"))
                continue
            row = slices[0]
            if row.held:  # a SELL leg waiting for its strategy's BUY legs to fill (legs: buy_first)
                cells.append(Text(f"{copy_quantity(slices)} held: waiting for BUY legs", style="blue"))
            elif row.status == "SKIPPED":  # the status first: it survives a narrow column
                cell = _status(row.status)
                cell.append(f" {row.skip_reason}")
                cells.append(cell)
            elif len(slices) > 1:  # a copy above the freeze quantity: its total, and how many slices
                cell = Text(f"{copy_quantity(slices)} ")
                cell.append_text(_status(copy_status(slices)))
                cell.append(f" {len(slices)} slices", style="dim")
                cells.append(cell)
            else:
                cell = Text(f"{row.quantity} ")
                cell.append_text(_status(row.status))
                if row.super_order:  # its exit legs, as the follower's broker has them
                    cell.append(f" target {row.target_leg or '-'} stop-loss {row.stop_loss_leg or '-'}")
                if row.latency_ms is not None:
                    cell.append(f" {row.latency_ms:.1f}ms", style="dim")
                cells.append(cell)
        table.add_row(*cells)
    url = metrics_url or f"http://{config.metrics.host}:{config.metrics.port}/metrics"
    footer = Text(f"Ctrl-C stops the copier cleanly. Metrics: {url}", style="dim", no_wrap=True, overflow="ellipsis")
    return Group(table, footer)


class _Lines(io.TextIOBase):
    """A stream the log handlers write to from any thread; the view's own thread prints what it
    holds (`take`), so one thread alone writes to the terminal while the view is up."""

    def __init__(self, written: threading.Event) -> None:
        self._chunks: deque[str] = deque()
        self._written = written

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self._chunks.append(text)  # (deque.append is atomic: no lock needed)
        self._written.set()
        return len(text)

    def take(self) -> str:
        taken = []
        while self._chunks:
            taken.append(self._chunks.popleft())
        return "".join(taken)


class LiveView:
    def __init__(self, store: Store, config: Config, refresh_seconds: float = 0.5, metrics_url: str = "",
                 followers: Callable[[], Sequence[str]] | None = None) -> None:
        self.store, self.config, self.refresh = store, config, refresh_seconds
        self.metrics_url = metrics_url
        self.followers = followers  # the followers copied to now, when they may change while it runs
        self._halt = threading.Event()
        self._wake = threading.Event()  # a log line to print, or stop
        self._thread: threading.Thread | None = None

    def start(self) -> "LiveView":
        self._thread = threading.Thread(target=self._run, name="live-view", daemon=True)
        self._thread.start()
        return self

    def _frame(self, live: Live) -> Any:
        return render(self.store, self.config, rows_for(live.console.size.height), self.metrics_url,
                      self.followers() if self.followers is not None else None)

    def _run(self) -> None:
        terminal = sys.stderr
        # One thread writes to the terminal: this one. The log handlers took the terminal itself at
        # start (a line written there pushes the view up, leaving its top behind), and rich's own
        # refresh thread and its stderr proxy print from their threads, whose cursor moves can
        # interleave with another thread's and leave a stale frame on the screen. So the view
        # refreshes itself, and log lines wait in `lines` for it to print them above the view.
        lines = _Lines(self._wake)
        with Live(auto_refresh=False, screen=False, redirect_stderr=True) as live:
            handlers = [h for h in logging.getLogger().handlers
                        if isinstance(h, logging.StreamHandler) and h.stream is terminal]
            for handler in handlers:
                handler.setStream(lines)
            try:
                next_frame = 0.0
                while not self._halt.is_set():
                    text = lines.take()
                    if text:
                        live.console.print(Text.from_ansi(text.rstrip("\n")))
                    if time.monotonic() >= next_frame:
                        live.update(self._frame(live))
                        next_frame = time.monotonic() + self.refresh
                    live.refresh()
                    self._wake.wait(max(0.0, next_frame - time.monotonic()))
                    self._wake.clear()
            finally:
                for handler in handlers:
                    handler.setStream(terminal)
                text = lines.take()
                if text:
                    terminal.write(text)

    def stop(self) -> None:
        self._halt.set()
        self._wake.set()
        if self._thread:
            self._thread.join(2)
