"""``--files-from FILE``: copy the listed paths instead of walking the whole tree
(DistCp ``-f``, rclone ``--files-from``).

The list is a local text file, one path a line, relative to the source root (bytes that
are not UTF-8 name files byte for byte, as the local back end does). Leading and
trailing whitespace is stripped; blank lines and lines starting with ``#`` or ``;`` are
comments. An absolute path is accepted when it lies under the source root's path (it is
made relative); one outside the root, or any path with a ``..`` component, is refused
with the file name and line number (exit 2) before anything is copied. A listed
directory is copied with everything under it (DistCp ``-f``). Filters (globs, regexes,
``--min-age``, ``--max-age``) still apply to what the list names.

A listed path missing from the source is a failure of that path (``listed in FILE:LINE,
not found in the source``): the run copies everything else, exits 1 and, as with any
failure, deletes nothing. The list is an explicit contract; a missing entry usually means
an upstream job did not produce it. The destination side is restricted to the same
paths, so ``--delete`` only ever removes destination files under a listed path.
"""

from __future__ import annotations

import posixpath
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

from replicator.errors import SourceReadError, UsageError
from replicator.filesystems.base import DIR, FILE, LINK, FileSystem
from replicator.filesystems.local import text_path
from replicator.filters import Filter
from replicator.listing import Entry, ErrorCallback, ListingStats, age_hold, walk

Listed = list[tuple[str, int]]  # (relative path, line number)


def read_files_from(list_path: str, root_path: str) -> Listed:
    """Parse the list (see the module doc); ``root_path`` is the source root as a path."""
    try:
        with open(list_path, "rb") as f:
            raw = f.read().decode("utf-8", "surrogateescape")
    except OSError as exc:
        raise UsageError(f"--files-from {list_path}: cannot read: {exc.strerror or exc}") from None
    root = posixpath.normpath("/" + root_path.strip("/")) if root_path else "/"
    seen: set[str] = set()
    out: Listed = []
    for lineno, line in enumerate(raw.splitlines(), 1):
        text = line.strip()
        if not text or text[0] in "#;":
            continue
        where = f"--files-from {list_path}:{lineno}"
        if "\x00" in text:
            raise UsageError(f"{where}: NUL byte in path")
        if text.startswith("/"):
            norm = posixpath.normpath(text)
            if ".." in text.split("/") or not (norm == root or norm.startswith(root.rstrip("/") + "/")):
                raise UsageError(f"{where}: {text!r} is outside the source root {root}")
            text = norm[len(root):]
        parts = [p for p in text.split("/") if p not in ("", ".")]
        if ".." in parts:
            raise UsageError(f"{where}: {text!r} escapes the source root (a '..' component)")
        rel = text_path("/".join(parts))  # bytes that are not UTF-8 as the engine spells them
        if not rel:
            raise UsageError(f"{where}: {text!r} names the source root itself; list paths under it")
        if rel not in seen:
            seen.add(rel)
            out.append((rel, lineno))
    # a path under a listed directory is already covered by it
    return [(rel, n) for rel, n in out
            if not any("/".join(rel.split("/")[:i]) in seen for i in range(1, rel.count("/") + 1))]


def walk_listed(
    fs: FileSystem,
    root: str,
    flt: Filter,
    *,
    listed: Listed,
    list_name: str = "",
    missing_ok: bool = False,
    min_age_s: float = 0.0,
    max_age_s: float | None = None,
    copy_links: bool = False,
    workers: int = 8,
    on_error: ErrorCallback | None = None,
    stats: ListingStats | None = None,
    exclude_root_names: frozenset[str] = frozenset(),
    links: bool = False,
) -> Iterator[list[Entry]]:
    """Batches of entries for the listed paths (a listed directory: its whole subtree),
    as :func:`replicator.listing.walk` yields them for a whole tree. Each path costs one
    ``stat`` (in ``workers`` threads), not a listing of its directory, plus one per distinct
    directory on the way (cached): a symlink there is treated as walk treats it (skipped
    unless ``copy_links``; with ``links``, the destination's case, listed as a ``LINK``
    entry in the way, and never looked through)."""
    stats = stats if stats is not None else ListingStats()
    if fs.stat(root) is None:
        if missing_ok:
            return
        raise UsageError(f"source not found: {fs.uri(root)}")
    now_ns = time.time_ns()
    min_age_ns = int(min_age_s * 1e9)
    max_age_ns = int(max_age_s * 1e9) if max_age_s is not None else None

    follow = copy_links and not links
    ancestor_is_link: dict[str, bool] = {}

    def link_on_the_way(rel: str) -> str | None:
        """The first directory on the way to ``rel`` that is a symlink (stat does not look
        at the last component only: it resolves every one before it)."""
        if follow:
            return None
        parts = rel.split("/")
        for i in range(1, len(parts)):
            up = "/".join(parts[:i])
            hit = ancestor_is_link.get(up)
            if hit is None:
                info = fs.stat(fs.join(root, up))
                hit = ancestor_is_link[up] = info is not None and info.kind == LINK
            if hit:
                return up
        return None

    def one(item: tuple[str, int]):
        rel, lineno = item
        link = link_on_the_way(rel)
        if link is not None:
            return rel, lineno, None, link
        return rel, lineno, fs.stat(fs.join(root, rel)), None

    with ThreadPoolExecutor(max(1, workers), thread_name_prefix="files-from") as pool:
        batch: list[Entry] = []
        stated = (r for start in range(0, len(listed), 4096)  # bounded futures in flight
                  for r in pool.map(one, listed[start:start + 4096]))
        links_listed: set[str] = set()
        for rel, lineno, info, link in stated:
            if link is not None or (links and info is not None and info.kind == LINK):
                link = link or rel
                if links and link not in links_listed:
                    links_listed.add(link)
                    batch.append(Entry(link, LINK, 0, 0))
                elif not links:
                    stats.symlinks_skipped += 1
                continue
            kind = info.kind if info is not None else None
            if kind == LINK:
                if not copy_links or info.target_kind is None:
                    stats.symlinks_skipped += 1
                    continue
                kind = info.target_kind
            if info is None or kind not in (FILE, DIR):
                if not missing_ok and on_error:
                    what = "not found in the source" if info is None else "not a file or directory"
                    on_error(rel, SourceReadError(f"listed in {list_name}:{lineno}, {what}"))
                continue
            if "/" not in rel and rel in exclude_root_names:
                continue
            if kind == DIR:
                if not flt.keep_dir(rel):
                    continue
                if flt.keep_empty_dir(rel):
                    batch.append(Entry(rel, DIR, 0, info.mtime_ns, info.mode))
                stats.dirs += 1
                for sub in walk(fs, fs.join(root, rel), flt, min_age_s=min_age_s, max_age_s=max_age_s,
                                copy_links=copy_links, workers=workers, stats=stats,
                                on_error=_prefixed(on_error, rel), now_ns=now_ns, links=links):
                    batch.extend(Entry(f"{rel}/{e.rel}", e.kind, e.size, e.mtime_ns, e.mode, e.checksum,
                                       e.version, e.held) for e in sub)
                    if len(batch) >= 1000:
                        yield batch
                        batch = []
                continue
            if not _keep_listed_file(flt, rel):
                continue
            hold = age_hold(now_ns, info.mtime_ns, min_age_ns, max_age_ns)
            held = hold is not None
            if hold == "new":
                stats.held_back += 1
            elif hold == "old":
                stats.too_old += 1
            else:
                stats.files += 1
                stats.bytes += info.size
            batch.append(Entry(rel, FILE, info.size, info.mtime_ns, info.mode, info.checksum,
                               info.version, held))
            if len(batch) >= 1000:
                yield batch
                batch = []
        if batch:
            yield batch


def _keep_listed_file(flt: Filter, rel: str) -> bool:
    """A listed file passes the filter, and no directory on its way is pruned by it."""
    parts = rel.split("/")
    return flt.keep_file(rel) and all(flt.keep_dir("/".join(parts[:i])) for i in range(1, len(parts)))


def _prefixed(on_error: ErrorCallback | None, prefix: str) -> ErrorCallback | None:
    if on_error is None:
        return None
    call: Callable[[str, BaseException], None] = on_error
    return lambda rel, exc: call(f"{prefix}/{rel}" if rel != "." else prefix, exc)
