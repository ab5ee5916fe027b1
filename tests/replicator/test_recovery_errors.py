"""Recovery of an interrupted run never lets a destination OSError escape: a staged file
that cannot be renamed into place (its directory replaced by a file, a read-only
directory) fails that file in the report, and the next runs do not crash the same way."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from replicator import api
from replicator.options import CopyOptions
from replicator.state import open_store
from tests.replicator.conftest import write

T0 = 1_700_000_000


def _interrupted(tmp_path: Path, rel: str) -> tuple[Path, Path]:
    """A source and a destination where a dead run left ``rel`` staged (verified, journalled)."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    write(src / rel, "new", T0 + 5)
    write(src / "other.csv", "o", T0)
    staged = dst / os.path.dirname(rel) / f".rtmp-dead-{os.path.basename(rel)}"
    write(staged, "new", T0 + 5)
    store = open_store(str(tmp_path / "state.db"))
    try:
        pair = store.pair_id(str(src), str(dst))
        store.journal_staging(pair, "dead", [(rel, str(staged))])
        store.journal_staged(pair, [(rel, 3, (T0 + 5) * 10**9, None)])
    finally:
        store.close()
    return src, dst


def _opts(tmp_path: Path) -> CopyOptions:
    return CopyOptions(state_path=str(tmp_path / "state.db"))


def test_staged_file_whose_target_is_a_directory_fails_alone(tmp_path: Path, run_cli) -> None:
    src, dst = _interrupted(tmp_path, "d/a.csv")
    (dst / "d" / "a.csv").mkdir()  # rename(file, non-empty dir) -> IsADirectoryError
    write(dst / "d" / "a.csv" / "x", "x")
    args = ("copy", str(src), str(dst), "--state", str(tmp_path / "state.db"), "--json")
    for _ in range(2):  # and the next run is no different: no crash, no traceback
        r = run_cli(*args)
        assert "Traceback" not in r.stderr, r.stderr
        assert r.returncode == 1, r.stderr
        rep = r.report
        assert rep["files_copied"] == 1 or rep["files_skipped"] == 1  # other.csv
        assert any(f["path"] == "d/a.csv" for f in rep["failures"]), rep["failures"]
    assert (dst / "other.csv").read_text() == "o"


def test_staged_dir_replaced_by_a_file(tmp_path: Path) -> None:
    src, dst = _interrupted(tmp_path, "d/a.csv")
    for p in (dst / "d").iterdir():
        p.unlink()
    (dst / "d").rmdir()
    write(dst / "d", "a file where the staged directory was")
    rep = api.copy(str(src), str(dst), _opts(tmp_path))
    assert rep.error is None
    assert [f.path for f in rep.failures] == ["d/a.csv"] or rep.files_failed >= 1
    assert (dst / "other.csv").read_text() == "o"
    rep2 = api.copy(str(src), str(dst), _opts(tmp_path))  # recovery does not trip again
    assert rep2.files_recovered == 0 and rep2.error is None


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_read_only_directory(tmp_path: Path) -> None:
    src, dst = _interrupted(tmp_path, "d/a.csv")
    (dst / "d").chmod(0o555)
    try:
        rep = api.copy(str(src), str(dst), _opts(tmp_path))
    finally:
        (dst / "d").chmod(0o755)
    assert rep.error is None and rep.files_failed >= 1
