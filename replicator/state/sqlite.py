"""The embedded state store: one SQLite file (WAL), shared by any number of runs of
different pairs on one host.

Many processes write one file: WAL mode (readers never wait for the writer), a busy
timeout, short ``BEGIN IMMEDIATE`` transactions (the write lock is taken up front, so a
transaction never has to upgrade a stale read snapshot, which SQLite refuses at once with
"database is locked" whatever the timeout), and no long-lived statement on this
connection (the diff streams from a private scratch database). The pair lock is an
``flock`` on a file named after the resolved state file and the canonical pair, so the
same state reached through a symlink gives the same lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import time
from typing import Any

from replicator.errors import LockedError, ReplicatorError, UsageError
from replicator.state.base import StateDamaged, StateError, StateStore, pair_lock_key

SCHEMA = """
CREATE TABLE IF NOT EXISTS pairs (
    id INTEGER PRIMARY KEY,
    source TEXT NOT NULL,
    destination TEXT NOT NULL,
    created_at REAL NOT NULL,
    UNIQUE (source, destination)
);
CREATE TABLE IF NOT EXISTS files (
    pair_id INTEGER NOT NULL,
    path TEXT NOT NULL,
    kind TEXT NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    checksum TEXT,
    copied_at REAL NOT NULL,
    PRIMARY KEY (pair_id, path)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS journal (
    pair_id INTEGER NOT NULL,
    path TEXT NOT NULL,
    run_id TEXT NOT NULL,
    state TEXT NOT NULL,          -- 'staging' | 'staged' | 'batch-staging' (tmp: JSON list)
    tmp TEXT,                     -- staged file name (NULL: written in place)
    size INTEGER,
    mtime_ns INTEGER,
    checksum TEXT,
    PRIMARY KEY (pair_id, path)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    pair_id INTEGER NOT NULL,
    started_at REAL NOT NULL,
    finished_at REAL,
    status TEXT NOT NULL,
    report TEXT
);
CREATE INDEX IF NOT EXISTS runs_by_pair ON runs (pair_id, started_at);
CREATE TABLE IF NOT EXISTS sensor_state (
    scope TEXT NOT NULL,
    key TEXT NOT NULL,
    lineage TEXT NOT NULL,
    seq INTEGER NOT NULL,
    value TEXT,
    prev TEXT,
    PRIMARY KEY (scope, key)
) WITHOUT ROWID;
"""

BUSY_TIMEOUT_S = 60.0  # one write transaction waits this long for another process's
# "database is corrupt", "file is not a database", "malformed": the file itself is bad
_DAMAGED = ("malformed", "not a database", "corrupt", "file is encrypted")


def _is_busy(exc: BaseException) -> bool:
    return isinstance(exc, sqlite3.OperationalError) and ("locked" in str(exc) or "busy" in str(exc))


class SQLiteStateStore(StateStore):
    """SQLite state store. ``path=None``: a throwaway in-memory store (a dry run with no state
    yet). ``read_only``: opened ``mode=ro``, nothing created or written (``plan``)."""

    ERRORS = (sqlite3.Error,)

    def __init__(self, path: str | None, *, read_only: bool = False) -> None:
        super().__init__()
        self.path = path
        self.read_only = read_only and path is not None
        self.persistent = path is not None
        self.real_path = os.path.realpath(path) if path is not None else None
        self._locks: list[Any] = []
        self._has_schema = True
        try:
            self.db = self._connect()
        except sqlite3.Error as exc:
            raise self._classify(exc) from exc

    @property
    def identity(self) -> str:
        return self.real_path or ":memory:"

    # ------------------------------------------------------------------ connection
    def _connect(self) -> sqlite3.Connection:
        if self.real_path is None:
            db = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
            db.executescript(SCHEMA)
            return db
        if self.read_only:
            return self._connect_read_only()
        parent = os.path.dirname(self.real_path)
        try:
            os.makedirs(parent, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"--state {self.path}: cannot create {parent}: {exc}") from exc
        db = sqlite3.connect(self.real_path, isolation_level=None, timeout=BUSY_TIMEOUT_S,
                             check_same_thread=False)
        deadline = time.monotonic() + BUSY_TIMEOUT_S
        while True:  # switching to WAL and creating the schema may meet another process doing it
            try:
                if db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                    db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=NORMAL")
                if db.execute("SELECT COUNT(*) FROM sqlite_master WHERE name='runs_by_pair'").fetchone()[0] == 0:
                    db.executescript(SCHEMA)
                return db
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc) or time.monotonic() > deadline:
                    db.close()
                    raise
                time.sleep(0.05)

    def _connect_read_only(self) -> sqlite3.Connection:
        assert self.real_path is not None
        from urllib.parse import quote

        base = "file:" + quote(self.real_path)
        try:
            db = sqlite3.connect(base + "?mode=ro", uri=True, isolation_level=None,
                                 timeout=BUSY_TIMEOUT_S, check_same_thread=False)
            db.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
        except sqlite3.OperationalError as exc:
            if "unable to open" not in str(exc) or not os.path.exists(self.real_path):
                raise
            # a WAL database in a directory we cannot write, with no -shm beside it: nobody
            # can be writing it either, so read the file as it is
            db = sqlite3.connect(base + "?mode=ro&immutable=1", uri=True, isolation_level=None,
                                 check_same_thread=False)
        names = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if not {"pairs", "files", "journal", "runs"} <= names:
            db.close()  # not initialised yet: read an empty store
            db = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
            db.executescript(SCHEMA)
        return db

    def _classify(self, exc: BaseException) -> ReplicatorError:
        text = str(exc)
        if isinstance(exc, sqlite3.DatabaseError) and any(w in text.lower() for w in _DAMAGED):
            return StateDamaged(
                f"state store {self.identity} is damaged ({text}); restore it from a backup or "
                "move it aside (the next run then compares with the destination and rebuilds it)")
        if self.real_path is not None and not self.read_only and not all(
                os.access(p, os.W_OK) for p in (self.real_path, os.path.dirname(self.real_path))
                if os.path.exists(p)):
            text += " (the state file or its directory is read-only: a copy writes it; plan only reads)"
        return StateError(f"state store {self.identity}: {text}")

    def close(self) -> None:
        for f in self._locks:
            with contextlib.suppress(OSError):
                fcntl.flock(f, fcntl.LOCK_UN)
            f.close()
        self._locks.clear()
        with contextlib.suppress(sqlite3.Error):
            self.db.close()

    # ------------------------------------------------------------------ statements
    def _execute(self, sql: str, args: tuple | dict = ()) -> sqlite3.Cursor:
        return self.db.execute(sql, args)

    def _executemany(self, sql: str, rows: list[tuple]) -> None:
        self.db.executemany(sql, rows)

    def _begin(self) -> None:
        deadline = time.monotonic() + BUSY_TIMEOUT_S
        while True:  # the busy timeout covers this; a bounded retry covers SQLITE_BUSY beyond it
            try:
                self.db.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def _commit(self) -> None:
        self.db.execute("COMMIT")

    def _rollback(self) -> None:
        if self.db.in_transaction:
            self.db.execute("ROLLBACK")

    def _insert_pair(self, source: str, destination: str) -> None:
        self.db.execute("INSERT OR IGNORE INTO pairs (source, destination, created_at) VALUES (?,?,?)",
                        (source, destination, time.time()))

    def snapshot_manifest(self, pair_id: int, scratch: Any) -> None:
        if self.real_path is None or self.read_only:
            super().snapshot_manifest(pair_id, scratch)
            return
        with self.guard():  # one statement in C, one short read transaction on the state file
            scratch.copy_manifest_from_sqlite(self.real_path, pair_id)

    # ------------------------------------------------------------------ locks
    SAMPLE_ONE_IN = 64  # sample_files first keeps about one row in this many

    def sample_files(self, pair_id: int, n: int) -> list[tuple[str, int]]:
        """As the base class (``n`` recorded files of known size, each as likely as any
        other), cheaper: SQLite's ``ORDER BY random()`` steps every row of the pair through
        its sorter (12-13 ms CPU for 50 k rows, ~50 ms for 200 k, before every re-sync's
        listing starts); a row first drawn with probability 1/64 (``random() % 64 = 0``,
        before the other terms) and then ``n`` of those at random is the same sample, in
        7-8 / 31-34 ms. Too few rows drawn (a small pair, or bad luck): the plain query."""
        rows = self._all("SELECT path, size FROM {files} WHERE pair_id=? AND random() % ? = 0 "
                         "AND kind='f' AND size >= 0 ORDER BY random() LIMIT ?",
                         (pair_id, self.SAMPLE_ONE_IN, n))
        return rows if len(rows) >= n else super().sample_files(pair_id, n)

    def _lock_file(self, source: str, destination: str) -> str:
        return f"{self.real_path}.pair-{pair_lock_key(source, destination) & (2**64 - 1):016x}.lock"

    def lock_pair(self, source: str, destination: str) -> None:
        if self.real_path is None:
            return
        name = self._lock_file(source, destination)
        try:
            f = open(name, "a")  # noqa: SIM115 (held until close())
        except OSError as exc:
            raise StateError(f"state store {self.identity}: cannot create lock {name}: {exc}") from exc
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.close()
            raise LockedError(
                "another replicator run is copying this source to this destination "
                f"(state {self.identity}, lock {name})") from None
        self._locks.append(f)

    def lock_held(self, source: str, destination: str) -> bool:
        if self.real_path is None:
            return False
        try:
            f = open(self._lock_file(source, destination))  # noqa: SIM115
        except OSError:
            return False  # never locked
        try:
            fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
            return False
        except BlockingIOError:
            return True
        finally:
            f.close()


__all__ = ["SQLiteStateStore", "StateError"]
