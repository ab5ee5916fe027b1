"""``RunReport.verified`` means every file the run copied was checked by CRC32C: a failed run,
a dry run, and a run whose copies were checked by size only are not verified."""

from __future__ import annotations

import os
from pathlib import Path

from replicator import api
from replicator.options import CopyOptions
from tests.replicator.conftest import write

T0 = 1_700_000_000


def _opts(tmp_path: Path, **kw) -> CopyOptions:
    return CopyOptions(state_path=str(tmp_path / "state.db"), **kw)


def _sample(src: Path) -> None:
    write(src / "a.csv", os.urandom(5000), T0)
    write(src / "d" / "b.csv", b"b" * 100, T0)


def test_checksum_verified_run_is_verified_and_counts_files(tmp_path: Path, run_cli) -> None:
    src = tmp_path / "src"
    _sample(src)
    r = run_cli("copy", str(src), str(tmp_path / "dst"), "--verify-checksum", "--json")
    assert r.returncode == 0, r.stderr
    assert r.report["verified"] is True and r.report["files_verified"] == 2
    rep = api.copy(str(src), str(tmp_path / "dst2"), _opts(tmp_path, checksum=True))
    assert rep.ok and rep.verified and rep.files_verified == 2
    again = api.copy(str(src), str(tmp_path / "dst2"), _opts(tmp_path, checksum=True))
    assert again.files_copied == 0 and again.verified  # nothing copied, nothing unverified


def test_size_only_copy_is_not_verified(tmp_path: Path, run_cli) -> None:
    src = tmp_path / "src"
    _sample(src)
    r = run_cli("copy", str(src), str(tmp_path / "dst"), "--json")
    assert r.returncode == 0 and r.report["ok"] is True
    assert r.report["verified"] is False and r.report["files_verified"] == 0
    assert "verified=False" in r.stderr


def test_failed_run_is_never_verified(tmp_path: Path, run_cli) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    _sample(src)
    (dst / "d" / "b.csv").mkdir(parents=True)  # a directory where the file goes: it fails
    r = run_cli("copy", str(src), str(dst), "--checksum", "--json")
    assert r.returncode == 1, r.stderr
    rep = r.report
    assert rep["files_failed"] == 1 and rep["files_copied"] == 1 and rep["files_verified"] == 1
    assert rep["verified"] is False and rep["status"] == "failed"


def test_dry_run_is_not_verified(tmp_path: Path) -> None:
    src = tmp_path / "src"
    _sample(src)
    rep = api.plan(str(src), str(tmp_path / "dst"), _opts(tmp_path, checksum=True))
    assert rep.ok and not rep.verified


def test_a_file_left_alone_by_max_age_does_not_unverify_the_first_run(tmp_path: Path) -> None:
    """A file --max-age leaves alone has no record and no copy: the run relies on nothing for
    it, so a checksum-verified first run is verified (it was not: a held file counted as a
    skipped file the run relied on, and the platform's blocking copy_verified check failed)."""
    import time

    src = tmp_path / "src"
    now = time.time()
    write(src / "a.csv", os.urandom(5000), now - 60)
    write(src / "d" / "b.csv", b"b" * 100, now - 60)
    write(src / "old.csv", b"old", now - 40 * 86400)
    opts = _opts(tmp_path, checksum=True, max_age_s=30 * 86400)
    rep = api.copy(str(src), str(tmp_path / "dst"), opts)
    assert rep.ok and rep.files_copied == 2 and rep.files_too_old == 1
    assert rep.verified and rep.replica_verified
    again = api.copy(str(src), str(tmp_path / "dst"), opts)
    assert again.files_copied == 0 and again.verified
    assert not (tmp_path / "dst" / "old.csv").exists()


def test_verify_drops_the_records_of_damaged_files_so_the_next_copy_repairs_them(
        tmp_path: Path, run_cli) -> None:
    """Before: ``verify`` found a file rewritten in place in the replica (same size and mtime)
    and one deleted from it, and then ``copy --checksum`` repaired neither: the manifest's
    record (size, mtime, CRC32C of what we wrote) stood for the damaged file, and for the lost
    one where the destination is not listed. Now ``verify`` drops those records."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    _sample(src)
    write(src / "c.csv", b"c" * 100, T0)
    state = ["--state", str(tmp_path / "state.db")]
    assert run_cli("copy", str(src), str(dst), *state).returncode == 0
    (dst / "d" / "b.csv").write_bytes(b"B" * 100)  # bit rot: same size, same mtime
    os.utime(dst / "d" / "b.csv", (T0, T0))
    (dst / "c.csv").unlink()
    r = run_cli("verify", str(src), str(dst), *state, "--json")
    assert r.returncode == 1
    assert r.report["n_differing"] == 1 and r.report["missing"] == ["c.csv"]
    found = r.report
    r = run_cli("copy", str(src), str(dst), *state, "--checksum", "--json")
    assert r.returncode == 0, r.stderr
    assert (dst / "d" / "b.csv").read_bytes() == b"b" * 100 and (dst / "c.csv").exists()
    assert r.report["files_copied"] == 2 and found["marked_for_copy"] == 2
    r = run_cli("verify", str(src), str(dst), *state, "--json")
    assert r.returncode == 0 and r.report["marked_for_copy"] == 0


def test_verify_of_trees_the_state_store_never_copied_changes_nothing(tmp_path: Path, run_cli) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    _sample(src)
    write(dst / "a.csv", b"other", T0)
    r = run_cli("verify", str(src), str(dst), "--state", str(tmp_path / "state.db"), "--json")
    assert r.returncode == 1 and r.report["marked_for_copy"] == 0
    assert not (tmp_path / "state.db").exists()
