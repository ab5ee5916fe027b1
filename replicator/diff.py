"""The decision: what to do with one path (DistCp ``CopyMapper.FileAction``,
rclone ``operations.NeedTransfer``). :func:`decide` is pure; :func:`iter_decisions`
streams the join of the source listing, the manifest and (when listed) the
destination out of the run's scratch tables and applies it row by row, after the
scratch database has set aside, in bulk, the rows the manifest already settles
(unchanged and recorded as they are: SKIP, nothing to record)."""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from replicator.filesystems.base import DIR, FILE
from replicator.state.scratch import Scratch


class Action(enum.StrEnum):
    COPY = "copy"  # not at the destination
    UPDATE = "update"  # at the destination, but different
    SKIP = "skip"  # unchanged (or held back, or not ours to touch)
    DELETE = "delete"  # at the destination only, and --delete


@dataclass(frozen=True, slots=True)
class Side:
    kind: str
    size: int
    mtime_ns: int
    checksum: str | None = None


def same(a: Side, b: Side, *, checksum: bool, precision_ns: int) -> bool:
    """Unchanged: same size and mtime within the coarser precision; or same checksum."""
    if a.kind != b.kind:
        return False
    if a.kind == DIR:
        return True
    if a.size != b.size:
        return False
    if checksum:
        return a.checksum is not None and a.checksum == b.checksum
    return abs(a.mtime_ns - b.mtime_ns) < max(precision_ns, 1)


def is_recorded(recorded: Side, dst: Side, *, precision_ns: int, dst_times: bool = True) -> bool:
    """The destination entry is what the manifest recorded. The record holds the source's
    mtime; where the copy does not set it on the destination (``--preserve`` without
    ``times``) the destination's own mtime says nothing, and size (and kind) decide."""
    if dst_times:
        return same(recorded, dst, checksum=False, precision_ns=precision_ns)
    return recorded.kind == dst.kind and (dst.kind == DIR or recorded.size == dst.size)


def decide(
    src: Side | None,
    recorded: Side | None,
    dst: Side | None,
    *,
    dst_listed: bool,
    checksum: bool = False,
    precision_ns: int = 1,
    delete: bool = False,
    held: bool = False,
    dst_times: bool = True,
) -> Action:
    """What to do with one path.

    ``src``: the source entry (None: not in the source). ``recorded``: the manifest row of the
    last copy (None: never recorded). ``dst``: the destination entry, meaningful only when
    ``dst_listed``. ``held``: the source file is too new to copy this run (``--min-age``).
    ``dst_times``: copies carry the source mtime (``--preserve times``, the default).
    """
    if src is None:
        if dst_listed and dst is not None and delete:
            return Action.DELETE
        return Action.SKIP
    if held:
        return Action.SKIP
    if dst_listed:
        if dst is None:
            return Action.COPY
        if recorded is not None and is_recorded(recorded, dst, precision_ns=precision_ns, dst_times=dst_times):
            # the destination is what we last wrote: compare the source with that record
            return Action.SKIP if same(src, recorded, checksum=checksum, precision_ns=precision_ns) else Action.UPDATE
        return Action.SKIP if same(src, dst, checksum=checksum, precision_ns=precision_ns) else Action.UPDATE
    if recorded is not None:
        return Action.SKIP if same(src, recorded, checksum=checksum, precision_ns=precision_ns) else Action.UPDATE
    return Action.COPY


@dataclass(slots=True)
class Decision:
    action: Action
    rel: str
    kind: str
    size: int
    mtime_ns: int
    mode: int | None
    src_checksum: str | None
    dst_version: str | None
    dst_kind: str | None
    held: bool = False  # left alone this run (--min-age / --max-age)
    recorded: bool = False  # the manifest has a row for it


ChecksumFn = Callable[[str, str, int], str | None]  # (side "src"/"dst", rel, size) -> checksum


def iter_decisions(
    scratch: Scratch,
    *,
    dst_listed: bool,
    checksum: bool,
    precision_ns: int,
    delete: bool,
    checksum_of: ChecksumFn | None = None,
    settled: list[int] | None = None,
    dst_times: bool = True,
) -> Iterator[Decision]:
    """Stream decisions for every path in the source listing (``src``), then for
    destination-only paths (``dst``) when it was listed. Rows come in path order, one at a time.

    With ``settled`` (a list), files the manifest already settles (see
    :meth:`Scratch.decision_rows`) are not yielded: their count is appended to ``settled``
    instead; each would be a SKIP with nothing to record. Without a checksum only: with
    ``--checksum`` every row is decided here."""
    bulk = settled is not None and not checksum
    if bulk:
        settled.append(scratch.count_settled_files(dst_listed, precision_ns))
    rows = scratch.decision_rows(dst_listed, precision_ns if bulk else None)
    for (path, kind, size, mtime, mode, s_sum, held, f_kind, f_size, f_mtime, f_sum,
         d_kind, d_size, d_mtime, d_sum, d_version) in rows:
        src = Side(kind, size, mtime, s_sum)
        rec = Side(f_kind, f_size, f_mtime, f_sum) if f_kind is not None else None
        dst = Side(d_kind, d_size, d_mtime, d_sum) if d_kind is not None else None
        if not dst_listed and rec is not None and rec.kind != kind and {rec.kind, kind} == {FILE, DIR}:
            d_kind = rec.kind  # unlisted: the record says the destination holds the other kind
        if checksum and kind == FILE and not held and checksum_of is not None:
            # hash only what size alone cannot settle
            other = dst if dst_listed else rec
            if other is not None and other.size == size:
                src = Side(kind, size, mtime, _want(s_sum) or checksum_of("src", path, size))
                if rec is not None and rec.checksum and (
                    not dst_listed or (dst is not None and is_recorded(rec, dst, precision_ns=precision_ns,
                                                                        dst_times=dst_times))
                ):
                    dst_sum = rec.checksum  # the record stands for the destination
                elif dst is not None and _want(d_sum):
                    dst_sum = d_sum
                else:
                    dst_sum = checksum_of("dst", path, size)
                if rec is not None:
                    rec = Side(rec.kind, rec.size, rec.mtime_ns, dst_sum)
                if dst is not None:
                    dst = Side(dst.kind, dst.size, dst.mtime_ns, dst_sum)
        action = decide(src, rec, dst, dst_listed=dst_listed, checksum=checksum,
                        precision_ns=precision_ns, delete=delete, held=bool(held), dst_times=dst_times)
        yield Decision(action, path, kind, size, mtime, mode, src.checksum, d_version, d_kind,
                       bool(held), rec is not None)
    if dst_listed:
        for path, kind, size, mtime, version in scratch.dst_only_rows():
            action = decide(None, None, Side(kind, size, mtime), dst_listed=True, delete=delete)
            yield Decision(action, path, kind, size, mtime, None, None, version, kind)


def _want(value: str | None) -> str | None:
    """Only crc32c checksums are comparable with what we compute."""
    return value if value and value.startswith("crc32c:") else None
