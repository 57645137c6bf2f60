"""One copier per database: an exclusive OS lock on a file beside it, held while the copier runs.

Two copiers on one database each placed copies of the same leader orders (their correlation ids
made most of them fail, not all) and each followed every modification. The lock is the kernel's
(`flock`), so a copier that dies, even by SIGKILL, releases it with its last file descriptor and
the next start is never refused by a stale file. The file holds the holder's pid, for the message
the second copier prints. Operator commands do not take the lock: they read (or make single
writes) beside the running copier, which SQLite's own locking allows.
"""
from __future__ import annotations

import fcntl
import os
from pathlib import Path


class StorageInUse(RuntimeError):
    """Another process holds the storage's lock."""

    def __init__(self, path: str, pid: int | None) -> None:
        holder = f"pid {pid}" if pid else "a process whose pid could not be read"
        super().__init__(f"storage {path} is in use by another copier ({holder}); stop it first, "
                         f"or give this one its own storage.path")
        self.pid = pid


class StorageLock:
    """`StorageLock.acquire(db_path)` takes `<db_path>.lock` or raises `StorageInUse`."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, db_path: str | os.PathLike[str]) -> "StorageLock":
        path = Path(f"{db_path}.lock")
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _read_pid(fd)
            os.close(fd)
            raise StorageInUse(str(db_path), pid) from None
        except BaseException:
            os.close(fd)
            raise
        try:  # best effort: on a full disk the pid cannot be written, and the lock holds all the same
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError:
            pass
        return cls(path, fd)

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the last descriptor releases the flock
            self._fd = None


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode(errors="replace").strip()
        return int(text) if text else None
    except (OSError, ValueError):
        return None
