"""The state store: what was copied (manifest), what is being published (journal),
and the history of runs. Embedded SQLite (WAL) by default.

Only the driver touches the store (never a worker thread or a Spark task), so one
connection serves a run. Listings go to TEMP tables of that connection, which SQLite
keeps on disk: the diff is a join, and never loads the tree into Python objects.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator
from typing import Any

from replicator.errors import LockedError, UsageError

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
    state TEXT NOT NULL,          -- 'staging' | 'staged'
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
"""

LISTING_COLUMNS = "path TEXT PRIMARY KEY, kind TEXT, size INTEGER, mtime_ns INTEGER, mode INTEGER, checksum TEXT, version TEXT, held INTEGER"


class StateStore:
    """SQLite state store. ``path=None`` gives a throwaway in-memory store (dry runs)."""

    def __init__(self, path: str | None, *, create: bool = True) -> None:
        self.path = path
        if path is not None:
            if not create and not os.path.exists(path):
                path = None  # nothing recorded yet: use an empty store, create nothing
            else:
                parent = os.path.dirname(os.path.abspath(path))
                try:
                    os.makedirs(parent, exist_ok=True)
                except OSError as exc:
                    raise UsageError(f"--state {path}: cannot create {parent}: {exc}") from exc
        self._persistent = path is not None
        try:
            self.db = sqlite3.connect(path or ":memory:", isolation_level=None, timeout=60,
                                      check_same_thread=False)
            self.db.execute("PRAGMA temp_store=FILE")
            if self._persistent:
                self.db.execute("PRAGMA journal_mode=WAL")
                self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.execute("PRAGMA cache_size=-65536")
            self.db.executescript(SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise UsageError(f"--state {self.path}: not a usable state store: {exc}") from exc
        self._locks: list[Any] = []

    def close(self) -> None:
        for f in self._locks:
            with contextlib.suppress(OSError):
                fcntl.flock(f, fcntl.LOCK_UN)
            f.close()
        self._locks.clear()
        self.db.close()

    # ------------------------------------------------------------------ transactions
    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    # ------------------------------------------------------------------ pairs and locks
    def find_pair(self, source: str, destination: str) -> int | None:
        row = self.db.execute(
            "SELECT id FROM pairs WHERE source=? AND destination=?", (source, destination)
        ).fetchone()
        return row[0] if row else None

    def pair_id(self, source: str, destination: str) -> int:
        """The pair's id, created on first use."""
        found = self.find_pair(source, destination)
        if found is not None:
            return found
        with self.transaction() as db:
            cur = db.execute(
                "INSERT INTO pairs (source, destination, created_at) VALUES (?,?,?)",
                (source, destination, time.time()),
            )
            return int(cur.lastrowid)

    def lock_pair(self, pair_id: int) -> None:
        """Hold an exclusive lock on the pair for the life of this store (one run at a time)."""
        if not self._persistent:
            return
        f = open(f"{self.path}.pair-{pair_id}.lock", "a")  # noqa: SIM115
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.close()
            raise LockedError(
                "another replicator run is copying this source to this destination "
                f"(lock {self.path}.pair-{pair_id}.lock)"
            ) from None
        self._locks.append(f)

    # ------------------------------------------------------------------ manifest
    def has_records(self, pair_id: int) -> bool:
        return self.db.execute("SELECT 1 FROM files WHERE pair_id=? LIMIT 1", (pair_id,)).fetchone() is not None

    def record(self, pair_id: int, rows: Iterable[tuple[str, str, int, int, str | None]],
               db: sqlite3.Connection | None = None) -> None:
        """Upsert manifest rows ``(path, kind, size, mtime_ns, checksum)``."""
        now = time.time()
        (db or self.db).executemany(
            "INSERT OR REPLACE INTO files (pair_id, path, kind, size, mtime_ns, checksum, copied_at) "
            "VALUES (?,?,?,?,?,?,?)",
            [(pair_id, p, k, s, m, c, now) for (p, k, s, m, c) in rows],
        )

    def forget(self, pair_id: int, paths: Iterable[str], db: sqlite3.Connection | None = None) -> None:
        (db or self.db).executemany(
            "DELETE FROM files WHERE pair_id=? AND path=?", [(pair_id, p) for p in paths]
        )

    def manifest_rows(self, pair_id: int) -> Iterator[tuple]:
        yield from self.db.execute(
            "SELECT path, kind, size, mtime_ns, checksum, copied_at FROM files WHERE pair_id=? ORDER BY path",
            (pair_id,),
        )

    # ------------------------------------------------------------------ journal
    def journal_staging(self, pair_id: int, run_id: str, rows: Iterable[tuple[str, str | None]]) -> None:
        with self.transaction() as db:
            db.executemany(
                "INSERT OR REPLACE INTO journal (pair_id, path, run_id, state, tmp) VALUES (?,?,?,'staging',?)",
                [(pair_id, p, run_id, tmp) for (p, tmp) in rows],
            )

    def journal_staged(self, pair_id: int, rows: Iterable[tuple[str, int, int, str | None]]) -> None:
        with self.transaction() as db:
            db.executemany(
                "UPDATE journal SET state='staged', size=?, mtime_ns=?, checksum=? WHERE pair_id=? AND path=?",
                [(s, m, c, pair_id, p) for (p, s, m, c) in rows],
            )

    def journal_clear(self, pair_id: int, paths: Iterable[str], db: sqlite3.Connection | None = None) -> None:
        (db or self.db).executemany(
            "DELETE FROM journal WHERE pair_id=? AND path=?", [(pair_id, p) for p in paths]
        )

    def journal_entries(self, pair_id: int) -> list[tuple]:
        return self.db.execute(
            "SELECT path, run_id, state, tmp, size, mtime_ns, checksum FROM journal WHERE pair_id=? ORDER BY path",
            (pair_id,),
        ).fetchall()

    def publish_done(self, pair_id: int, rows: list[tuple[str, str, int, int, str | None]]) -> None:
        """Record published files and drop their journal rows, in one transaction."""
        with self.transaction() as db:
            self.record(pair_id, rows, db)
            self.journal_clear(pair_id, [r[0] for r in rows], db)

    # ------------------------------------------------------------------ runs
    def start_run(self, pair_id: int, run_id: str, started_at: float) -> None:
        if not self._persistent:
            return
        with self.transaction() as db:
            db.execute(
                "UPDATE runs SET status='interrupted' WHERE pair_id=? AND status='running'", (pair_id,)
            )
            db.execute(
                "INSERT INTO runs (run_id, pair_id, started_at, status) VALUES (?,?,?,'running')",
                (run_id, pair_id, started_at),
            )

    def finish_run(self, run_id: str, status: str, report: dict[str, Any]) -> None:
        if not self._persistent:
            return
        with self.transaction() as db:
            db.execute(
                "UPDATE runs SET finished_at=?, status=?, report=? WHERE run_id=?",
                (time.time(), status, json.dumps(report, default=str), run_id),
            )

    def last_runs(self, pair_id: int, limit: int = 10) -> list[dict[str, Any]]:
        rows = self.db.execute(
            "SELECT run_id, started_at, finished_at, status, report FROM runs WHERE pair_id=? "
            "ORDER BY started_at DESC LIMIT ?",
            (pair_id, limit),
        ).fetchall()
        return [
            {"run_id": r[0], "started_at": r[1], "finished_at": r[2], "status": r[3],
             "report": json.loads(r[4]) if r[4] else None}
            for r in rows
        ]

    # ------------------------------------------------------------------ scratch listings
    def new_listing(self, name: str) -> None:
        self.db.execute(f"DROP TABLE IF EXISTS temp.{name}")
        self.db.execute(f"CREATE TEMP TABLE {name} ({LISTING_COLUMNS}) WITHOUT ROWID")

    def add_listing(self, name: str, rows: list[tuple]) -> None:
        with self.transaction() as db:
            db.executemany(f"INSERT OR REPLACE INTO temp.{name} VALUES (?,?,?,?,?,?,?,?)", rows)
