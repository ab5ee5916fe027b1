"""The re-sync's listing merged with the manifest by two processes (replicator.settle):
the same decisions, counts and errors as one process, a cut anywhere in the tree, and a
child that dies costing only time."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import pytest

from replicator import api, settle
from replicator.diff import iter_decisions
from replicator.filesystems.local import LocalFileSystem
from replicator.filters import Filter
from replicator.listing import ListingStats, Split, walk
from replicator.options import CopyOptions
from replicator.state import Scratch, open_store
from tests.replicator.conftest import write

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")


def _tree(root: Path) -> None:
    """Files at every level, directories with names that sort around their siblings' files."""
    for d in ["a", "b", "b.d", "b-c", "c/x", "c/y/z", "d", "e"]:
        for i in range(3):
            write(root / d / f"f{i}", b"x" * (i + 1))
    for f in ["0-top", "b.txt", "c.txt", "c0", "zz"]:
        write(root / f, b"top")
    (root / "empty").mkdir()


def _change(root: Path) -> None:
    write(root / "a" / "f0", b"longer now")  # size
    os.utime(root / "c" / "y" / "z" / "f1", ns=(10**18, 10**18))  # mtime only
    write(root / "d" / "new", b"n")  # a new file
    (root / "b.d" / "f2").unlink()  # gone from the source
    (root / "e" / "f1").unlink()
    (root / "e" / "f1").mkdir()  # a file that became a directory
    write(root / "e" / "f1" / "inside", b"i")
    write(root / "c.txt", b"top!")  # a file of the directory the cut is in


def _decided(state: str, pair_id: int, root: Path, split: Split | None,
             side_one=None) -> tuple[int, ListingStats, list, dict]:
    """Settle ``root`` in one process (``split`` None) or in two; the files skipped, the
    stats, the errors and every other decision the join then makes."""
    store = open_store(state)
    errors: list = []
    stats = ListingStats()
    listing = {"stats": stats, "workers": 2, "on_error": lambda rel, exc: errors.append(rel)}
    fs = LocalFileSystem()
    with Scratch() as scratch:
        if split is None:
            with store.manifest_scan(pair_id) as rows, store.guard():
                n = scratch.load_settling(walk(fs, str(root), Filter(), ordered=True, rows=True,
                                               **listing), rows)
        else:
            n = settle.settle_in_two(store, state, pair_id, scratch, fs, str(root), Filter(),
                                     listing, split, listing["on_error"])
        bulk: list[int] = []
        got = {d.rel: (d.action, d.kind, d.size, d.dst_kind)
               for d in iter_decisions(scratch, dst_listed=False, checksum=False, precision_ns=1,
                                       delete=False, settled=bulk)}
        stale = sorted(scratch.stale_manifest_entries())
    store.close()
    # files settled in the merge, or by the join in bulk (a file beside the cut whose row the
    # other process read); the decisions of all the rest, but the skips
    work = {p: d for p, d in got.items() if d[0] != "skip"}
    skipped = n + bulk[0] + sum(1 for d in got.values() if d[0] == "skip" and d[1] == "f")
    return skipped, stats, sorted(errors), {"decisions": work, "stale": stale}


@pytest.fixture
def synced(tmp_path: Path):
    src, dst, state = tmp_path / "src", tmp_path / "dst", str(tmp_path / "state.db")
    _tree(src)
    report = api.copy(str(src), str(dst), CopyOptions(state_path=state))
    assert report.ok and report.files_copied == 29
    store = open_store(state)
    pair_id = store.find_pair(str(src), str(dst))
    store.close()
    return src, dst, state, pair_id


@pytest.mark.parametrize("split", [Split("", "c/", 0), Split("", "b.d/", 0), Split("c", "c/y/", 0),
                                   Split("", "zz/", 0), Split("", "0/", 0)])
def test_two_processes_decide_as_one(synced, split) -> None:
    """Wherever the cut falls (between root subdirectories, one level down, after the last
    or before the first), the two processes settle the same files, count the same listing,
    and leave the join the same decisions: a changed size, a changed mtime, a new file, a
    file gone, a file that became a directory, a changed file beside the cut."""
    src, _dst, state, pair_id = synced
    _change(src)
    one = _decided(state, pair_id, src, None)
    two = _decided(state, pair_id, src, split)
    assert two[0] == one[0] and two[1] == one[1] and two[2] == one[2]
    assert two[3] == one[3]
    changed = set(one[3]["decisions"])
    assert changed == {"a/f0", "c/y/z/f1", "d/new", "e/f1", "e/f1/inside", "c.txt"}
    assert one[0] == 29 - 5  # every file but the four changed (one into a directory) and the one gone


@pytest.mark.parametrize("bad", ["d", "b"])  # on either side of the cut
def test_an_unreadable_directory_is_reported_once(synced, monkeypatch, bad) -> None:
    """A directory that cannot be listed is reported once, by the process whose part it
    is (the child's errors travel back to the parent), and counted once."""
    src, _dst, state, pair_id = synced
    real = LocalFileSystem.scan_rows

    def scan_rows(self, path, prefix):
        if path == str(src / bad):
            raise PermissionError(13, "Permission denied", path)
        return real(self, path, prefix)

    monkeypatch.setattr(LocalFileSystem, "scan_rows", scan_rows)
    one = _decided(state, pair_id, src, None)
    two = _decided(state, pair_id, src, Split("", "c/", 0))
    assert one[2] == two[2] == [bad] and one[1] == two[1] and one[1].errors == 1


def test_a_child_killed_mid_run_costs_only_time(synced, monkeypatch) -> None:
    """The child sends part of its rows and dies (kill -9): the parent lists the child's
    part itself; the decisions are those of one process."""
    src, _dst, state, pair_id = synced
    _change(src)
    one = _decided(state, pair_id, src, None)
    real = settle._side_one

    def dies(conn, *args):
        class Dying:
            def send(self, message):
                conn.send(message)
                os.kill(os.getpid(), signal.SIGKILL)  # after the first part

            def close(self):
                conn.close()

        real(Dying(), *args)

    monkeypatch.setattr(settle, "_side_one", dies)
    two = _decided(state, pair_id, src, Split("", "c/", 0))
    assert two == one


def test_a_child_that_fails_is_replaced(synced, monkeypatch) -> None:
    src, _dst, state, pair_id = synced
    _change(src)
    one = _decided(state, pair_id, src, None)
    monkeypatch.setattr(settle, "_side_one", lambda conn, *a: conn.send(("failed", "boom")))
    assert _decided(state, pair_id, src, Split("", "c/", 0)) == one


def test_the_cut_is_at_the_manifests_middle(synced, monkeypatch) -> None:
    _src, _dst, state, pair_id = synced
    store = open_store(state)
    try:
        assert settle.cut(store, pair_id) is None  # too small to fork for
        monkeypatch.setattr(settle, "MIN_ROWS", 1)
        cut = settle.cut(store, pair_id)
    finally:
        store.close()
    assert cut is not None and cut.at == "" and cut.side == 0
    assert cut.boundary in {"c/", "d/", "c.txt/", "c0/"}
    assert settle._common_dir("data/dt=1/a", "data/dt=9/b") == "data"
    assert settle._common_dir("a", "b/c") == ""


# a fresh interpreter has no other thread, so the engine forks there whatever pytest runs
_COPY_TWICE = """
import json, sys
from replicator import api, settle
from replicator.options import CopyOptions
settle.MIN_ROWS = 1
sys.stdout.write("written before the fork\\n")  # buffered: a child that flushed it doubles it
calls = []
real = settle.settle_in_two
settle.settle_in_two = lambda *a, **k: calls.append(1) or real(*a, **k)
out = []
for _ in range(2):
    r = api.copy(sys.argv[1], sys.argv[2], CopyOptions(state_path=sys.argv[3]))
    out.append({"ok": r.ok, "copied": r.files_copied, "skipped": r.files_skipped,
                "listed": r.files_listed, "forks": len(calls)})
print(json.dumps(out))
"""


def test_a_copy_run_uses_two_processes_and_copies_what_changed(synced) -> None:
    """The engine's re-sync through the two-process settle: what changed is copied, the
    rest skipped, and a second run has nothing to do. In a fresh interpreter: the test
    process runs other threads (servers of other tests), where the engine rightly does not
    fork, and this test was skipped in the full suite."""
    import json
    import subprocess
    import sys

    from tests.replicator.conftest import REPO

    src, dst, state, _pair_id = synced
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("one CPU: the engine does not fork")
    _change(src)
    proc = subprocess.run([sys.executable, "-c", _COPY_TWICE, str(src), str(dst), state],
                          capture_output=True, text=True, timeout=300, cwd=str(REPO),
                          env={**{k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"},
                               "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("written before the fork") == 1  # the child left it alone
    first, again = json.loads(proc.stdout.strip().splitlines()[-1])
    assert first == {"ok": True, "copied": 5, "skipped": 24, "listed": 29, "forks": 1}
    assert (dst / "a" / "f0").read_bytes() == b"longer now"
    assert (dst / "e" / "f1" / "inside").read_bytes() == b"i"  # the file became a directory
    assert (dst / "c" / "y" / "z" / "f1").stat().st_mtime_ns == 10**18
    assert again == {"ok": True, "copied": 0, "skipped": 29, "listed": 29, "forks": 2}


def test_only_the_progress_line_may_run_beside_a_fork(tmp_path) -> None:
    """The CLI's progress thread does not stop the two-process listing; any other thread
    (a Dagster run's) does."""
    from replicator.progress import ConsoleProgress

    fs = LocalFileSystem()
    state = str(tmp_path / "s.db")
    if threading.active_count() != 1:
        pytest.skip("this test process runs other threads")
    assert settle.usable(fs, copy_links=False, state=state) == (len(os.sched_getaffinity(0)) >= 2)
    assert not settle.usable(fs, copy_links=True, state=state)
    assert not settle.usable(fs, copy_links=False, state=None)
    progress = ConsoleProgress(interval=60)
    try:
        assert settle.usable(fs, copy_links=False, state=state) == (len(os.sched_getaffinity(0)) >= 2)
    finally:
        progress.on_finish()
    stop = threading.Event()
    other = threading.Thread(target=stop.wait, name="dagster-something")
    other.start()
    try:
        assert not settle.usable(fs, copy_links=False, state=state)
    finally:
        stop.set()
        other.join()


def test_the_pipe_carries_big_messages_and_reads_a_cut_one_as_the_end(tmp_path) -> None:
    """The child's messages (pickled, after their length) arrive whole however big (the
    pipe's buffer is 64 KiB); a message cut short by the child's death reads as EOF, which
    the parent takes as a child that did not finish."""
    rows = [(f"d/{i:06}", "f", i, i * 7, None) for i in range(60_000)]
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(rfd)
            out = settle.Pipe(wfd)
            out.send(("rows", rows, []))
            out.send(("done", 3, None, []))
            os.write(wfd, (1000).to_bytes(8, "big") + b"part of a message")
        finally:
            os._exit(0)
    os.close(wfd)
    got = settle.Pipe(rfd)
    try:
        assert got.recv() == ("rows", rows, [])
        assert got.recv() == ("done", 3, None, [])
        with pytest.raises(EOFError):
            got.recv()
        with pytest.raises(EOFError):
            got.recv()
    finally:
        got.close()
        got.close()  # twice: a no-op
        assert os.waitpid(pid, 0)[1] == 0
