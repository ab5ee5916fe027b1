"""Per-run scratch space: listings, the manifest snapshot, the diff join and the work list.

A private on-disk temporary SQLite database (deleted when closed), whatever the durable
store is: the listing of a million-file tree is streamed into B-trees on disk, never
into Python objects, and the diff is one ordered join, local to the run. Only this run's
driver uses it, so it needs no locks and no durability (journal and sync off). The
durable manifest is copied in once, before the diff (:meth:`StateStore.snapshot_manifest`:
one ``INSERT ... SELECT`` from an attached SQLite state, or a stream of rows from
PostgreSQL); while the run holds the pair lock, nobody else changes the pair's rows.
"""

from __future__ import annotations

import contextlib
import itertools
import operator
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from urllib.parse import quote

from replicator.filesystems.base import DIR, FILE

LISTING_COLUMNS = ("path TEXT PRIMARY KEY, kind TEXT, size INTEGER, mtime_ns INTEGER, mode INTEGER, "
                   "checksum TEXT, version TEXT, held INTEGER")
MANIFEST_COLUMNS = ("path TEXT PRIMARY KEY, kind TEXT, size INTEGER, mtime_ns INTEGER, checksum TEXT, "
                    "copied_at REAL")
WORK_COLUMNS = ("seq INTEGER PRIMARY KEY, action TEXT, path TEXT, kind TEXT, size INTEGER, "
                "mtime_ns INTEGER, mode INTEGER, checksum TEXT, dst_version TEXT, dst_kind TEXT")
BATCH = 20_000
# a listing row's and a manifest row's (path, kind, size, mtime_ns); a listing row's held, kind
_COMPARED = operator.itemgetter(0, 1, 2, 3)
_HELD = operator.itemgetter(7)
_KIND = operator.itemgetter(1)
_PATH = operator.itemgetter(0)


class Scratch:
    """The run's scratch tables: ``src`` and ``dst`` listings, ``manifest``, ``work``."""

    def __init__(self) -> None:
        # "": a private temporary database on disk (SQLite's temp directory), gone on close
        self.db = sqlite3.connect("", isolation_level=None, check_same_thread=False)
        for pragma in ("journal_mode=OFF", "synchronous=OFF", "temp_store=FILE", "cache_size=-65536"):
            self.db.execute(f"PRAGMA {pragma}")
        self.db.execute(f"CREATE TABLE manifest ({MANIFEST_COLUMNS}) WITHOUT ROWID")
        self.new_listing("src")
        self.new_listing("dst")

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self.db.close()

    def __enter__(self) -> Scratch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def _batch(self) -> Iterator[sqlite3.Connection]:
        self.db.execute("BEGIN")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    # ------------------------------------------------------------------ listings
    def new_listing(self, name: str) -> None:
        assert name in ("src", "dst")
        self.db.execute(f"DROP TABLE IF EXISTS {name}")
        self.db.execute(f"CREATE TABLE {name} ({LISTING_COLUMNS}) WITHOUT ROWID")

    def add_listing(self, name: str, rows: list[tuple]) -> None:
        """Rows of :meth:`replicator.listing.Entry.row`."""
        assert name in ("src", "dst")
        # a local listing has no checksum and no version: those NULLs go in the statement,
        # not as parameters (sqlite3 binds a None parameter by a failed adaptation, ~0.6 us
        # each, where repacking the rows costs ~0.1 us a row)
        plain = [(p, k, s, m, mo, h) for p, k, s, m, mo, c, v, h in rows if c is None and v is None]
        with self._batch() as db:
            if len(plain) == len(rows):
                db.executemany(f"INSERT OR REPLACE INTO {name} (path, kind, size, mtime_ns, mode, held) "
                               "VALUES (?,?,?,?,?,?)", plain)
            else:  # rows in the order given (a path listed twice: the last one stays)
                db.executemany(f"INSERT OR REPLACE INTO {name} VALUES (?,?,?,?,?,?,?,?)", rows)

    def load_listing(self, name: str, batches: Iterable[list]) -> None:
        """Stream batches of listing entries (:class:`replicator.listing.Entry`, or their
        ``row()`` tuples as ``walk(..., rows=True)`` yields them) into a fresh ``name`` table."""
        self.new_listing(name)
        buf: list[tuple] = []
        for batch in batches:
            if batch and type(batch[0]) is tuple:
                buf += batch
            else:
                buf.extend(e.row() for e in batch)
            if len(buf) >= BATCH:
                self.add_listing(name, buf)
                buf = []
        if buf:
            self.add_listing(name, buf)

    def load_settling(self, batches: Iterable[list[tuple]], manifest: Iterable[tuple], *,
                      fresh: bool = True, details: Details | None = None) -> int:
        """Merge a source listing in path order (``walk(..., ordered=True, rows=True)``) with
        the manifest in the same order (:meth:`StateStore.manifest_scan`), leaving out of both
        the ``src`` and the ``manifest`` tables every path the manifest settles (see
        :func:`settle_merge`); everything else goes in as :meth:`load_listing` and
        :meth:`load_manifest` would put it, so the join of :meth:`decision_rows` decides it.
        Returns the number of files settled. ``fresh=False``: add to what the tables hold
        (another part of the same tree). ``details``: the manifest rows are brief
        (``manifest_scan(..., brief=True)``); those not settled are completed through it
        (:func:`completed`)."""
        if fresh:
            self.new_listing("src")
            self.db.execute("DELETE FROM manifest")
        settled: list[int] = []
        merged = settle_merge(batches, manifest, settled)
        for src, man in merged if details is None else completed(merged, details):
            self.add_unsettled(src, man)
        return settled[0]

    def add_unsettled(self, src: list[tuple], man: list[tuple]) -> None:
        """Listing rows and manifest rows :func:`settle_merge` left for the join."""
        if src:
            self.add_listing("src", src)
        if man:
            self._add_manifest(man)

    def _add_manifest(self, rows: list[tuple]) -> None:
        with self._batch() as db:
            db.executemany("INSERT OR REPLACE INTO manifest VALUES (?,?,?,?,?,?)", rows)

    # ------------------------------------------------------------------ manifest snapshot
    def load_manifest(self, rows: Iterable[tuple]) -> None:
        """Rows ``(path, kind, size, mtime_ns, checksum, copied_at)``."""
        self.db.execute("DELETE FROM manifest")
        buf: list[tuple] = []
        for row in rows:
            buf.append(tuple(row))
            if len(buf) >= BATCH:
                with self._batch() as db:
                    db.executemany("INSERT INTO manifest VALUES (?,?,?,?,?,?)", buf)
                buf = []
        if buf:
            with self._batch() as db:
                db.executemany("INSERT INTO manifest VALUES (?,?,?,?,?,?)", buf)

    def copy_manifest_from_sqlite(self, path: str, pair_id: int) -> None:
        """The SQLite store's fast path: attach the state file read-only and copy in C."""
        self.db.execute("DELETE FROM manifest")
        self.db.execute("ATTACH DATABASE ? AS state", ("file:" + quote(path) + "?mode=ro",))
        try:
            self.db.execute("INSERT INTO manifest SELECT path, kind, size, mtime_ns, checksum, copied_at "
                            "FROM state.files WHERE pair_id = ?", (pair_id,))
        finally:
            self.db.execute("DETACH DATABASE state")

    def stale_manifest_paths(self) -> list[str]:
        """Manifest rows whose path is gone from both the source and the destination listing."""
        return [r[0] for r in self.db.execute(
            "SELECT path FROM manifest m WHERE NOT EXISTS (SELECT 1 FROM src s WHERE s.path = m.path) "
            "AND NOT EXISTS (SELECT 1 FROM dst d WHERE d.path = m.path)")]

    def stale_manifest_entries(self) -> list[tuple[str, str]]:
        """``(path, kind)`` of the rows :meth:`stale_manifest_paths` returns."""
        return self.db.execute(
            "SELECT path, kind FROM manifest m WHERE NOT EXISTS (SELECT 1 FROM src s WHERE s.path = m.path) "
            "AND NOT EXISTS (SELECT 1 FROM dst d WHERE d.path = m.path)").fetchall()

    # ------------------------------------------------------------------ the diff join
    @staticmethod
    def _settled(dst_listed: bool) -> str:
        """SQL true for a source row the manifest already settles: not held, recorded with the
        same kind, size and exact mtime, and (when the destination is listed) the destination
        still what was recorded (same kind and size, mtime within ``:precision``). For such a
        row :func:`replicator.diff.decide` is SKIP without a checksum and the manifest row needs
        no rewrite, so it never has to reach Python (the no-op re-sync of a large tree)."""
        cond = ("s.held = 0 AND m.kind = s.kind AND (s.kind = 'd' OR "
                "(m.size = s.size AND m.mtime_ns = s.mtime_ns))")
        if dst_listed:
            cond += (" AND d.kind = m.kind AND (m.kind = 'd' OR (d.size = m.size AND "
                     "abs(d.mtime_ns - m.mtime_ns) < :precision))")
        return f"coalesce(({cond}), 0)"

    def decision_rows(self, dst_listed: bool, settled_precision_ns: int | None = None) -> Iterator[tuple]:
        """Every source path in path order, with its manifest row and (when listed) its
        destination entry: ``(path, kind, size, mtime_ns, mode, checksum, held, m.kind, m.size,
        m.mtime_ns, m.checksum, d.kind, d.size, d.mtime_ns, d.checksum, d.version)``.
        With ``settled_precision_ns``, the rows :meth:`_settled` accepts are left out (count
        them with :meth:`count_settled_files`)."""
        dst_join = "LEFT JOIN dst d ON d.path = s.path" if dst_listed else ""
        dst_cols = "d.kind, d.size, d.mtime_ns, d.checksum, d.version" if dst_listed else "NULL, NULL, NULL, NULL, NULL"
        where = f"WHERE NOT {self._settled(dst_listed)}" if settled_precision_ns is not None else ""
        yield from self.db.cursor().execute(f"""
            SELECT s.path, s.kind, s.size, s.mtime_ns, s.mode, s.checksum, s.held,
                   m.kind, m.size, m.mtime_ns, m.checksum, {dst_cols}
            FROM src s LEFT JOIN manifest m ON m.path = s.path {dst_join}
            {where}
            ORDER BY s.path""", {"precision": max(1, settled_precision_ns or 1)})

    def count_settled_files(self, dst_listed: bool, precision_ns: int) -> int:
        """Files :meth:`decision_rows` leaves out with ``settled_precision_ns=precision_ns``."""
        dst_join = "JOIN dst d ON d.path = s.path" if dst_listed else ""
        return int(self.db.execute(f"""
            SELECT count(*) FROM src s JOIN manifest m ON m.path = s.path {dst_join}
            WHERE s.kind = 'f' AND {self._settled(dst_listed)}""",
            {"precision": max(1, precision_ns)}).fetchone()[0])

    def dst_only_rows(self) -> Iterator[tuple]:
        """Destination paths the source does not have: ``(path, kind, size, mtime_ns, version)``."""
        yield from self.db.cursor().execute(
            "SELECT d.path, d.kind, d.size, d.mtime_ns, d.version FROM dst d "
            "WHERE NOT EXISTS (SELECT 1 FROM src s WHERE s.path = d.path) ORDER BY d.path")

    def dst_links_in_the_way(self) -> list[str]:
        """Destination symlinks at a source path or at a directory on the way to one."""
        return [r[0] for r in self.db.execute(
            "SELECT d.path FROM dst d WHERE d.kind = 'l' AND EXISTS (SELECT 1 FROM src s "
            "WHERE s.path = d.path OR (s.path > d.path || '/' AND s.path < d.path || '0')) "
            "ORDER BY d.path")]

    # ------------------------------------------------------------------ destinations listing upload times
    _COVERED = """EXISTS (SELECT 1 FROM manifest m WHERE m.path = d.path AND m.kind = 'f'
                  AND m.size = d.size AND d.mtime_ns + :precision <= CAST(m.copied_at * 1e9 AS INTEGER))"""

    def upload_time_candidates(self, precision_ns: int) -> list[str]:
        """Destination files the source has at the same size that are not what we recorded
        (their source mtime must be asked of the destination)."""
        return [r[0] for r in self.db.execute(
            f"""SELECT d.path FROM dst d JOIN src s ON s.path = d.path
                WHERE d.kind = 'f' AND s.kind = 'f' AND s.size = d.size AND NOT {self._COVERED}""",
            {"precision": precision_ns})]

    def use_recorded_mtimes(self, precision_ns: int) -> None:
        """Destination files we recorded (same size, uploaded before the record) take the
        recorded source mtime."""
        with self._batch() as db:
            db.execute(f"""UPDATE dst AS d SET mtime_ns = (SELECT m.mtime_ns FROM manifest m WHERE m.path = d.path)
                           WHERE d.kind = 'f' AND {self._COVERED}""", {"precision": precision_ns})

    def set_dst_mtimes(self, rows: list[tuple[int, str]]) -> None:
        """``(mtime_ns, path)`` rows."""
        with self._batch() as db:
            db.executemany("UPDATE dst SET mtime_ns = ? WHERE path = ?", rows)

    # ------------------------------------------------------------------ work list
    def new_work(self) -> None:
        self.db.execute("DROP TABLE IF EXISTS work")
        self.db.execute(f"CREATE TABLE work ({WORK_COLUMNS})")

    def add_work(self, rows: list[tuple]) -> None:
        """``(action, path, kind, size, mtime_ns, mode, checksum, dst_version, dst_kind)``."""
        with self._batch() as db:
            db.executemany("INSERT INTO work (action, path, kind, size, mtime_ns, mode, checksum,"
                           " dst_version, dst_kind) VALUES (?,?,?,?,?,?,?,?,?)", rows)

    def only_source(self) -> bool:
        """Neither a manifest row nor a destination entry: every source path is new (a first
        copy into an empty destination), so its decision needs no join (see
        :meth:`add_all_as_copies`)."""
        return (self.db.execute("SELECT 1 FROM manifest LIMIT 1").fetchone() is None
                and self.db.execute("SELECT 1 FROM dst LIMIT 1").fetchone() is None)

    def add_all_as_copies(self, dirs: bool) -> tuple[int, int, int, int]:
        """The decision of :func:`replicator.diff.decide` for every source row when
        :meth:`only_source` holds, in one statement: a path not held is a COPY (a directory
        only where the destination has ``dirs``), a held one a SKIP; work rows in path order,
        as the row-by-row decision adds them. Returns ``(files to copy, their bytes, held
        files, work rows added)``."""
        kinds = "" if dirs else "AND kind != 'd' "
        with self._batch() as db:
            added = db.execute(
                "INSERT INTO work (action, path, kind, size, mtime_ns, mode, checksum, dst_version,"
                " dst_kind) SELECT 'copy', path, kind, size, mtime_ns, mode, checksum, NULL, NULL"
                f" FROM src WHERE held = 0 {kinds}ORDER BY path").rowcount
        files, size, held = self.db.execute(
            "SELECT coalesce(sum(held = 0), 0), coalesce(sum(CASE WHEN held = 0 THEN size END), 0),"
            " coalesce(sum(held != 0), 0) FROM src WHERE kind = 'f'").fetchone()
        return int(files), int(size), int(held), int(added)

    def work_rows(self, limit: int) -> list[tuple[str, str, str, int]]:
        """The first ``limit`` work rows ``(action, path, kind, size)`` in plan order."""
        return self.db.execute("SELECT action, path, kind, size FROM work ORDER BY seq LIMIT ?",
                               (limit,)).fetchall()

    def work_dirs(self) -> list[tuple[str, int]]:
        """Directories to create, parents first: ``(path, mtime_ns)``."""
        return self.db.execute("SELECT path, mtime_ns FROM work WHERE kind='d' AND action IN ('copy','update') "
                               "ORDER BY path").fetchall()

    def work_adopted(self) -> Iterator[list[tuple]]:
        """Batches of manifest rows for unchanged paths to record."""
        cur = self.db.execute("SELECT path, kind, size, mtime_ns, checksum FROM work WHERE action='adopt'")
        while rows := cur.fetchmany(10_000):
            yield rows

    def work_files(self) -> Iterator[tuple]:
        """Files to copy in plan order: ``(seq, action, path, size, mtime_ns, mode, dst_version, dst_kind)``."""
        yield from self.db.cursor().execute(
            "SELECT seq, action, path, size, mtime_ns, mode, dst_version, dst_kind FROM work"
            " WHERE kind='f' AND action IN ('copy','update') ORDER BY seq")

    def count_updates(self, seqs: list[int]) -> int:
        if not seqs:
            return 0
        # by primary key: a path IN (...) scanned all of work per batch
        return int(self.db.execute(
            f"SELECT COUNT(*) FROM work WHERE action='update' AND seq IN ({','.join('?' * len(seqs))})",
            seqs).fetchone()[0])

    def work_kind_changes(self) -> list[tuple[str, str, str]]:
        """``(path, kind, dst_kind)`` to copy where the destination has the other kind (a
        file where the source has a directory, or the reverse), parents first."""
        return self.db.execute(
            "SELECT path, kind, dst_kind FROM work WHERE action IN ('copy','update') AND "
            "kind IN ('f','d') AND dst_kind IN ('f','d') AND dst_kind != kind ORDER BY path").fetchall()

    def take_deletes_under(self, path: str) -> list[tuple[str, str]]:
        """The delete rows below ``path`` (children first), taken out of the work list."""
        args = (path + "/", path + "0")
        rows = self.db.execute("SELECT path, kind FROM work WHERE action='delete' AND path > ? "
                               "AND path < ? ORDER BY path DESC", args).fetchall()
        with self._batch() as db:
            db.execute("DELETE FROM work WHERE action='delete' AND path > ? AND path < ?", args)
        return rows

    def has_deletes(self) -> bool:
        return self.db.execute("SELECT 1 FROM work WHERE action='delete' LIMIT 1").fetchone() is not None

    def work_deletes(self) -> list[tuple[str, str]]:
        """``(path, kind)`` to delete, children before their directory."""
        return self.db.execute("SELECT path, kind FROM work WHERE action='delete' ORDER BY path DESC").fetchall()

    # ------------------------------------------------------------------ verify
    def missing_paths(self) -> Iterator[str]:
        """In the source listing only."""
        for (path,) in self.db.execute("SELECT path FROM src s WHERE NOT EXISTS "
                                       "(SELECT 1 FROM dst d WHERE d.path=s.path) ORDER BY path"):
            yield path

    def extra_paths(self) -> Iterator[str]:
        """In the destination listing only."""
        for (path,) in self.db.execute("SELECT path FROM dst d WHERE NOT EXISTS "
                                       "(SELECT 1 FROM src s WHERE s.path=d.path) ORDER BY path"):
            yield path

    def common_rows(self) -> Iterator[list[tuple[Any, ...]]]:
        """Batches of ``(path, src size, dst size, src checksum, dst checksum)`` on both sides."""
        cur = self.db.execute("SELECT s.path, s.size, d.size, s.checksum, d.checksum FROM src s "
                              "JOIN dst d ON d.path=s.path ORDER BY s.path")
        while rows := cur.fetchmany(2000):
            yield rows

    # ------------------------------------------------------------------ transformed sources
    # ``xform``: each source file a --transform chain applies to, with its output name
    # (``out``; NULL once refused), whether the output is a directory (untar), the steps and
    # whether the source is held this run. Filled by :meth:`plan_transformed`.
    def plan_transformed(self, plan: Callable[[str], tuple[str, bool, tuple] | None]) -> None:
        """A fresh ``xform`` table: ``plan(path)`` (``(out, is_dir, steps)`` or None: not
        transformed) of every source file."""
        db = self.db
        db.execute("DROP TABLE IF EXISTS xform")
        db.execute("CREATE TABLE xform (path TEXT PRIMARY KEY, out TEXT, is_dir INTEGER,"
                   " steps TEXT, held INTEGER) WITHOUT ROWID")
        db.execute("CREATE INDEX xform_out ON xform (out)")
        cur = db.execute("SELECT path, held FROM src WHERE kind='f'")
        while rows := cur.fetchmany(5000):
            batch = []
            for path, held in rows:
                planned = plan(path)
                if planned is not None:
                    out, is_dir, steps = planned
                    batch.append((path, out, int(is_dir), ",".join(map(str, steps)), held))
            if batch:
                with self._batch() as tx:
                    tx.executemany("INSERT INTO xform VALUES (?,?,?,?,?)", batch)

    def transformed_dirs(self) -> list[str]:
        """Sources whose output is a directory (untar)."""
        return [r[0] for r in self.db.execute("SELECT path FROM xform WHERE is_dir=1").fetchall()]

    def transform_clashes(self) -> list[tuple[str, str]]:
        """``(path, out)`` whose output name is also a plain source path (or under an untar
        output), or the output of another source too."""
        return self.db.execute("""
            SELECT x.path, x.out FROM xform x WHERE EXISTS (
                SELECT 1 FROM src s WHERE s.kind IN ('f','d') AND s.path NOT IN
                    (SELECT path FROM xform) AND (s.path = x.out OR (x.is_dir = 1
                    AND s.path > x.out || '/' AND s.path < x.out || '0')))
            OR (SELECT COUNT(*) FROM xform y WHERE y.out = x.out) > 1""").fetchall()

    def drop_transform_output(self, path: str) -> None:
        """``path`` stays diverted (never copied plainly) but its output is not written."""
        with self._batch() as tx:
            tx.execute("UPDATE xform SET out=NULL WHERE path=?", (path,))

    def divert_transformed(self, transformed_kind: str, owned_kind: str, dst_listed: bool) -> None:
        """Out of the plain diff: each transformed source becomes ``transformed_kind`` and held
        (skipped, never adopted); each output, and every recorded (or, when listed,
        destination) path under an untar output, a held ``owned_kind`` row (ours: not
        compared, not deleted)."""
        cols = "path, kind, size, mtime_ns, mode, checksum, version, held"
        with self._batch() as tx:
            tx.execute("UPDATE src SET kind=?, held=1 WHERE path IN (SELECT path FROM xform)",
                       (transformed_kind,))
            tx.execute(f"INSERT OR IGNORE INTO src ({cols}) SELECT out, ?, 0, 0, NULL, NULL, NULL, 1"
                       " FROM xform WHERE out IS NOT NULL", (owned_kind,))
            for table in ("manifest", "dst") if dst_listed else ("manifest",):
                tx.execute(f"""INSERT OR IGNORE INTO src ({cols})
                    SELECT f.path, ?, 0, 0, NULL, NULL, NULL, 1 FROM xform x
                    JOIN {table} f ON f.path > x.out || '/' AND f.path < x.out || '0'
                    WHERE x.is_dir = 1""", (owned_kind,))

    def transformed_source_deletes(self) -> list[tuple]:
        """Work rows deleting the destination files at a transformed source's own name."""
        return self.db.execute("""
            SELECT 'delete', d.path, d.kind, d.size, d.mtime_ns, NULL, NULL, d.version, d.kind
            FROM xform x JOIN dst d ON d.path = x.path WHERE d.kind = 'f'""").fetchall()

    def transform_rows(self, dst_listed: bool) -> Iterator[tuple]:
        """Each transformed source with an output, in path order: ``(path, out, is_dir, steps,
        held, size, mtime_ns, mode, m.kind, m.size, m.mtime_ns, m.checksum, the output's
        manifest kind, the output's destination kind or None)``."""
        dst = "(SELECT kind FROM dst d WHERE d.path = x.out)" if dst_listed else "NULL"
        yield from self.db.cursor().execute(f"""
            SELECT x.path, x.out, x.is_dir, x.steps, x.held, s.size, s.mtime_ns, s.mode,
                   m.kind, m.size, m.mtime_ns, m.checksum,
                   (SELECT kind FROM manifest o WHERE o.path = x.out), {dst}
            FROM xform x JOIN src s ON s.path = x.path
            LEFT JOIN manifest m ON m.path = x.path
            WHERE x.out IS NOT NULL ORDER BY x.path""")

    def recorded_under(self, path: str) -> list[str]:
        """Manifest paths below ``path``."""
        return [p for (p,) in self.db.execute(
            "SELECT path FROM manifest WHERE path > ? AND path < ?", (path + "/", path + "0"))]

    _UNDER_OUT = "r.path > x.out || '/' AND r.path < x.out || '0'"

    def verify_transformed(self, transformed_kind: str) -> tuple[list[str], list[str], list[tuple]]:
        """``replicator verify`` with a chain (after :meth:`plan_transformed` and a manifest
        snapshot): ``(missing, extra, rows)``. Missing: outputs with no record, or recorded
        but not at the destination (an untar output as ``out/``); extra: destination files
        under an untar output the record does not name; rows ``(path, size, dst size, record
        checksum, dst checksum or source record checksum, reason)`` to compare: each output
        against its record (reason NULL: checksum), each source against the CRC32C recorded
        for it (``source-changed``). The transformed sources and their outputs are then taken
        out of ``src`` and ``dst``: what is left compares as plain copies."""
        db, under = self.db, self._UNDER_OUT
        db.execute("DROP TABLE IF EXISTS want")
        db.execute(f"""CREATE TEMP TABLE want AS
            SELECT r.path, r.size, r.checksum FROM xform x JOIN manifest r
            ON r.kind = 'f' AND (r.path = x.out AND x.is_dir = 0 OR x.is_dir = 1 AND {under})""")
        missing = [p for (p,) in db.execute("""SELECT x.out || CASE x.is_dir WHEN 1 THEN '/' ELSE '' END
            FROM xform x WHERE NOT EXISTS (SELECT 1 FROM manifest r WHERE r.path = x.path
            AND r.kind = ?) OR NOT EXISTS (SELECT 1 FROM manifest r WHERE r.path = x.out)
            UNION ALL SELECT w.path FROM want w WHERE NOT EXISTS
            (SELECT 1 FROM dst d WHERE d.path = w.path) ORDER BY 1""", (transformed_kind,))]
        extra = [p for (p,) in db.execute(f"""SELECT r.path FROM dst r JOIN xform x ON x.is_dir = 1
            AND {under} WHERE NOT EXISTS (SELECT 1 FROM want w WHERE w.path = r.path)
            ORDER BY r.path""")]
        rows = db.execute("""SELECT w.path, w.size, d.size, w.checksum, NULL FROM want w
                             JOIN dst d ON d.path = w.path ORDER BY w.path""").fetchall()
        rows += db.execute("""SELECT x.path, s.size, r.size, NULL, r.checksum, 'source-changed'
                              FROM xform x JOIN src s ON s.path = x.path
                              JOIN manifest r ON r.path = x.path AND r.kind = ?""",
                           (transformed_kind,)).fetchall()
        db.execute(f"""DELETE FROM dst AS r WHERE EXISTS (SELECT 1 FROM xform x
                       WHERE r.path = x.out OR x.is_dir = 1 AND {under})""")
        db.execute("DELETE FROM src WHERE path IN (SELECT path FROM xform)")
        return missing, extra, rows


Details = Callable[[list[str]], dict[str, tuple[Any, Any]]]


def completed(merged: Iterable[tuple[list[tuple], list[tuple]]],
              details: Details) -> Iterator[tuple[list[tuple], list[tuple]]]:
    """:func:`settle_merge`'s parts over brief manifest rows ``(path, kind, size, mtime_ns)``,
    each manifest row completed with its ``(checksum, copied_at)`` from ``details`` (one
    call per part: the store's :meth:`~replicator.state.base.StateStore.manifest_details`)."""
    for src, man in merged:
        if man:
            more = details([m[0] for m in man])
            man = [(*m, *more.get(m[0], (None, 0.0))) for m in man]
        yield src, man


def settle_merge(batches: Iterable[list[tuple]], manifest: Iterable[tuple],
                 settled: list[int]) -> Iterator[tuple[list[tuple], list[tuple]]]:
    """The one-pass merge of a listing in path order (``walk(..., ordered=True, rows=True)``)
    with manifest rows in the same order: yields ``(listing rows, manifest rows)`` in parts of
    about :data:`BATCH` rows, leaving out every path the manifest settles (what
    :meth:`Scratch._settled` accepts without a destination listing: not held, same kind, and
    for a file the same size and exact mtime); appends the number of files settled to
    ``settled`` at the end.

    So a no-op re-sync writes no row at all: the settled paths never leave this loop, and
    a directory whose rows are all unchanged is settled by one comparison of two lists.
    Should the two orders ever disagree (a name Python and the store sort differently),
    the unmatched rows go out on both sides and the join still pairs them: only slower."""
    rows = iter(manifest)
    src: list[tuple] = []
    man: list[tuple] = []
    count = 0
    ahead: list[tuple] = []  # manifest rows read for the batch being merged, in order
    for batch in batches:
        n = len(batch)
        if len(ahead) < n:
            ahead.extend(itertools.islice(rows, n - len(ahead)))
        # the common case in bulk: this directory's rows are the next n manifest rows,
        # each unchanged (and none held): one comparison of two lists, built in C
        if len(ahead) >= n and not any(map(_HELD, batch)):
            listed, recorded = list(map(_COMPARED, batch)), list(map(_COMPARED, ahead[:n]))
            if listed == recorded:
                count += list(map(_KIND, batch)).count(FILE)
                del ahead[:n]
                continue
            if list(map(_PATH, listed)) == list(map(_PATH, recorded)):
                # the same paths, a few of them changed (a 1% re-sync): only those are
                # looked at one by one, found by a set difference
                changed = set(listed).difference(recorded)
                count += list(map(_KIND, batch)).count(FILE)
                for i in sorted(map(listed.index, changed)):
                    e, m = batch[i], ahead[i]
                    kind = e[1]
                    if m[1] == kind and (kind == DIR or (m[2] == e[2] and m[3] == e[3])):
                        continue  # a directory whose mtime moved: still settled
                    count -= kind == FILE
                    src.append(e)
                    man.append(m)
                del ahead[:n]
                if len(src) >= BATCH or len(man) >= BATCH:
                    yield src, man
                    src, man = [], []
                continue
        ahead.reverse()  # popped from the end: next() of the rows read ahead
        m = ahead.pop() if ahead else next(rows, None)
        for e in batch:
            rel = e[0]
            while m is not None and m[0] < rel:
                man.append(m)  # recorded, gone from the source (or listed out of order)
                m = ahead.pop() if ahead else next(rows, None)
            if m is not None and m[0] == rel:
                kind = e[1]
                if not e[7] and m[1] == kind and (kind == DIR or (m[2] == e[2] and m[3] == e[3])):
                    count += kind == FILE
                else:
                    src.append(e)
                    man.append(m)
                m = ahead.pop() if ahead else next(rows, None)
            else:
                src.append(e)
        ahead.reverse()
        if m is not None:
            ahead.insert(0, m)  # the first row past this batch: the next batch's
        if len(src) >= BATCH or len(man) >= BATCH:
            yield src, man
            src, man = [], []
    for m in itertools.chain(ahead, rows):
        man.append(m)
        if len(man) >= BATCH:
            yield src, man
            src, man = [], []
    if src or man:
        yield src, man
    settled.append(count)
