"""End-to-end behaviour of `replicator copy | plan | verify` on local trees."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from replicator import api
from replicator.errors import LockedError
from replicator.options import CopyOptions
from replicator.progress import Progress
from replicator.state import SQLiteStateStore as StateStore
from tests.replicator.conftest import temp_names, tree, write

T0 = 1_700_000_000


def make_sample(src: Path) -> None:
    write(src / "empty.csv", b"", T0)
    write(src / "dt=2026-11-20" / "part-0.csv", b"a,b\n1,2\n", T0)
    write(src / "dt=2026-11-20" / "part-1.csv", os.urandom(70_000), T0)
    write(src / "unicode ü ñ 日本" / "spaced name.csv", "x,y\n", T0)
    write(src / ("d" * 200) / ("n" * 240 + ".csv"), b"long", T0)
    deep = src.joinpath(*[f"l{i}" for i in range(40)])
    write(deep / "deep.csv", b"deep", T0)
    (src / "empty_dir" / "nested_empty").mkdir(parents=True)


def opts(tmp_path: Path, **kw) -> CopyOptions:
    return CopyOptions(state_path=str(tmp_path / "state.db"), **kw)


def test_first_copy_is_exact_and_second_is_noop(tmp_path: Path, run_cli) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    make_sample(src)
    r = run_cli("copy", str(src), str(dst), "--json")
    assert r.returncode == 0, r.stderr
    rep = r.report
    assert rep["files_copied"] == 6 and rep["files_failed"] == 0 and rep["status"] == "ok"
    assert rep["copy_finished"]
    assert rep["verified"] is False  # the kernel copy checks sizes only (tests/replicator/test_verified.py)
    assert tree(dst) == tree(src)  # includes empty dirs, unicode, long and deep names
    for rel in ("dt=2026-11-20/part-1.csv", "empty.csv"):
        assert os.stat(dst / rel).st_mtime_ns == os.stat(src / rel).st_mtime_ns
    assert temp_names(dst) == []
    again = run_cli("copy", str(src), str(dst), "--json").report
    assert again["files_copied"] == 0 and again["files_skipped"] == 6
    v = run_cli("verify", str(src), str(dst), "--json")
    assert v.returncode == 0 and v.report["identical"] and v.report["files_compared"] == 6


def test_incremental_touches_only_changes_and_deletes_when_asked(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    for i in range(10):
        write(src / f"f{i}.csv", f"{i}\n", T0)
    api.copy(str(src), str(dst), opts(tmp_path))
    before = {p.name: p.stat().st_ino for p in dst.iterdir()}
    write(src / "f1.csv", "changed\n", T0 + 10)
    write(src / "new.csv", "new\n", T0)
    (src / "f2.csv").unlink()
    rep = api.copy(str(src), str(dst), opts(tmp_path))
    assert (rep.files_copied, rep.files_updated, rep.files_deleted) == (2, 1, 0)
    assert (dst / "f2.csv").exists()  # no --delete: kept
    assert all(before[n] == (dst / n).stat().st_ino for n in before if n not in ("f1.csv",))
    rep = api.copy(str(src), str(dst), opts(tmp_path, delete=True))
    assert rep.files_deleted == 1 and not (dst / "f2.csv").exists()
    assert tree(dst) == tree(src)


def test_delete_guard_refuses_and_changes_nothing(tmp_path: Path, run_cli) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    for i in range(10):
        write(src / f"f{i}", str(i), T0)
    assert run_cli("copy", str(src), str(dst)).returncode == 0
    for i in range(6):
        (src / f"f{i}").unlink()
    write(src / "new", "n", T0)
    r = run_cli("copy", str(src), str(dst), "--delete", "--json")
    assert r.returncode == 1 and "refusing to delete 6 of 10" in r.report["delete_refused"]
    assert len(list(dst.iterdir())) == 10 and not (dst / "new").exists()
    r = run_cli("copy", str(src), str(dst), "--delete", "--max-delete", "60%", "--json")
    assert r.returncode == 0 and r.report["files_deleted"] == 6
    assert tree(dst) == tree(src)


def test_lost_state_falls_back_to_destination_listing(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    for i in range(5):
        write(src / f"f{i}", str(i) * 100, T0)
    api.copy(str(src), str(dst), opts(tmp_path))
    os.unlink(tmp_path / "state.db")
    rep = api.copy(str(src), str(dst), opts(tmp_path))
    assert rep.files_copied == 0 and rep.files_skipped == 5
    # and the adopted rows make the next run manifest-only
    store = StateStore(str(tmp_path / "state.db"))
    assert store.db.execute("SELECT COUNT(*) FROM files WHERE kind='f'").fetchone()[0] == 5
    store.close()


def test_dry_run_and_plan_change_nothing(tmp_path: Path, run_cli) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    write(src / "a.csv", "1", T0)
    r = run_cli("plan", str(src), str(dst), "--state", str(tmp_path / "s.db"))
    assert r.returncode == 0 and "copy    a.csv" in r.stdout
    r = run_cli("copy", str(src), str(dst), "--dry-run", "--json", "--state", str(tmp_path / "s.db"))
    assert r.returncode == 0 and r.report["dry_run"] and r.report["files_copied"] == 1
    assert not dst.exists() and not (tmp_path / "s.db").exists()


def test_min_age_holds_back_new_files_and_never_deletes_them(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    write(src / "old.csv", "old", T0)
    write(src / "fresh.csv", "fresh")  # mtime now
    rep = api.copy(str(src), str(dst), opts(tmp_path, min_age_s=3600, delete=True))
    assert rep.files_copied == 1 and rep.files_held_back == 1
    assert not (dst / "fresh.csv").exists()
    shutil.copy2(src / "fresh.csv", dst / "fresh.csv")  # a previous copy of it exists
    rep = api.copy(str(src), str(dst), opts(tmp_path, min_age_s=3600, delete=True))
    assert rep.files_deleted == 0 and (dst / "fresh.csv").exists()


def test_filters_and_hadoop_temporaries(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    write(src / "keep.csv", "k", T0)
    write(src / "skip.log", "s", T0)
    write(src / "part.csv._COPYING_", "half", T0)
    write(src / "out" / "_temporary" / "0" / "x.csv", "t", T0)
    rep = api.copy(str(src), str(dst), opts(tmp_path, exclude=("*.log",)))
    assert rep.files_copied == 1
    assert sorted(p.name for p in dst.rglob("*") if p.is_file()) == ["keep.csv"]


def test_symlinks_skipped_by_default_followed_with_copy_links_loops_refused(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    write(src / "real" / "f.csv", "f", T0)
    os.symlink(src / "real" / "f.csv", src / "link.csv")
    os.symlink(src, src / "real" / "loop")  # a loop back to the root
    os.symlink(tmp_path / "nowhere", src / "dangling")
    rep = api.copy(str(src), str(dst), opts(tmp_path))
    assert rep.files_copied == 1 and rep.symlinks_skipped == 3
    dst2 = tmp_path / "dst2"
    rep = api.copy(str(src), str(dst2), opts(tmp_path, copy_links=True))
    assert (dst2 / "link.csv").read_text() == "f" and not (dst2 / "link.csv").is_symlink()
    assert not (dst2 / "real" / "loop").exists()
    assert rep.symlinks_skipped == 2  # the loop and the dangling link


def test_checksum_mode_detects_same_size_same_mtime_change(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    write(src / "a", "aaaa", T0)
    api.copy(str(src), str(dst), opts(tmp_path, checksum=True))
    write(dst / "a", "bbbb", T0)  # corrupted behind our back, same size and mtime
    assert api.copy(str(src), str(dst), opts(tmp_path)).files_copied == 0
    v = api.verify(str(src), str(dst))
    assert not v.identical and v.differing[0]["reason"] == "checksum"
    os.unlink(tmp_path / "state.db")  # checksum mode compares real content
    rep = api.copy(str(src), str(dst), opts(tmp_path, checksum=True))
    assert rep.files_copied == 1 and (dst / "a").read_text() == "aaaa"


def test_preserve_perms(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    write(src / "x", "x", T0).chmod(0o640)
    api.copy(str(src), str(dst), opts(tmp_path, preserve=frozenset({"times", "perms"})))
    assert (dst / "x").stat().st_mode & 0o777 == 0o640


def test_big_file_copied_in_ranges_is_exact(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    data = os.urandom(13 * (1 << 20) + 17)
    write(src / "big.bin", data, T0)
    o = opts(tmp_path, checksum=True, part_size=5 << 20, multipart_threshold=5 << 20, workers=3)
    rep = api.copy(str(src), str(dst), o)
    assert rep.files_copied == 1 and rep.ok
    assert (dst / "big.bin").read_bytes() == data
    import google_crc32c

    store = StateStore(str(tmp_path / "state.db"))
    (recorded,) = store.db.execute("SELECT checksum FROM files WHERE path='big.bin'").fetchone()
    store.close()
    assert recorded == f"crc32c:{google_crc32c.value(data):08x}"


def test_marker_written_last_and_ignored_by_verify(tmp_path: Path, run_cli) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    write(src / "a", "a", T0)
    r = run_cli("copy", str(src), str(dst), "--marker", "_SUCCESS.json", "--json")
    assert r.returncode == 0
    import json

    summary = json.loads((dst / "_SUCCESS.json").read_text())
    assert summary["files_copied"] == 1 and summary["copy_finished"]
    assert run_cli("verify", str(src), str(dst), "--marker", "_SUCCESS.json").returncode == 0
    assert run_cli("verify", str(src), str(dst)).returncode == 1  # without it, the marker is extra


@pytest.mark.skipif(shutil.which("setpriv") is None and os.geteuid() == 0, reason="needs setpriv as root")
def test_unreadable_file_reported_rest_copied_exit_1(tmp_path: Path, run_cli) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    write(src / "ok1", "1", T0)
    write(src / "ok2", "2", T0)
    write(src / "locked", "secret", T0).chmod(0)
    prefix = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", "--"] if os.geteuid() == 0 else []
    r = run_cli("copy", str(src), str(dst), "--json", "--retries", "0", prefix=prefix)
    assert r.returncode == 1, r.stderr
    rep = r.report
    assert rep["files_copied"] == 2 and rep["files_failed"] == 1
    assert rep["failures"][0]["path"] == "locked" and "permission" in rep["failures"][0]["error"].lower()
    assert "FAILED locked" in r.stderr
    assert not (dst / "locked").exists() and temp_names(dst) == []


def test_source_changed_during_copy_is_not_recorded_stale(tmp_path: Path) -> None:
    import threading

    src, dst = tmp_path / "src", tmp_path / "dst"
    write(src / "growing.bin", os.urandom(6 << 20), T0)

    def append_later() -> None:
        time.sleep(0.4)
        with open(src / "growing.bin", "ab") as fh:
            fh.write(b"more data")

    th = threading.Thread(target=append_later)
    th.start()
    # 6 MiB at 4 MiB/s: the append lands mid-read; checksum mode reads through Python
    rep = api.copy(str(src), str(dst), opts(tmp_path, checksum=True, bandwidth_mbps=4, chunk_size=1 << 20))
    th.join()
    final = (src / "growing.bin").read_bytes()
    store = StateStore(str(tmp_path / "state.db"))
    row = store.db.execute("SELECT size, checksum FROM files WHERE path='growing.bin'").fetchone()
    store.close()
    if rep.files_copied:  # the retry copied the settled file: the record must describe it
        import google_crc32c

        assert row == (len(final), f"crc32c:{google_crc32c.value(final):08x}")
        assert (dst / "growing.bin").read_bytes() == final
    else:
        assert row is None and rep.files_failed == 1
    assert temp_names(dst) == []


def test_source_changed_during_kernel_copy_is_not_published_stale(tmp_path: Path) -> None:
    """The local -> local kernel copy takes the source's stat from its open descriptor and
    checks it again after the copy: an append landing mid-copy is never published as the
    old size (the file fails, or a retry copies the settled file)."""
    import threading

    src, dst = tmp_path / "src", tmp_path / "dst"
    write(src / "growing.bin", os.urandom(6 << 20), T0)
    started = threading.Event()

    class Appender(Progress):
        def on_bytes(self, n: int) -> None:
            if not started.is_set():  # the first chunk moved: the copy is under way
                started.set()
                with open(src / "growing.bin", "ab") as fh:
                    fh.write(b"more data")

    # 1 MiB chunks at 4 MiB/s: the append lands after the first chunk, long before the last
    rep = api.copy(str(src), str(dst), opts(tmp_path, bandwidth_mbps=4, chunk_size=1 << 20),
                   progress=Appender())
    assert started.is_set()
    final = (src / "growing.bin").read_bytes()
    store = StateStore(str(tmp_path / "state.db"))
    row = store.db.execute("SELECT size FROM files WHERE path='growing.bin'").fetchone()
    store.close()
    if rep.files_copied:  # the retry copied the settled file: the record must describe it
        assert row == (len(final),) and (dst / "growing.bin").read_bytes() == final
    else:
        assert row is None and rep.files_failed == 1 and not (dst / "growing.bin").exists()
    assert temp_names(dst) == []


def test_bad_usage_exits_2(tmp_path: Path, run_cli) -> None:
    src = tmp_path / "src"
    src.mkdir()
    cases = [
        ("copy", str(tmp_path / "missing"), str(tmp_path / "d")),
        ("copy", str(src), str(tmp_path / "d"), "--preserve", "acls"),
        ("copy", str(src), str(tmp_path / "d"), "--max-delete", "many"),
        ("copy", str(src), str(tmp_path / "d"), "--workers", "0"),
        ("copy", str(src)),
        ("copy", str(src), str(tmp_path / "d"), "--no-such-flag"),
        ("copy", "nosuch://x", str(tmp_path / "d")),
        ("copy", str(src), str(src / "inside")),
        ("copy", str(src), str(tmp_path)),
    ]
    for args in cases:
        r = run_cli(*args)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        assert r.stderr.strip(), args
    r = run_cli("copy", str(tmp_path / "missing"), str(tmp_path / "d"), "--json")
    assert r.returncode == 2 and r.report["ok"] is False and "source not found" in r.report["error"]


def test_help_on_every_command(run_cli) -> None:
    for cmd in ([], ["copy"], ["plan"], ["verify"]):
        r = run_cli(*cmd, "--help")
        assert r.returncode == 0 and "Usage" in r.stdout


def test_one_run_per_pair_at_a_time(tmp_path: Path) -> None:
    src = tmp_path / "src"
    write(src / "a", "a", T0)
    store = StateStore(str(tmp_path / "state.db"))
    store.lock_pair(str(src), str(tmp_path / "dst"))
    try:
        with pytest.raises(LockedError):
            api.copy(str(src), str(tmp_path / "dst"), opts(tmp_path))
    finally:
        store.close()
    assert api.copy(str(src), str(tmp_path / "dst"), opts(tmp_path)).ok


def test_journal_recovery_publishes_staged_and_drops_staging(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    write(src / "a", "new-a", T0 + 5)
    write(src / "b", "new-b", T0 + 5)
    write(dst / "a", "old-a", T0)
    write(dst / "b", "old-b", T0)
    store = StateStore(str(tmp_path / "state.db"))
    pair = store.pair_id(str(src), str(dst))
    store.record(pair, [("a", "f", 5, T0 * 10**9, None), ("b", "f", 5, T0 * 10**9, None)])
    # an interrupted run: "a" verified under its temp name, "b" half written
    write(dst / ".rtmp-dead-a", "new-a", T0 + 5)
    write(dst / ".rtmp-dead-b", "ne", T0)
    store.journal_staging(pair, "dead", [("a", str(dst / ".rtmp-dead-a")), ("b", str(dst / ".rtmp-dead-b"))])
    store.journal_staged(pair, [("a", 5, (T0 + 5) * 10**9, None)])
    store.close()
    rep = api.copy(str(src), str(dst), opts(tmp_path))
    assert rep.files_recovered == 1
    assert rep.files_copied == 1  # only b: a was finished from the journal, not copied again
    assert (dst / "a").read_text() == "new-a" and (dst / "b").read_text() == "new-b"
    assert temp_names(dst) == []
    db = sqlite3.connect(tmp_path / "state.db")
    assert db.execute("SELECT COUNT(*) FROM journal").fetchone()[0] == 0


def test_import_replicator_does_not_import_dagster() -> None:
    code = ("import sys, replicator, replicator.api, replicator.cli, replicator.engine, replicator.verify;"
            "bad=[m for m in sys.modules if m.split('.')[0] in ('dagster','pyspark')];"
            "print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_fifos_are_not_copied(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    write(src / "a.csv", "a", T0)
    os.mkfifo(src / "pipe")
    rep = api.copy(str(src), str(dst), opts(tmp_path))  # would block forever reading the FIFO
    assert rep.ok and rep.files_copied == 1 and not (dst / "pipe").exists()


def test_dry_run_leaves_existing_state_untouched(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    write(src / "a", "a", T0)
    write(src / "b", "b", T0)
    api.copy(str(src), str(dst), opts(tmp_path))
    (src / "a").unlink()
    (dst / "a").unlink()  # gone from both sides: a real --delete run would prune its row
    before = sqlite3.connect(tmp_path / "state.db").execute("SELECT path FROM files ORDER BY path").fetchall()
    rep = api.copy(str(src), str(dst), opts(tmp_path, delete=True, dry_run=True))
    assert rep.dry_run and rep.ok
    after = sqlite3.connect(tmp_path / "state.db").execute("SELECT path FROM files ORDER BY path").fetchall()
    assert after == before and ("a",) in after


def test_marker_of_an_upstream_hop_is_not_copied_on(tmp_path: Path) -> None:
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    write(a / "x.csv", "x", T0)
    api.copy(str(a), str(b), opts(tmp_path, marker="_SUCCESS.json"))
    api.copy(str(b), str(c), opts(tmp_path, marker="_SUCCESS.json"))
    summary = __import__("json").loads((c / "_SUCCESS.json").read_text())
    assert summary["source"] == str(b) and summary["files_copied"] == 1
