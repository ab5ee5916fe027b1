"""The run report: what a run did, as plain data. The CLI prints it with ``--json``;
Dagster turns it into asset metadata."""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field
from typing import Any

MAX_FAILURES_LISTED = 100


def utc_iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return dt.datetime.fromtimestamp(ts, tz=dt.UTC).isoformat(timespec="milliseconds")


@dataclass
class Failure:
    path: str
    error: str
    retryable: bool = False
    side: str | None = None  # "source" (reading) or "destination" (writing); None: neither


@dataclass
class RunReport:
    run_id: str
    source: str
    destination: str
    command: str = "copy"
    dry_run: bool = False
    checksum: bool = False
    executor: str = "local"
    started_at: float = 0.0
    finished_at: float | None = None
    files_listed: int = 0
    bytes_listed: int = 0
    files_copied: int = 0  # new + updated
    files_updated: int = 0
    bytes_copied: int = 0
    files_skipped: int = 0  # unchanged
    files_held_back: int = 0  # too new (--min-age)
    files_too_old: int = 0  # older than --max-age: left alone
    symlinks_skipped: int = 0
    files_deleted: int = 0
    dirs_created: int = 0
    files_failed: int = 0
    files_recovered: int = 0  # journal entries of an interrupted run completed at start
    files_verified: int = 0  # copied files whose published bytes were checked by CRC32C
    # True only for a finished, successful, real run in which every file it copied was
    # checked by CRC32C and every file it left as it was had been checked by the run that
    # copied it (see settle_verified); unchanged (skipped) files are not re-read
    verified: bool = False
    # every file of this pair the destination holds was checked by CRC32C when it was
    # written, as far as this run and the pair's earlier runs know (failed runs included):
    # what the next run's ``verified`` builds on
    replica_verified: bool = False
    # set by the engine before the run: the pair's previous run's replica_verified, or None
    # when the pair had nothing recorded (the run relies on no earlier copy)
    earlier_verified: bool | None = field(default=None, repr=False)
    # skipped files held back (--min-age/--max-age) with no record and nothing at the
    # destination: the run relies on no earlier copy of them
    held_unrecorded: int = field(default=0, repr=False)
    delete_refused: str | None = None
    marker: str | None = None
    failures: list[Failure] = field(default_factory=list)
    actions: list[dict[str, Any]] = field(default_factory=list)  # planned work (capped)
    error: str | None = None  # a run-level error (not one file's)
    error_retryable: bool = False  # that error's class: a retry of the run may succeed
    executor_details: dict[str, Any] = field(default_factory=dict)  # e.g. DistCp's counters
    snapshot: dict[str, Any] | None = None  # --snapshot-diff: name, base, listing, changes
    deadline_exceeded: bool = False  # --deadline passed: exit code 3
    files_not_done: int = 0  # planned files neither copied nor failed (deadline)
    not_done: list[str] = field(default_factory=list)  # their paths (capped)

    def settle_verified(self) -> None:
        """``verified``: the run finished ok (not a dry run), every file it copied was
        verified by checksum (the destination's own CRC32C matched the bytes read, or the
        staged copy was re-read: ``--checksum`` / ``verify_checksum``; a size-only check,
        the local kernel copy without either, does not count), and the files it did not copy
        were verified when they were copied: the pair's previous run says so in its
        ``replica_verified`` (a chain back to the run that wrote them). A pair with files
        recorded by a run that did not verify them, or killed before its report, or a
        destination adopted without a record (lost state) is not verified until those
        files are copied again; ``replicator verify`` checks an existing replica."""
        earlier = self.earlier_verified
        relied_on = self.files_skipped - self.held_unrecorded
        relies_on_nothing = earlier is None and relied_on == 0 and not self.files_recovered
        self.replica_verified = (not self.dry_run and self.files_verified == self.files_copied
                                 and (relies_on_nothing or earlier is True))
        self.verified = (self.ok and not self.dry_run and self.finished_at is not None
                         and self.replica_verified)

    @property
    def ok(self) -> bool:
        return (self.files_failed == 0 and self.error is None and self.delete_refused is None
                and not self.deadline_exceeded)

    @property
    def status(self) -> str:
        if self.dry_run:
            return "dry_run" if self.ok else "failed"
        return "ok" if self.ok else "failed"

    @property
    def duration_s(self) -> float:
        end = self.finished_at if self.finished_at is not None else self.started_at
        return max(0.0, end - self.started_at)

    @property
    def throughput_mb_s(self) -> float:
        d = self.duration_s
        return round(self.bytes_copied / (1 << 20) / d, 3) if d > 0 else 0.0

    @property
    def exit_code(self) -> int:
        if self.deadline_exceeded:
            return 3
        return 0 if self.ok else 1

    def add_failure(self, path: str, error: str, retryable: bool = False,
                    side: str | None = None) -> None:
        self.files_failed += 1
        if len(self.failures) < MAX_FAILURES_LISTED:
            self.failures.append(Failure(path, error, retryable, side))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("earlier_verified")
        d.pop("held_unrecorded")
        d["status"] = self.status
        d["ok"] = self.ok
        d["duration_s"] = round(self.duration_s, 3)
        d["throughput_mb_s"] = self.throughput_mb_s
        d["started_at"] = utc_iso(self.started_at)
        d["finished_at"] = utc_iso(self.finished_at)
        d["copy_finished"] = utc_iso(self.finished_at) if self.ok and not self.dry_run else None
        return d
