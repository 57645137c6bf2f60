"""The demo's live view as a user sees it: in a real terminal (a pty, read through a terminal
emulator) and rendered to a fixed-size console."""
from __future__ import annotations

import io
import os
import signal
import sys
import time
from typing import Callable

import pexpect
import pyte
import yaml
from rich.console import Console

from app.live_view import render
from tests.conftest import ROOT, wait_until


def terminal_screen(tmp_path, columns: int, rows: int, seconds: float,
                    drawn: Callable[[list[str]], bool] = lambda screen: True) -> list[str]:
    """What `python run.py` (the demo, its leader trading every 0.3 s) leaves on a terminal of this
    size after `seconds`, read once `drawn(screen)` says a frame is on it (a read can end between
    a refresh's erasing of the view and its drawing again, which no eye sees)."""
    raw = yaml.safe_load((ROOT / "config.yaml").read_text())
    raw["storage"]["path"] = str(tmp_path / "copytrader.db")
    raw["instruments"]["master"] = str(ROOT / "paper" / "data" / "instruments.csv")
    raw["metrics"] = {"port": 0}
    raw["paper"]["pace_seconds"] = 0.3
    config = tmp_path / "demo.yaml"
    config.write_text(yaml.safe_dump(raw))
    screen = pyte.Screen(columns, rows)
    stream = pyte.ByteStream(screen)
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}  # the pty's size rules
    child = pexpect.spawn(sys.executable, ["run.py", "--config", str(config)], cwd=str(ROOT), env=env,
                          dimensions=(rows, columns))
    try:
        end = time.monotonic() + seconds
        while time.monotonic() < end or (not drawn(list(screen.display)) and time.monotonic() < end + 10):
            try:
                stream.feed(child.read_nonblocking(65536, timeout=0.2))
            except pexpect.TIMEOUT:
                continue
        assert child.isalive(), "\n".join(screen.display)
        return list(screen.display)
    finally:  # Ctrl-C, reading what it prints on the way out (a full pty would block its exit)
        child.kill(signal.SIGINT)
        try:
            child.expect(pexpect.EOF, timeout=20)
        finally:
            child.close(force=True)


def test_live_view_on_a_wide_terminal_leaves_no_stale_fragments(tmp_path):
    screen = terminal_screen(tmp_path, 150, 45, 10,
                             drawn=lambda lines: any(line.startswith("└") for line in lines))  # a whole table
    shown = "\n".join(screen)
    pieces = {"title": [line for line in screen if line.strip() == "leader 1000000001 -> f1, f2"],
              "top border": [line for line in screen if line.startswith("┏")],
              "header": [line for line in screen if line.startswith("┃ leader order")]}
    assert all(len(found) == 1 for found in pieces.values()), shown
    assert any("TRADED" in line or "PENDING" in line for line in screen), shown


def test_live_view_at_80_columns_shows_whole_order_ids_and_the_order_type(make_rig):
    rig = make_rig(followers=[{"name": "f1", "sizing": {"strategy": "fixed_ratio", "ratio": 0.5}},
                              {"name": "f2", "sizing": {"strategy": "fixed_ratio", "ratio": 0.1}}])
    limit = rig.place(quantity=10, price=1430.0)
    market = rig.place(quantity=4, order_type="MARKET")
    for order in (limit, market):
        wait_until(lambda o=order: all(rig.copy_row(o, f) and rig.copy_row(o, f).status != "PENDING_PLACEMENT"
                                       for f in ("f1", "f2")), message=f"copies of {order} decided")
    console = Console(file=io.StringIO(), width=80, height=24, force_terminal=False, color_system=None)
    console.print(render(rig.store, rig.config))
    lines = console.file.getvalue().splitlines()
    row = {order: next((line for line in lines if order in line), None) for order in (limit, market)}
    assert all(row.values()), "\n".join(lines)  # the whole order id, on one line
    assert "LIMIT" in row[limit] and "BUY 10" in row[limit], row[limit]
    assert "MARKET" in row[market] and "BUY 4" in row[market], row[market]
    assert "SKIPPED" in row[market], row[market]  # f2: 0.1 x 4 rounds to zero
    assert all(len(line) <= 80 for line in lines)
