"""Waking a thread that waits in a selector's `select`, from any other thread."""
from __future__ import annotations

import selectors
import socket


class Wakeup:
    """A socket pair whose reading end is registered with `selector` (its key's data is None):
    `wake()` from any thread makes the waiting `select` return; the selecting thread `drain()`s
    it when that key is ready.

        wakeup = Wakeup(selector)
        for key, _ in selector.select(timeout):
            if key.data is None:
                wakeup.drain()
    """

    def __init__(self, selector: selectors.BaseSelector) -> None:
        self._read, self._write = socket.socketpair()
        self._read.setblocking(False)
        self._write.setblocking(False)
        selector.register(self._read, selectors.EVENT_READ, None)

    def wake(self) -> None:
        try:
            self._write.send(b"\0")
        except (BlockingIOError, OSError):  # already awake (a full buffer), or closed: stopping
            pass

    def drain(self) -> None:
        try:
            while self._read.recv(4096):
                pass
        except (BlockingIOError, OSError):
            pass

    def close(self) -> None:
        self._read.close()
        self._write.close()
