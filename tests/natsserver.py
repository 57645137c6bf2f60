"""A NATS server with JetStream for the shard tests: Debian's `nats-server`, in a process of its own,
its storage in a folder that outlives it (so a killed server restarts with what it stored).

Where `nats-server` is missing the tests that need it are skipped, saying how to get it, except
under CI=true, where they fail (./test.sh installs it, as it installs prometheus).
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
from pathlib import Path

import pytest

from tests.conftest import free_port, wait_until

MISSING = ("`nats-server` is not installed: the shard tests need Debian's nats-server package "
           "(sudo apt-get install -y nats-server, or run ./test.sh, which installs it)")


def binary() -> str | None:
    """nats-server on PATH, or where Debian puts it (/usr/sbin is not on every user's PATH; the
    folders searched besides PATH are $NATS_SERVER_SEARCH's when it is set)."""
    extra = os.environ.get("NATS_SERVER_SEARCH", "/usr/sbin:/usr/local/sbin")
    return shutil.which("nats-server", path=os.pathsep.join(p for p in (os.environ.get("PATH", ""), extra) if p))


def require() -> str:
    path = binary()
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail(MISSING, pytrace=False)
        pytest.skip(MISSING)
    return path


class NatsServer:
    """`nats-server -js` on a loopback port, storing under `folder`."""

    def __init__(self, folder: Path, path: str | None = None) -> None:
        self.path = path or require()
        self.folder = folder
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> "NatsServer":
        self.folder.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen([self.path, "-js", "-sd", str(self.folder), "-a", "127.0.0.1", "-p",
                                      str(self.port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(self._listening, 10, interval=0.05, message=f"nats-server listening on port {self.port}")
        return self

    def _listening(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"nats-server exited with status {self.proc.returncode} before it listened")
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return True
        except OSError:
            return False

    def kill(self) -> None:
        """SIGKILL: no shutdown of its own, only what it wrote survives."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
