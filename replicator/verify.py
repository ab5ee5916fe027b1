"""Compare two trees by content: checksums, not only size and mtime.

Both listings go to a private scratch database, so the comparison streams
in path order with bounded memory; checksums are computed in parallel.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

from replicator import checksum as crc
from replicator.errors import describe
from replicator.filesystems.base import FILE, FileSystem
from replicator.filesystems.registry import resolve
from replicator.filters import Filter
from replicator.listing import ListingStats, walk
from replicator.options import CopyOptions
from replicator.state.scratch import Scratch

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


def _crc(fs: FileSystem, path: str, chunk: int) -> str:
    return crc.format_crc32c(crc.file_crc32c(fs, path, chunk))


def run_verify(source: str, destination: str, opts: CopyOptions) -> VerifyReport:
    start = time.monotonic()
    src_fs, src_root = resolve(source)
    dst_fs, dst_root = resolve(destination)
    report = VerifyReport(src_fs.uri(src_root), dst_fs.uri(dst_root))
    flt = Filter(tuple(opts.include), tuple(opts.exclude))
    scratch = Scratch()
    names = frozenset({opts.marker}) if opts.marker else frozenset()
    try:
        for table, fs, root in (("src", src_fs, src_root), ("dst", dst_fs, dst_root)):
            if table == "dst" and dst_fs.stat(dst_root) is None:
                continue
            for batch in walk(fs, root, flt, copy_links=opts.copy_links, workers=opts.listing_workers,
                              stats=ListingStats(), exclude_root_names=names if table == "dst" else frozenset(),
                              on_error=lambda rel, exc: report.errors.append(f"{rel}: {describe(exc)}")):
                scratch.add_listing(table, [e.row() for e in batch if e.kind == FILE])
        for path in scratch.missing_paths():
            report.n_missing += 1
            if len(report.missing) < MAX_LISTED:
                report.missing.append(path)
        for path in scratch.extra_paths():
            report.n_extra += 1
            if len(report.extra) < MAX_LISTED:
                report.extra.append(path)

        def compare(row: tuple) -> dict[str, Any] | None:
            path, s_size, d_size, s_sum, d_sum = row
            if s_size != d_size:
                return {"path": path, "reason": "size", "source": s_size, "destination": d_size}
            try:
                a = s_sum if s_sum and s_sum.startswith("crc32c:") else _crc(src_fs, src_fs.join(src_root, path), opts.chunk_size)
                b = d_sum if d_sum and d_sum.startswith("crc32c:") else _crc(dst_fs, dst_fs.join(dst_root, path), opts.chunk_size)
            except Exception as exc:
                return {"path": path, "reason": "error", "error": describe(exc)}
            if a != b:
                return {"path": path, "reason": "checksum", "source": a, "destination": b}
            return None

        with ThreadPoolExecutor(max_workers=opts.workers) as pool:
            for rows in scratch.common_rows():
                for row, diff in zip(rows, pool.map(compare, rows), strict=True):
                    report.files_compared += 1
                    report.bytes_compared += row[1]
                    if diff is not None:
                        report.n_differing += 1
                        if len(report.differing) < MAX_LISTED:
                            report.differing.append(diff)
    finally:
        scratch.close()
    report.duration_s = round(time.monotonic() - start, 3)
    return report
