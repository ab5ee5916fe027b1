"""Streamed, filtered listing of a tree; directories are listed in parallel.

Yields batches of :class:`Entry` with paths relative to the root, so a caller can
write them to the state store without ever holding the whole tree.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass

from replicator.errors import UsageError
from replicator.filesystems.base import DIR, FILE, LINK, FileInfo, FileSystem
from replicator.filters import Filter

ErrorCallback = Callable[[str, BaseException], None]


@dataclass(slots=True)
class Entry:
    rel: str
    kind: str  # FILE or DIR
    size: int
    mtime_ns: int
    mode: int | None = None
    checksum: str | None = None
    version: str | None = None
    held: bool = False  # too new (--min-age): left alone this run

    def row(self) -> tuple:
        return (self.rel, self.kind, self.size, self.mtime_ns, self.mode, self.checksum,
                self.version, int(self.held))


@dataclass
class ListingStats:
    files: int = 0
    bytes: int = 0
    dirs: int = 0
    held_back: int = 0
    symlinks_skipped: int = 0
    errors: int = 0


def _rel(root: str, path: str) -> str:
    rel = path[len(root):] if path.startswith(root) else path
    return rel.lstrip("/")


def walk(
    fs: FileSystem,
    root: str,
    flt: Filter,
    *,
    min_age_s: float = 0.0,
    copy_links: bool = False,
    workers: int = 8,
    on_error: ErrorCallback | None = None,
    stats: ListingStats | None = None,
    exclude_root_names: frozenset[str] = frozenset(),
    now_ns: int | None = None,
) -> Iterator[list[Entry]]:
    """Yield batches of entries under ``root`` (the root itself excluded).

    Symlinks are skipped (and counted) unless ``copy_links``; then they are followed,
    and a link to one of its own ancestors is refused as a loop.
    Raises UsageError if ``root`` is missing or not a directory.
    """
    stats = stats if stats is not None else ListingStats()
    now_ns = now_ns if now_ns is not None else time.time_ns()
    min_age_ns = int(min_age_s * 1e9)
    info = fs.stat(root)
    if info is None:
        raise UsageError(f"source not found: {fs.uri(root)}")
    if info.kind == LINK and info.target_kind == DIR:
        pass
    elif info.kind != DIR:
        raise UsageError(f"not a directory: {fs.uri(root)}")
    root_ancestors = frozenset({info.inode}) if info.inode else frozenset()

    def list_one(path: str) -> list[FileInfo]:
        return fs.list_dir(path)

    pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="list")
    pending: dict[Future, tuple[str, frozenset]] = {}
    try:
        pending[pool.submit(list_one, root)] = (root, root_ancestors)
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                path, ancestors = pending.pop(fut)
                try:
                    children = fut.result()
                except FileNotFoundError:
                    if path == root:
                        raise UsageError(f"source not found: {fs.uri(root)}") from None
                    continue  # vanished while listing
                except Exception as exc:  # unreadable directory: report, go on
                    stats.errors += 1
                    if on_error:
                        on_error(_rel(root, path) or ".", exc)
                    continue
                batch: list[Entry] = []
                for child in children:
                    rel = _rel(root, child.path)
                    if not rel:
                        continue
                    kind = child.kind
                    if kind == LINK:
                        if not copy_links or child.target_kind is None:
                            stats.symlinks_skipped += 1
                            continue
                        kind = child.target_kind
                        if kind == DIR and child.inode in ancestors:
                            stats.symlinks_skipped += 1
                            if on_error:
                                on_error(rel, UsageError(f"symlink loop at {rel}: not followed"))
                            continue
                    if "/" not in rel and rel in exclude_root_names:
                        continue
                    if kind == DIR:
                        if not flt.keep_dir(rel):
                            continue
                        stats.dirs += 1
                        child_anc = ancestors | {child.inode} if child.inode else ancestors
                        pending[pool.submit(list_one, child.path)] = (child.path, child_anc)
                        if flt.keep_empty_dir(rel):
                            batch.append(Entry(rel, DIR, 0, child.mtime_ns, child.mode))
                        continue
                    if kind != FILE or not flt.keep_file(rel):
                        continue
                    held = min_age_ns > 0 and now_ns - child.mtime_ns < min_age_ns
                    if held:
                        stats.held_back += 1
                    else:
                        stats.files += 1
                        stats.bytes += child.size
                    batch.append(Entry(rel, FILE, child.size, child.mtime_ns, child.mode,
                                       child.checksum, child.version, held))
                if batch:
                    yield batch
    finally:
        for fut in pending:
            fut.cancel()
        pool.shutdown(wait=True, cancel_futures=True)
