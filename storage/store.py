"""The store: one SQLite connection (WAL), every write a retried transaction, and the cached
statements of the hot path. The repositories (`store.inbox`, `store.copies`, ... one module each
in this package) run their domain operations in its transactions.

Why one connection behind a lock: SQLite admits one writer at a time anyway, and a single
connection keeps the number of file handles fixed however many order actors come and go.
Operator commands in another process read the same file safely thanks to WAL.

Failure policy: a locked database is retried with exponential backoff for `retry_seconds`; the
transaction rolls back each time, so the caller's effect is either stored whole or not at all.
After that `StorageUnavailable` is raised: the caller does not acknowledge its event, and the
supervisor and alerting take over.

A failure of the storage itself (a full disk, an I/O error, a file gone read-only) is not cured by
retrying at once, and retried writes were what ate any space freed on a full disk. Such a failure
takes the store *down*: its cause is logged once, every write is refused at once with
`StorageDown` (nothing acts without its record), and the checkpointer tries to recover about once
a second: a TRUNCATE checkpoint (which moves the write-ahead log into the database and gives its
space back), then a probe transaction. When that commits, the store is up again and health
watchers are told. A database file deleted or replaced under the store is `StorageLost`: fatal.
"""
from __future__ import annotations

import errno
import logging
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterable, TypeVar

import peewee as pw
from tenacity import RetryError, Retrying, retry_if_exception_type, stop_after_delay, wait_exponential_jitter

from storage import models as m
from storage.adoption import Adoption
from storage.alerts import AlertLog
from storage.control_requests import ControlRequests
from storage.copies import OPEN_STATES, Copies
from storage.dead_letters import DeadLetters
from storage.divergences import Divergences
from storage.events import OrderEvents
from storage.followers import Followers
from storage.forever import ForeverCopies
from storage.inbox import Inbox, InboxEvent
from storage.lock import StorageLock
from storage.settings import Settings
from storage.square_offs import SquareOffs

log = logging.getLogger(__name__)
T = TypeVar("T")


class StorageUnavailable(RuntimeError):
    """Writes kept failing for longer than the retry budget."""


class StorageDown(StorageUnavailable):
    """The storage cannot take writes (a full disk, an I/O error): refused at once until it recovers."""


class StorageLost(StorageDown):
    """The database file was deleted or replaced while open: writes would go to a file nobody reads."""


# For code outside storage that must tell storage trouble from its own, without importing the
# database's modules: any error of the database, and those that mean storage could not be used
# just now (a lock held too long, a busy or failing database), which are nobody's message's fault.
DATABASE_ERRORS: tuple[type[Exception], ...] = (pw.DatabaseError, sqlite3.Error)
UNAVAILABLE_ERRORS: tuple[type[Exception], ...] = (StorageUnavailable, pw.OperationalError, sqlite3.OperationalError)


# SQLite's primary result codes of a storage that cannot take writes, as opposed to a lock
# (SQLITE_BUSY, SQLITE_LOCKED) that another connection will release.
_STORAGE_FAILURES = {13: "SQLITE_FULL", 10: "SQLITE_IOERR", 8: "SQLITE_READONLY", 14: "SQLITE_CANTOPEN",
                     11: "SQLITE_CORRUPT", 26: "SQLITE_NOTADB"}
_STORAGE_FAILURE_TEXTS = ("database or disk is full", "disk i/o error", "readonly database",
                          "unable to open database file", "malformed", "not a database")
WAL_LIMIT_BYTES = 64 * 1024 * 1024  # the write-ahead log is cut back to this after a checkpoint
RECOVERY_HEADROOM_BYTES = 512 * 1024  # free space a down store waits for before it probes
_PROBE_KEY = "storage_probe"


class _Database(pw.SqliteDatabase):
    """peewee's SQLite database, except that a rollback SQLite already made is not attempted again.

    After SQLITE_FULL or an I/O error SQLite rolls the transaction back by itself; peewee's own
    ROLLBACK then failed with "cannot rollback - no transaction is active", and that error, not
    the real one, reached the caller and every log line."""

    def rollback(self) -> None:
        if self.is_closed() or self.connection().in_transaction:
            super().rollback()


class Row:
    """A row as this process stored it (or read it): what `Store.update` compares and writes
    against, lighter than a model instance."""

    __slots__ = ("model", "id", "values")

    def __init__(self, model: type[pw.Model], rowid: int | None, values: dict[str, Any]) -> None:
        self.model = model
        self.id = rowid
        self.values = values  # column name -> value as stored


class Store:
    """The copier's storage: one connection, its transactions, and the repositories that name
    every domain operation. Thread-safe.

        store = Store("data/copytrader.db", exclusive=True)    # the running copier's own
        event_id = store.inbox.record(account, order_id, dedupe_key, source, payload, received_ns)
        store.close()
    """

    def __init__(self, path: str | Path, retry_seconds: float = 10.0,
                 on_retry: Callable[[Exception], None] | None = None,
                 on_health: Callable[[bool], None] | None = None,
                 exclusive: bool = False, on_lost: Callable[[str], None] | None = None) -> None:
        """`exclusive`: the copier's own store. It holds the lock beside the database for as long
        as it is open (a second copier is refused with `StorageInUse`) and must take a write
        before anything starts (`StorageDown` otherwise). `on_lost(reason)` runs, in the
        checkpointer's thread, when the database file is found deleted or replaced."""
        self.path = str(path)
        self.retry_seconds = retry_seconds
        self.on_retry = on_retry
        self.on_health = on_health
        self.on_lost = on_lost
        self._lock = threading.RLock()
        self._statements: dict[tuple, tuple[str, tuple[Callable[[Any], Any], ...]]] = {}  # SQL, column converters
        self._defaults: dict[type[pw.Model], tuple[tuple[str, Any], ...]] = {}
        self._last_write = 0.0  # monotonic end of the last write (the checkpointer waits for a gap)
        self._depth = 0  # nesting of write() on the lock-holding thread
        self._healthy = True
        self._watchers: list[Callable[[bool], None]] = []
        self._down: str | None = None  # why writes are refused, while the store is down
        self._down_since = 0.0
        self._lost = False
        self._wake = threading.Event()  # starts the checkpointer's recovery at once
        self._file_lock: StorageLock | None = None
        self._identity: tuple[int, int] | None = None
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            if exclusive:
                self._file_lock = StorageLock.acquire(self.path)
        self.db = _Database(
            self.path, check_same_thread=False, thread_safe=False, timeout=0.5,
            pragmas={"journal_mode": "wal", "synchronous": "normal", "busy_timeout": 500,
                     "foreign_keys": 1, "wal_autocheckpoint": 0, "journal_size_limit": WAL_LIMIT_BYTES},
        )
        m.database_proxy.initialize(self.db)
        # The repositories: each domain operation of the copier is one method of one of these, and
        # runs in one transaction of this store.
        self.inbox = Inbox(self)
        self.events = OrderEvents(self)
        self.settings = Settings(self)
        self.copies = Copies(self)
        self.dead_letters = DeadLetters(self)
        self.forever = ForeverCopies(self)
        self.divergences = Divergences(self)
        self.alerts = AlertLog(self)
        self.adoption = Adoption(self)
        self.followers = Followers(self)  # operators' pauses and sizing changes, and their audit
        self.requests = ControlRequests(self)  # operator commands for the running copier
        self.square_offs = SquareOffs(self)
        try:
            if self.path != ":memory:":
                _create_private(self.path)
            with self._lock:
                self.db.connect(reuse_if_open=True)
                self.db.create_tables(m.ALL_MODELS, safe=True)
                self._add_missing_columns()
            if exclusive:
                failure = self._probe()
                if failure is not None:
                    raise failure
        except (pw.DatabaseError, sqlite3.Error, OSError) as exc:
            self._close_files()
            raise StorageDown(f"cannot use storage {self.path}: {self._describe(exc)}") from None
        except BaseException:
            self._close_files()
            raise
        if self.path != ":memory:":
            self._identity = _identity(self.path)
        # Checkpoints on a connection of their own, not inside a commit (docs/design.md).
        self._closing = threading.Event()
        self._checkpointer: threading.Thread | None = None
        if self.path != ":memory:":
            self._checkpointer = threading.Thread(target=self._checkpoint_loop, name="sqlite-checkpoint",
                                                  daemon=True)
            self._checkpointer.start()

    def _add_missing_columns(self) -> None:
        """Additive migration: a column added to a model since the database was made is added to
        its table (nullable or defaulted columns only, which is all this project adds)."""
        from playhouse.migrate import SqliteMigrator, migrate

        migrator = SqliteMigrator(self.db)
        for model in m.ALL_MODELS:
            have = {c.name for c in self.db.get_columns(model._meta.table_name)}
            missing = [f for f in model._meta.sorted_fields if f.column_name not in have]
            if missing:
                migrate(*(migrator.add_column(model._meta.table_name, f.column_name, f) for f in missing))

    def _checkpoint_loop(self, every_seconds: float = 1.0, quiet_seconds: float = 0.03,
                         at_most_seconds: float = 10.0) -> None:
        """About once a second, in a gap between writes: after `quiet_seconds` without a write, or
        after `at_most_seconds` for a store that is never quiet (docs/design.md). PASSIVE mode
        never blocks a writer.

        Each round first checks that the database file is still the one opened, and a store that
        is down tries to recover instead of checkpointing."""
        connection = sqlite3.connect(self.path, timeout=1.0)
        try:
            while True:
                self._wake.wait(every_seconds)
                self._wake.clear()
                if self._closing.is_set() or self._file_lost():
                    return
                if self._down is not None:
                    self._recover(connection)
                    continue
                give_up = time.monotonic() + at_most_seconds - every_seconds
                while time.monotonic() - self._last_write < quiet_seconds and time.monotonic() < give_up:
                    if self._closing.wait(quiet_seconds):
                        return
                try:
                    connection.execute("PRAGMA wal_checkpoint(PASSIVE)")
                    if _size(f"{self.path}-wal") > WAL_LIMIT_BYTES:  # readers kept it from being reused
                        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                except sqlite3.Error as exc:  # busy or failing: the next round tries again
                    log.debug("checkpoint skipped: %s", exc)
        finally:
            connection.close()

    # -- storage down, recovered, lost ------------------------------------------------------
    @property
    def down(self) -> bool:
        """True while writes are refused (storage down or lost); False during mere retries."""
        return self._down is not None

    @property
    def down_reason(self) -> str | None:
        return self._down

    def watch_health(self, watcher: Callable[[bool], None]) -> Callable[[], None]:
        """Call `watcher(healthy)` on every change of health, in the thread that saw it (so it must
        only hand over, e.g. tell an actor). Returns the function that stops watching."""
        self._watchers.append(watcher)
        return lambda: self._watchers.remove(watcher) if watcher in self._watchers else None

    def _describe(self, exc: BaseException) -> str:
        """The storage error as SQLite or the OS gave it, with the free space of its disk."""
        cause = exc.args[0] if exc.args and isinstance(exc.args[0], BaseException) else exc
        text = str(cause).strip() or type(cause).__name__
        if isinstance(cause, OSError) and cause.errno not in (None, errno.ENOSPC, errno.EDQUOT):
            return text  # a path that cannot be used at all: the free space is beside the point
        free = _free_bytes(self.path)
        if free is None:
            return text
        if free < RECOVERY_HEADROOM_BYTES:
            return f"{text} (its disk is full: {_human(free)} free)"
        return f"{text} ({_human(free)} free on its disk)"

    def _go_down(self, exc: BaseException) -> StorageDown:
        """A write failed for a reason of the storage itself: refuse writes until it recovers."""
        if self._down is None:
            self._down = self._describe(exc)
            self._down_since = time.monotonic()
            log.error("storage %s cannot be written: %s; no new copies until it recovers, leader orders "
                      "seen meanwhile are recorded as skips then", self.path, self._down)
            self._wake.set()
        self._set_health(False)
        return self._refusal()

    def _refusal(self) -> StorageDown:
        if self._lost:
            return StorageLost(self._down or "storage lost")
        return StorageDown(f"storage cannot be written: {self._down}")

    def _recover(self, connection: sqlite3.Connection) -> None:
        """One attempt: wait for some free space, give the log's space back, then probe."""
        free = _free_bytes(self.path)
        if free is not None and free < RECOVERY_HEADROOM_BYTES:
            return
        try:
            connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error as exc:
            log.debug("recovery checkpoint failed: %s", exc)
            return
        with self._lock:  # no write can take it down again between the probe and the change
            if self._probe() is not None:
                return
            self._down = None
            self._set_health(True)
        log.warning("storage %s writable again after %.0fs; copying resumes", self.path,
                    time.monotonic() - self._down_since)

    def _probe(self) -> BaseException | None:
        """A transaction that needs room (a row larger than a page, written and deleted): None
        when it commits, else its error."""
        with self._lock:
            try:
                with self.db.atomic():
                    self.db.execute_sql('INSERT OR REPLACE INTO "setting" ("key", "value") VALUES (?, ?)',
                                        (_PROBE_KEY, "x" * 8192))
                    self.db.execute_sql('DELETE FROM "setting" WHERE "key" = ?', (_PROBE_KEY,))
            except pw.DatabaseError as exc:
                return exc
        return None

    def _file_lost(self) -> bool:
        """True when the database file is no longer the one opened (deleted, or replaced by
        another file): then the store is lost for good and `on_lost` is told."""
        identity = _identity(self.path)
        if identity == self._identity:
            return False
        how = "deleted" if identity is None else "replaced by another file"
        reason = f"the database file {self.path} was {how} while the copier was running"
        with self._lock:  # a write in progress finishes first; none starts after
            self._lost = True
            self._down = reason
            self._set_health(False)
        log.critical("storage lost: %s; stopping, as every further write would be lost", reason)
        if self.on_lost:
            self.on_lost(reason)
        return True

    # -- transactions -------------------------------------------------------------------
    @property
    def healthy(self) -> bool:
        """False while writes are failing; actors stop taking new work until it is True again."""
        return self._healthy

    def _set_health(self, healthy: bool) -> None:
        if healthy != self._healthy:
            self._healthy = healthy
            for watcher in [self.on_health, *self._watchers]:
                if watcher is None:
                    continue
                try:
                    watcher(healthy)
                except Exception:  # a watcher must never fail the write that changed the health
                    log.exception("storage health watcher failed")

    @property
    def in_write(self) -> bool:
        """True inside `write` (on the thread that holds the store)."""
        return self._depth > 0

    def write(self, fn: Callable[[], T]) -> T:
        """Run `fn` in one transaction, retrying the whole transaction on database errors (the
        retry machinery is built only once an attempt failed: docs/design.md). `fn` may run more
        than once, so it only writes, and acts on nothing outside the database:

            # storage/settings.py: one row replaced, in one transaction
            store.write(lambda: m.Setting.insert(key=key, value=value).on_conflict_replace().execute())
        """

        def attempt() -> T:
            with self._lock:
                if self._down is not None:  # went down while this write waited for the lock
                    raise self._refusal()
                outermost = self._depth == 0
                self._depth += 1
                try:
                    with self.db.atomic():
                        result = fn()
                        if outermost:
                            self.events.flush()
                    self._set_health(True)  # under the lock, so never after another write took it down
                    return result
                except pw.DatabaseError as exc:
                    failure = _storage_failure(exc)
                    if failure is not None:
                        raise self._go_down(failure) from None
                    raise
                finally:
                    self._depth -= 1
                    if outermost:
                        self.events.discard()  # rolled back with the transaction when it failed
                        self._last_write = time.monotonic()

        if self._down is not None:
            raise self._refusal()
        try:
            return attempt()
        except pw.OperationalError as exc:
            return self._retry(attempt, exc)

    def _retry(self, attempt: Callable[[], T], first: Exception) -> T:
        def note(number: int, exc: BaseException | None) -> None:
            self._set_health(False)
            log.warning("storage write failed (attempt %d), retrying: %s", number, exc)
            if self.on_retry:
                self.on_retry(exc)  # type: ignore[arg-type]

        note(1, first)
        try:
            return Retrying(
                retry=retry_if_exception_type(pw.OperationalError),
                wait=wait_exponential_jitter(multiplier=0.02, max=1.0, jitter=0.05),
                stop=stop_after_delay(self.retry_seconds),
                before_sleep=lambda state: note(state.attempt_number + 1, state.outcome.exception()),
                reraise=False,
            )(attempt)
        except RetryError as exc:
            self._set_health(False)
            raise StorageUnavailable(f"storage writes failing for {self.retry_seconds:.0f}s: "
                                     f"{exc.last_attempt.exception()}") from None

    # -- cached statements for the hot path ------------------------------------------------
    # The few statements every order update runs, built once (peewee builds each anew: docs/design.md).
    def insert(self, model: type[pw.Model], fields: dict[str, Any], or_ignore: bool = False) -> int | None:
        """Insert one row (inside a write transaction); its rowid, or None when ignored."""
        names = tuple(fields)
        key = (model, names, or_ignore)
        statement = self._statements.get(key)
        if statement is None:
            meta = model._meta
            columns = ", ".join(f'"{meta.fields[n].column_name}"' for n in names)
            statement = (f'INSERT {"OR IGNORE " if or_ignore else ""}INTO "{meta.table_name}" ({columns}) '
                         f'VALUES ({", ".join("?" for _ in names)})', tuple(meta.fields[n].db_value for n in names))
            self._statements[key] = statement
        sql, converters = statement
        cursor = self.db.execute_sql(sql, [convert(value) for convert, value in zip(converters, fields.values())])
        return cursor.lastrowid if cursor.rowcount else None

    def add(self, model: type[pw.Model], **fields: Any) -> Row:
        """Insert a row with the model's defaults for the fields not given, as `model.create`
        would, without building a model instance (the hot path adds several per copy)."""
        for name, default in self._defaults_of(model):
            if name not in fields:
                fields[name] = default() if callable(default) else default
        return Row(model, self.insert(model, fields), fields)

    def _defaults_of(self, model: type[pw.Model]) -> tuple[tuple[str, Any], ...]:
        """Every column of `model` but an automatic id, with its default (None: NULL)."""
        defaults = self._defaults.get(model)
        if defaults is None:
            meta = model._meta
            defaults = tuple((field.name, field.default) for field in meta.sorted_fields
                             if not (field is meta.primary_key and isinstance(field, pw.AutoField)))
            self._defaults[model] = defaults
        return defaults

    def create(self, model: type[pw.Model], **fields: Any) -> pw.Model:
        """`model.create(**fields)` through a cached statement: defaults applied, id set, and the
        instance ready for later `save()` calls."""
        row = self.add(model, **fields)
        instance = model(**row.values)
        if "id" in model._meta.fields and instance.id is None:
            instance.id = row.id
        instance._dirty.clear()
        return instance

    def update(self, row: Row, changes: dict[str, Any]) -> None:
        """Write `changes` (column name -> value) to a row this store added or read (inside a write
        transaction)."""
        self._update(row.model, row.id, changes)
        row.values.update(changes)

    def save(self, instance: pw.Model) -> None:
        """`instance.save()` for a stored row (inside a write transaction): an UPDATE of its
        changed columns."""
        pk = instance._meta.primary_key
        names = sorted(f.name for f in instance.dirty_fields if f is not pk)
        if not names:
            return
        self._update(type(instance), pk.db_value(getattr(instance, pk.name)),
                     {name: getattr(instance, name) for name in names})
        instance._dirty.clear()

    def _update(self, model: type[pw.Model], key_value: Any, changes: dict[str, Any]) -> None:
        """UPDATE these columns of the row whose primary key is `key_value`, through a cached statement."""
        names = tuple(changes)
        key = (model, names, "update")
        statement = self._statements.get(key)
        if statement is None:
            meta = model._meta
            sets = ", ".join(f'"{meta.fields[n].column_name}" = ?' for n in names)
            statement = (f'UPDATE "{meta.table_name}" SET {sets} WHERE "{meta.primary_key.column_name}" = ?',
                         tuple(meta.fields[n].db_value for n in names))
            self._statements[key] = statement
        sql, converters = statement
        self.db.execute_sql(sql, [*(convert(value) for convert, value in zip(converters, changes.values())), key_value])

    def read(self, fn: Callable[[], T]) -> T:
        with self._lock:
            return fn()

    def close(self) -> None:
        self._closing.set()
        self._wake.set()
        if self._checkpointer is not None:
            self._checkpointer.join(2)
        self._close_files()

    def _close_files(self) -> None:
        with self._lock:
            if not self.db.is_closed():
                self.db.close()
        if self._file_lock is not None:
            self._file_lock.release()
            self._file_lock = None

    # -- the order actor's and the router's ---------------------------------------------------
    # They use these as they are until they move to a storage module of their own; everything else
    # asks a repository above (store.inbox, store.copies, ...).
    def pending_inbound(self, order_ids: Iterable[str] | None = None, limit: int = 5000) -> list[InboxEvent]:
        return self.inbox.pending(order_ids, limit=limit)

    def mark_done(self, event_ids: Iterable[int], outcome: str) -> None:
        """Inside a write transaction: acknowledge inbox events together with their effect."""
        self.inbox.mark_done(event_ids, outcome)

    def reopen_parked(self, letter_id: int, event_id: int) -> InboxEvent | None:
        return self.dead_letters.reopen(letter_id, event_id)

    def unresolved_dead_letters(self) -> int:
        return self.dead_letters.unresolved_count()

    def last_seq(self, order_key: str) -> int:
        return self.events.last_seq(order_key)

    def append_order_event(self, order_key: str, kind: str, payload: dict[str, Any], seq: int | None = None) -> int:
        return self.events.append(order_key, kind, payload, seq)

    def order_events(self, order_key: str) -> list[m.OrderEventRecord]:
        return self.read(lambda: self.events.flush() or list(m.OrderEventRecord.select()
                                      .where(m.OrderEventRecord.order_key == order_key)
                                      .order_by(m.OrderEventRecord.seq)))

    def adopted_copies(self, leader_order_id: str) -> dict[str, tuple[int, dict[str, Any]]]:
        return self.adoption.of(leader_order_id)

    def follower_orders(self, leader_order_id: str) -> list[m.FollowerOrder]:
        return self.read(lambda: list(m.FollowerOrder.select()
                                      .where(m.FollowerOrder.leader_order_id == leader_order_id)
                                      .order_by(m.FollowerOrder.id)))

    def leader_order(self, order_id: str) -> m.LeaderOrder | None:
        return self.read(lambda: m.LeaderOrder.get_or_none(m.LeaderOrder.order_id == order_id))

    def has_leader_order(self, order_id: str) -> bool:
        return self.read(lambda: self.db.execute_sql('SELECT 1 FROM "leader_order" WHERE "order_id" = ?',
                                                     (order_id,)).fetchone() is not None)

    def leader_order_of_copy(self, follower: str, correlation_id: str | None, broker_order_id: str) -> str | None:
        """The leader order a follower's order copies: by correlation id, else by broker order id."""
        def query() -> str | None:
            row = None
            if correlation_id:
                row = self.db.execute_sql('SELECT "leader_order_id" FROM "follower_order" WHERE "correlation_id" = ?',
                                          (correlation_id,)).fetchone()
            if row is None:
                row = self.db.execute_sql('SELECT "leader_order_id" FROM "follower_order" '
                                          'WHERE "broker_order_id" = ? AND "follower" = ?',
                                          (broker_order_id, follower)).fetchone()
            return row[0] if row else None

        return self.read(query)

    def open_leader_order_ids(self) -> list[str]:
        """Leader orders whose lifecycle is not finished for us: open at the broker, or with a copy
        still being worked."""
        def query() -> list[str]:
            leaders = {r.order_id for r in m.LeaderOrder.select(m.LeaderOrder.order_id)
                       .where(m.LeaderOrder.status.in_(OPEN_STATES))}
            copies = {r.leader_order_id for r in m.FollowerOrder.select(m.FollowerOrder.leader_order_id)
                      .where(m.FollowerOrder.status.in_(OPEN_STATES))}
            return sorted(leaders | copies)

        return self.read(query)


def _storage_failure(exc: BaseException) -> BaseException | None:
    """The error of the storage itself (see `_STORAGE_FAILURES`) behind `exc`, if any: `exc`, or
    the one it was raised while handling (a failed savepoint rollback hides the real error so)."""
    seen: BaseException | None = exc
    while seen is not None:
        cause = seen.args[0] if seen.args and isinstance(seen.args[0], sqlite3.Error) else seen
        code = getattr(cause, "sqlite_errorcode", None)  # Python 3.11+
        if code is not None and code & 0xFF in _STORAGE_FAILURES:
            return seen
        if code is None and any(marker in str(cause).lower() for marker in _STORAGE_FAILURE_TEXTS):
            return seen
        seen = seen.__context__
    return None


def _create_private(path: str) -> None:
    """The database and its -wal and -shm are readable by their owner only. SQLite gives the -wal
    and -shm the mode of the database file, so creating that one 0600 (and tightening an older
    one) is enough."""
    try:
        os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
    except FileExistsError:
        pass
    for name in (path, f"{path}-wal", f"{path}-shm"):
        try:
            if os.stat(name).st_mode & 0o077:
                os.chmod(name, 0o600)
        except OSError:  # absent, or not ours to change
            pass


def _identity(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def _free_bytes(path: str) -> int | None:
    try:
        st = os.statvfs(os.path.dirname(os.path.abspath(path)))
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def _human(size: int) -> str:
    if size < 1024:
        return f"{size} bytes"
    value = float(size)
    for unit in ("KiB", "MiB", "GiB"):
        value /= 1024
        if value < 1024:
            break
    return f"{value:.1f} {unit}"
