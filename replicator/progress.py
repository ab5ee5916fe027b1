"""Progress: an injected callback with a no-op default; counters live in one place
(fsspec ``callbacks.py``, rclone ``fs/accounting``)."""

from __future__ import annotations

import logging
import sys
import threading
import time
from typing import TextIO

log = logging.getLogger("replicator")


class Progress:
    """Callback interface. Every method may be called from worker threads."""

    def on_plan(self, files: int, bytes_: int) -> None:
        """The work is known: ``files`` to transfer, ``bytes_`` in all."""

    def on_bytes(self, n: int) -> None:
        """``n`` more bytes were transferred."""

    def on_file(self, path: str, ok: bool) -> None:
        """A file finished (``ok`` False when it failed)."""

    def on_finish(self) -> None:
        """The run is over."""


NO_PROGRESS = Progress()  # the default: every call does nothing, so callers never test for None


class Stats(Progress):
    """Thread-safe counters; renders a line of files, bytes, rate and ETA."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.start = time.monotonic()
        self.files_total = 0
        self.bytes_total = 0
        self.files_done = 0
        self.files_failed = 0
        self.bytes_done = 0

    def on_plan(self, files: int, bytes_: int) -> None:
        with self._lock:
            self.files_total += files
            self.bytes_total += bytes_

    def on_bytes(self, n: int) -> None:
        with self._lock:
            self.bytes_done += n

    def on_file(self, path: str, ok: bool) -> None:
        with self._lock:
            self.files_done += 1
            if not ok:
                self.files_failed += 1

    def line(self) -> str:
        with self._lock:
            elapsed = max(time.monotonic() - self.start, 1e-6)
            rate = self.bytes_done / elapsed
            left = max(self.bytes_total - self.bytes_done, 0)
            eta = left / rate if rate > 0 else float("inf")
            eta_s = "-" if eta == float("inf") else f"{eta:,.0f}s"
            failed = f", {self.files_failed} failed" if self.files_failed else ""
            return (
                f"{self.files_done:,}/{self.files_total:,} files{failed}, "
                f"{_human(self.bytes_done)}/{_human(self.bytes_total)}, "
                f"{_human(rate)}/s, ETA {eta_s}"
            )


class ConsoleProgress(Stats):
    """A live line on a TTY (redrawn ~5 times a second); a log line every ``interval`` s otherwise."""

    def __init__(self, stream: TextIO | None = None, interval: float = 10.0) -> None:
        super().__init__()
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.interval = 0.2 if self.tty else interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="progress", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._emit()

    def _emit(self, final: bool = False) -> None:
        text = self.line()
        if self.tty:
            self.stream.write("\r\x1b[K" + text + ("\n" if final else ""))
            self.stream.flush()
        else:
            log.info("progress: %s", text)

    def on_finish(self) -> None:
        self._stop.set()
        self._thread.join(timeout=1)
        if self.tty or self.files_total:
            self._emit(final=True)


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:,.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f}"
