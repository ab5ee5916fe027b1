"""The shared state store: PostgreSQL, for copies of many pairs from separate pods or
hosts (the server Dagster's own storage uses in production will do).

Tables are prefixed ``replicator_`` so they sit beside Dagster's in one database. The
pair lock is a session-level advisory lock (``pg_try_advisory_lock``) keyed by a hash of
the canonical pair: it lives as long as this store's connection, so a run killed with
``kill -9`` (or a host that vanishes, through TCP keepalives) releases it, and the next
run completes what the journal says. A lost connection fails the run's next state write
(nothing is published after it), so two runs never work one pair. Passwords never leave
this module: :attr:`identity` is the URL without them, and they are registered with
:mod:`replicator.secrets` so no message shows them.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from replicator.errors import LockedError, ReplicatorError, UsageError
from replicator.secrets import register_secret
from replicator.state.base import StateError, StateStore, pair_lock_key

PREFIX = "replicator_"
SCHEMA = f"""
CREATE TABLE IF NOT EXISTS {PREFIX}pairs (
    id BIGSERIAL PRIMARY KEY,
    source TEXT NOT NULL,
    destination TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    UNIQUE (source, destination)
);
CREATE TABLE IF NOT EXISTS {PREFIX}files (
    pair_id BIGINT NOT NULL,
    path TEXT COLLATE "C" NOT NULL,
    kind TEXT NOT NULL,
    size BIGINT NOT NULL,
    mtime_ns BIGINT NOT NULL,
    checksum TEXT,
    copied_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (pair_id, path)
);
CREATE TABLE IF NOT EXISTS {PREFIX}journal (
    pair_id BIGINT NOT NULL,
    path TEXT COLLATE "C" NOT NULL,
    run_id TEXT NOT NULL,
    state TEXT NOT NULL,
    tmp TEXT,
    size BIGINT,
    mtime_ns BIGINT,
    checksum TEXT,
    PRIMARY KEY (pair_id, path)
);
CREATE TABLE IF NOT EXISTS {PREFIX}runs (
    run_id TEXT PRIMARY KEY,
    pair_id BIGINT NOT NULL,
    started_at DOUBLE PRECISION NOT NULL,
    finished_at DOUBLE PRECISION,
    status TEXT NOT NULL,
    report TEXT
);
CREATE INDEX IF NOT EXISTS {PREFIX}runs_by_pair ON {PREFIX}runs (pair_id, started_at);
CREATE TABLE IF NOT EXISTS {PREFIX}sensor_state (
    scope TEXT NOT NULL,
    key TEXT COLLATE "C" NOT NULL,
    lineage TEXT NOT NULL,
    seq BIGINT NOT NULL,
    value TEXT,
    prev TEXT,
    PRIMARY KEY (scope, key)
);
"""
SCHEMA_LOCK = pair_lock_key("replicator-schema", "")  # serialises CREATE TABLE across processes
SCHEMES = ("postgresql", "postgres", "postgresql+psycopg2")
# libpq's keepalives: a host that vanishes releases its pair locks within about a minute
CONNECT_DEFAULTS = {"connect_timeout": "10", "keepalives": "1", "keepalives_idle": "30",
                    "keepalives_interval": "10", "keepalives_count": "3",
                    "application_name": "replicator"}


def public_url(url: str) -> str:
    """``url`` without its password (and query string, which may carry one)."""
    parts = urlsplit(url)
    netloc = parts.hostname or ""
    if parts.port:
        netloc = f"{netloc}:{parts.port}"
    if parts.username:
        netloc = f"{parts.username}@{netloc}"
    return urlunsplit(("postgresql", netloc, parts.path, "", ""))


class NoSchema(Exception):
    """A read-only open found no replicator tables: nothing was ever recorded there."""


class PostgresStateStore(StateStore):
    """PostgreSQL state store at ``url`` (``postgresql://user@host:port/db``; the password
    from the URL, ``PGPASSWORD`` or ``~/.pgpass``)."""

    TABLES = {name: PREFIX + name for name in ("pairs", "files", "journal", "runs", "sensor_state")}
    # keys in code-point order, as Python sorts them (and as SQLite's primary key index reads
    # them): the change sensor compares a dataset's rows with its sorted listing list to list
    AGGREGATE = 'string_agg({}, chr(30) ORDER BY key COLLATE "C")'
    SEPARATOR_SQL = "chr(30)"

    def __init__(self, url: str, *, read_only: bool = False) -> None:
        import psycopg2
        import psycopg2.extras

        super().__init__()
        self.ERRORS = (psycopg2.Error,)
        self._extras = psycopg2.extras
        self.read_only = read_only
        parts = urlsplit(url)
        register_secret(parts.password)
        self._public = public_url(url)
        dsn = urlunsplit(("postgresql", parts.netloc, parts.path, parts.query, ""))
        given = {kv.split("=", 1)[0] for kv in parts.query.split("&") if kv}
        extra = {k: v for k, v in CONNECT_DEFAULTS.items() if k not in given}
        try:
            self.conn = psycopg2.connect(dsn, **extra)
        except psycopg2.ProgrammingError as exc:  # a malformed URL
            raise UsageError(f"--state {self._public}: {exc}".strip()) from None
        except psycopg2.Error as exc:
            raise StateError(f"state store {self._public}: cannot connect: {str(exc).strip()}") from None
        self.conn.autocommit = True
        self._held: set[int] = set()
        try:
            with self.guard():
                if read_only:
                    self._execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
                if not self._has_schema():
                    if read_only:
                        raise NoSchema
                    self._create_schema()
        except BaseException:
            self.close()
            raise

    @property
    def identity(self) -> str:
        return self._public

    def _classify(self, exc: BaseException) -> ReplicatorError:
        return StateError(f"state store {self._public}: {str(exc).strip()}")

    def _has_schema(self) -> bool:
        cur = self._execute("SELECT to_regclass(%s) IS NOT NULL AND to_regclass(%s) IS NOT NULL "
                            "AND to_regclass(%s) IS NOT NULL",
                            (PREFIX + "runs_by_pair", PREFIX + "journal", PREFIX + "sensor_state"))
        return bool(cur.fetchone()[0])

    def _create_schema(self) -> None:
        self._begin()
        try:
            self._execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
            self._execute(SCHEMA)
            self._commit()
        except BaseException:
            self._rollback()
            raise

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.conn.close()  # ends the session: its advisory locks go with it

    # ------------------------------------------------------------------ statements
    def sql(self, text: str) -> str:
        cached = self._sql_cache.get(text)
        if cached is None:
            cached = self._sql_cache[text] = text.format(**self.TABLES).replace("?", "%s")
        return cached

    def _execute(self, sql: str, args: tuple | dict = ()) -> Any:
        cur = self.conn.cursor()
        cur.execute(sql, args or None)
        return cur

    def _executemany(self, sql: str, rows: list[tuple]) -> None:
        with self.conn.cursor() as cur:
            self._extras.execute_batch(cur, sql, rows, page_size=1000)

    def _begin(self) -> None:
        self._execute("BEGIN")

    def _commit(self) -> None:
        self._execute("COMMIT")

    def _rollback(self) -> None:
        if not self.conn.closed:
            self._execute("ROLLBACK")

    def _insert_pair(self, source: str, destination: str) -> None:
        self._execute(self.sql("INSERT INTO {pairs} (source, destination, created_at) VALUES (?,?,?) "
                               "ON CONFLICT (source, destination) DO NOTHING"),
                      (source, destination, time.time()))

    def _execute_streamed(self, sql: str, args: tuple) -> Any:
        """A server-side cursor: the rows stream, never all in memory."""
        cur = self.conn.cursor(name=f"scan_{id(args)}", withhold=True)
        cur.itersize = 20_000
        cur.execute(sql, args)
        return cur

    # ------------------------------------------------------------------ locks
    def lock_pair(self, source: str, destination: str) -> None:
        key = pair_lock_key(source, destination)
        if key in self._held:
            return
        with self.guard():
            got = self._execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()[0]
        if not got:
            raise LockedError("another replicator run is copying this source to this destination "
                              f"(state {self._public}, advisory lock {key})")
        self._held.add(key)

    def lock_held(self, source: str, destination: str) -> bool:
        key = pair_lock_key(source, destination) & (2**64 - 1)
        with self.guard():
            return bool(self._execute(
                "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted "
                "AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
                "AND classid = %s::bigint::oid AND objid = %s::bigint::oid AND objsubid = 1)",
                (key >> 32, key & 0xFFFFFFFF)).fetchone()[0])
