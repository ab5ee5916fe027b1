"""O(changes) source listing from HDFS snapshot diffs (``copy --snapshot-diff``).

Each run takes a snapshot of the source root (``replicator-<pair hash>-<run id>``, WebHDFS
CREATESNAPSHOT) and copies from it (``root/.snapshot/<name>/...``: a consistent image, no
file changes under the copy). When the pair's previous run finished ok and recorded its
snapshot, the listing is the manifest with the snapshot diff between that snapshot and this
one applied (GETSNAPSHOTDIFF, what DistCp ``-diff`` uses): deleted paths leave it, created,
modified and renamed ones are stat'ed (created or renamed directories are walked) from the
new snapshot. Nothing else is asked of the NameNode, so an unchanged tree costs one snapshot
and one diff, not a listing of every directory.

Lossless: the diff is always against the last recorded snapshot, so a missed run only
makes the next diff longer. A run records its snapshot only when it finished ok with
nothing held back (``--min-age``) after listing the whole source; anything else (first
run, a failed or interrupted run, the previous snapshot gone) lists the new snapshot in
full and starts the chain again. A run that lists a selection (include/exclude filters,
``--files-from``, ``--max-age``) or transforms (``-t``: the manifest holds archives and
their outputs, not source entries) lists its snapshot in full and never records it: its
manifest is not an image of the source a diff could be applied to. Snapshots are named per
pair (source and destination), so two destinations of one source keep their own chains:
once a run is recorded, the pair's older snapshots are deleted, never another pair's (old
unqualified ``replicator-<run id>`` names are left alone unless one was the pair's last
recorded snapshot).
Where the root is not snapshottable (or the back end has no snapshots) the run falls back
to the ordinary listing and says so in the report. ``hdfs://`` (hdfs-native, which has no
snapshot calls) takes its snapshots and diffs through the NameNode's WebHDFS
(``http_address``) and reads the data over RPC; without ``http_address`` the run is refused
(exit 2) naming the option.
"""

from __future__ import annotations

import hashlib
import logging
import posixpath
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from replicator.errors import ReplicatorError, UsageError, describe
from replicator.filesystems.base import DIR, FILE, FileSystem
from replicator.filters import Filter
from replicator.listing import Entry, ListingStats, walk

log = logging.getLogger("replicator")
PREFIX = "replicator-"


@dataclass
class SnapshotRun:
    root: str  # the live source root
    name: str  # this run's snapshot
    path: str  # root/.snapshot/name: what the run lists and reads
    base: str | None  # the previous recorded snapshot the listing diffs against
    note: str = ""
    prefix: str = PREFIX  # this pair's snapshot names start with it (see pair_prefix)
    complete: bool = True  # the run lists the whole source: only then may it be recorded
    previous: str | None = None  # the pair's last recorded snapshot, trusted as a base or not

    def report(self, changes: int | None) -> dict[str, Any]:
        return {"name": self.name, "base": self.base, "listing": "diff" if self.base else "full",
                "changes": changes, "recorded": False, "complete": self.complete,
                "note": self.note or None}


def pair_prefix(source: str, destination: str) -> str:
    """``replicator-<hash of the pair>-``: the names of one pair's snapshots. Pairs that share
    a source root (two destinations) take, read and delete only their own snapshots."""
    digest = hashlib.sha256(f"{source}\0{destination}".encode("utf-8", "surrogateescape"))
    return f"{PREFIX}{digest.hexdigest()[:12]}-"


def supported(fs: FileSystem) -> bool:
    return all(hasattr(fs, m) for m in ("create_snapshot", "delete_snapshot", "snapshot_diff",
                                        "snapshot_names"))


def _recorded(last_runs: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The snapshot report of the pair's latest run, if that run finished ok and recorded it."""
    if not last_runs:
        return None
    report = last_runs[0].get("report") or {}
    snap = report.get("snapshot") or {}
    if last_runs[0].get("status") != "ok" or not snap.get("recorded"):
        return None
    return snap


def previous_base(last_runs: list[dict[str, Any]]) -> str | None:
    """The snapshot the pair's latest run recorded, if that run finished ok and recorded one
    after listing the whole source (runs from before the ``complete`` flag are not trusted:
    they may have listed a selection; the next run lists in full once)."""
    snap = _recorded(last_runs)
    return snap.get("name") if snap is not None and snap.get("complete") else None


def begin(fs: FileSystem, root: str, run_id: str, last_runs: list[dict[str, Any]],
          flt: Filter, *, prefix: str = PREFIX, partial: str = "") -> SnapshotRun | str:
    """Take this run's snapshot; a string says why the run falls back to a plain listing.
    ``partial`` names what makes the run list less than the whole source through the
    manifest (--files-from, --max-age, a transform chain): the snapshot is then listed in
    full and never recorded, as with include/exclude filters."""
    if not supported(fs):
        return f"{fs.scheme}:// has no snapshots: listed in full"
    name = f"{prefix}{run_id}"
    try:
        path = fs.create_snapshot(root, name)  # type: ignore[attr-defined]
    except UsageError:
        raise  # the back end needs an option to take snapshots at all (hdfs:// without
        # http_address): exit 2, not a quiet full listing
    except (ReplicatorError, OSError) as exc:
        return f"no snapshot of {fs.uri(root)} ({describe(exc)}): listed in full"
    base = previous_base(last_runs)
    note = ""
    if flt.selective:
        partial = "include/exclude filters"
    if partial:
        base, note = None, f"{partial}: the snapshot is listed in full and not recorded"
    elif base is not None and base not in fs.snapshot_names(root):  # type: ignore[attr-defined]
        base, note = None, f"recorded snapshot {base} is gone: listed in full"
    last = _recorded(last_runs)
    return SnapshotRun(root, name, path, base, note, prefix, complete=not partial,
                       previous=last.get("name") if last else None)


def diff_listing(fs: FileSystem, root: str, flt: Filter, *, run: SnapshotRun,
                 manifest: Iterable[tuple], counter: list[int], min_age_s: float = 0.0,
                 max_age_s: float | None = None, workers: int = 8, on_error=None,
                 stats: ListingStats, exclude_root_names: frozenset[str] = frozenset(),
                 copy_links: bool = False) -> Iterator[list[Entry]]:
    """The source listing of ``root`` (this run's snapshot, ``run.path``): ``manifest`` rows ``(path, kind, size, mtime_ns, checksum, ...)``
    with the diff base..name applied; changed paths are stat'ed / walked in the snapshot."""
    assert run.base is not None
    changes = fs.snapshot_diff(run.root, run.base, run.name)  # type: ignore[attr-defined]
    counter.append(len(changes))
    # rel -> (rel, kind, size, mtime_ns, checksum, mode, held)
    rows: dict[str, tuple] = {r[0]: (r[0], r[1], r[2], r[3], None, None, False) for r in manifest}
    fresh_files: set[str] = set()
    fresh_dirs: set[str] = set()
    now_ns = time.time_ns()
    min_age_ns = int(min_age_s * 1e9)

    def drop(rel: str) -> None:
        rows.pop(rel, None)
        prefix = rel + "/"
        for k in [k for k in rows if k.startswith(prefix)]:
            del rows[k]

    # every path a change names is dropped, then whatever the new snapshot holds at the paths
    # it created, modified or renamed to is stat'ed back in: the order of the report (an
    # overwritten file shows as a delete and a create of one name) does not matter
    for kind, rel, target in changes:
        rel = rel.strip("/")
        if kind in ("DELETE", "RENAME") and rel:
            drop(rel)
        if kind == "RENAME" and target is not None and target.strip("/"):
            fresh_files.add(target.strip("/"))
        elif kind in ("CREATE", "MODIFY") and rel:
            fresh_files.add(rel)
    for rel in sorted(fresh_files):
        if rel in exclude_root_names:
            continue
        info = fs.stat(fs.join(root, rel))
        if info is None:
            drop(rel)
        elif info.kind == DIR:
            if not flt.keep_dir(rel):
                drop(rel)
                continue
            if rel not in rows or rows[rel][1] != DIR:
                fresh_dirs.add(rel)  # a new or renamed directory: everything under it
            rows[rel] = (rel, DIR, 0, info.mtime_ns, None, None, False)
        elif info.kind == FILE and flt.keep_file(rel):
            held = min_age_ns > 0 and now_ns - info.mtime_ns < min_age_ns
            rows[rel] = (rel, FILE, info.size, info.mtime_ns, None, info.mode, held)
        else:  # a symlink or special file, or a name writers use for files in progress
            rows.pop(rel, None)
    for top in sorted(fresh_dirs):
        if any(top.startswith(d + "/") for d in fresh_dirs):
            continue  # walked with its ancestor
        drop_under = top + "/"
        for k in [k for k in rows if k.startswith(drop_under)]:
            del rows[k]
        for batch in walk(fs, fs.join(root, top), flt, min_age_s=min_age_s,
                          max_age_s=max_age_s, copy_links=copy_links, workers=workers,
                          on_error=on_error, stats=stats):
            for e in batch:
                e.rel = posixpath.join(top, e.rel)
                rows[e.rel] = (e.rel, e.kind, e.size, e.mtime_ns, e.checksum, e.mode, e.held)
    batch: list[Entry] = []
    for rel in sorted(rows):
        r = rows[rel]
        kind, size, mtime, mode, held = r[1], r[2], r[3], r[5], bool(r[6])
        if kind == FILE:
            stats.files += 1
            stats.bytes += size
            stats.held_back += held
            batch.append(Entry(rel, FILE, size, mtime, mode, None, None, held))
        else:
            stats.dirs += 1
            batch.append(Entry(rel, DIR, 0, mtime))
        if len(batch) >= 5000:
            yield batch
            batch = []
    if batch:
        yield batch


def finish(fs: FileSystem, run: SnapshotRun, ok: bool) -> bool:
    """Record (True) or drop this run's snapshot; once recorded, delete the pair's older ones
    (its previous base, and any a killed run left), never another pair's."""
    ok = ok and run.complete
    try:
        if not ok:
            fs.delete_snapshot(run.root, run.name)  # type: ignore[attr-defined]
            return False
        for old in fs.snapshot_names(run.root):  # type: ignore[attr-defined]
            if old != run.name and (old.startswith(run.prefix) or old == run.previous):
                fs.delete_snapshot(run.root, old)  # type: ignore[attr-defined]
    except (ReplicatorError, OSError) as exc:
        log.warning("snapshot clean-up of %s: %s", fs.uri(run.root), describe(exc))
    return ok


# ---------------------------------------------------------------- partitions from a diff
def snapshot_uri(root_uri: str, name: str) -> str:
    """The URI of snapshot ``name`` of the snapshottable directory ``root_uri``."""
    return f"{root_uri.rstrip('/')}/.snapshot/{name}"


def _level_match(parts: list[str], levels: tuple[str, ...]) -> bool:
    import fnmatch

    from replicator.filters import is_temporary_name

    return all(fnmatch.fnmatchcase(p, lv) and not is_temporary_name(p)
               for p, lv in zip(parts, levels, strict=False))


def partitions_in_diff(
    changes: Iterable[tuple[str, str, str | None]], levels: tuple[str, ...],
) -> tuple[set[str], set[str], set[str]]:
    """Map a snapshot diff (``(type, rel, target rel)``, HDFS SnapshotDiffReport types
    CREATE / MODIFY / DELETE / RENAME) to the partitions of a layout (``("dt=*", "hour=*")``).

    Returns ``(partitions, old_prefixes, new_prefixes)``: the partition keys an entry at or
    below partition depth names (a file created, deleted, modified or renamed in ``dt=1``, or
    ``dt=1`` itself), and the directories above partition depth that were deleted or renamed
    away (their partitions are listed in the old snapshot) or created or renamed in (listed in
    the new one). HDFS reports a new or deleted directory as one entry, never its children, so
    those prefixes are where the rest is. A MODIFY of a directory above partition depth only
    says entries changed in it, and those are entries of their own. Names outside the layout
    (``_tmp``, ``x._COPYING_``) are no partition. ``levels`` empty (an unpartitioned
    dataset): any entry names the one partition ``""``."""
    parts_of = {}
    touched: set[str] = set()
    old: set[str] = set()
    new: set[str] = set()
    depth = len(levels)
    for kind, rel, target in changes:
        sides = [("old" if kind in ("DELETE", "RENAME") else "new", rel)]
        if kind == "RENAME" and target is not None:
            sides.append(("new", target))
        for side, path in sides:
            if not depth:
                touched.add("")
                continue
            parts = parts_of.get(path)
            if parts is None:
                parts = parts_of[path] = [p for p in path.strip("/").split("/") if p and p != "."]
            if len(parts) >= depth:
                if _level_match(parts[:depth], levels):
                    touched.add("/".join(parts[:depth]))
            elif parts and kind != "MODIFY" and _level_match(parts, levels):
                (old if side == "old" else new).add("/".join(parts))
    return touched, old, new
