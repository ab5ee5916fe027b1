"""A local tree is listed in the calling thread (replicator.listing.listing_workers): the
same rows, in the same order, as with listing threads, and a local re-sync starts none."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from replicator import api
from replicator.filesystems.local import LocalFileSystem
from replicator.filters import Filter
from replicator.listing import ListingStats, listing_workers, walk
from replicator.options import CopyOptions
from tests.replicator.conftest import write


def _tree(root: Path) -> None:
    for d in ["a", "b", "b.d", "b-c", "c/x", "c/y/z", "skip"]:
        for i in range(3):
            write(root / d / f"f{i}", b"x" * (i + 1))
    for f in ["0-top", "b.txt", "c0", "zz", "x.tmp"]:
        write(root / f, b"top")
    (root / "empty").mkdir()
    os.symlink("a/f0", root / "link")


@pytest.mark.parametrize("ordered", [True, False])
def test_inline_listing_gives_what_threads_give(tmp_path, ordered) -> None:
    _tree(tmp_path)
    flt = Filter(exclude=("skip/**", "*.tmp"))

    def listed(workers: int) -> tuple[list, ListingStats]:
        stats = ListingStats()
        rows = [r for batch in walk(LocalFileSystem(), str(tmp_path), flt, workers=workers,
                                    ordered=ordered, rows=True, stats=stats) for r in batch]
        return rows, stats

    inline, inline_stats = listed(0)
    threaded, threaded_stats = listed(4)
    assert inline == threaded if ordered else sorted(inline) == sorted(threaded)
    assert inline_stats == threaded_stats
    assert {r[0] for r in inline} >= {"a/f0", "c/y/z/f2", "empty", "zz"}
    assert not {r[0] for r in inline} & {"skip/f0", "x.tmp", "link"}


def test_only_a_host_file_system_lists_inline() -> None:
    assert listing_workers(LocalFileSystem(), 8) == 0
    remote = type("Remote", (), {"capabilities": type("C", (), {"host_paths": False})()})()
    assert listing_workers(remote, 8) == 8  # type: ignore[arg-type]


def test_a_local_resync_starts_no_listing_thread(tmp_path, monkeypatch) -> None:
    src, dst, state = tmp_path / "src", tmp_path / "dst", str(tmp_path / "state.db")
    _tree(src)
    opts = CopyOptions(state_path=state)
    assert api.copy(str(src), str(dst), opts).ok
    started: list[str] = []
    start = threading.Thread.start

    def recording(self: threading.Thread) -> None:
        started.append(self.name)
        start(self)

    monkeypatch.setattr(threading.Thread, "start", recording)
    write(src / "c" / "x" / "f1", b"yy")  # same size, new mtime
    os.utime(src / "c" / "x" / "f1", ns=(10**18, 10**18))
    report = api.copy(str(src), str(dst), opts)
    assert report.ok and report.files_copied == 1
    assert (dst / "c" / "x" / "f1").read_bytes() == b"yy"
    assert not [n for n in started if n.startswith("list")], started
