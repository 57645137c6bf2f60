"""The demo's live terminal view (rich): leader orders beside their follower copies."""
from __future__ import annotations

import threading
from typing import Any

from rich.console import Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from app.config import Config
from storage import Store
from storage import models as m

_COLOURS = {"TRADED": "green", "PENDING": "cyan", "PART_TRADED": "yellow", "CANCELLED": "dim",
            "REJECTED": "red", "SKIPPED": "magenta", "PENDING_PLACEMENT": "blue", "UNKNOWN": "bold red",
            "EXPIRED": "dim"}


def _status(text: str | None) -> Text:
    text = text or "-"
    return Text(text, style=_COLOURS.get(text, ""))


def render(store: Store, config: Config, limit: int = 18) -> Any:
    def query() -> tuple[list[m.LeaderOrder], dict[str, dict[str, m.FollowerOrder]]]:
        leaders = list(m.LeaderOrder.select().order_by(m.LeaderOrder.first_seen_at.desc()).limit(limit))
        ids = [lo.order_id for lo in leaders]
        copies: dict[str, dict[str, m.FollowerOrder]] = {}
        for row in m.FollowerOrder.select().where(m.FollowerOrder.leader_order_id.in_(ids)):
            copies.setdefault(row.leader_order_id, {})[row.follower] = row
        return leaders, copies

    leaders, copies = store.read(query)
    table = Table(title=f"leader {config.leader.client_id} -> {', '.join(f.name for f in config.followers)}",
                  expand=True)
    table.add_column("leader order")
    table.add_column("symbol")
    table.add_column("side / qty / type")
    table.add_column("leader")
    for f in config.followers:
        table.add_column(f.name)
    for lo in leaders:
        cells = [lo.order_id, lo.symbol or lo.security_id, f"{lo.side} {lo.quantity}", _status(lo.status)]
        for f in config.followers:
            row = copies.get(lo.order_id, {}).get(f.name)
            if row is None:
                cells.append(Text("-", style="dim"))
            else:
                detail = f"{row.quantity} " if row.status != "SKIPPED" else f"{row.skip_reason} "
                cell = Text(detail)
                cell.append_text(_status(row.status))
                if row.latency_ms is not None:
                    cell.append(f" {row.latency_ms:.1f}ms", style="dim")
                cells.append(cell)
        table.add_row(*cells)
    footer = Text("Ctrl-C stops the copier cleanly. Metrics: "
                  f"http://{config.metrics_host}:{config.metrics_port}/metrics", style="dim")
    return Group(table, footer)


class LiveView:
    def __init__(self, store: Store, config: Config, refresh_seconds: float = 0.5) -> None:
        self.store, self.config, self.refresh = store, config, refresh_seconds
        self._halt = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> "LiveView":
        self._thread = threading.Thread(target=self._run, name="live-view", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        with Live(render(self.store, self.config), refresh_per_second=4, screen=False) as live:
            while not self._halt.wait(self.refresh):
                live.update(render(self.store, self.config))

    def stop(self) -> None:
        self._halt.set()
        if self._thread:
            self._thread.join(2)
