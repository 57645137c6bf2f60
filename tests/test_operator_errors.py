"""What an operator sees when something the config names cannot be used: one line naming the key
or the path, exit status 2, never a traceback; and operator commands that talk to the same
accounts and URLs as the running copier, paper mode included."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

from tests.conftest import ROOT, copier_ready, wait_until


def paper_config(tmp_path: Path, mutate: Callable[[dict], Any] = lambda c: None, name: str = "copier.yaml") -> Path:
    """The shipped config (paper mode), its storage in `tmp_path`, no demo leader, any metrics port."""
    raw = yaml.safe_load((ROOT / "config.yaml").read_text())
    raw["storage"]["path"] = str(tmp_path / "copytrader.db")
    raw["instruments"]["master"] = str(ROOT / "paper" / "data" / "instruments.csv")
    raw["metrics"] = {"port": 0}
    raw["paper"]["leader_bot"] = False
    mutate(raw)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(raw))
    return path


def command(config: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "run.py", "--config", str(config), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def assert_one_line_config_error(result: subprocess.CompletedProcess, *names: str) -> None:
    """Exit status 2, no traceback, one line on stderr (besides log records) naming each of `names`."""
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 2, result.stdout + result.stderr
    lines = [line for line in result.stderr.strip().splitlines() if not line.startswith('{"ts": ')]
    assert len(lines) == 1, result.stderr
    for name in names:
        assert name in lines[0], lines[0]


def read_only_folder(tmp_path: Path) -> Path:
    """A folder this process cannot create files in (root ignores permission bits: /proc then)."""
    if os.geteuid() == 0:
        return Path("/proc")
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    return folder


# -- start-up problems ------------------------------------------------------------------------------
def test_metrics_port_in_use_is_one_line_naming_the_key(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = paper_config(tmp_path, lambda c: c.update(metrics={"port": port}))
        result = command(config, "run", "--no-view")
    assert_one_line_config_error(result, "metrics.port", str(port))


def test_storage_path_in_a_read_only_folder_is_one_line_naming_the_key_and_path(tmp_path):
    db = read_only_folder(tmp_path) / "copytrader.db"
    config = paper_config(tmp_path, lambda c: c["storage"].update(path=str(db)))
    result = command(config, "run", "--no-view")
    assert_one_line_config_error(result, "storage.path", str(db))


def test_an_instrument_master_that_is_not_a_csv_is_one_line_naming_the_key(tmp_path):
    binary = tmp_path / "master.csv"
    binary.write_bytes(bytes(range(256)) * 8)
    text = tmp_path / "master.txt"
    text.write_text("this is not an instrument master\njust some text\n")
    for master in (binary, text):
        config = paper_config(tmp_path, lambda c: c["instruments"].update(master=str(master)))
        result = command(config, "run", "--no-view")
        assert_one_line_config_error(result, "instruments.master", str(master))


@pytest.mark.parametrize("args", [["status"], ["reconcile"], ["orders"], ["dlq", "list"], ["kill-switch", "on"],
                                  ["replay", "123"]])
def test_every_operator_command_reports_a_config_problem_in_one_line(tmp_path, args):
    config = paper_config(tmp_path, lambda c: c.update(followers=[]))
    assert_one_line_config_error(command(config, *args), "followers")
    db = read_only_folder(tmp_path) / "copytrader.db"
    unusable = paper_config(tmp_path, lambda c: c["storage"].update(path=str(db)), "unusable.yaml")
    assert_one_line_config_error(command(unusable, *args), "storage.path")


# -- commands against the running copier's accounts ------------------------------------------------
@pytest.fixture
def paper_copier(tmp_path):
    """`python run.py` in paper mode (no demo leader) in its own process, ready."""
    config = paper_config(tmp_path)
    with open(tmp_path / "run.log", "wb") as log:
        proc = subprocess.Popen([sys.executable, "run.py", "--config", str(config), "run", "--no-view"], cwd=ROOT,
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        def ready() -> bool:
            assert proc.poll() is None, (tmp_path / "run.log").read_text()
            return copier_ready(tmp_path / "copytrader.db")

        wait_until(ready, 30, message="the paper copier ready")
        yield config
    finally:
        proc.terminate()
        proc.wait(15)


def test_reconcile_in_paper_mode_compares_the_running_paper_exchange(paper_copier):
    result = command(paper_copier, "reconcile")
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 divergences" in result.stdout


def test_reconcile_in_paper_mode_without_a_running_copier_says_why(tmp_path):
    result = command(paper_config(tmp_path), "reconcile")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert "paper" in result.stderr and "python run.py" in result.stderr


def test_orders_with_an_unknown_follower_says_so(tmp_path):
    result = command(paper_config(tmp_path), "orders", "--follower", "nobody")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "nobody" in result.stderr and "f1" in result.stderr and "Traceback" not in result.stderr


def test_orders_prints_column_headers(tmp_path):
    result = command(paper_config(tmp_path), "orders")
    assert result.returncode == 0, result.stderr
    header = result.stdout.splitlines()[0].split()
    assert header[:2] == ["leader", "order"] and "symbol" in header and "status" in header
