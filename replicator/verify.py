"""Compare two trees by content: checksums, not only size and mtime.

Both listings go to a private scratch database, so the comparison streams
in path order with bounded memory; checksums are computed in parallel.
"""

from __future__ import annotations

import functools
import itertools
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

from replicator import checksum as crc
from replicator.errors import describe
from replicator.files_from import read_files_from, walk_listed
from replicator.filesystems.base import FILE
from replicator.filesystems.registry import resolve
from replicator.listing import ListingStats, walk
from replicator.options import CopyOptions
from replicator.state import open_store
from replicator.state.scratch import Scratch
from replicator.transforms import TRANSFORMED, parse_chain, plan_output

MAX_LISTED = 1000


@dataclass
class VerifyReport:
    source: str
    destination: str
    files_compared: int = 0
    bytes_compared: int = 0
    missing: list[str] = field(default_factory=list)  # in source, not in destination
    extra: list[str] = field(default_factory=list)  # in destination only
    differing: list[dict[str, Any]] = field(default_factory=list)
    n_missing: int = 0
    n_extra: int = 0
    n_differing: int = 0
    errors: list[str] = field(default_factory=list)
    # How each side's CRC32C was had: "stored" (the store's own, no bytes read: GCS crc32c,
    # HDFS COMPOSITE-CRC32C; or the record of a transformed output) or "computed" (read
    # here); counts and the first files.
    checksums: dict[str, dict[str, int]] = field(
        default_factory=lambda: {"source": {}, "destination": {}})
    files: list[dict[str, str]] = field(default_factory=list)
    # missing or differing files whose state-store record was dropped: the next ``copy`` of
    # the pair writes a missing file again, and ``copy --checksum`` a differing one (with the
    # record, the record's size, mtime and CRC32C stood for the damaged file: nothing repaired)
    marked_for_copy: int = 0
    duration_s: float = 0.0

    @property
    def identical(self) -> bool:
        return not (self.n_missing or self.n_extra or self.n_differing or self.errors)

    @property
    def exit_code(self) -> int:
        return 0 if self.identical else 1

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["identical"] = self.identical
        d["command"] = "verify"
        return d


def _batches(rows: list[tuple], size: int = 2000) -> Iterator[list[tuple]]:
    for start in range(0, len(rows), size):
        yield rows[start:start + size]


def _transformed(scratch: Scratch, opts: CopyOptions, report: VerifyReport, source: str,
                 destination: str) -> list[tuple]:
    """With ``--transform``: take the transformed sources and their outputs out of the plain
    comparison and return the rows that check them against the state store's record:
    each output's bytes against the CRC32C recorded when it was written (reason
    ``checksum``), each source against the CRC32C recorded for it (reason
    ``source-changed``: the source was rewritten since the copy). An output with no record
    is ``missing``; a destination file under an untar directory that the record does not
    name is ``extra``."""
    state = open_store(opts.resolved_state_path, read_only=True)
    try:
        pair = state.find_pair(source, destination)
        if pair is not None:
            state.snapshot_manifest(pair, scratch)
    finally:
        state.close()
    chain = parse_chain(opts.transforms)
    scratch.plan_transformed(lambda path: plan_output(path, chain))
    missing, extra, rows = scratch.verify_transformed(TRANSFORMED)
    for path in missing:
        report.n_missing += 1
        if len(report.missing) < MAX_LISTED:
            report.missing.append(path)
    for path in extra:
        report.n_extra += 1
        if len(report.extra) < MAX_LISTED:
            report.extra.append(path)
    return rows


def run_verify(source: str, destination: str, opts: CopyOptions) -> VerifyReport:
    start = time.monotonic()
    src_fs, src_root = resolve(source)
    dst_fs, dst_root = resolve(destination)
    report = VerifyReport(src_fs.uri(src_root), dst_fs.uri(dst_root))
    flt = opts.filter()
    listed = read_files_from(opts.files_from, src_root) if opts.files_from is not None else None
    scratch = Scratch()
    names = frozenset({opts.marker}) if opts.marker else frozenset()
    try:
        for table, fs, root in (("src", src_fs, src_root), ("dst", dst_fs, dst_root)):
            if table == "dst" and dst_fs.stat(dst_root) is None:
                continue
            lister = walk if listed is None else functools.partial(
                walk_listed, listed=listed, list_name=opts.files_from, missing_ok=table == "dst")
            for batch in lister(fs, root, flt, copy_links=opts.copy_links, workers=opts.listing_workers,
                              stats=ListingStats(), exclude_root_names=names if table == "dst" else frozenset(),
                              on_error=lambda rel, exc: report.errors.append(f"{rel}: {describe(exc)}")):
                scratch.add_listing(table, [e.row() for e in batch if e.kind == FILE])
        extra_rows: list[tuple] = []
        if opts.transforms:
            from replicator.engine import _pair_key

            extra_rows = _transformed(scratch, opts, report, _pair_key(src_fs, src_root),
                                      _pair_key(dst_fs, dst_root))
        stale: list[str] = []  # missing or differing: the next copy must write them again
        for path in scratch.missing_paths():
            stale.append(path)
            report.n_missing += 1
            if len(report.missing) < MAX_LISTED:
                report.missing.append(path)
        for path in scratch.extra_paths():
            report.n_extra += 1
            if len(report.extra) < MAX_LISTED:
                report.extra.append(path)

        def compare(row: tuple) -> tuple[dict[str, Any] | None, str, str]:
            path, s_size, d_size, s_sum, d_sum, *why = row
            if s_size != d_size:
                return ({"path": path, "reason": why[0] if why else "size", "source": s_size,
                         "destination": d_size}, "size", "size")
            try:  # a side's stored whole-file CRC32C (GCS, HDFS) spares reading its bytes
                a, how_a = crc.crc32c_of(src_fs, src_fs.join(src_root, path), opts.chunk_size, s_sum)
                b, how_b = crc.crc32c_of(dst_fs, dst_fs.join(dst_root, path), opts.chunk_size, d_sum)
            except Exception as exc:
                return {"path": path, "reason": "error", "error": describe(exc)}, "error", "error"
            if a != b:
                return ({"path": path, "reason": why[0] if why else "checksum", "source": a,
                         "destination": b}, how_a, how_b)
            return None, how_a, how_b

        with ThreadPoolExecutor(max_workers=opts.workers) as pool:
            for rows in itertools.chain(scratch.common_rows(), _batches(extra_rows)):
                for row, (diff, how_a, how_b) in zip(rows, pool.map(compare, rows), strict=True):
                    report.files_compared += 1
                    report.bytes_compared += row[1]
                    for side, how in (("source", how_a), ("destination", how_b)):
                        report.checksums[side][how] = report.checksums[side].get(how, 0) + 1
                    if len(report.files) < MAX_LISTED:
                        report.files.append({"path": row[0], "source": how_a, "destination": how_b})
                    if diff is not None:
                        if diff["reason"] in ("size", "checksum"):
                            stale.append(row[0])
                        report.n_differing += 1
                        if len(report.differing) < MAX_LISTED:
                            report.differing.append(diff)
        if stale:
            try:
                report.marked_for_copy = _mark_for_copy(opts, src_fs, src_root, dst_fs, dst_root, stale)
            except Exception as exc:  # the comparison stands; say what was not done
                report.errors.append(f"state store: {len(stale):,} missing or differing files are "
                                     f"not marked for the next copy: {describe(exc)}")
    finally:
        scratch.close()
    report.duration_s = round(time.monotonic() - start, 3)
    return report


def _mark_for_copy(opts: CopyOptions, src_fs: Any, src_root: str, dst_fs: Any, dst_root: str,
                   paths: list[str]) -> int:
    """Drop the pair's records of ``paths`` (files found missing or different in the
    destination), so the next copy takes them as new and writes them again. Nothing is done
    where the state store holds no such pair (the trees were not copied by us)."""
    from replicator.engine import _pair_key

    state = open_store(opts.resolved_state_path, read_only=True)
    try:
        pair = state.find_pair(_pair_key(src_fs, src_root), _pair_key(dst_fs, dst_root))
    finally:
        state.close()
    if pair is None:
        return 0
    state = open_store(opts.resolved_state_path)
    try:
        for batch in _batches([(p,) for p in paths]):
            state.commit(pair, forget=[p for (p,) in batch])
    finally:
        state.close()
    return len(paths)
