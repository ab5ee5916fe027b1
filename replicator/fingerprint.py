"""Cheap change detection on the engine's own listing: partition directories, a fingerprint
per tree, and the temporaries a copy may have left behind.

A fingerprint is a short hash over the (path, size, mtime) of every file the engine would
copy: the same :func:`replicator.listing.walk` with the same :class:`~replicator.filters.Filter`
and ``min_age_s``/``max_age_s`` (temporary names skipped, symlinks skipped as the copy skips
them, files younger than ``min_age_s`` or older than ``max_age_s`` left out and counted as held
back, so a file becoming old enough is noticed). "Eligible
file" therefore has one definition, the copy's. Callers (the Dagster change sensor, the lag
check) keep fingerprints to find what changed since the last copy.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import posixpath
import re
import stat as stat_mod
import time
from collections.abc import Callable
from dataclasses import dataclass

from replicator.errors import UsageError
from replicator.filesystems.base import DIR, FILE, LINK
from replicator.filesystems.local import LocalFileSystem, native_path, text_path
from replicator.filesystems.registry import resolve
from replicator.filters import TEMP_PREFIX, Filter, is_temporary_name
from replicator.listing import walk

EMPTY_FINGERPRINT = "empty"


@dataclass(frozen=True)
class TreeFingerprint:
    partition: str
    fingerprint: str  # EMPTY_FINGERPRINT when no file is eligible yet
    files: int
    bytes: int
    newest_mtime_ns: int
    held_back: int  # files younger than min_age_s


def _raise(rel: str, exc: BaseException) -> None:
    raise exc


def list_partition_dirs(uri: str, levels: tuple[str, ...]) -> list[str]:
    """Sorted relative paths of the directories ``levels`` deep under ``uri`` whose names match
    each level's glob (``("dt=*", "hour=*")`` -> ``dt=2026-11-20/hour=03``). Temporary names
    (``_COPYING_``, ``.rtmp-*``, ...) are not partitions; a symlink to a directory is one (the
    depth is bounded, so no loop). A missing root has none."""
    return [rel for rel, _ in list_partition_dirs_with_mtimes(uri, levels)]


def list_partition_dirs_with_mtimes(
    uri: str, levels: tuple[str, ...], cache: ListingCache | None = None,
) -> list[tuple[str, int | None]]:
    """:func:`list_partition_dirs` with each partition directory's own modification time, as
    the listing reports it (no extra call): on HDFS and local disks it moves whenever an entry
    is created, removed or renamed in the directory, so a change hint for free. ``None`` where
    it says nothing: object stores (no directories), symlinks (the link's own time).
    ``cache``: see :func:`list_partitions`."""
    names, mtimes = list_partitions(uri, levels, cache)
    return list(zip(names, mtimes, strict=True))


def list_partitions(
    uri: str, levels: tuple[str, ...], cache: ListingCache | None = None,
) -> tuple[list[str], list[int | None]]:
    """:func:`list_partition_dirs_with_mtimes` as two parallel lists, sorted by name: the
    change sensor's form (no tuple per partition).

    ``cache``: local directories whose listing is kept from an earlier call (see
    :class:`ListingCache`) are not read again; only their partition directories are stat'ed,
    for their mtimes."""
    if not levels:
        return [], []
    fs, root = resolve(uri)
    local = isinstance(fs, LocalFileSystem) and os.scandir in os.supports_fd
    current: list[tuple[str, str]] = [("", root)]  # (relative path, native path) of a level
    names: list[str] = []
    mtimes: list[int | None] = []
    last = len(levels) - 1
    for depth, level in enumerate(levels):
        nxt: list[tuple[str, str]] = []
        match = re.compile(fnmatch.translate(level)).match
        def keep(name: str, match=match) -> bool:
            return match(name) is not None and not is_temporary_name(name)

        for rel, native in current:
            try:
                if local:
                    dirs, dir_mtimes, links = _local_level(native, keep, level, depth == last, cache)
                else:
                    dirs, dir_mtimes, links = _remote_level(fs, native, keep)
            except (FileNotFoundError, NotADirectoryError):
                continue
            if depth == last:  # the partitions: no path to build for a deeper level
                if rel:
                    names += [f"{rel}/{n}" for n in dirs]
                    names += [f"{rel}/{n}" for n in links]
                else:
                    names += dirs
                    names += links
                mtimes += dir_mtimes
                mtimes += [None] * len(links)
            else:
                prefix = f"{rel}/" if rel else ""
                nxt += [(prefix + n, fs.join(native, n)) for n in dirs + links]
        current = nxt
    if names != sorted(names):  # several parents, or links: sorted, as every listing is
        order = sorted(range(len(names)), key=names.__getitem__)
        names = [names[i] for i in order]
        mtimes = [mtimes[i] for i in order]
    return names, mtimes


def _remote_level(fs, native: str, keep: Callable[[str], bool]) -> tuple[list[str], list[int | None], list[str]]:
    """The directories (names, their mtimes) and links to directories of one directory whose
    names ``keep`` takes: the back end's tuple scan where it has one (no FileInfo per entry),
    else its ``list_dir``."""
    scan = getattr(fs, "scan_dir", None)
    if scan is not None:
        entries = [(e[0], e[1], e[3], e[6]) for e in scan(native) if keep(e[0])]
    else:
        entries = [(i.name, i.kind, i.mtime_ns, i.target_kind) for i in fs.list_dir(native) if keep(i.name)]
    dirs = [(n, m or None) for n, k, m, _ in entries if k == DIR]
    links = [n for n, k, _, t in entries if k == LINK and t == DIR]
    return [n for n, _ in dirs], [m for _, m in dirs], links


class ListingCache:
    """Local directory listings kept between partition listings (the change sensor's ticks),
    each valid while its directory is the same inode with the same modification time.

    Creating, removing or renaming an entry moves its directory's mtime, so a directory whose
    mtime has not moved holds the same names: a tick then stats the partition directories it
    knows (their mtimes are the change hint) instead of reading and filtering every level
    again. A listing is kept only when it was read ``settle_s`` or more after the directory's
    mtime: a change in the same clock step as the one before (file systems stamp times from a
    coarse clock; some in whole seconds) would not move the mtime, and a listing read in that
    step would miss it. Such a directory is simply read again by the next call.

    Entries are pruned by :meth:`sweep`: directories not listed since the previous sweep are
    forgotten. Thread safe for listings of different directories (one dict write each)."""

    def __init__(self, settle_s: float = 2.0) -> None:
        self.settle_ns = int(settle_s * 1e9)
        # (native path, level glob) -> (st_dev, st_ino, st_mtime_ns, dirs, links)
        #   dirs: (text names, native names) of the directory entries the level takes
        #   links: (text names, native names) of its symlinks that pointed to a directory
        self._dirs: dict[tuple[str, str], tuple[int, int, int, tuple[list[str], list[str]],
                                                tuple[list[str], list[str]]]] = {}
        self._used: set[tuple[str, str]] = set()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._dirs)

    def get(self, key: tuple[str, str], st: os.stat_result):
        self._used.add(key)
        entry = self._dirs.get(key)
        if entry is None or entry[:3] != (st.st_dev, st.st_ino, st.st_mtime_ns):
            self.misses += 1
            return None
        self.hits += 1
        return entry

    def put(self, key: tuple[str, str], st: os.stat_result, read_at_ns: int, dir_names: list[str],
            dir_raws: list[str], link_names: list[str], link_raws: list[str]) -> None:
        if read_at_ns - st.st_mtime_ns >= self.settle_ns:
            self._dirs[key] = (st.st_dev, st.st_ino, st.st_mtime_ns, (dir_names, dir_raws),
                               (link_names, link_raws))
        else:
            self._dirs.pop(key, None)

    def drop(self, key: tuple[str, str]) -> None:
        self._dirs.pop(key, None)

    def sweep(self) -> None:
        """Forget the directories not listed since the last sweep."""
        for key in self._dirs.keys() - self._used:
            del self._dirs[key]
        self._used = set()


def _local_level(
    native: str, keep: Callable[[str], bool], level: str, want_mtime: bool,
    cache: ListingCache | None,
) -> tuple[list[str], list[int | None], list[str]]:
    """:func:`_remote_level` on a local disk: each directory stat'ed relative to the open
    directory (a partition listing stats 100,000 directories a tick), and only where its mtime
    is wanted (the partitions' level); from ``cache`` where the directory did not change since
    it was read."""
    fd = os.open(native_path(native), os.O_RDONLY | os.O_DIRECTORY)
    try:
        key = (native, level)
        st = os.fstat(fd)
        hit = cache.get(key, st) if cache is not None else None
        if hit is not None:
            out = _from_cache(fd, hit[3], hit[4], want_mtime)
            if out is not None:
                return out
            cache.drop(key)  # type: ignore[union-attr]  # changed under us: read it again
        read_at_ns = time.time_ns()
        dirs: list[tuple[str, str]] = []  # (text name, native name)
        links: list[tuple[str, str]] = []
        mtimes: list[int | None] = []
        with os.scandir(fd) as it:
            for entry in it:
                raw = entry.name
                name = raw if raw.isascii() else text_path(raw)
                if not keep(name):
                    continue
                try:
                    if entry.is_dir(follow_symlinks=False):  # the entry's type: no system call
                        mtime = entry.stat(follow_symlinks=False).st_mtime_ns if want_mtime else None
                        dirs.append((name, raw))
                        mtimes.append(mtime or None)
                    elif entry.is_symlink() and entry.is_dir():  # a link to a directory
                        links.append((name, raw))
                except FileNotFoundError:  # vanished between readdir and stat
                    continue
        if cache is not None:
            cache.put(key, st, read_at_ns, [n for n, _ in dirs], [r for _, r in dirs],
                      [n for n, _ in links], [r for _, r in links])
        return [n for n, _ in dirs], mtimes, [n for n, _ in links]
    finally:
        os.close(fd)


def _from_cache(
    fd: int, dirs: tuple[list[str], list[str]], links: tuple[list[str], list[str]], want_mtime: bool,
) -> tuple[list[str], list[int | None], list[str]] | None:
    """A cached listing's entries, the directories stat'ed for their mtimes where wanted; None
    if one is no longer what was listed (the caller reads the directory again)."""
    stat, isdir = os.stat, stat_mod.S_ISDIR
    names, raws = dirs
    try:
        if want_mtime:
            sts = [stat(raw, dir_fd=fd, follow_symlinks=False) for raw in raws]
            if not all(isdir(s.st_mode) for s in sts):
                return None
            mtimes: list[int | None] = [s.st_mtime_ns or None for s in sts]
        else:
            mtimes = [None] * len(names)
        # a link's target may change without the directory's mtime moving
        kept = [n for n, raw in zip(*links, strict=True) if isdir(stat(raw, dir_fd=fd).st_mode)]
    except (FileNotFoundError, NotADirectoryError):
        return None
    return names, mtimes, kept


def fingerprint_tree(
    uri: str, flt: Filter, *, min_age_s: float = 0.0, max_age_s: float | None = None,
    now: float | None = None, partition: str = "",
) -> TreeFingerprint:
    """Fingerprint the files the engine would copy from ``uri`` (``partition`` only labels the
    result). A missing tree is empty, not an error; an unreadable directory raises (a partial
    listing would look like a change)."""
    fs, root = resolve(uri)
    now_ns = int((now if now is not None else time.time()) * 1e9)
    entries: list[tuple[str, int, int]] = []
    held_back = 0
    try:
        for batch in walk(fs, root, flt, min_age_s=min_age_s, max_age_s=max_age_s, workers=0,
                          on_error=_raise, now_ns=now_ns):
            for e in batch:
                if e.kind != FILE:
                    continue
                if e.held:
                    held_back += 1
                else:
                    entries.append((e.rel, e.size, e.mtime_ns))
    except UsageError:  # nothing (or no directory) at ``uri``
        pass
    if not entries:
        return TreeFingerprint(partition, EMPTY_FINGERPRINT, 0, 0, 0, held_back)
    entries.sort()
    h = hashlib.blake2b(digest_size=8)
    for rel, size, mtime_ns in entries:
        h.update(f"{rel}\0{size}\0{mtime_ns}\n".encode())
    return TreeFingerprint(
        partition=partition,
        fingerprint=h.hexdigest(),
        files=len(entries),
        bytes=sum(e[1] for e in entries),
        newest_mtime_ns=max(e[2] for e in entries),
        held_back=held_back,
    )


def leftover_temporaries(uri: str, limit: int = 20) -> list[str]:
    """Our staged files (``.rtmp-*``) and ``*._COPYING_`` names left under ``uri``."""
    fs, root = resolve(uri)
    found: list[str] = []
    try:
        for batch in walk(fs, root, Filter(skip_temporary=False), workers=0, on_error=_raise):
            found += [
                e.rel for e in batch
                if e.kind == FILE and (
                    posixpath.basename(e.rel).startswith(TEMP_PREFIX) or e.rel.endswith("._COPYING_")
                )
            ]
            if len(found) >= limit:
                break
    except UsageError:  # nothing at ``uri``: nothing left behind
        return []
    return found[:limit]
