"""Plan: group the work into bins by bytes and file count, and split big files into
ranges where the destination can assemble them."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from replicator.transfer import SMALL_FILE, Task

BIN_BYTES = 256 << 20
BIN_FILES = 256


def split_ranges(size: int, part_size: int) -> list[tuple[int, int, int]]:
    """[(index, offset, length)] covering ``size`` bytes in parts of ``part_size``."""
    parts = []
    offset = 0
    index = 0
    while offset < size:
        length = min(part_size, size - offset)
        parts.append((index, offset, length))
        offset += length
        index += 1
    return parts


def make_bins(tasks: Iterable[Task], *, bin_bytes: int = BIN_BYTES,
              bin_files: int = BIN_FILES) -> Iterator[list[Task]]:
    """Consecutive tasks grouped so that no bin exceeds ``bin_bytes`` or ``bin_files``
    (a task bigger than ``bin_bytes`` gets a bin of its own)."""
    current: list[Task] = []
    current_bytes = 0
    for task in tasks:
        length = task.part[2] if task.part else task.size
        if current and (current_bytes + length > bin_bytes or len(current) >= bin_files):
            yield current
            current, current_bytes = [], 0
        current.append(task)
        current_bytes += length
    if current:
        yield current


def whole_file_bins(tasks: Iterable[Task], *, bin_bytes: int = BIN_BYTES,
                    bin_files: int = BIN_FILES) -> Iterator[tuple[list[Task], bool]]:
    """:func:`make_bins` of whole-file tasks (no ``part``: the plan's, before ranges are
    expanded), each bin with whether it is all whole small files
    (:func:`replicator.transfer.small_files`), in one pass."""
    current: list[Task] = []
    current_bytes = 0
    small = True
    append = current.append
    for task in tasks:
        size = task.size
        if current and (current_bytes + size > bin_bytes or len(current) >= bin_files):
            yield current, small
            current, current_bytes, small = [], 0, True
            append = current.append
        append(task)
        current_bytes += size
        if size > SMALL_FILE or task.nparts > 1 or task.part is not None:
            small = False
    if current:
        yield current, small
