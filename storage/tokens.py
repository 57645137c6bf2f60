"""Renewed access tokens, kept encrypted in a file beside the database (`<storage.path>` with the
suffix `.tokens`): a file, never a table, so no token ever reaches the database.

Renewing a Dhan token expires the old one, so a renewed token kept only in memory leaves every
configured token dead after a restart. This file keeps the newest token of each account (by client
id), encrypted with Fernet (AES-CBC with an HMAC) under a key read from the environment variable
COPYTRADER_TOKEN_KEY, written atomically with mode 0600.

Each entry carries a fingerprint of the configured token it supersedes: a stored token is the
newest only while the config still holds that token. Once the user puts a fresh token in the
config (or its environment variable), the configured one is newer and the entry is ignored.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from cryptography.fernet import Fernet, InvalidToken

try:
    import fcntl
except ImportError:  # not POSIX: writers in two processes at once are not serialised
    fcntl = None  # type: ignore[assignment]

TOKEN_KEY_ENV = "COPYTRADER_TOKEN_KEY"
MAKE_KEY = 'python -c "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())"'


class TokenFileError(Exception):
    """The token file or its key cannot be used; the message says what to do (never the token)."""


@dataclass(frozen=True)
class StoredToken:
    account: str
    token: str = field(repr=False)
    base: str  # fingerprint of the configured token this one supersedes
    saved_at: float

    def supersedes(self, configured: str) -> bool:
        """Newer than the configured token: renewed from it, or given for it by an operator."""
        return self.base == fingerprint(configured) and self.token != configured


def fingerprint(token: str) -> str:
    """Identifies a configured token inside the encrypted file without keeping the token itself."""
    return hashlib.sha256(token.encode()).hexdigest()


def token_file_path(storage_path: str | Path) -> Path:
    return Path(storage_path).with_suffix(".tokens")


def key_from_environment() -> bytes | None:
    """The Fernet key from COPYTRADER_TOKEN_KEY; None when it is not set."""
    value = os.environ.get(TOKEN_KEY_ENV, "").strip()
    if not value:
        return None
    try:
        Fernet(value.encode())
    except (ValueError, TypeError):
        raise TokenFileError(f"environment variable {TOKEN_KEY_ENV} is not a Fernet key "
                             f"(make one with: {MAKE_KEY})") from None
    return value.encode()


class TokenFile:
    def __init__(self, path: str | Path, key: bytes | str) -> None:
        self.path = Path(path)
        self._fernet = Fernet(key if isinstance(key, bytes) else key.encode())

    def __repr__(self) -> str:
        return f"TokenFile({self.path})"

    @classmethod
    def from_environment(cls, path: str | Path) -> "TokenFile":
        key = key_from_environment()
        if key is None:
            raise TokenFileError(f"environment variable {TOKEN_KEY_ENV} is not set: it is the key that keeps "
                                 f"stored tokens encrypted (make one with: {MAKE_KEY})")
        return cls(path, key)

    def stamp(self) -> tuple[int, int] | None:
        """Changes whenever the file is rewritten (by this process or an operator command)."""
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None
        return st.st_mtime_ns, st.st_size

    def load(self) -> dict[str, StoredToken]:
        """Entries by client id; empty when there is no file yet."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return {}
        try:
            raw = json.loads(self._fernet.decrypt(data))
            return {client_id: StoredToken(str(e["account"]), str(e["token"]), str(e["base"]), float(e["saved_at"]))
                    for client_id, e in raw["accounts"].items()}
        except InvalidToken:
            raise TokenFileError(f"{self.path} cannot be decrypted with the key in {TOKEN_KEY_ENV}: set the key it "
                                 "was written with, or delete the file to use the configured tokens") from None
        except (ValueError, KeyError, TypeError, AttributeError):
            raise TokenFileError(f"{self.path} is not a token file of this program") from None

    def newest(self, client_id: str, configured: str) -> str | None:
        """The stored token when it is newer than the configured one, else None."""
        entry = self.load().get(client_id)
        return entry.token if entry is not None and entry.supersedes(configured) else None

    def save(self, client_id: str, account: str, token: str, base: str) -> StoredToken:
        """Store `token` as the account's newest; `base` is the fingerprint of its configured token."""
        with self._locked():
            entries = self.load()
            entry = entries[client_id] = StoredToken(account, token, base, time.time())
            payload = {"version": 1, "accounts": {cid: {"account": e.account, "token": e.token, "base": e.base,
                                                        "saved_at": e.saved_at} for cid, e in entries.items()}}
            self._write(self._fernet.encrypt(json.dumps(payload).encode()))
        return entry

    def _write(self, data: bytes) -> None:
        """Atomically: a reader sees the old file or the new one, never a part; 0600 from creation."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as out:
            os.fchmod(fd, 0o600)  # a leftover temporary file keeps its old mode otherwise
            out.write(data)
            out.flush()
            os.fsync(fd)
        os.replace(tmp, self.path)
        dir_fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """Serialises read-modify-write between the copier and an operator command."""
        if fcntl is None:
            yield
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path.with_name(self.path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)
