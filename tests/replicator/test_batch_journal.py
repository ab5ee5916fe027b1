"""A bin of small staged files is journalled as one ``batch-staging`` row (no row per file).

A run killed (SIGKILL) while such a batch is staged or half published must leave no
half-written file under a final name, and the next run must remove the batch's staged
names, copy what was not recorded and end with an empty journal and a manifest that
describes exactly the destination.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from replicator import api
from replicator.options import CopyOptions
from tests.replicator.conftest import REPO, temp_names, tree, write

FILES = 600  # three bins of at most 256 files

KILLER = textwrap.dedent("""
    import os, signal, sys
    from replicator import api
    from replicator.options import CopyOptions
    from replicator.progress import Progress

    hook, after = sys.argv[4], int(sys.argv[5])

    class Killer(Progress):
        calls = 0

        def _tick(self):
            self.calls += 1
            if self.calls == after:
                os.kill(os.getpid(), signal.SIGKILL)

        def on_bytes(self, n):
            if hook == "on_bytes":
                self._tick()

        def on_file(self, path, ok):
            if hook == "on_file":
                self._tick()

    api.copy(sys.argv[1], sys.argv[2], CopyOptions(state_path=sys.argv[3]), progress=Killer())
    sys.exit(3)  # never reached: the run is killed first
""")


def _source(src: Path) -> dict[str, bytes]:
    data = {f"d{i % 3}/f{i:04d}.bin": f"{i}:".encode() * (1 + i % 50) for i in range(FILES)}
    for rel, body in data.items():
        write(src / rel, body)
    return data


def _assert_complete(src: Path, dst: Path, state: Path, data: dict) -> None:
    """After the rerun: nothing staged left, the tree is ``data``, the journal empty, the
    manifest the destination's files, and a third run copies nothing."""
    assert temp_names(dst) == []
    assert {k: v for k, v in tree(dst).items() if v is not None} == data
    db = sqlite3.connect(state)
    assert db.execute("SELECT COUNT(*) FROM journal").fetchone()[0] == 0
    rows = {p: (s, m) for p, s, m in db.execute("SELECT path, size, mtime_ns FROM files WHERE kind='f'")}
    db.close()
    assert rows == {rel: ((dst / rel).stat().st_size, (dst / rel).stat().st_mtime_ns) for rel in data}
    assert api.copy(str(src), str(dst), CopyOptions(state_path=str(state))).files_copied == 0


@pytest.mark.parametrize(("hook", "after"), [
    ("on_bytes", 300),  # killed while the second bin is being staged and renamed file by file
    ("on_file", 300),  # killed while the driver records a batch: renamed, none of it recorded
])
def test_a_batch_killed_mid_way_publishes_nothing_half_written_and_the_next_run_completes(
        tmp_path: Path, hook: str, after: int) -> None:
    src, dst, state = tmp_path / "src", tmp_path / "dst", tmp_path / "state.db"
    data = _source(src)
    proc = subprocess.run([sys.executable, "-c", KILLER, str(src), str(dst), str(state), hook, str(after)],
                          env=dict(os.environ, PYTHONPATH=str(REPO)), capture_output=True, timeout=120)
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]

    db = sqlite3.connect(state)
    states = [s for (s,) in db.execute("SELECT state FROM journal")]
    recorded = {p for (p,) in db.execute("SELECT path FROM files WHERE kind='f'")}
    db.close()
    assert states and set(states) == {"batch-staging"}  # one row per batch, none per file
    assert len(states) < len(recorded) or not recorded
    published = {str(p.relative_to(dst)): p.read_bytes() for p in dst.rglob("*")
                 if p.is_file() and not p.name.startswith(".rtmp-")}
    assert set(published) - recorded, "the killed batch had files renamed into place, unrecorded"
    for rel, body in published.items():
        assert body == data[rel], f"{rel}: half-written or wrong bytes under its final name"

    report = api.copy(str(src), str(dst), CopyOptions(state_path=str(state)))
    assert report.ok, report.failures
    assert report.files_copied == FILES - len(recorded)  # everything not recorded, once more
    _assert_complete(src, dst, state, data)


def test_a_batch_row_whose_names_are_gone_is_dropped_and_touches_no_manifest_row(tmp_path: Path) -> None:
    """Recovery of a batch row removes the names still there, ignores the ones already
    renamed or removed, and never reads its key as a path of the manifest."""
    from replicator.state import open_store

    src, dst, state = tmp_path / "src", tmp_path / "dst", tmp_path / "state.db"
    write(src / "a", "aaa")
    write(src / "b", "bbb")
    assert api.copy(str(src), str(dst), CopyOptions(state_path=str(state))).files_copied == 2
    staged = write(dst / ".rtmp-dead-c", "half")
    store = open_store(str(state))
    pair = store.find_pair(str(src), str(dst))
    assert pair is not None
    store.journal_batch(pair, "dead", "//batch/dead/0", [str(staged), str(dst / ".rtmp-dead-gone")])
    store.close()
    report = api.copy(str(src), str(dst), CopyOptions(state_path=str(state)))
    assert report.ok and report.files_copied == 0 and report.files_recovered == 0
    assert temp_names(dst) == []
    db = sqlite3.connect(state)
    assert db.execute("SELECT COUNT(*) FROM journal").fetchone()[0] == 0
    assert sorted(p for (p,) in db.execute("SELECT path FROM files")) == ["a", "b"]
    db.close()


@pytest.mark.parametrize(("hook", "after"), [
    ("on_bytes", 300),  # killed after the second bin of updates was staged and renamed
    ("on_file", 300),  # killed while the driver records a batch of updates
])
def test_a_re_sync_of_updates_killed_mid_way_leaves_whole_files_and_the_next_run_completes(
        tmp_path: Path, hook: str, after: int) -> None:
    """A re-sync whose bins replace existing files (renamed from several threads at the
    end of each bin by the compiled loop): a kill leaves every final name holding the old
    or the new file whole, and the next run copies what was not recorded."""
    src, dst, state = tmp_path / "src", tmp_path / "dst", tmp_path / "state.db"
    old = _source(src)
    assert api.copy(str(src), str(dst), CopyOptions(state_path=str(state))).files_copied == FILES
    new = {rel: b"new " + body[::-1] for rel, body in old.items()}
    for rel, body in new.items():
        write(src / rel, body, mtime=1_700_000_000 + len(body))
    proc = subprocess.run([sys.executable, "-c", KILLER, str(src), str(dst), str(state), hook, str(after)],
                          env=dict(os.environ, PYTHONPATH=str(REPO)), capture_output=True, timeout=120)
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]

    published = {str(p.relative_to(dst)): p.read_bytes() for p in dst.rglob("*")
                 if p.is_file() and not p.name.startswith(".rtmp-")}
    assert set(published) == set(old)
    replaced = {rel for rel, body in published.items() if body == new[rel]}
    assert all(body in (old[rel], new[rel]) for rel, body in published.items())
    assert replaced and len(replaced) < FILES

    report = api.copy(str(src), str(dst), CopyOptions(state_path=str(state)))
    assert report.ok, report.failures
    _assert_complete(src, dst, state, new)
