"""The durable state store: what was copied (manifest), what is being published (journal),
the history of runs, and the one-run-per-pair lock.

One class per back end (:mod:`replicator.state.sqlite`, :mod:`replicator.state.postgres`)
behind this interface; the engine calls its methods and never writes SQL. The SQL both
back ends share lives here, written once with ``?`` placeholders and ``{table}`` names
that each back end maps to its own. Every write is one short transaction, so many runs
of different pairs share one store. Per-run scratch work (listings, the diff join, the
work list) is not here: it goes to a private :class:`replicator.state.scratch.Scratch`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from replicator.errors import LockedError, ReplicatorError, UsageError

ManifestRow = tuple[str, str, int, int, str | None]  # (path, kind, size, mtime_ns, checksum)
_SCOPES_PER_QUERY = 200  # scopes per sensor_values query (bound parameters)
_SEPARATOR = "\x1e"  # ASCII record separator: between keys and values of sensor_values


class StateError(ReplicatorError):
    """The state store failed under a run (disk full, connection lost, I/O error). Exit 1."""


class StateDamaged(UsageError):
    """The state store is not a usable state store (damaged pages, not a database). Exit 2."""


def pair_lock_key(source: str, destination: str) -> int:
    """A signed 64-bit key for the canonical pair (PostgreSQL advisory locks take a bigint)."""
    digest = hashlib.sha256(f"replicator-pair\0{source}\0{destination}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class StateStore:
    """Interface and shared SQL of a state store. Use :func:`replicator.state.open_store`."""

    #: table names as the back end spells them
    TABLES: dict[str, str] = {"pairs": "pairs", "files": "files", "journal": "journal", "runs": "runs",
                              "sensor_state": "sensor_state"}
    #: the back end's DB-API errors, turned into StateError / StateDamaged at the boundary
    ERRORS: tuple[type[BaseException], ...] = ()
    #: the back end's string aggregate (``{}``: the expression) and its spelling of "\x1e"
    AGGREGATE: str = "group_concat({}, char(30))"
    SEPARATOR_SQL: str = "char(30)"
    read_only: bool = False
    #: False: a throwaway store (a dry run with no state yet); nothing is locked or kept
    persistent: bool = True

    def __init__(self) -> None:
        self._sql_cache: dict[str, str] = {}

    # ------------------------------------------------------------------ back end hooks
    @property
    def identity(self) -> str:
        """What the store is, for messages: a resolved path or a URL without its password."""
        raise NotImplementedError

    def _execute(self, sql: str, args: tuple | dict = ()) -> Any:
        """Run one statement, return the cursor."""
        raise NotImplementedError

    def _executemany(self, sql: str, rows: list[tuple]) -> None:
        raise NotImplementedError

    def _execute_streamed(self, sql: str, args: tuple) -> Any:
        """Run one query whose rows the caller fetches in parts (a lazy cursor)."""
        return self._execute(sql, args)

    def _begin(self) -> None:
        raise NotImplementedError

    def _commit(self) -> None:
        raise NotImplementedError

    def _rollback(self) -> None:
        raise NotImplementedError

    def _insert_pair(self, source: str, destination: str) -> None:
        raise NotImplementedError

    def lock_pair(self, source: str, destination: str) -> None:
        """Hold the pair's exclusive lock until :meth:`close`; LockedError if another run has it."""
        raise NotImplementedError

    def lock_held(self, source: str, destination: str) -> bool:
        """Whether some run (this one or another) holds the pair's lock now."""
        raise NotImplementedError

    def lock_pair_waiting(self, source: str, destination: str, wait_s: float, *,
                          clock: Callable[[], float] = time.monotonic,
                          sleep: Callable[[float], None] = time.sleep) -> None:
        """:meth:`lock_pair`, waiting up to ``wait_s`` seconds for another run of the pair to
        finish (polling with backoff, 0.2 s up to 5 s); LockedError once the wait is over.
        ``wait_s`` 0: refuse at once, as :meth:`lock_pair`."""
        deadline = clock() + max(0.0, wait_s)
        delay = 0.2
        while True:
            try:
                self.lock_pair(source, destination)
                return
            except LockedError as exc:
                left = deadline - clock()
                if left <= 0:
                    if wait_s > 0:
                        raise LockedError(f"{exc} (waited {wait_s:g} s)") from None
                    raise
                sleep(min(delay, left))
                delay = min(delay * 2, 5.0)

    def close(self) -> None:
        raise NotImplementedError

    def _classify(self, exc: BaseException) -> ReplicatorError:
        return StateError(f"state store {self.identity}: {exc}")

    # ------------------------------------------------------------------ helpers
    def sql(self, text: str) -> str:
        """``text`` with ``{files}``-style table names of this back end."""
        cached = self._sql_cache.get(text)
        if cached is None:
            cached = self._sql_cache[text] = text.format(**self.TABLES)
        return cached

    @contextlib.contextmanager
    def guard(self) -> Iterator[None]:
        """Turn the back end's errors into ours (no raw driver traceback reaches a user)."""
        try:
            yield
        except self.ERRORS as exc:
            raise self._classify(exc) from exc

    def _run(self, text: str, args: tuple | dict = ()) -> Any:
        with self.guard():
            return self._execute(self.sql(text), args)

    def _all(self, text: str, args: tuple | dict = ()) -> list[tuple]:
        with self.guard():
            return list(self._execute(self.sql(text), args).fetchall())

    def _many(self, text: str, rows: list[tuple]) -> None:
        if rows:
            with self.guard():
                self._executemany(self.sql(text), rows)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[StateStore]:
        """One short write transaction; everything in it commits together or not at all."""
        if self.read_only:
            raise UsageError(f"state store {self.identity} is open read-only")
        with self.guard():
            self._begin()
        try:
            yield self
        except BaseException:
            with contextlib.suppress(*self.ERRORS):
                self._rollback()
            raise
        try:
            with self.guard():
                self._commit()
        except BaseException:
            with contextlib.suppress(*self.ERRORS):
                self._rollback()
            raise

    # ------------------------------------------------------------------ pairs
    def find_pair(self, source: str, destination: str) -> int | None:
        rows = self._all("SELECT id FROM {pairs} WHERE source=? AND destination=?", (source, destination))
        return int(rows[0][0]) if rows else None

    def pair_id(self, source: str, destination: str) -> int:
        """The pair's id, created on first use."""
        found = self.find_pair(source, destination)
        if found is not None:
            return found
        with self.transaction():
            self._insert_pair(source, destination)
        found = self.find_pair(source, destination)
        assert found is not None
        return found

    def pair_of(self, pair_id: int) -> tuple[str, str] | None:
        rows = self._all("SELECT source, destination FROM {pairs} WHERE id=?", (pair_id,))
        return (rows[0][0], rows[0][1]) if rows else None

    # ------------------------------------------------------------------ manifest
    def has_records(self, pair_id: int) -> bool:
        return bool(self._all("SELECT 1 FROM {files} WHERE pair_id=? LIMIT 1", (pair_id,)))

    def record(self, pair_id: int, rows: Iterable[ManifestRow]) -> None:
        """Upsert manifest rows ``(path, kind, size, mtime_ns, checksum)`` (inside or outside
        a transaction)."""
        now = time.time()
        self._many(
            "INSERT INTO {files} (pair_id, path, kind, size, mtime_ns, checksum, copied_at) "
            "VALUES (?,?,?,?,?,?,?) ON CONFLICT (pair_id, path) DO UPDATE SET kind=excluded.kind, "
            "size=excluded.size, mtime_ns=excluded.mtime_ns, checksum=excluded.checksum, "
            "copied_at=excluded.copied_at",
            [(pair_id, p, k, s, m, c, now) for (p, k, s, m, c) in rows],
        )

    def forget(self, pair_id: int, paths: Iterable[str]) -> None:
        self._many("DELETE FROM {files} WHERE pair_id=? AND path=?", [(pair_id, p) for p in paths])

    def manifest_rows(self, pair_id: int) -> Iterator[tuple]:
        """``(path, kind, size, mtime_ns, checksum, copied_at)`` in path order."""
        yield from self._all(
            "SELECT path, kind, size, mtime_ns, checksum, copied_at FROM {files} WHERE pair_id=? ORDER BY path",
            (pair_id,))

    def snapshot_manifest(self, pair_id: int, scratch: Any) -> None:
        """Copy the pair's manifest into ``scratch`` (its ``manifest`` table) for the diff."""
        with self.manifest_scan(pair_id) as rows, self.guard():
            scratch.load_manifest(rows)

    @contextlib.contextmanager
    def manifest_scan(self, pair_id: int, since: str | None = None,
                      until: str | None = None, *, brief: bool = False) -> Iterator[Iterable[tuple]]:
        """The pair's manifest rows ``(path, kind, size, mtime_ns, checksum, copied_at)``,
        streamed (never all in memory) in code point order of ``path``, the order of
        :func:`replicator.listing.walk` with ``ordered=True``, so one pass merges the two;
        only paths ``>= since`` and ``< until`` where given. The rows are the driver's own
        cursor (no Python layer per row): iterate them inside :meth:`guard`. ``brief``: only
        ``(path, kind, size, mtime_ns)``, what the re-sync's merge compares (the rest of the
        rows it does not settle comes from :meth:`manifest_details`)."""
        where, args = "pair_id=?", [pair_id]
        if since is not None:
            where, args = where + " AND path >= ?", [*args, since]
        if until is not None:
            where, args = where + " AND path < ?", [*args, until]
        with self.guard():
            cols = "path, kind, size, mtime_ns" if brief else "path, kind, size, mtime_ns, checksum, copied_at"
            cur = self._execute_streamed(self.sql(
                f"SELECT {cols} FROM {{files}} WHERE {where} ORDER BY path"),
                tuple(args))  # byte order of UTF-8 on both back ends
        try:
            yield cur
        finally:
            with contextlib.suppress(*self.ERRORS):
                cur.close()

    DETAILS_CHUNK = 500  # paths per query of manifest_details

    def manifest_details(self, pair_id: int, paths: list[str]) -> dict[str, tuple[str | None, float]]:
        """``{path: (checksum, copied_at)}`` of the pair's recorded ``paths`` (a path not
        recorded is left out): the columns a brief :meth:`manifest_scan` leaves out, for the
        few rows a re-sync's merge does not settle. Reading them for every row cost more
        than the merge needed (0.11-0.14 s against 0.09-0.10 s CPU for 101 k rows)."""
        out: dict[str, tuple[str | None, float]] = {}
        for i in range(0, len(paths), self.DETAILS_CHUNK):
            part = paths[i:i + self.DETAILS_CHUNK]
            marks = ",".join("?" * len(part))
            for path, checksum, copied_at in self._all(
                    f"SELECT path, checksum, copied_at FROM {{files}} WHERE pair_id=? AND path IN ({marks})",
                    (pair_id, *part)):
                out[path] = (checksum, copied_at)
        return out

    def manifest_split(self, pair_id: int) -> tuple[int, str, str, str] | None:
        """The number of rows and the first, the middle and the last recorded path of the pair
        (None: no rows): where a listing can be cut in two parts of about the same size."""
        # three subqueries: min and max each one seek of the key; in one aggregate with the
        # count they made SQLite read every path (57 ms against 9 for 202 k rows)
        rows = self._all("SELECT (SELECT count(*) FROM {files} WHERE pair_id=?), "
                         "(SELECT min(path) FROM {files} WHERE pair_id=?), "
                         "(SELECT max(path) FROM {files} WHERE pair_id=?)", (pair_id,) * 3)
        count, first, last = rows[0] if rows else (0, None, None)
        if not count:
            return None
        middle = self._all("SELECT path FROM {files} WHERE pair_id=? ORDER BY path LIMIT 1 OFFSET ?",
                           (pair_id, int(count) // 2))
        return int(count), first, middle[0][0], last

    def sample_files(self, pair_id: int, n: int) -> list[tuple[str, int]]:
        """``(path, size)`` of up to ``n`` recorded files of known size, at random."""
        return self._all("SELECT path, size FROM {files} WHERE pair_id=? AND kind='f' AND size >= 0 "
                         "ORDER BY random() LIMIT ?", (pair_id, n))

    def recorded_dirs(self, pair_id: int) -> list[str]:
        """The paths of the pair's recorded directories (any order)."""
        return [r[0] for r in self._all("SELECT path FROM {files} WHERE pair_id=? AND kind='d'", (pair_id,))]

    def commit(self, pair_id: int, *, record: Iterable[ManifestRow] = (), forget: Iterable[str] = (),
               clear: Iterable[str] = ()) -> None:
        """Record, forget and drop journal rows in one transaction."""
        with self.transaction():
            self.record(pair_id, record)
            self.forget(pair_id, forget)
            self.journal_clear(pair_id, clear)

    # ------------------------------------------------------------------ journal
    def journal_staging(self, pair_id: int, run_id: str, rows: Iterable[tuple[str, str | None]]) -> None:
        with self.transaction():
            self._many(
                "INSERT INTO {journal} (pair_id, path, run_id, state, tmp) VALUES (?,?,?,'staging',?) "
                "ON CONFLICT (pair_id, path) DO UPDATE SET run_id=excluded.run_id, state='staging', "
                "tmp=excluded.tmp, size=NULL, mtime_ns=NULL, checksum=NULL",
                [(pair_id, p, run_id, tmp) for (p, tmp) in rows],
            )

    def journal_batch(self, pair_id: int, run_id: str, key: str, staged: list[str]) -> None:
        """Journal the staged names of a whole batch of files as one row ``key`` (state
        ``batch-staging``, the names as a JSON list in ``tmp``): one row instead of one per
        file. A run that dies leaves the row, and recovery removes whatever of those names
        still exists (partial or verified bytes, never published); the batch's files that
        were renamed but not yet recorded are copied again by the next run."""
        with self.transaction():
            self._run(
                "INSERT INTO {journal} (pair_id, path, run_id, state, tmp) VALUES (?,?,?,'batch-staging',?) "
                "ON CONFLICT (pair_id, path) DO UPDATE SET run_id=excluded.run_id, state=excluded.state, "
                "tmp=excluded.tmp, size=NULL, mtime_ns=NULL, checksum=NULL",
                (pair_id, key, run_id, json.dumps(staged)))

    def journal_staged(self, pair_id: int, rows: Iterable[tuple[str, int, int, str | None]]) -> None:
        with self.transaction():
            self._many(
                "UPDATE {journal} SET state='staged', size=?, mtime_ns=?, checksum=? WHERE pair_id=? AND path=?",
                [(s, m, c, pair_id, p) for (p, s, m, c) in rows],
            )

    def journal_mark(self, pair_id: int, run_id: str, path: str, state: str, tmp: str | None) -> None:
        """Journal one path in ``state``: ``staging`` as :meth:`journal_staging`, or the
        states of an untar output directory (``dir-staging``, ``dir-swap``; see
        :mod:`replicator.transforms`)."""
        with self.transaction():
            self._run(
                "INSERT INTO {journal} (pair_id, path, run_id, state, tmp) VALUES (?,?,?,?,?) "
                "ON CONFLICT (pair_id, path) DO UPDATE SET run_id=excluded.run_id, state=excluded.state, "
                "tmp=excluded.tmp, size=NULL, mtime_ns=NULL, checksum=NULL",
                (pair_id, path, run_id, state, tmp))

    def journal_clear(self, pair_id: int, paths: Iterable[str]) -> None:
        self._many("DELETE FROM {journal} WHERE pair_id=? AND path=?", [(pair_id, p) for p in paths])

    def journal_entries(self, pair_id: int) -> list[tuple]:
        """``(path, run_id, state, tmp, size, mtime_ns, checksum)`` in path order."""
        return self._all(
            "SELECT path, run_id, state, tmp, size, mtime_ns, checksum FROM {journal} WHERE pair_id=? ORDER BY path",
            (pair_id,))

    # ------------------------------------------------------------------ runs
    def start_run(self, pair_id: int, run_id: str, started_at: float) -> None:
        """Record a run as running (under the pair lock: any other 'running' row of the pair
        is a run that died)."""
        with self.transaction():
            self._run("UPDATE {runs} SET status='interrupted' WHERE pair_id=? AND status='running'", (pair_id,))
            self._run("INSERT INTO {runs} (run_id, pair_id, started_at, status) VALUES (?,?,?,'running')",
                      (run_id, pair_id, started_at))

    def finish_run(self, run_id: str, status: str, report: dict[str, Any]) -> None:
        with self.transaction():
            self._run("UPDATE {runs} SET finished_at=?, status=?, report=? WHERE run_id=?",
                      (time.time(), status, json.dumps(report, default=str), run_id))

    def last_runs(self, pair_id: int, limit: int = 10) -> list[dict[str, Any]]:
        """The pair's latest runs, newest first. A run recorded as running whose pair lock
        nobody holds died (killed, or its store failed under it): it shows as interrupted."""
        rows = self._all(
            "SELECT run_id, started_at, finished_at, status, report FROM {runs} WHERE pair_id=? "
            "ORDER BY started_at DESC LIMIT ?", (pair_id, limit))
        out = [{"run_id": r[0], "started_at": r[1], "finished_at": r[2], "status": r[3],
                "report": json.loads(r[4]) if r[4] else None} for r in rows]
        if any(r["status"] == "running" for r in out):
            pair = self.pair_of(pair_id)
            if pair is not None and not self.lock_held(*pair):
                for r in out:
                    if r["status"] == "running":
                        r["status"] = "interrupted"
        return out

    # ------------------------------------------------------------------ sensor state
    # Per-key state of a caller that must not keep it in memory or in a small cursor (the
    # Dagster change sensor's per-partition fingerprints). Rows ``(key, lineage, seq, value,
    # prev)`` under a ``scope``; what lineage/seq/prev mean is the caller's business (the
    # sensor uses them to ignore writes of a tick whose cursor was never committed).
    def sensor_rows(self, scope: str) -> list[tuple[str, str, int, str | None, str | None]]:
        """Every row of ``scope``: ``(key, lineage, seq, value, prev)``."""
        return [(r[0], r[1], int(r[2]), r[3], r[4]) for r in self._all(
            "SELECT key, lineage, seq, value, prev FROM {sensor_state} WHERE scope=?", (scope,))]

    def sensor_values(
        self, scopes: Iterable[str], lineage: str, seq: int,
    ) -> tuple[dict[str, dict[str, str]], dict[str, dict[str, str | None]]]:
        """The rows of ``lineage`` in ``scopes`` as of ``seq``: ``(values, later)`` where
        ``values[scope][key]`` is ``value`` for rows written at ``seq`` or before and ``prev``
        for later ones (None left out), and ``later[scope][key]`` is the ``prev`` of each
        row written after ``seq``. One aggregated query per ``_SCOPES_PER_QUERY`` scopes: the
        database joins each scope's rows into one string, so a tick reads 100,000 rows as
        100 strings (a scope whose keys or values hold the separator is read row by row)."""
        wanted = sorted(set(scopes))
        values: dict[str, dict[str, str]] = {scope: {} for scope in wanted}
        later: dict[str, dict[str, str | None]] = {scope: {} for scope in wanted}
        for i in range(0, len(wanted), _SCOPES_PER_QUERY):
            part = tuple(wanted[i : i + _SCOPES_PER_QUERY])
            marks = ",".join("?" * len(part))
            joined = self.AGGREGATE.format(f"key || {self.SEPARATOR_SQL} || v")
            for scope, count, text in self._all(
                f"SELECT scope, count(v), {joined} FROM (SELECT scope, key, CASE WHEN seq <= ? "
                f"THEN value ELSE prev END AS v FROM {{sensor_state}} WHERE scope IN ({marks}) "
                "AND lineage = ?) AS t GROUP BY scope", (seq, *part, lineage),
            ):
                items = text.split(_SEPARATOR) if text else []
                if len(items) == 2 * int(count):
                    values[scope] = dict(zip(items[0::2], items[1::2], strict=True))
                else:  # the separator inside a key or a value: read this scope's rows
                    values[scope] = {k: (v if q <= seq else p) for k, _, q, v, p in self.sensor_rows(scope)
                                     if (v if q <= seq else p) is not None}
            for scope, key, prev in self._all(
                f"SELECT scope, key, prev FROM {{sensor_state}} WHERE scope IN ({marks}) AND lineage = ? "
                "AND seq > ?", (*part, lineage, seq),
            ):
                later[scope][key] = prev
        return values, later

    def sensor_values_of(
        self, scope: str, keys: Iterable[str], lineage: str, seq: int,
    ) -> tuple[dict[str, str], dict[str, str | None]]:
        """:meth:`sensor_values` of one scope for the given ``keys`` only (by primary key:
        a caller that knows which keys changed reads those rows, not the whole scope)."""
        values: dict[str, str] = {}
        later: dict[str, str | None] = {}
        wanted = sorted(set(keys))
        for i in range(0, len(wanted), 500):
            part = tuple(wanted[i : i + 500])
            marks = ",".join("?" * len(part))
            for key, q, value, prev in self._all(
                f"SELECT key, seq, value, prev FROM {{sensor_state}} WHERE scope = ? AND "
                f"key IN ({marks}) AND lineage = ?", (scope, *part, lineage),
            ):
                v = value if int(q) <= seq else prev
                if v is not None:
                    values[key] = v
                if int(q) > seq:
                    later[key] = prev
        return values, later

    def sensor_write(self, scope: str,
                     rows: Iterable[tuple[str, str, int, str | None, str | None]]) -> None:
        """Upsert rows ``(key, lineage, seq, value, prev)`` of ``scope`` in one transaction."""
        self.sensor_write_many((scope, k, lin, seq, v, p) for (k, lin, seq, v, p) in rows)

    def sensor_write_many(
        self, rows: Iterable[tuple[str, str, str, int, str | None, str | None]],
    ) -> None:
        """Upsert rows ``(scope, key, lineage, seq, value, prev)`` of any scopes in one
        transaction."""
        batch = list(rows)
        if not batch:
            return
        with self.transaction():
            self._many(
                "INSERT INTO {sensor_state} (scope, key, lineage, seq, value, prev) VALUES (?,?,?,?,?,?) "
                "ON CONFLICT (scope, key) DO UPDATE SET lineage=excluded.lineage, seq=excluded.seq, "
                "value=excluded.value, prev=excluded.prev", batch)

    def sensor_setdefault(self, scope: str, key: str, value: str) -> str:
        """The value of ``(scope, key)``, set to ``value`` first if it has none (in one
        transaction: two processes asking at once get the same value)."""
        got = self._all("SELECT value FROM {sensor_state} WHERE scope=? AND key=?", (scope, key))
        if got and got[0][0] is not None:
            return str(got[0][0])
        with self.transaction():
            self._run("INSERT INTO {sensor_state} (scope, key, lineage, seq, value, prev) "
                      "VALUES (?,?,?,?,?,?) ON CONFLICT (scope, key) DO NOTHING",
                      (scope, key, "", 0, value, None))
            return str(self._all("SELECT value FROM {sensor_state} WHERE scope=? AND key=?",
                                 (scope, key))[0][0])

    def sensor_clear(self, scope: str) -> None:
        with self.transaction():
            self._run("DELETE FROM {sensor_state} WHERE scope=?", (scope,))
