"""Copy options: immutable, validated once, impossible combinations refused up front
(DistCp ``DistCpOptions.Builder.validate``)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, replace
from typing import Any

from replicator.errors import UsageError

MiB = 1 << 20
PRESERVE_KINDS = frozenset({"times", "perms"})
EXECUTORS = ("local", "spark")


def default_state_path() -> str:
    base = os.environ.get("REPLICATOR_HOME") or os.path.join(os.path.expanduser("~"), ".replicator")
    return os.path.join(base, "state.db")


def parse_max_delete(text: str) -> tuple[float | None, int | None]:
    """``"50%"`` -> (0.5, None); ``"1000"`` -> (None, 1000)."""
    text = str(text).strip()
    m = re.fullmatch(r"(\d+(?:\.\d+)?)%", text)
    if m:
        share = float(m.group(1)) / 100.0
        if not 0 <= share <= 1:
            raise UsageError(f"--max-delete: expected a share from 0% to 100%, got {text!r}")
        return share, None
    if text.isdigit():
        return None, int(text)
    raise UsageError(f"--max-delete: expected a percentage like 50% or a file count, got {text!r}")


def parse_preserve(text: str | None) -> frozenset[str]:
    if text is None or text == "":
        return frozenset()
    kinds = frozenset(k.strip() for k in text.split(",") if k.strip())
    unknown = kinds - PRESERVE_KINDS
    if unknown:
        raise UsageError(
            f"--preserve: unknown {', '.join(sorted(unknown))}; expected a comma list of times,perms"
        )
    return kinds


@dataclass(frozen=True)
class CopyOptions:
    """Everything that shapes a run. Build it, then call :meth:`validated`."""

    delete: bool = False
    dry_run: bool = False
    checksum: bool = False
    workers: int = 8
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    min_age_s: float = 0.0
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
    listing_workers: int = 8
    batch_files: int = 256  # files journalled / recorded per state transaction

    def validated(self) -> CopyOptions:
        if self.workers < 1 or self.workers > 1024:
            raise UsageError(f"--workers: expected 1 to 1024, got {self.workers}")
        if self.listing_workers < 1:
            raise UsageError(f"listing_workers: expected at least 1, got {self.listing_workers}")
        if self.min_age_s < 0:
            raise UsageError(f"--min-age: expected seconds >= 0, got {self.min_age_s}")
        if self.bandwidth_mbps is not None and self.bandwidth_mbps <= 0:
            raise UsageError(f"--bandwidth: expected MiB/s > 0, got {self.bandwidth_mbps}")
        unknown = set(self.preserve) - PRESERVE_KINDS
        if unknown:
            raise UsageError(f"--preserve: unknown {', '.join(sorted(unknown))}")
        if self.executor not in EXECUTORS:
            raise UsageError(f"--executor: expected one of {', '.join(EXECUTORS)}, got {self.executor!r}")
        parse_max_delete(self.max_delete)
        if self.chunk_size < 64 * 1024:
            raise UsageError("chunk_size: expected at least 64 KiB")
        if self.part_size < 5 * MiB:
            raise UsageError("part_size: expected at least 5 MiB")
        if self.multipart_threshold < self.part_size:
            raise UsageError("multipart_threshold: expected at least part_size")
        if self.retries < 0:
            raise UsageError("retries: expected >= 0")
        if self.marker is not None and (not self.marker or "/" in self.marker or self.marker in (".", "..")):
            raise UsageError(f"--marker: expected a plain file name, got {self.marker!r}")
        for pattern in (*self.include, *self.exclude):
            if not pattern:
                raise UsageError("--include/--exclude: empty pattern")
        return self

    def with_(self, **changes: Any) -> CopyOptions:
        return replace(self, **changes).validated()

    @property
    def resolved_state_path(self) -> str:
        return self.state_path or default_state_path()
