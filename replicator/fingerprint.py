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


def list_partition_dirs_with_mtimes(uri: str, levels: tuple[str, ...]) -> list[tuple[str, int | None]]:
    """:func:`list_partition_dirs` with each partition directory's own modification time, as
    the listing reports it (no extra call): on HDFS and local disks it moves whenever an entry
    is created, removed or renamed in the directory, so a change hint for free. ``None`` where
    it says nothing: object stores (no directories), symlinks (the link's own time)."""
    if not levels:
        return []
    fs, root = resolve(uri)
    current: list[tuple[str, str]] = [("", root)]  # (relative path, native path) of a level
    found: list[tuple[str, int | None]] = []
    last = len(levels) - 1
    for depth, level in enumerate(levels):
        nxt: list[tuple[str, str]] = []
        match = re.compile(fnmatch.translate(level)).match
        def keep(name: str, match=match) -> bool:
            return match(name) is not None and not is_temporary_name(name)

        for rel, native in current:
            try:
                entries = _dir_entries(fs, native, keep)
            except (FileNotFoundError, NotADirectoryError):
                continue
            prefix = f"{rel}/" if rel else ""
            for name, kind, mtime_ns, target_kind in entries:
                if not (kind == DIR or (kind == LINK and target_kind == DIR)):
                    continue
                if depth == last:  # the partitions: no path to build for a deeper level
                    found.append((prefix + name, mtime_ns if kind == DIR and mtime_ns else None))
                else:
                    nxt.append((prefix + name, fs.join(native, name)))
        current = nxt
    found.sort()
    return found


def _dir_entries(fs, native: str, keep: Callable[[str], bool]) -> list[tuple[str, str, int, str | None]]:
    """``(name, kind, mtime_ns, target_kind)`` of a directory's entries whose names ``keep``
    takes: on local disks directories and links only, each stat'ed relative to the open
    directory (a partition listing stats 100,000 directories a tick); else the back end's
    tuple scan where it has one (no FileInfo per entry), else its ``list_dir``."""
    if isinstance(fs, LocalFileSystem) and os.scandir in os.supports_fd:
        return _local_dir_entries(native, keep)
    scan = getattr(fs, "scan_dir", None)
    if scan is not None:
        return [(e[0], e[1], e[3], e[6]) for e in scan(native) if keep(e[0])]
    return [(i.name, i.kind, i.mtime_ns, i.target_kind) for i in fs.list_dir(native) if keep(i.name)]


def _local_dir_entries(native: str, keep: Callable[[str], bool]) -> list[tuple[str, str, int, str | None]]:
    out: list[tuple[str, str, int, str | None]] = []
    fd = os.open(native_path(native), os.O_RDONLY | os.O_DIRECTORY)
    try:
        with os.scandir(fd) as it:
            for entry in it:
                name = entry.name if entry.name.isascii() else text_path(entry.name)
                if not keep(name):
                    continue
                try:
                    if entry.is_dir(follow_symlinks=False):  # the entry's type: no system call
                        out.append((name, DIR, entry.stat(follow_symlinks=False).st_mtime_ns, None))
                    elif entry.is_symlink() and entry.is_dir():  # a link to a directory
                        out.append((name, LINK, 0, DIR))
                except FileNotFoundError:  # vanished between readdir and stat
                    continue
    finally:
        os.close(fd)
    return out


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
