"""Copy options: immutable, validated once, impossible combinations refused up front
(DistCp ``DistCpOptions.Builder.validate``)."""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field, replace
from typing import Any

from replicator.errors import UsageError
from replicator.filters import Filter, compile_regex

MiB = 1 << 20
PRESERVE_KINDS = frozenset({"times", "perms", "owner", "group", "replication", "blocksize", "acl",
                            "xattr"})
EXECUTORS = ("local", "spark", "distcp")


def default_state_path() -> str:
    base = os.environ.get("REPLICATOR_HOME") or os.path.join(os.path.expanduser("~"), ".replicator")
    return os.path.join(base, "state.db")


DEFAULT_DEADLINE_S = 24 * 3600.0  # a run gives up (exit 3) after a day, whatever hangs
MAX_SECONDS = 100 * 365 * 86400.0  # a century: anything longer is a typo, not a setting


def _number(name: str, value: Any, *, lo: float, hi: float, integer: bool = False,
            what: str = "a number", lo_open: bool = False) -> None:
    """Refuse anything but a finite real (an int when ``integer``) in [lo, hi]: nan, inf,
    bools, strings and out-of-range values are bad usage, named after the option."""
    kind = (int,) if integer else (int, float)
    ok = isinstance(value, kind) and not isinstance(value, bool)
    if ok and not integer:
        ok = math.isfinite(value)
    if ok:
        ok = (lo < value if lo_open else lo <= value) and value <= hi
    if not ok:
        low = f"more than {lo:g}" if lo_open else f"{lo:g}"
        raise UsageError(f"{name}: expected {what} from {low} to {hi:g}, got {value!r}")


def parse_max_delete(text: str) -> tuple[float | None, int | None]:
    """``"50%"`` -> (0.5, None); ``"1000"`` -> (None, 1000). ASCII digits only."""
    text = str(text).strip()
    m = re.fullmatch(r"([0-9]+(?:\.[0-9]+)?)%", text)
    if m:
        share = float(m.group(1)) / 100.0
        if not 0 <= share <= 1:
            raise UsageError(f"--max-delete: expected a share from 0% to 100%, got {text!r}")
        return share, None
    if re.fullmatch(r"[0-9]+", text):
        return None, int(text)
    raise UsageError(f"--max-delete: expected a percentage like 50% or a file count, got {text!r}")


def parse_preserve(text: str | None) -> frozenset[str]:
    if text is None or text == "":
        return frozenset()
    kinds = frozenset(k.strip() for k in text.split(",") if k.strip())
    unknown = kinds - PRESERVE_KINDS
    if unknown:
        raise UsageError(
            f"--preserve: unknown {', '.join(sorted(unknown))}; expected a comma list of "
            f"{','.join(sorted(PRESERVE_KINDS))}"
        )
    return kinds


_DURATION_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_DURATION_RE = re.compile(r"([0-9]+(?:\.[0-9]+)?|\.[0-9]+)([smhdw]?)")


def parse_duration(text: str | float | int, flag: str) -> float:
    """Seconds from ``"90"``, ``"1.5"``, ``"30s"``, ``"30m"``, ``"2h"``, ``"7d"``, ``"1w"``
    or a sequence such as ``"1h30m"`` (rclone's duration syntax, without negatives).
    Anything else (``nan``, ``inf``, ``-1``, ``1y``, empty) is a UsageError naming ``flag``."""
    if isinstance(text, bool):
        raise UsageError(f"{flag}: expected a duration, got {text!r}")
    if isinstance(text, (int, float)):
        value = float(text)
    else:
        raw = str(text).strip().lower()
        pos, value = 0, 0.0
        for m in _DURATION_RE.finditer(raw):
            if m.start() != pos:
                break
            value += float(m.group(1)) * _DURATION_UNITS[m.group(2)]
            pos = m.end()
        if not raw or pos != len(raw):
            raise UsageError(f"{flag}: expected a duration such as 90, 30s, 30m, 2h, 7d or 1h30m "
                             f"(seconds when no unit), got {text!r}")
    if not math.isfinite(value) or not 0 <= value <= MAX_SECONDS:
        raise UsageError(f"{flag}: expected a finite duration from 0 to 100 years, got {text!r}")
    return value


@dataclass(frozen=True)
class CopyOptions:
    """Everything that shapes a run. Build it, then call :meth:`validated`."""

    delete: bool = False
    dry_run: bool = False
    checksum: bool = False
    verify_checksum: bool = False  # verify every copy by CRC32C (checksum: decide by it too)
    workers: int = 8
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    min_age_s: float = 0.0
    max_age_s: float | None = None  # leave files modified longer ago than this alone
    include_regex: tuple[str, ...] = ()
    exclude_regex: tuple[str, ...] = ()
    files_from: str | None = None  # a local file listing the paths to copy (rclone --files-from)
    snapshot_diff: bool = False  # list by HDFS snapshot diff where the source root allows it
    transforms: tuple[str, ...] = ()  # "gunzip", "untar", "gpg-encrypt=RCPT", "gpg-decrypt"
    bandwidth_mbps: float | None = None  # MiB/s shared by all workers
    preserve: frozenset[str] = frozenset({"times"})
    state_path: str | None = None  # None: default_state_path()
    executor: str = "local"
    executor_options: dict[str, Any] = field(default_factory=dict)
    max_delete: str = "50%"
    marker: str | None = None  # name of a JSON marker written last at the destination root
    copy_links: bool = False  # follow symlinks (loops are detected and refused)
    chunk_size: int = 8 * MiB
    multipart_threshold: int = 256 * MiB
    part_size: int = 64 * MiB
    retries: int = 3
    retry_backoff_s: float = 0.5
    deadline_s: float | None = DEFAULT_DEADLINE_S  # the whole run; None: no deadline
    lock_wait_s: float = 0.0  # wait this long for another run of the same pair (0: refuse)
    listing_workers: int = 8
    batch_files: int = 256  # files journalled / recorded per state transaction

    def validated(self) -> CopyOptions:
        _number("--workers", self.workers, lo=1, hi=1024, integer=True, what="a whole number")
        _number("listing_workers", self.listing_workers, lo=1, hi=1024, integer=True,
                what="a whole number")
        _number("--min-age", self.min_age_s, lo=0, hi=MAX_SECONDS, what="seconds")
        if self.bandwidth_mbps is not None:
            _number("--bandwidth", self.bandwidth_mbps, lo=0, hi=1 << 30, lo_open=True,
                    what="MiB/s")
        _number("--retries", self.retries, lo=0, hi=100, integer=True, what="a whole number")
        _number("retry_backoff_s", self.retry_backoff_s, lo=0, hi=3600, what="seconds")
        if self.deadline_s is not None:
            _number("--deadline", self.deadline_s, lo=0, hi=MAX_SECONDS, lo_open=True, what="seconds")
        _number("--wait-lock", self.lock_wait_s, lo=0, hi=MAX_SECONDS, what="seconds")
        _number("chunk_size", self.chunk_size, lo=64 * 1024, hi=1 << 30, integer=True,
                what="bytes")
        _number("part_size", self.part_size, lo=5 * MiB, hi=5 << 30, integer=True, what="bytes")
        _number("multipart_threshold", self.multipart_threshold, lo=self.part_size,
                hi=1 << 50, integer=True, what="bytes (at least part_size)")
        _number("batch_files", self.batch_files, lo=1, hi=1_000_000, integer=True,
                what="a whole number")
        if self.max_age_s is not None:
            _number("--max-age", self.max_age_s, lo=0, hi=MAX_SECONDS, lo_open=True, what="seconds")
            if self.max_age_s <= self.min_age_s:
                raise UsageError(f"--max-age {self.max_age_s:g}s must be longer than --min-age "
                                 f"{self.min_age_s:g}s: no file could be copied")
        for pattern in self.include_regex:
            compile_regex(pattern, "--include-regex")
        for pattern in self.exclude_regex:
            compile_regex(pattern, "--exclude-regex")
        if self.files_from is not None and not self.files_from:
            raise UsageError("--files-from: empty file name")
        if self.transforms:
            from replicator.transforms import parse_chain

            parse_chain(self.transforms)
            if self.executor != "local":
                raise UsageError(f"--transform runs with --executor local only, not {self.executor!r}")
        unknown = set(self.preserve) - PRESERVE_KINDS
        if unknown:
            raise UsageError(f"--preserve: unknown {', '.join(sorted(unknown))}")
        if self.executor not in EXECUTORS:
            raise UsageError(f"--executor: expected one of {', '.join(EXECUTORS)}, got {self.executor!r}")
        parse_max_delete(self.max_delete)
        if self.state_path is not None:
            from replicator.state import state_scheme

            state_scheme(self.state_path)  # an unknown scheme is a usage error, never a file name
        if self.marker is not None and (not self.marker or "/" in self.marker or self.marker in (".", "..")):
            raise UsageError(f"--marker: expected a plain file name, got {self.marker!r}")
        for pattern in (*self.include, *self.exclude):
            if not pattern:
                raise UsageError("--include/--exclude: empty pattern")
        return self

    def filter(self) -> Filter:
        """The listing filter these options describe (globs and regexes)."""
        return Filter(tuple(self.include), tuple(self.exclude),
                      include_regex=tuple(self.include_regex), exclude_regex=tuple(self.exclude_regex))

    def with_(self, **changes: Any) -> CopyOptions:
        return replace(self, **changes).validated()

    @property
    def resolved_state_path(self) -> str:
        return self.state_path or default_state_path()
