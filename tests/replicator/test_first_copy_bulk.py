"""A first copy into an empty destination is decided in bulk (every source path is new):
the state rows, the work it does and its report must be those of the row-by-row decision."""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

import pytest

from replicator import api
from replicator.options import CopyOptions
from replicator.state.scratch import Scratch
from tests.replicator.conftest import write

VOLATILE = {"run_id", "started_at", "finished_at", "duration_s", "throughput_mb_s",
            "copy_finished", "executor_details", "source", "destination", "marker"}


def _source(src: Path) -> None:
    for i in range(300):
        write(src / f"d{i % 4}/sub{i % 3}/f{i:03d}.bin", b"x" * (i * 37 % 9000))
    write(src / "empty.txt", b"")
    (src / "emptydir").mkdir()
    os.symlink("d0/sub0/f000.bin", src / "link")
    new = src / "d1/fresh.bin"  # held back by --min-age
    write(new, b"new")
    os.utime(new, (time.time() + 3600, time.time() + 3600))
    old = time.time() - 7200
    for p in src.rglob("*"):
        if p != new and not p.is_symlink():
            os.utime(p, (old, old))


def _state(db: Path) -> tuple[list, list, list]:
    con = sqlite3.connect(db)
    try:
        files = con.execute("SELECT path, kind, size, mtime_ns, checksum FROM files ORDER BY path").fetchall()
        journal = con.execute("SELECT * FROM journal").fetchall()
        runs = con.execute("SELECT status FROM runs").fetchall()
    finally:
        con.close()
    return files, journal, runs


def _report(rep) -> dict:
    d = rep.to_dict()
    for k in VOLATILE:
        d.pop(k, None)
    return d


def _tree(root: Path) -> dict[str, tuple]:
    return {str(p.relative_to(root)): (p.is_symlink(), p.is_dir(), p.lstat().st_size if p.is_file() else 0,
                                       p.stat().st_mtime_ns if p.is_file() else 0)
            for p in root.rglob("*")}


@pytest.mark.parametrize("dry_run", [False, True])
def test_bulk_first_copy_matches_row_by_row(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            dry_run: bool) -> None:
    src = tmp_path / "src"
    _source(src)
    opts = dict(min_age_s=60, dry_run=dry_run)
    calls: list[bool] = []
    real = Scratch.only_source

    def spy(self: Scratch) -> bool:
        calls.append(found := real(self))
        return found

    monkeypatch.setattr(Scratch, "only_source", spy)
    bulk = api.copy(str(src), str(tmp_path / "a"), CopyOptions(state_path=str(tmp_path / "a.db"), **opts))
    assert calls == [True]  # the bulk path ran
    monkeypatch.setattr(Scratch, "only_source", lambda self: False)
    rows = api.copy(str(src), str(tmp_path / "b"), CopyOptions(state_path=str(tmp_path / "b.db"), **opts))
    assert _report(bulk) == _report(rows)
    assert bulk.files_skipped == 1 and bulk.files_held_back == 1
    if dry_run:
        assert bulk.actions == rows.actions and len(bulk.actions) > 300
        assert not (tmp_path / "a").exists()
        return
    assert bulk.files_copied == 301
    assert _tree(tmp_path / "a") == _tree(tmp_path / "b")
    assert _state(tmp_path / "a.db") == _state(tmp_path / "b.db")
    assert _state(tmp_path / "a.db")[0]  # something was recorded
    # a re-sync of each finds nothing to do and the same one held file
    again = api.copy(str(src), str(tmp_path / "a"), CopyOptions(state_path=str(tmp_path / "a.db"), **opts))
    assert again.files_copied == 0 and again.files_skipped == 302


def test_not_bulk_when_the_destination_has_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    write(src / "a.txt", b"one")
    write(src / "b.txt", b"two")
    write(dst / "a.txt", b"one")
    os.utime(dst / "a.txt", ns=(os.stat(src / "a.txt").st_mtime_ns,) * 2)
    calls: list[bool] = []
    real = Scratch.only_source
    monkeypatch.setattr(Scratch, "only_source", lambda self: calls.append(real(self)) or calls[-1])
    rep = api.copy(str(src), str(dst), CopyOptions(state_path=str(tmp_path / "s.db")))
    assert calls == [False]
    assert rep.files_copied == 1 and rep.files_skipped == 1


def test_a_copy_without_a_chain_does_not_load_transforms(tmp_path: Path) -> None:
    """The transform chain's module (tarfile, subprocess, shutil) loads only for a chain."""
    import subprocess
    import sys

    from tests.replicator.conftest import REPO

    write(tmp_path / "src/a.txt", b"one")
    code = ("import sys; from replicator import api; from replicator.options import CopyOptions; "
            f"r = api.copy({str(tmp_path / 'src')!r}, {str(tmp_path / 'dst')!r}, "
            f"CopyOptions(state_path={str(tmp_path / 's.db')!r})); "
            "print(r.files_copied, 'replicator.transforms' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["1", "False"]
