"""The copy run: list -> diff -> plan -> execute -> publish -> record (DESIGN.md data flow).

The driver (this module) is the only writer of the state store. Publishing goes
through the journal: a file is journalled as ``staging`` before its bytes are
written, as ``staged`` once verified, and is recorded in the manifest (and dropped
from the journal) after its rename, in batches. :func:`recover` completes whatever an
interrupted run left in the journal, so nothing is published twice or lost.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import secrets
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from replicator import checksum as crc
from replicator import settle, snapdiff
from replicator.diff import Action, iter_decisions
from replicator.errors import (
    DeadlineExceeded,
    DestinationWriteError,
    ReplicatorError,
    UsageError,
    describe,
    is_retryable,
    on_side,
)
from replicator.executors import get_executor
from replicator.executors.base import Executor
from replicator.files_from import read_files_from, walk_listed
from replicator.filesystems.base import DIR, FILE, LINK, FileSystem
from replicator.filesystems.local import ESC, has_byte_names, native_path, shown, text_path
from replicator.filesystems.registry import resolve
from replicator.listing import ListingStats, listing_workers, walk
from replicator.options import CopyOptions, parse_max_delete
from replicator.plan import split_ranges, whole_file_bins
from replicator.progress import NO_PROGRESS, Progress
from replicator.report import RunReport
from replicator.state import Scratch, StateError, StateStore, open_store, sqlite_path, state_scheme
from replicator.transfer import (
    ATTRIBUTE_KINDS,
    Outcome,
    SmallBatch,
    StageContext,
    Task,
    Throttle,
    check_preserve,
    finish_ranges,
    local_pair,
    source_attrs,
    temp_name,
)

if TYPE_CHECKING:
    from replicator.transforms import Step

log = logging.getLogger("replicator")
MAX_ACTIONS_LISTED = 10_000
MAX_NOT_DONE_LISTED = 100
MARKER_MAX = 1 << 20  # a marker is a small JSON summary
REPLICA_SAMPLE = 8  # recorded files checked at the destination before the manifest is trusted
MAX_STREAMS_PER_FILE = 4  # ranges of one big file in flight (rclone's --multi-thread-streams)


def new_run_id() -> str:
    return time.strftime("%Y%m%d%H%M%S") + secrets.token_hex(3)


def _within(path: str, root: str) -> bool:
    """``path`` is ``root`` or below it (both resolved, no trailing slash but ``/``)."""
    return path == root or path.startswith(root.rstrip("/") + "/")


def _is_marker(fs: FileSystem, path: str, info) -> bool:
    """Whether the file at ``path`` is a marker this engine wrote (a JSON run summary)."""
    if info.kind != FILE or not 0 < info.size <= MARKER_MAX:
        return False
    try:
        data = json.loads(b"".join(fs.read_chunks(path, 0, info.size)))
    except (ValueError, OSError, ReplicatorError):
        return False
    return isinstance(data, dict) and {"run_id", "copy_finished", "files_copied"} <= data.keys()


def _uri_key(fs: FileSystem, root: str) -> str:
    return fs.uri(root).rstrip("/") or "/"


def _pair_key(fs: FileSystem, root: str) -> str:
    """One side of the canonical pair the manifest and the pair lock are keyed by: a local
    root through symlinks resolved, any other its URI."""
    if fs.capabilities.host_paths:
        return text_path(os.path.realpath(native_path(root)))
    return _uri_key(fs, root)


def _earlier_verified(store: StateStore, pair_id: int) -> bool | None:
    """Whether every file the pair's earlier runs left at the destination was verified
    (their last run's ``replica_verified``; a run killed before its report: False), or None
    when nothing is recorded (this run relies on no earlier copy)."""
    if not store.has_records(pair_id) and not store.journal_entries(pair_id):
        return None
    runs = store.last_runs(pair_id, 1)
    report = runs[0]["report"] if runs else None
    if not report:
        return False
    return bool(report.get("replica_verified", report.get("verified")))  # older reports


BATCH_STAGING = "batch-staging"  # one journal row for the staged names of a batch of small files


def batch_key(run_id: str, index: int) -> str:
    """The journal key of a run's ``index``-th batch: ``//`` never starts a relative path
    (listings refuse empty segments), so it cannot be a file's own journal row."""
    return f"//batch/{run_id}/{index}"


def _batch_names(tmp: str | None) -> list[str]:
    try:
        names = json.loads(tmp or "[]")
    except ValueError:
        return []
    return [n for n in names if isinstance(n, str)] if isinstance(names, list) else []


UNKNOWN_SIZE = -1  # a manifest row saying "we may have written this: look before trusting it"


def recover(store: StateStore, pair_id: int, dst_fs: FileSystem, dst_root: str,
            on_error: Callable[[str, BaseException], None] | None = None) -> int:
    """Finish what an interrupted run left in the journal. Returns files recorded.

    Staged temporaries are renamed (verified) or removed (partial); whatever a write left out
    of sight (part objects, unfinished multipart uploads) is discarded. A path whose outcome
    cannot be known (an in-place upload that may have completed) keeps a manifest row of
    unknown size rather than none: the next run then overwrites it as an update, instead of
    planning a must-not-exist write that the object left by the killed run refuses forever.

    A destination error on one entry (its directory replaced by a file, a read-only
    directory, a staged name that cannot be renamed) never escapes: the file is reported
    through ``on_error``; a fatal error forgets the file (the next plan copies it again) and
    clears its entry, so no later run trips on it again; a retryable one keeps the entry for
    the next run."""
    entries = store.journal_entries(pair_id)
    if not entries:
        return 0
    recorded: list[tuple] = []
    dropped: list[str] = []
    unknown: list[tuple] = []
    forget: list[str] = []
    for path, _run_id, state, tmp, size, mtime_ns, checksum in entries:
        try:
            outcome = _recover_one(dst_fs, dst_root, path, _run_id, state, tmp, size, mtime_ns)
        except Exception as exc:
            if on_error is not None:
                on_error(path, exc)
            if is_retryable(exc):
                continue  # the entry stays: the next run tries again
            if state == BATCH_STAGING:
                for staged in _batch_names(tmp):
                    _quiet(dst_fs.delete_file, staged)
                dropped.append(path)  # the key is no manifest path: nothing to forget
                continue
            if tmp:
                _quiet(dst_fs.delete_file, tmp)
            outcome = "forget"
        if outcome == "record":
            recorded.append((path, FILE, size, mtime_ns, checksum))
        elif outcome == "drop":
            dropped.append(path)
        elif outcome == "unknown":
            unknown.append((path, FILE, UNKNOWN_SIZE, 0, None))
            dropped.append(path)
        else:
            forget.append(path)
            dropped.append(path)
    store.commit(pair_id, record=recorded + unknown, forget=forget,
                 clear=[r[0] for r in recorded] + dropped)
    if recorded:
        log.info("recovered %d file(s) published by an interrupted run", len(recorded))
    return len(recorded)


def _quiet(call: Callable[..., object], *args: object) -> None:
    try:
        call(*args)
    except Exception:
        pass


def _recover_one(dst_fs: FileSystem, dst_root: str, path: str, run_id: str, state: str,
                 tmp: str | None, size: int, mtime_ns: int) -> str:
    """One journal entry: ``record`` (published), ``drop`` (nothing to keep), ``unknown``
    (a file the destination may hold in any version: its row says so) or ``forget`` (drop
    the manifest row: the next run plans it afresh)."""
    if state == BATCH_STAGING:  # a batch of small files: none of its staged names survives
        for staged in _batch_names(tmp):
            dst_fs.delete_file(staged)
        return "drop"
    final = dst_fs.join(dst_root, path)
    from replicator.transforms import DIR_STAGING, DIR_SWAP, recover_dir  # a chain's states

    if state in (DIR_STAGING, DIR_SWAP):  # an untar output directory
        recover_dir(dst_fs, final, tmp, state, run_id)
        return "forget"  # the next run expands the archive again
    if state == "staging":
        if tmp:
            dst_fs.delete_file(tmp)  # partial bytes, never published
            return "drop"
        dst_fs.discard_staged(final)  # parts / unfinished uploads of an in-place write
        return "unknown"  # an in-place write may or may not have completed
    # staged: verified bytes exist under tmp, or were already renamed into place
    if tmp and dst_fs.stat(tmp) is not None:
        dst_fs.rename(tmp, final)
        return "record"
    info = dst_fs.stat(final)
    # a renamed staged file carries the source mtime we set on it (if the store can set one)
    times_ok = info is not None and (
        not tmp or not dst_fs.capabilities.can_set_mtime
        or abs(info.mtime_ns - mtime_ns) < dst_fs.capabilities.mtime_precision_ns)
    if info is not None and info.kind == FILE and info.size == size and times_ok:
        return "record"
    return "unknown"


class _Run:
    def __init__(self, source: str, destination: str, opts: CopyOptions,
                 progress: Progress | None, command: str) -> None:
        self.opts = opts
        self.progress = progress if progress is not None else NO_PROGRESS
        self.src_fs, self.src_root = resolve(source)
        self.dst_fs, self.dst_root = resolve(destination)
        self.run_id = new_run_id()
        self.report = RunReport(
            run_id=self.run_id,
            source=_uri_key(self.src_fs, self.src_root),
            destination=_uri_key(self.dst_fs, self.dst_root),
            command=command,
            dry_run=opts.dry_run,
            checksum=opts.checksum,
            executor=opts.executor,
            started_at=time.time(),
        )
        self.precision = max(self.src_fs.capabilities.mtime_precision_ns,
                             self.dst_fs.capabilities.mtime_precision_ns)
        self.filter = opts.filter()
        self.listed = (read_files_from(opts.files_from, self.src_root)
                       if opts.files_from is not None else None)
        self._listed_set = frozenset(rel for rel, _ in self.listed or ())
        self._refuse_overlap()
        check_preserve(self.src_fs, self.dst_fs, opts.preserve)
        self.dst_dirs = self.dst_fs.capabilities.directories
        self._made_dirs: list[str] = []
        self.own_names = frozenset({opts.marker}) if opts.marker else frozenset()
        self._ranged: dict[str, tuple[Task, list[dict]]] = {}
        self._ctx: StageContext | None = None
        self.chain: tuple[Step, ...] = ()  # transforms (tarfile, subprocess) load only for a chain
        if opts.transforms:
            from replicator.transforms import parse_chain

            self.chain = parse_chain(opts.transforms)
        self._ranges = True  # the executor takes ranges of big files
        self._snap: snapdiff.SnapshotRun | None = None  # --snapshot-diff
        self._snap_changes: list[int] = []
        self._dst_listed = True
        self._planned_updates = 0
        self._settled = 0  # unchanged files the ordered listing settled against the manifest
        self._replaced: set[str] = set()  # destination paths of the other kind, removed
        self._batch_of: dict[int, str] = {}  # seq of a file in flight -> its batch's journal key
        self._batch_left: dict[str, int] = {}  # batch journal key -> its files not yet settled

    def _refuse_overlap(self) -> None:
        """A destination inside the source (or the reverse) would copy or delete itself; so
        would a state store inside either tree (``--delete`` removes it mid-run, a copy
        copies the live database). Compared on resolved paths (symlinks followed), both ways."""
        src = self.src_fs.real_path(self.src_root)
        dst = self.dst_fs.real_path(self.dst_root)
        same_fs = (self.src_fs.scheme == self.dst_fs.scheme
                   and self.src_fs.options() == self.dst_fs.options())
        if same_fs and (_within(src, dst) or _within(dst, src)):
            raise UsageError(f"source and destination overlap: {self.report.source} and "
                             f"{self.report.destination} (resolved: {src} and {dst})")
        state = self.opts.resolved_state_path
        if state_scheme(state) != "sqlite":
            return  # a database server, not a file in either tree
        state = text_path(os.path.realpath(sqlite_path(state)))
        for side, fs, root in (("source", self.src_fs, src), ("destination", self.dst_fs, dst)):
            if fs.capabilities.host_paths and _within(state, root):
                raise UsageError(f"--state {self.opts.resolved_state_path} is inside the {side} "
                                 f"tree {root}: put the state store outside both trees")

    def _refuse_marker_clash(self) -> None:
        """The marker is the engine's own file at the destination root; a source file of that
        name that is not a marker (Hadoop jobs write an empty ``_SUCCESS``) would be left out
        and replaced by it. Refused before anything is written: pick another ``--marker`` name
        (the source's file is then copied as data). An upstream hop's marker (a chain
        a -> b -> c with one marker name) is ours: it is replaced, as before."""
        name = self.opts.marker
        if not name:
            return
        path = self.src_fs.join(self.src_root, name)
        info = self.src_fs.stat(path)
        if info is None or _is_marker(self.src_fs, path, info):
            return
        raise UsageError(f"--marker {name}: the source has its own {name} at its root, which "
                         f"the marker would replace; choose another --marker name")

    # ------------------------------------------------------------------ main
    def run(self) -> RunReport:
        opts = self.opts
        self._refuse_marker_clash()
        pair = (_pair_key(self.src_fs, self.src_root), _pair_key(self.dst_fs, self.dst_root))
        store = open_store(opts.resolved_state_path, read_only=opts.dry_run)
        scratch: Scratch | None = None
        started = False
        try:
            if opts.dry_run:
                found = store.find_pair(*pair)
                pair_id = -1 if found is None else found
            else:
                store.lock_pair_waiting(*pair, opts.lock_wait_s)
                pair_id = store.pair_id(*pair)
                self.report.earlier_verified = _earlier_verified(store, pair_id)
                self.report.files_recovered = recover(
                    store, pair_id, self.dst_fs, self.dst_root,
                    on_error=self._recovery_error)
                store.start_run(pair_id, self.run_id, self.report.started_at)
                started = True
            scratch = Scratch()
            try:
                self._run(store, scratch, pair_id)
            except ReplicatorError as exc:
                self.report.error = describe(exc)
                self.report.error_retryable = is_retryable(exc)
                if isinstance(exc, DeadlineExceeded):
                    self.report.deadline_exceeded = True
                if exc.exit_code == 2:
                    raise
            except Exception as exc:  # the API's error boundary: an unclassified error is a
                # failed run with a report (and its end recorded), never a half-recorded crash
                log.debug("unexpected error in run %s", self.run_id, exc_info=True)
                self.report.error = f"unexpected error: {describe(exc)}"
                self.report.error_retryable = is_retryable(exc)
            finally:
                self._end_snapshot()
                self.report.finished_at = time.time()
                self.report.settle_verified()
                if started:
                    self._finish(store)
                    self.report.settle_verified()  # recording the end may have failed
        finally:
            if scratch is not None:
                scratch.close()
            store.close()
            self.progress.on_finish()
        return self.report

    def _snapshot_lister(self, store: StateStore, pair_id: int):
        """--snapshot-diff: take this run's snapshot and list from it (by diff against the
        last recorded snapshot where there is one); None falls back to the plain listing."""
        runs = [r for r in store.last_runs(pair_id, 3) if r["run_id"] != self.run_id]
        partial = ("--files-from" if self.listed is not None else
                   "--max-age" if self.opts.max_age_s is not None else
                   "a transform chain" if self.chain else "")  # the manifest is not the source
        prefix = snapdiff.pair_prefix(_pair_key(self.src_fs, self.src_root),
                                      _pair_key(self.dst_fs, self.dst_root))
        begun = snapdiff.begin(self.src_fs, self.src_root, self.run_id, runs, self.filter,
                               prefix=prefix, partial=partial)
        if isinstance(begun, str):
            log.info("--snapshot-diff: %s", begun)
            self.report.snapshot = {"listing": "full", "note": begun, "recorded": False}
            return None
        self._snap = begun
        self.src_root = begun.path
        if begun.base is None or not store.has_records(pair_id):
            return None  # the snapshot, listed in full
        return functools.partial(snapdiff.diff_listing, run=begun,
                                 manifest=store.manifest_rows(pair_id), counter=self._snap_changes)

    def _end_snapshot(self) -> None:
        snap, report = self._snap, self.report
        if snap is None:
            return
        ok = report.ok and not report.files_held_back and report.snapshot is not None
        recorded = snapdiff.finish(self.src_fs, snap, ok)
        if report.snapshot is not None:
            report.snapshot["recorded"] = recorded

    def _finish(self, store: StateStore) -> None:
        """Record the run's end. If the store fails here too (its disk is full), the run row
        stays 'running' on disk, but with no lock behind it it reads as interrupted, and the
        next run of the pair marks it so."""
        try:
            store.finish_run(self.run_id, self.report.status, self.report.to_dict())
        except StateError as exc:
            log.warning("could not record the end of run %s: %s", self.run_id, exc)
            if self.report.error is None:
                self.report.error = describe(exc)

    def _run(self, store: StateStore, scratch: Scratch, pair_id: int) -> None:
        opts, report = self.opts, self.report
        stats = ListingStats()
        lister = walk if self.listed is None else functools.partial(
            walk_listed, listed=self.listed, list_name=opts.files_from)
        if opts.snapshot_diff and not opts.dry_run:
            lister = self._snapshot_lister(store, pair_id) or lister  # reads from the snapshot
        # the destination is listed when the manifest cannot stand for it
        dst_listed = (opts.delete or pair_id < 0 or not store.has_records(pair_id)
                      or self._replica_lost(store, pair_id))
        self._dst_listed = dst_listed
        listing = dict(min_age_s=opts.min_age_s, max_age_s=opts.max_age_s,
                       copy_links=opts.copy_links,
                       workers=listing_workers(self.src_fs, opts.listing_workers),
                       on_error=self._listing_error, stats=stats, exclude_root_names=self.own_names)
        # 1+2. list the source against the manifest. The common re-sync (the manifest stands
        # for the destination, no checksums, a plain listing) merges the two in one ordered
        # pass and leaves the paths the manifest settles out of the scratch tables altogether
        settling = not dst_listed and lister is walk and not self.chain and not opts.checksum
        split = None
        if settling and settle.usable(self.src_fs, copy_links=opts.copy_links,
                                      state=opts.resolved_state_path):
            split = settle.cut(store, pair_id)  # a large tree: two processes list it
        if split is not None:
            self._settled = settle.settle_in_two(
                store, opts.resolved_state_path, pair_id, scratch, self.src_fs, self.src_root,
                self.filter, listing, split, self._listing_error)
        elif settling:
            with store.manifest_scan(pair_id, brief=True) as recorded, store.guard():
                self._settled = scratch.load_settling(
                    walk(self.src_fs, self.src_root, self.filter, ordered=True, rows=True, **listing),
                    recorded, details=functools.partial(store.manifest_details, pair_id))
        else:
            rows = {"rows": True} if lister is walk else {}  # tuples: no object per entry
            scratch.load_listing("src", lister(self.src_fs, self.src_root, self.filter, **listing, **rows))
            if pair_id >= 0:
                store.snapshot_manifest(pair_id, scratch)
        if self._snap is not None:
            self.report.snapshot = self._snap.report(self._snap_changes[0] if self._snap_changes
                                                     else None)
        report.files_listed, report.bytes_listed = stats.files, stats.bytes
        report.files_held_back, report.symlinks_skipped = stats.held_back, stats.symlinks_skipped
        report.files_too_old = stats.too_old
        dst_files = 0
        if dst_listed:
            dst_stats = ListingStats()
            scratch.load_listing("dst", self._walk_dst(dst_stats))
            dst_files = dst_stats.files
            if self.dst_fs.capabilities.listing_mtime == "upload":
                self._dst_source_mtimes(scratch)
        # 3. decide (transformed files apart: their names change on the way)
        xpass = None
        if self.chain:
            from replicator.transforms import TransformPass

            xpass = TransformPass(self.chain, store, scratch, pair_id, self._stage_context(),
                                  dst_listed=dst_listed, precision_ns=self.precision, workers=opts.workers)
            xpass.divert()
        counts = self._decide(store, scratch, pair_id, dst_listed)
        if xpass and opts.delete:
            counts["delete"] += xpass.plan_deletes(report.actions if opts.dry_run else None,
                                                   MAX_ACTIONS_LISTED)
        n_delete = counts["delete"]
        share, count = parse_max_delete(opts.max_delete)
        if n_delete:
            limit = count if count is not None else int(share * dst_files)  # type: ignore[operator]
            if n_delete > limit:
                report.delete_refused = (
                    f"refusing to delete {n_delete} of {dst_files} destination files "
                    f"(limit {opts.max_delete}); nothing was changed. Pass --max-delete to allow it."
                )
                return
        self.progress.on_plan(counts["copy_files"], counts["copy_bytes"])
        if opts.dry_run:
            report.files_copied = counts["copy_files"]
            report.files_updated = counts["update_files"]
            report.bytes_copied = counts["copy_bytes"]
            report.files_deleted = n_delete
            if xpass:
                xpass.run(report, dry_run=True, listed_cap=MAX_ACTIONS_LISTED)
            return
        # 4. directories, then files, then deletes, then the marker
        self._planned_files = counts["copy_files"]
        self._planned_updates = counts["update_files"]
        # a bad executor set-up (no Hadoop jars, no Java) is refused before anything is written
        executor = get_executor(opts.executor, opts.workers, opts.executor_options)
        try:
            self._check_deadline("before the copy started")
            if dst_listed:
                self._remove_links_in_the_way(scratch)
            self._replace_other_kinds(store, scratch, pair_id)
            self._make_dirs(store, scratch, pair_id)
            self._adopt(store, scratch, pair_id)
        except BaseException:
            executor.close()
            raise
        self._transfer(store, scratch, pair_id, executor)
        if xpass:
            xpass.run(report, self.progress)
        self._dir_attributes()
        if scratch.has_deletes():  # files, and directories (only files count toward --max-delete)
            if report.files_failed:
                log.warning("not deleting: %d file(s) failed to copy", report.files_failed)
            else:
                self._delete(store, scratch, pair_id)
        if opts.marker and report.ok:
            self._write_marker(store, pair_id)

    def _replica_lost(self, store: StateStore, pair_id: int) -> bool:
        """Whether the destination still looks like what the manifest describes: its root
        exists and a random sample of recorded files is there at the recorded size (a few
        requests per run). When not (a missing mount, a replaced disk, a wiped prefix), the
        run lists the destination as if there were no manifest."""
        if self.dst_fs.stat(self.dst_root) is None:
            log.warning("destination %s is missing: listing it instead of trusting the manifest",
                        self.report.destination)
            return True
        for rel, size in store.sample_files(pair_id, REPLICA_SAMPLE):
            info = self.dst_fs.stat(self.dst_fs.join(self.dst_root, rel))
            if info is None or info.kind != FILE or info.size != size:
                log.warning("destination %s lost %s since it was recorded: listing the "
                            "destination instead of trusting the manifest",
                            self.report.destination, rel)
                return True
        if self.dst_fs.capabilities.host_paths:
            # a recorded directory replaced by a symlink (or a file) would have this run's
            # copies written through it, outside the destination root; listed, the link is
            # removed first (_remove_links_in_the_way). An lstat a directory, local only
            for rel in store.recorded_dirs(pair_id):
                info = self.dst_fs.stat(self.dst_fs.join(self.dst_root, rel))
                if info is not None and info.kind != DIR:
                    log.warning("destination %s: the recorded directory %s is a %s now: "
                                "listing the destination instead of trusting the manifest",
                                self.report.destination, rel,
                                "symlink" if info.kind == LINK else "file")
                    return True
        return False

    def _walk_dst(self, stats: ListingStats):
        info = self.dst_fs.stat(self.dst_root)
        if info is None:
            return iter(())
        if self.listed is not None:  # only the listed paths are ours to compare or delete
            return walk_listed(self.dst_fs, self.dst_root, self.filter, listed=self.listed, missing_ok=True,
                               workers=listing_workers(self.dst_fs, self.opts.listing_workers),
                               stats=stats, exclude_root_names=self.own_names,
                               on_error=self._listing_error, links=True)
        return walk(self.dst_fs, self.dst_root, self.filter,
                    workers=listing_workers(self.dst_fs, self.opts.listing_workers),
                    stats=stats, exclude_root_names=self.own_names, on_error=self._listing_error,
                    links=True, rows=True)

    def _dst_source_mtimes(self, scratch: Scratch) -> None:
        """The destination lists upload times (S3) while the diff compares source mtimes.
        An object we recorded, of the recorded size and uploaded before the record (upload
        times are truncated to the store's precision) is what we wrote: it takes the recorded source mtime, with no
        request. Any other object the source has at the same size gets the source mtime
        kept in its metadata (one HEAD each: only when the state was lost or someone else
        wrote the object, or the store's clock runs ahead of ours); objects without that
        metadata keep their upload time."""
        precision = self.dst_fs.capabilities.mtime_precision_ns
        ask = scratch.upload_time_candidates(precision)
        scratch.use_recorded_mtimes(precision)
        if not ask:
            return
        from concurrent.futures import ThreadPoolExecutor

        def one(rel: str) -> tuple[int | None, str]:
            return self.dst_fs.source_mtime(self.dst_fs.join(self.dst_root, rel)), rel

        with ThreadPoolExecutor(max(self.opts.listing_workers, self.opts.workers)) as pool:
            found = [(m, rel) for m, rel in pool.map(one, ask) if m is not None]
        scratch.set_dst_mtimes(found)

    def _refuse_name(self, rel: str) -> bool:
        """A name that is not UTF-8 (a local source's bytes, see local.ESC) goes only to a
        destination whose names are bytes too; elsewhere that file alone fails."""
        if not has_byte_names(rel) or (self.src_fs.capabilities.byte_names
                                       and self.dst_fs.capabilities.byte_names):
            return False
        self.report.add_failure(
            rel, f"cannot write '{shown(rel)}' to {self.dst_fs.scheme}://: the name is not valid "
                 f"UTF-8 and {self.dst_fs.scheme} needs UTF-8 names (rename the source file)",
            False, "destination")
        return True

    def _dst_failure(self, rel: str, exc: BaseException, what: str = "") -> None:
        """A destination error on ``rel``: reported naming the destination path, with its class."""
        err = on_side("destination", self.dst_fs.uri(self.dst_fs.join(self.dst_root, rel)), exc)
        self.report.add_failure(rel, what + describe(err), err.retryable, "destination")

    def _recovery_error(self, rel: str, exc: BaseException) -> None:
        self._dst_failure(rel, exc, "finishing an interrupted run's copy: ")

    def _listing_error(self, rel: str, exc: BaseException) -> None:
        self.report.add_failure(rel, describe(exc))

    # ------------------------------------------------------------------ decide
    def _checksum_of(self, side: str, rel: str, size: int) -> str | None:
        fs, root = (self.src_fs, self.src_root) if side == "src" else (self.dst_fs, self.dst_root)
        try:
            return crc.format_crc32c(crc.file_crc32c(fs, fs.join(root, rel), self.opts.chunk_size))
        except FileNotFoundError:
            return None

    def _decide(self, store: StateStore, scratch: Scratch, pair_id: int, dst_listed: bool) -> dict[str, int]:
        scratch.new_work()
        counts = {"copy_files": 0, "copy_bytes": 0, "update_files": 0, "delete": 0, "skip": 0,
                  "held_unrecorded": 0}
        if dst_listed and scratch.only_source():
            return self._decide_all_new(scratch, counts)
        rows: list[tuple] = []
        listed = self.report.actions
        settled: list[int] = []  # unchanged files the manifest settles, counted in bulk
        for d in iter_decisions(scratch, dst_listed=dst_listed, checksum=self.opts.checksum,
                                precision_ns=self.precision, delete=self.opts.delete,
                                checksum_of=self._checksum_of, settled=settled,
                                dst_times="times" in self.opts.preserve):
            action = d.action
            if action is Action.SKIP:
                if dst_listed and d.dst_kind is not None and d.kind == d.dst_kind and not d.held:
                    # unchanged but maybe not recorded (first run against an existing copy,
                    # or lost state): record it so the next run trusts the manifest
                    rows.append(("adopt", d.rel, d.kind, d.size, d.mtime_ns, d.mode,
                                 d.src_checksum, None, d.dst_kind))
                if d.kind == FILE:
                    counts["skip"] += 1
                    counts["held_unrecorded"] += d.held and not d.recorded and d.dst_kind is None
                continue
            if d.kind == DIR and not self.dst_dirs:
                continue
            if action is Action.DELETE:
                counts["delete"] += d.kind == FILE
            elif d.kind == FILE:
                counts["copy_files"] += 1
                counts["copy_bytes"] += d.size
                counts["update_files"] += action is Action.UPDATE
            rows.append((action.value, d.rel, d.kind, d.size, d.mtime_ns, d.mode,
                         d.src_checksum, d.dst_version, d.dst_kind))
            if self.opts.dry_run and len(listed) < MAX_ACTIONS_LISTED:
                listed.append({"action": action.value, "path": d.rel, "kind": d.kind,
                               "size": d.size})
            if len(rows) >= 10_000:
                scratch.add_work(rows)
                rows = []
        if rows:
            scratch.add_work(rows)
        counts["skip"] += sum(settled) + self._settled
        self.report.files_skipped = counts["skip"]
        self.report.held_unrecorded = counts["held_unrecorded"]
        if dst_listed and not self.opts.dry_run:
            # rows for paths gone from both listings are stale, unless the listings could not
            # see them (excluded by the filter, not under a --files-from path, or the
            # marker): those keep their rows
            stale = [p for p, kind in scratch.stale_manifest_entries() if self._listable(p, kind)]
            for i in range(0, len(stale), 10_000):
                store.commit(pair_id, forget=stale[i:i + 10_000])
        return counts

    def _decide_all_new(self, scratch: Scratch, counts: dict[str, int]) -> dict[str, int]:
        """A first copy into an empty destination (no manifest row, nothing listed there):
        every source path not held is a COPY, decided in one statement instead of a join
        row by row (the same work rows, counts and report; no checksum can be asked, as
        nothing at the destination has the size to compare)."""
        files, size, held, _ = scratch.add_all_as_copies(self.dst_dirs)
        counts.update(copy_files=files, copy_bytes=size, skip=held, held_unrecorded=held)
        self.report.files_skipped = counts["skip"] + self._settled
        counts["skip"] = self.report.files_skipped
        self.report.held_unrecorded = held
        if self.opts.dry_run:
            self.report.actions.extend(
                {"action": action, "path": path, "kind": kind, "size": size}
                for action, path, kind, size in scratch.work_rows(MAX_ACTIONS_LISTED))
        return counts

    def _listable(self, rel: str, kind: str) -> bool:
        """Whether a listing with this run's filter would have reported ``rel``."""
        if rel in self.own_names:
            return False
        parts = rel.split("/")
        if self.listed is not None and not any(
                "/".join(parts[:i]) in self._listed_set for i in range(1, len(parts) + 1)):
            return False  # --files-from: both listings covered only the listed paths
        for i in range(1, len(parts)):
            if not self.filter.keep_dir("/".join(parts[:i])):
                return False
        return self.filter.keep_dir(rel) if kind == DIR else self.filter.keep_file(rel)

    # ------------------------------------------------------------------ execute
    def _make_dirs(self, store: StateStore, scratch: Scratch, pair_id: int) -> None:
        made: list[tuple] = []
        for path, mtime_ns in scratch.work_dirs():
            if self._refuse_name(path):
                continue
            target = self.dst_fs.join(self.dst_root, path)
            try:
                if not self._dst_listed and self.dst_fs.capabilities.host_paths:
                    self._unlink_in_the_way(target, path)
                self.dst_fs.makedirs(target)
            except Exception as exc:
                self._dst_failure(path, exc)
                continue
            made.append((path, DIR, 0, mtime_ns, None))
            self._made_dirs.append(path)
        if made:
            store.commit(pair_id, record=made)
            self.report.dirs_created = len(made)

    def _unlink_in_the_way(self, target: str, rel: str) -> None:
        """A new directory's place on an unlisted destination held by a symlink: the link is
        removed (never what it points to), as a listed run removes it, so that makedirs does
        not follow it out of the destination root."""
        info = self.dst_fs.stat(target)
        if info is not None and info.kind == LINK:
            log.warning("destination %s: %s is a symlink where the source has a directory: "
                        "removing the link", self.report.destination, rel)
            self.dst_fs.delete_file(target)

    def _remove_links_in_the_way(self, scratch: Scratch) -> None:
        """A destination symlink where the source has a path, or on the way to one, is
        removed (the link, never what it points to) before anything is written: writing
        through it would put the copy outside the destination root. If one cannot be removed
        the run stops before writing (raises DestinationError)."""
        for rel in scratch.dst_links_in_the_way():
            target = self.dst_fs.join(self.dst_root, rel)
            try:
                self.dst_fs.delete_file(target)
            except Exception as exc:
                raise on_side("destination", self.dst_fs.uri(target), exc) from exc
            log.info("removed the destination symlink %s: the source has a path there", rel)

    def _dir_attributes(self) -> None:
        """The kept attributes (``perms``, owner, group, ACL, xattrs) on the directories this
        run created, once their files are in (a read-only mode set first would stop the
        copy into them: DistCp's committer does the same at the end), deepest first."""
        ctx = self._stage_context()
        want_mode = "perms" in self.opts.preserve and self.dst_fs.capabilities.can_set_mode
        if not self._made_dirs or not (want_mode or self.opts.preserve & ATTRIBUTE_KINDS):
            return
        for rel in sorted(self._made_dirs, key=lambda r: -r.count("/")):
            target = self.dst_fs.join(self.dst_root, rel)
            try:
                attrs = {k: v for k, v in source_attrs(ctx, rel).items() if k != "blocksize"}
                if attrs:
                    self.dst_fs.set_attributes(target, attrs)
                if want_mode:
                    info = self.src_fs.stat(ctx.src_path(rel))
                    if info is not None and info.mode is not None:
                        self.dst_fs.set_mode(target, info.mode)
            except Exception as exc:
                self._dst_failure(rel, exc, "set directory attributes: ")

    def _replace_other_kinds(self, store: StateStore, scratch: Scratch, pair_id: int) -> None:
        """A path the source has as a directory and the destination as a file: the file is
        replaced (as rsync does). The reverse (a destination directory where the source now
        has a file) only with ``--delete``: the directory's contents are destination-only
        paths the delete plan (and its --max-delete guard) already counted; they go first.
        Without --delete that file fails, saying so."""
        for rel, kind, dst_kind in scratch.work_kind_changes():
            if kind == FILE and not self.opts.delete:
                continue
            target = self.dst_fs.join(self.dst_root, rel)
            try:
                if dst_kind == FILE:
                    self.dst_fs.delete_file(target)
                    store.commit(pair_id, forget=[rel])
                else:
                    self._delete_rows(store, pair_id, scratch.take_deletes_under(rel))
                    self.dst_fs.delete_dir(target)
                    if self.dst_fs.stat(target) is not None:
                        raise DestinationWriteError(f"directory {rel} is not empty")
                    store.commit(pair_id, forget=[rel])
            except Exception as exc:
                self._dst_failure(rel, exc, f"replacing the destination {'file' if dst_kind == FILE else 'directory'}: ")
                continue
            self._replaced.add(rel)

    def _adopt(self, store: StateStore, scratch: Scratch, pair_id: int) -> None:
        for rows in scratch.work_adopted():
            store.commit(pair_id, record=rows)

    def _tasks(self, scratch: Scratch) -> Iterator[Task]:
        big = self.opts.multipart_threshold
        # local -> local: one in-kernel copy_file_range (checked piece by piece while it
        # runs, where asked) beats Python ranges
        kernel_copy = local_pair(self.src_fs, self.dst_fs)
        ranged = self.dst_fs.capabilities.parallel_write and not kernel_copy and self._ranges
        byte_names = self.src_fs.capabilities.byte_names and self.dst_fs.capabilities.byte_names
        dst_listed = self._dst_listed
        for seq, action, path, size, mtime_ns, mode, version, dst_kind in scratch.work_files():
            if dst_kind == DIR and path not in self._replaced:
                self.report.add_failure(path, f"destination {path} is a directory; source is a "
                                              f"file (--delete replaces it)")
                continue
            if not byte_names and ESC in path and self._refuse_name(path):
                continue
            task = Task(seq, path, action, size, mtime_ns, mode, version, None, 1, None, dst_listed)
            if ranged and size >= big:
                task.nparts = -(-size // self._part_size(size))
            yield task  # a ranged file is expanded into its ranges by _bins, once journalled

    def _part_size(self, size: int) -> int:
        """The length of the ranges one big file is split into.

        Where the destination sends each part as one request body (S3 multipart), parts are
        chunk-sized so memory stays at chunk size x workers (at least 5 MiB, at most 10,000
        parts). Other object stores (GCS part objects, each a resumable upload) take
        ``part_size``. Where ranges are written at their offsets into one preallocated file
        (local), a file gets one range per ``multipart_threshold`` bytes begun, at most
        MAX_STREAMS_PER_FILE (as rclone's multi-thread downloads): more concurrent ranged
        reads of one object only add requests (and, on stores that serve a range by reading
        the whole object, whole-object reads)."""
        part = self.opts.part_size
        caps = self.dst_fs.capabilities
        if caps.part_in_memory:
            return max(min(part, self.opts.chunk_size), caps.min_part_size,
                       -(-size // caps.max_parts))
        if not caps.atomic_rename:
            return part
        streams = max(1, min(MAX_STREAMS_PER_FILE, -(-size // max(1, self.opts.multipart_threshold))))
        per_stream = -(-size // streams)
        return max(part, -(-per_stream // (1 << 20)) << 20)  # whole MiB

    def _bins(self, store: StateStore, scratch: Scratch, pair_id: int, ctx: StageContext) -> Iterator[list[Task]]:
        """Bins of tasks; each bin is journalled as ``staging`` before it is handed out: a bin
        of small staged files as one ``batch-staging`` row (see :meth:`_journal_bin`), any
        other bin a row per file."""
        for b, small in whole_file_bins(self._tasks(scratch)):
            if self._journal_bin(store, pair_id, ctx, b, small):
                yield b  # whole small files: no range to expand
                continue
            out: list[Task] = []
            for t in b:
                if t.nparts > 1:
                    target = ctx.staged_path(t.rel) or ctx.dst_path(t.rel)
                    try:
                        handle = self.dst_fs.begin_parallel_write(target, t.size, t.mtime_ns)
                    except Exception as exc:
                        err = on_side("destination", self.dst_fs.uri(ctx.dst_path(t.rel)), exc)
                        self._fail(store, pair_id, t.rel, describe(err), err.retryable, "destination")
                        continue
                    t.handle = handle
                    self._ranged[t.rel] = (t, [])
                    for index, offset, length in split_ranges(t.size, self._part_size(t.size)):
                        out.append(Task(t.seq, t.rel, t.action, t.size, t.mtime_ns, t.mode,
                                        t.dst_version, (index, offset, length), t.nparts, handle,
                                        t.dst_listed))
                else:
                    out.append(t)
            if out:
                yield out

    def _journal_bin(self, store: StateStore, pair_id: int, ctx: StageContext, b: list[Task],
                     small: bool) -> bool:
        """A bin of whole small files, each staged under a temporary name, is journalled as one
        row listing those names (its files then cost one manifest row each, no journal row of
        their own): a run killed meanwhile leaves nothing published half-written, and recovery
        removes the staged names (re-copying a small file costs less than journalling it).
        Any other bin gets a ``staging`` row per file (a verified big file is published by
        recovery, an in-place write is looked at). ``small``: every task is a whole small
        file (:func:`replicator.transfer.small_files`). True for a batch."""
        staged = ctx.staged_names(b)
        if not small or None in staged:
            store.journal_staging(pair_id, self.run_id, [(t.rel, tmp) for t, tmp in zip(b, staged, strict=True)])
            return False
        key = batch_key(self.run_id, len(self._batch_left))
        store.journal_batch(pair_id, self.run_id, key, staged)  # type: ignore[arg-type]
        self._batch_left[key] = len(b)
        self._batch_of.update(dict.fromkeys([t.seq for t in b], key))
        for t in b:
            t.self_publish = True  # the batch row covers a staged copy renamed at once
        return True

    def _settle(self, out: Outcome) -> list[str]:
        """The journal keys to clear now that ``out`` is published or failed: its own row, or
        its batch's row once the batch's last file is settled."""
        key = self._batch_of.pop(out.seq, None)
        if key is None:
            return [out.rel]
        self._batch_left[key] -= 1
        return [key] if self._batch_left[key] == 0 else []

    def _fail(self, store: StateStore, pair_id: int, rel: str, error: str, retryable: bool = False,
              side: str | None = None, clear: list[str] | None = None) -> None:
        self.report.add_failure(rel, error, retryable, side)
        store.commit(pair_id, clear=[rel] if clear is None else clear)
        self.progress.on_file(rel, False)

    def _stage_context(self) -> StageContext:
        opts = self.opts
        if self._ctx is None:
            self._ctx = StageContext(
                self.src_fs, self.src_root, self.dst_fs, self.dst_root, self.run_id,
                checksum=opts.checksum, verify_checksum=opts.verify_checksum,
                preserve=opts.preserve, chunk_size=opts.chunk_size,
                retries=opts.retries, retry_backoff_s=opts.retry_backoff_s,
                progress=self.progress, throttle=Throttle(opts.bandwidth_mbps),
                deadline=self._deadline, copy_links=opts.copy_links,
            )
        return self._ctx

    @property
    def _deadline(self) -> float | None:
        d = self.opts.deadline_s
        return None if d is None else self.report.started_at + d

    def _check_deadline(self, what: str) -> None:
        if self._deadline is not None and time.time() >= self._deadline:
            raise DeadlineExceeded(f"deadline of {self.opts.deadline_s:g}s exceeded {what}")

    def _not_done(self, scratch: Scratch, finished: set[str]) -> None:
        """Every planned file that was neither copied nor failed goes in the report."""
        report = self.report
        report.deadline_exceeded = True
        for _seq, _action, path, *_ in scratch.work_files():
            if path not in finished:
                report.files_not_done += 1
                if len(report.not_done) < MAX_NOT_DONE_LISTED:
                    report.not_done.append(path)

    def _transfer(self, store: StateStore, scratch: Scratch, pair_id: int, executor: Executor) -> None:
        opts = self.opts
        self._ranges = executor.ranges
        ctx = self._stage_context()
        if not executor.stages:  # the executor writes and publishes each file itself
            ctx = dataclasses.replace(ctx, staging=False)
        batch: list[Outcome] = []
        last_flush = time.monotonic()
        failed_ranged: set[str] = set()
        finished: set[str] = set()  # copied or failed on their own (not stopped by the deadline)
        stopped = False
        try:
            for out in executor.run(self._bins(store, scratch, pair_id, ctx), ctx):
                if type(out) is SmallBatch:  # copied and renamed into place: recorded at once
                    finished.update([row[0] for row in out.rows])
                    self._publish(store, scratch, pair_id, out)
                    continue
                if out.part is not None or (not out.ok and out.rel in self._ranged):
                    out = self._range_done(out, ctx, failed_ranged)
                    if out is None:
                        continue
                if out.gave_up:
                    stopped = True
                    store.commit(pair_id, clear=self._settle(out))  # nothing staged (aborted)
                    continue
                finished.add(out.rel)
                if not out.ok:
                    self._fail(store, pair_id, out.rel, out.error or "failed", out.retryable, out.side,
                               clear=self._settle(out))
                    continue
                batch.append(out)
                if len(batch) >= opts.batch_files or time.monotonic() - last_flush > 0.5:
                    self._publish(store, scratch, pair_id, batch)
                    batch = []
                    last_flush = time.monotonic()
        except DeadlineExceeded:
            stopped = True  # the workers still in calls are abandoned; their journal entries stay
        finally:
            if batch:
                self._publish(store, scratch, pair_id, batch)
            self.report.executor_details = executor.details()
            executor.close()
        if stopped or (ctx.past_deadline() and len(finished) < self._planned_files):
            self._not_done(scratch, finished)
            raise DeadlineExceeded(
                f"deadline of {opts.deadline_s:g}s exceeded: {self.report.files_not_done} "
                f"file(s) not done (a server may have stopped answering)")

    def _range_done(self, out: Outcome, ctx: StageContext, failed: set[str]) -> Outcome | None:
        task, parts = self._ranged[out.rel]
        if not out.ok:
            if out.rel in failed:
                return None
            failed.add(out.rel)
            try:
                self.dst_fs.abort_parallel_write(task.handle or {})
            except Exception:
                pass
            return out
        if out.rel in failed:
            return None
        parts.append(out.part)  # type: ignore[arg-type]
        if len(parts) < task.nparts:
            return None
        del self._ranged[out.rel]
        return finish_ranges(task, parts, ctx)

    def _publish(self, store: StateStore, scratch: Scratch, pair_id: int,
                 batch: list[Outcome] | SmallBatch) -> None:
        """Rename the staged copies into place and record them, a batch at a time: files with
        a journal row of their own are first marked ``staged`` (verified: recovery publishes
        them), files of a journalled batch are not (recovery removes their staged names)."""
        if type(batch) is SmallBatch:  # in place already: recorded at once
            self._publish_small(store, scratch, pair_id, batch)
            return
        own = [(o.rel, o.size, o.mtime_ns, o.checksum) for o in batch if o.seq not in self._batch_of]
        if own:
            store.journal_staged(pair_id, own)
        done: list[tuple] = []
        done_seqs: list[int] = []
        failed: list[str] = []
        clear: list[str] = []
        for o in batch:
            clear += self._settle(o)
            if o.tmp is not None:
                try:
                    self.dst_fs.rename(o.tmp, self.dst_fs.join(self.dst_root, o.rel))
                except Exception as exc:
                    self._dst_failure(o.rel, exc)
                    try:
                        self.dst_fs.delete_file(o.tmp)
                    except Exception:
                        pass
                    failed.append(o.rel)
                    self.progress.on_file(o.rel, False)
                    continue
            done.append((o.rel, FILE, o.size, o.mtime_ns, o.checksum))
            done_seqs.append(o.seq)
            self.report.files_copied += 1
            self.report.files_verified += o.verified
            self.report.bytes_copied += o.size
            self.progress.on_file(o.rel, True)
        store.commit(pair_id, record=done, clear=clear)
        if self._planned_updates:  # a first copy has none to count
            self.report.files_updated += scratch.count_updates(done_seqs)

    def _publish_small(self, store: StateStore, scratch: Scratch, pair_id: int, done: SmallBatch) -> None:
        """Record a :class:`SmallBatch` (its files are in place already) as :meth:`_publish`
        records its outcomes, and clear its bin's journal row once the bin is settled."""
        seqs = done.seqs
        key = self._batch_of[seqs[0]]
        pop = self._batch_of.pop
        for seq in seqs:
            pop(seq)
        left = self._batch_left[key] = self._batch_left[key] - len(seqs)
        report = self.report
        report.files_copied += len(seqs)
        report.bytes_copied += done.nbytes
        if self.progress is not NO_PROGRESS:  # before the record, as _publish
            on_file = self.progress.on_file
            for row in done.rows:
                on_file(row[0], True)
        store.commit(pair_id, record=done.rows, clear=[key] if left == 0 else [])
        if self._planned_updates:
            report.files_updated += scratch.count_updates(seqs)

    def _delete(self, store: StateStore, scratch: Scratch, pair_id: int) -> None:
        self._delete_rows(store, pair_id, scratch.work_deletes())  # reverse path order: children first

    def _delete_rows(self, store: StateStore, pair_id: int, rows: list[tuple[str, str]]) -> None:
        gone: list[str] = []
        for path, kind in rows:
            target = self.dst_fs.join(self.dst_root, path)
            try:
                if kind == DIR:
                    self.dst_fs.delete_dir(target)
                else:  # a file, or a symlink (the link, never what it points to)
                    self.dst_fs.delete_file(target)
                    self.report.files_deleted += kind == FILE
            except Exception as exc:
                self._dst_failure(path, exc, "delete: ")
                continue
            gone.append(path)
        store.commit(pair_id, forget=gone)

    def _write_marker(self, store: StateStore, pair_id: int) -> None:
        """Written last; where it is staged, its temporary is journalled like any file's (a
        kill between write and rename leaves nothing that recovery does not remove)."""
        name = self.opts.marker or ""
        final = self.dst_fs.join(self.dst_root, name)
        self.report.finished_at = time.time()  # the copy is over: duration and verified are known
        self.report.settle_verified()
        summary = self.report.to_dict()
        summary.pop("actions", None)
        summary.pop("failures", None)
        data = json.dumps(summary, indent=2, sort_keys=True).encode()
        tmp = temp_name(final, self.run_id) if self.dst_fs.capabilities.atomic_rename else None
        if tmp:
            store.journal_staging(pair_id, self.run_id, [(name, tmp)])
        with self.dst_fs.open_write(tmp or final) as w:
            w.write(data)
        if tmp:
            self.dst_fs.rename(tmp, final)
            store.commit(pair_id, clear=[name])
        self.report.marker = self.dst_fs.uri(final)


def run_copy(source: str, destination: str, options: CopyOptions, *,
             progress: Progress | None = None, command: str = "copy") -> RunReport:
    return _Run(source, destination, options, progress, command).run()
