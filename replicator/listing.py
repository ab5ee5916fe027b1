"""Streamed, filtered listing of a tree; directories are listed in parallel, or in path
order for a one-pass merge with the manifest (``walk(..., ordered=True)``).

Yields batches of :class:`Entry` with paths relative to the root, so a caller can
write them to the state store without ever holding the whole tree.
"""

from __future__ import annotations

import bisect
import operator
import queue
import re
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from replicator.errors import UsageError
from replicator.filesystems.base import DIR, FILE, LINK, FileSystem, unsafe_rel
from replicator.filters import SKIP_FILE_PATTERNS, TEMP_PREFIX, Filter, glob_to_regex

ErrorCallback = Callable[[str, BaseException], None]


def _affixes(patterns: tuple[str, ...]) -> tuple[tuple[str, ...], tuple[str, ...], list[str]]:
    """``(prefixes, suffixes, others)`` of name globs: ``X*`` and ``*X`` (no other wildcard)
    become plain ``startswith`` / ``endswith`` tests; anything else stays a glob."""
    prefixes, suffixes, others = [], [], []
    for p in patterns:
        body = p.strip("*")
        if any(c in body for c in "*?[\\"):
            others.append(p)
        elif p == body + "*":
            prefixes.append(body)
        elif p == "*" + body:
            suffixes.append(body)
        else:
            others.append(p)
    return tuple(prefixes), tuple(suffixes), others


_TEMP_PREFIXES, _TEMP_SUFFIXES, _TEMP_OTHERS = _affixes((TEMP_PREFIX + "*", *SKIP_FILE_PATTERNS))
# filters.is_temporary_name's patterns that are not a plain prefix or suffix, as one regex
_TEMPORARY_RE = (re.compile("|".join(f"(?:{glob_to_regex(p).pattern})" for p in _TEMP_OTHERS),
                            re.DOTALL) if _TEMP_OTHERS else None)


@dataclass(slots=True)
class Entry:
    rel: str
    kind: str  # FILE or DIR
    size: int
    mtime_ns: int
    mode: int | None = None
    checksum: str | None = None
    version: str | None = None
    held: bool = False  # too new (--min-age) or too old (--max-age): left alone this run

    def row(self) -> tuple:
        return (self.rel, self.kind, self.size, self.mtime_ns, self.mode, self.checksum,
                self.version, int(self.held))


@dataclass
class ListingStats:
    files: int = 0
    bytes: int = 0
    dirs: int = 0
    held_back: int = 0
    too_old: int = 0  # older than --max-age: left alone
    symlinks_skipped: int = 0
    errors: int = 0


def _name_keeper(flt: Filter) -> Callable[[str], bool] | None:
    """A test of a file's base name equivalent to ``flt.keep_file`` for the default filter (no
    include/exclude globs), which is what the listing's hot loop calls per file; None when
    the filter needs the whole relative path."""
    if type(flt) is not Filter or flt.selective:
        return None
    if not flt.skip_temporary:
        return lambda name: True
    prefixes, suffixes, match = _TEMP_PREFIXES, _TEMP_SUFFIXES, _TEMPORARY_RE and _TEMPORARY_RE.match

    def keep(name: str) -> bool:
        return not (name.startswith(prefixes) or name.endswith(suffixes) or (match and match(name)))

    return keep


@dataclass(slots=True)
class _Listed:
    """What one listing thread found in one directory."""

    batch: list[Entry] = field(default_factory=list)
    subdirs: list[tuple[str, str, frozenset]] = field(default_factory=list)  # (path, rel, ancestors)
    errors: list[tuple[str, BaseException]] = field(default_factory=list)
    files: int = 0
    bytes: int = 0
    held_back: int = 0
    too_old: int = 0
    symlinks_skipped: int = 0


def age_hold(now_ns: int, mtime_ns: int, min_age_ns: int, max_age_ns: int | None) -> str | None:
    """``"new"`` (younger than --min-age), ``"old"`` (older than --max-age) or None (copy it)."""
    age = now_ns - mtime_ns
    if min_age_ns > 0 and age < min_age_ns:
        return "new"
    if max_age_ns is not None and age > max_age_ns:
        return "old"
    return None


_by_rel = operator.itemgetter(0)  # a row's (or a scanned tuple's) path or name
_size_of = operator.itemgetter(2)  # a row's size


def _rel(root: str, path: str) -> str:
    rel = path[len(root):] if path.startswith(root) else path
    return rel.lstrip("/")


def listing_workers(fs: FileSystem, workers: int) -> int:
    """The listing threads worth having for ``fs``: none for a file system on this host's
    paths, ``workers`` otherwise. Listing a local tree is an ``lstat`` per file under one
    interpreter lock; threads listing ahead only hand that lock back and forth around every
    call (strace of a 50 k-file re-sync on disk: ~665,000 futex calls with 8 threads, 14
    inline; ~12 % less CPU inline). A remote file system's round trips still overlap."""
    return 0 if fs.capabilities.host_paths else workers


def walk(
    fs: FileSystem,
    root: str,
    flt: Filter,
    *,
    min_age_s: float = 0.0,
    max_age_s: float | None = None,
    copy_links: bool = False,
    workers: int = 8,
    on_error: ErrorCallback | None = None,
    stats: ListingStats | None = None,
    exclude_root_names: frozenset[str] = frozenset(),
    now_ns: int | None = None,
    links: bool = False,
    ordered: bool = False,
    rows: bool = False,
    split: Split | None = None,
) -> Iterator[list[Entry]] | Iterator[list[tuple]]:
    """Yield batches of entries under ``root`` (the root itself excluded).

    Files modified less than ``min_age_s`` or more than ``max_age_s`` ago are listed as
    ``held`` (left alone: neither copied nor, at the destination, deleted).
    Symlinks are skipped (and counted) unless ``copy_links``; then they are followed,
    and a link to one of its own ancestors is refused as a loop. With ``links`` (a
    destination's listing) a symlink is listed as a ``LINK`` entry and never followed: it is
    something in the way of a copy, never a directory to write through.
    ``workers=0`` lists in the calling thread (no thread pool: cheaper for the many small
    trees a change sensor fingerprints). With ``ordered``, the batches come in path order
    (see :func:`_ordered`), for a one-pass merge with the manifest. With ``rows``, each entry
    comes as its :meth:`Entry.row` tuple instead (no object per file: what the state store
    and the scratch tables take). With ``split`` (ordered only), one side of a tree listed by
    two processes at once (see :class:`Split`). Raises UsageError if ``root`` is missing or
    not a directory.
    """
    stats = stats if stats is not None else ListingStats()
    now_ns = now_ns if now_ns is not None else time.time_ns()
    min_age_ns = int(min_age_s * 1e9)
    max_age_ns = int(max_age_s * 1e9) if max_age_s is not None else None
    info = fs.stat(root)
    if info is None:
        raise UsageError(f"source not found: {fs.uri(root)}")
    if info.kind == LINK and info.target_kind == DIR:
        pass
    elif info.kind != DIR:
        raise UsageError(f"not a directory: {fs.uri(root)}")
    root_ancestors = frozenset({info.inode}) if info.inode else frozenset()
    keep_name = _name_keeper(flt)
    keep_file = flt.keep_file
    scan = getattr(fs, "scan_dir", None)
    scan_rows = getattr(fs, "scan_rows", None)
    skip_temporary = flt.skip_temporary
    aged = min_age_ns > 0 or max_age_ns is not None
    as_rows = rows

    def children_of(path: str, rel: str) -> list[tuple]:
        """``(name, path or None, kind, size, mtime_ns, mode, checksum, version, target_kind,
        inode)`` for each child of ``path``, in name order (so in path order). The path is
        filled in lazily (None) on the fast path: only directories need it."""
        if scan is not None:  # plain tuples straight from the back end
            rows = [(name, None, kind, size, mtime, mode, None, None, target, inode)
                    for name, kind, size, mtime, mode, inode, target in scan(path)]
        else:
            rows = [(_rel(root, c.path), c.path, c.kind, c.size, c.mtime_ns, c.mode, c.checksum,
                     c.version, c.target_kind, c.inode) for c in fs.list_dir(path)]
        rows.sort(key=_by_rel)  # in path order: the state store's B-tree takes them faster
        return rows

    def list_one(path: str, dir_rel: str, ancestors: frozenset) -> _Listed:
        """List and filter one directory. Runs in a listing thread (the filter is pure), so
        this work overlaps with the caller writing the previous batch to the state store."""
        out = _Listed()
        batch = out.batch
        append = batch.append
        under = dir_rel + "/" if dir_rel else ""
        held_back = too_old = files = nbytes = 0
        if scan_rows is not None and keep_name is not None:
            # the hot loop of a local tree: plain files come as finished listing rows (one
            # tuple per file, built in the back end's loop); filtered and counted here in
            # bulk, anything else goes through the general loop below
            rows, scanned = scan_rows(path, under)
            if skip_temporary and rows:  # filters.is_temporary_name, on the name part
                n = len(under)
                rows = [r for r in rows if not (r[0].endswith(_TEMP_SUFFIXES)
                                                or r[0].startswith(_TEMP_PREFIXES, n))]
                if _TEMPORARY_RE is not None:
                    rows = [r for r in rows if not _TEMPORARY_RE.match(r[0], n)]
            if exclude_root_names and not under:  # the engine's own files at the root
                rows = [r for r in rows if r[0] not in exclude_root_names]
            rows.sort()  # by name (unique in a directory): path order
            if aged and rows:
                kept = []
                for r in rows:
                    age = now_ns - r[3]
                    if min_age_ns > 0 and age < min_age_ns:
                        held_back += 1
                        kept.append((*r[:7], True))
                    elif max_age_ns is not None and age > max_age_ns:
                        too_old += 1
                        kept.append((*r[:7], True))
                    else:
                        files += 1
                        nbytes += r[2]
                        kept.append(r)
                rows = kept
            else:
                files = len(rows)
                nbytes = sum(map(_size_of, rows))
            fast_rows = rows
            others = [(name, None, kind, size, mtime, mode, None, None, target, inode)
                      for name, kind, size, mtime, mode, inode, target in scanned]
            others.sort(key=_by_rel)
        else:
            others, fast_rows = children_of(path, dir_rel), []
        for name, cpath, kind, size, mtime, mode, checksum, version, target, inode in others:
            if cpath is None:  # scan_dir: a name in this directory
                rel = under + name
            else:  # list_dir: a path under the root
                rel, name = name, name[name.rfind("/") + 1:]
                if not rel:
                    continue
                if unsafe_rel(rel) or not rel.startswith(under) or "/" in rel[len(under):]:
                    # an object key with "..", "." or empty segments: joined to the destination
                    # root it would name something outside it (or another path than its own)
                    out.errors.append((rel, UsageError(
                        f"{fs.uri(cpath)}: name with an empty, '.' or '..' segment; not copied")))
                    continue
            if exclude_root_names and not under and rel in exclude_root_names:
                continue  # the engine's own files at the root (the marker)
            if kind == FILE:  # the common case first
                if not (keep_name(name) if keep_name is not None else keep_file(rel)):
                    continue
                age = now_ns - mtime
                if min_age_ns > 0 and age < min_age_ns:
                    held_back += 1
                    append(Entry(rel, FILE, size, mtime, mode, checksum, version, True))
                elif max_age_ns is not None and age > max_age_ns:
                    too_old += 1
                    append(Entry(rel, FILE, size, mtime, mode, checksum, version, True))
                else:
                    files += 1
                    nbytes += size
                    append(Entry(rel, FILE, size, mtime, mode, checksum, version))
                continue
            if kind == LINK:
                if links:
                    append(Entry(rel, LINK, 0, mtime))
                    continue
                if not copy_links or target is None:
                    out.symlinks_skipped += 1
                    continue
                kind = target
                if kind == DIR and inode in ancestors:
                    out.symlinks_skipped += 1
                    out.errors.append((rel, UsageError(f"symlink loop at {rel}: not followed")))
                    continue
            if kind == DIR:
                if not flt.keep_dir(rel):
                    continue
                out.subdirs.append((cpath or fs.join(path, name), rel,
                                    ancestors | {inode} if inode else ancestors))
                if flt.keep_empty_dir(rel):
                    append(Entry(rel, DIR, 0, mtime, mode))
                continue
            if kind != FILE or not keep_file(rel):
                continue  # FIFOs, sockets, devices; filtered names
            hold = age_hold(now_ns, mtime, min_age_ns, max_age_ns)  # a followed link to a file
            if hold == "new":
                out.held_back += 1
            elif hold == "old":
                out.too_old += 1
            else:
                out.files += 1
                out.bytes += size
            append(Entry(rel, FILE, size, mtime, mode, checksum, version, hold is not None))
        if fast_rows:  # the plain files of the hot loop join what the general loop kept
            if as_rows:
                merged = fast_rows + [e.row() for e in batch] if batch else fast_rows
            else:
                merged = [Entry(*r) for r in fast_rows] + batch if batch else [Entry(*r) for r in fast_rows]
            if batch:  # listed apart: back in path order
                merged.sort(key=_by_rel if as_rows else _entry_rel)
            out.batch = merged
        elif as_rows and batch:
            out.batch = [e.row() for e in batch]
        out.held_back += held_back
        out.too_old += too_old
        out.files += files
        out.bytes += nbytes
        return out

    def absorb(path: str, listed: _Listed | None, exc: BaseException | None,
               quiet: bool = False) -> _Listed | None:
        """Count one directory's listing into ``stats`` and report its errors; None when
        the directory could not be listed (vanished, or unreadable: reported, skipped).
        ``quiet``: a directory listed only to find the way to this side's part of a split
        (the other side counts and reports it)."""
        if exc is not None:
            if isinstance(exc, FileNotFoundError):
                if path == root:
                    raise UsageError(f"source not found: {fs.uri(root)}") from None
                return None  # vanished while listing
            if not isinstance(exc, Exception):
                raise exc
            if quiet:
                return None
            stats.errors += 1  # unreadable directory: report, go on
            if on_error:
                on_error(_rel(root, path) or ".", exc)
            return None
        assert listed is not None
        if quiet:
            return listed
        stats.files += listed.files
        stats.bytes += listed.bytes
        stats.held_back += listed.held_back
        stats.too_old += listed.too_old
        stats.symlinks_skipped += listed.symlinks_skipped
        stats.dirs += len(listed.subdirs)
        if on_error:
            for rel, err in listed.errors:
                on_error(rel, err)
        return listed

    if ordered:
        yield from _ordered(list_one, absorb, (root, "", root_ancestors), workers,
                            _by_rel if as_rows else _entry_rel, split)
        return
    if split is not None:
        raise ValueError("walk(split=...) needs ordered=True")

    # completions come back through one queue: wait() over thousands of pending
    # directory futures costs more than listing a small directory
    results: queue.SimpleQueue = queue.SimpleQueue()

    def task(path: str, rel: str, ancestors: frozenset) -> None:
        try:
            results.put((path, list_one(path, rel, ancestors), None))
        except BaseException as exc:
            results.put((path, None, exc))

    # directories found wait here as paths; only 2 x workers listings are in flight, so
    # finished listings never pile up in memory however wide the tree is
    todo: deque[tuple[str, str, frozenset]] = deque([(root, "", root_ancestors)])
    limit = 2 * max(1, workers)
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="list") if workers > 0 else None
    submit = pool.submit if pool is not None else (lambda fn, *args: fn(*args))
    try:
        outstanding = 0
        while todo or outstanding:
            while todo and outstanding < limit:
                submit(task, *todo.pop())
                outstanding += 1
            path, listed, exc = results.get()
            outstanding -= 1
            listed = absorb(path, listed, exc)
            if listed is None:
                continue
            todo.extend(listed.subdirs)
            if listed.batch:
                yield listed.batch
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


def _entry_rel(e: Entry) -> str:
    return e.rel


def _below(subdir: tuple[str, str, frozenset]) -> str:
    return subdir[1] + "/"


@dataclass(frozen=True)
class Split:
    """One tree listed by two processes at once, each merging its part with the manifest:
    under the directory ``at``, the subdirectories whose ``rel + "/"`` sorts at or after
    ``boundary`` (and everything below them) are side 1's; everything else is side 0's.
    Side 1 lists ``at`` and its ancestors only to find its subdirectories: their entries
    are neither yielded nor counted. So every entry is yielded, and counted, by one side."""

    at: str
    boundary: str
    side: int

    def on_the_way(self, rel: str) -> bool:
        """``rel`` is ``at`` or one of its ancestors."""
        return rel == self.at or not rel or self.at.startswith(rel + "/")

    def others(self, rel: str) -> bool:
        """``rel`` is one of side 1's subdirectories of ``at``."""
        parent = rel[:rel.rfind("/")] if "/" in rel else ""
        return parent == self.at and rel + "/" >= self.boundary


def _ordered(list_one: Callable[..., _Listed], absorb: Callable[..., _Listed | None],
             top: tuple[str, str, frozenset], workers: int,
             rel_of: Callable[[Any], str] = _entry_rel, split: Split | None = None) -> Iterator[list]:
    """:func:`walk`'s batches in path order (code point order of ``rel``, as a B-tree of
    paths keeps them): depth first, a directory's descendants coming where ``name + "/"``
    sorts among its siblings' names. With ``workers``, the next ``workers`` subdirectories
    of each directory on the way down are listed ahead in threads (a remote file system's
    round trips overlap); with 0, each is listed when its turn comes. ``split``: only one
    side's part of the tree (see :class:`Split`)."""
    quiet_side = split is not None and split.side == 1
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="list") if workers > 0 else None

    def start(sub: tuple[str, str, frozenset]) -> tuple[str, Future | tuple]:
        if pool is None:
            return sub[0], sub
        return sub[0], pool.submit(list_one, *sub)

    def finish(started: tuple[str, Future | tuple], rel: str) -> tuple[_Listed | None, str]:
        path, job = started
        quiet = quiet_side and split.on_the_way(rel)  # type: ignore[union-attr]
        try:
            listed = job.result() if isinstance(job, Future) else list_one(*job)
        except BaseException as exc:
            return absorb(path, None, exc, quiet), rel
        return absorb(path, listed, None, quiet), rel

    # a frame per directory on the way down: [entries, next entry, subdirs, next subdir,
    # subdirs listed ahead]
    stack: list[list] = []

    def push(found: tuple[_Listed | None, str]) -> None:
        listed, rel = found
        if listed is None:
            return
        # a subdirectory's descendants sort by "name/": "b.d/f" comes before "b/c"
        subdirs = sorted(listed.subdirs, key=_below) if len(listed.subdirs) > 1 else listed.subdirs
        batch = listed.batch
        if split is not None and split.on_the_way(rel):
            if split.side == 0:  # side 1's subdirectories are not ours
                subdirs = [d for d in subdirs if not split.others(d[1])]
            else:  # only the way down to side 1's subdirectories; nothing of these yielded
                subdirs = [d for d in subdirs if split.on_the_way(d[1]) or split.others(d[1])]
                batch = []
        frame = [batch, 0, subdirs, 0, deque()]
        ahead(frame)
        stack.append(frame)

    def ahead(frame: list) -> None:
        subdirs, pending = frame[2], frame[4]
        while pool is not None and len(pending) < workers and frame[3] + len(pending) < len(subdirs):
            pending.append(start(subdirs[frame[3] + len(pending)]))

    try:
        push(finish(start(top), top[1]))
        while stack:
            frame = stack[-1]
            batch, pos, subdirs, nsub, pending = frame
            if nsub < len(subdirs):
                end = bisect.bisect_left(batch, subdirs[nsub][1] + "/", pos, key=rel_of)
                if end > pos:
                    yield batch[pos:end]
                    frame[1] = end
                started = pending.popleft() if pending else start(subdirs[nsub])
                frame[3] = nsub + 1
                ahead(frame)
                push(finish(started, subdirs[nsub][1]))
            else:
                if pos < len(batch):
                    yield batch[pos:] if pos else batch
                stack.pop()
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
