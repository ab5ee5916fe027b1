"""Attacks on the engine's promises on local trees (issue 12): paths resolved and confined,
the state store and the marker kept apart from the data, a lost replica noticed."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from tests.replicator.conftest import REPO, temp_names, tree, write

T0 = 1_700_000_000


def _sample(src: Path) -> None:
    write(src / "a.csv", "a\n", T0)
    write(src / "d" / "b.csv", "b\n", T0)
    write(src / "d" / "e" / "c.csv", "c\n", T0)


# ---------------------------------------------------------------- 1: overlap on resolved paths
def test_destination_through_symlink_to_an_ancestor_of_the_source_is_refused(tmp_path, run_cli):
    top = tmp_path / "top"
    src = top / "src"
    _sample(src)
    before = tree(top)
    (tmp_path / "link").symlink_to(top)
    r = run_cli("copy", str(src), str(tmp_path / "link"), "--delete", "--max-delete", "100%",
                "--state", str(tmp_path / "state.db"))
    assert r.returncode == 2, r.stderr
    assert "overlap" in r.stderr
    assert tree(top) == before  # the source was neither deleted nor copied into itself


def test_destination_inside_the_source_through_a_symlink_is_refused(tmp_path, run_cli):
    src = tmp_path / "src"
    _sample(src)
    (tmp_path / "into").symlink_to(src / "d")
    r = run_cli("copy", str(src), str(tmp_path / "into"), "--state", str(tmp_path / "s.db"))
    assert r.returncode == 2 and "overlap" in r.stderr, r.stderr
    assert sorted(p.name for p in (src / "d").iterdir()) == ["b.csv", "e"]


def test_source_through_a_symlink_inside_the_destination_is_refused(tmp_path, run_cli):
    dst = tmp_path / "dst"
    _sample(dst / "inner")
    (tmp_path / "src-link").symlink_to(dst / "inner")
    r = run_cli("copy", str(tmp_path / "src-link"), str(dst), "--delete", "--max-delete", "100%",
                "--state", str(tmp_path / "s.db"))
    assert r.returncode == 2 and "overlap" in r.stderr, r.stderr


# ---------------------------------------------------------------- 8: state store apart from the data
def test_state_file_under_the_destination_is_refused(tmp_path, run_cli):
    src, dst = tmp_path / "src", tmp_path / "dst"
    _sample(src)
    dst.mkdir()
    (tmp_path / "dst-link").symlink_to(dst)
    for state in (dst / "state.db", tmp_path / "dst-link" / "sub" / "state.db"):
        r = run_cli("copy", str(src), str(dst), "--delete", "--max-delete", "100%",
                    "--state", str(state))
        assert r.returncode == 2, r.stderr
        assert "--state" in r.stderr and "destination" in r.stderr, r.stderr
    assert list(dst.iterdir()) == []  # nothing written, no state created there


def test_state_file_under_the_source_is_refused(tmp_path, run_cli):
    src, dst = tmp_path / "src", tmp_path / "dst"
    _sample(src)
    r = run_cli("copy", str(src), str(dst), "--state", str(src / "d" / "state.db"))
    assert r.returncode == 2 and "source" in r.stderr, r.stderr
    assert not (src / "d" / "state.db").exists() and not dst.exists()


# ---------------------------------------------------------------- 6: marker name vs source file
def test_marker_named_like_a_source_file_is_refused_up_front(tmp_path, run_cli):
    src, dst = tmp_path / "src", tmp_path / "dst"
    _sample(src)
    write(src / "_SUCCESS", b"", T0)  # a Hadoop job's own marker
    r = run_cli("copy", str(src), str(dst), "--marker", "_SUCCESS", "--state", str(tmp_path / "s.db"))
    assert r.returncode == 2, r.stderr
    assert "_SUCCESS" in r.stderr and "--marker" in r.stderr
    assert not dst.exists()
    # another marker name works, and the source's _SUCCESS is copied as data
    ok = run_cli("copy", str(src), str(dst), "--marker", "_REPLICATED", "--state", str(tmp_path / "s.db"))
    assert ok.returncode == 0, ok.stderr
    assert (dst / "_SUCCESS").read_bytes() == b""
    assert json.loads((dst / "_REPLICATED").read_text())["status"] == "ok"


# ---------------------------------------------------------------- 19: the marker's temporary
def _crash_run(tmp_path: Path, src: Path, dst: Path, crash: str | None, **options) -> subprocess.CompletedProcess:
    spec = {"src": str(src), "dst": str(dst), "crash": crash,
            "options": {"state_path": str(tmp_path / "state.db"), **options}}
    env = dict(os.environ, PYTHONPATH=str(REPO), REPLICATOR_HOME=str(tmp_path / "home"))
    return subprocess.run([sys.executable, "-m", "tests.replicator.crashpoint", json.dumps(spec)],
                          capture_output=True, text=True, env=env, timeout=300, cwd=str(tmp_path))


def test_kill_between_marker_write_and_rename_leaves_no_temporary(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    write(src / "one.csv", "1\n", T0)
    # rename #1 publishes one.csv, rename #2 the marker: die just before it
    r = _crash_run(tmp_path, src, dst, "replicator.filesystems.local:LocalFileSystem.rename:before:2",
                   marker="_DONE")
    assert r.returncode == -9, r.stderr
    assert [Path(p).name.endswith("_DONE") for p in temp_names(dst)] == [True]
    again = _crash_run(tmp_path, src, dst, None, marker="_DONE")
    assert again.returncode == 0, again.stderr
    assert temp_names(dst) == []
    assert sorted(p.name for p in dst.iterdir()) == ["_DONE", "one.csv"]


# ---------------------------------------------------------------- 11: a lost replica
def test_wiped_destination_is_noticed_and_copied_again(tmp_path, run_cli):
    src, dst = tmp_path / "src", tmp_path / "dst"
    _sample(src)
    args = ["copy", str(src), str(dst), "--state", str(tmp_path / "s.db"), "--json"]
    assert run_cli(*args).returncode == 0
    for wipe in ("root", "contents"):
        if wipe == "root":
            subprocess.run(["rm", "-rf", str(dst)], check=True)  # a missing mount
        else:
            for p in sorted(dst.rglob("*"), reverse=True):  # a replaced, empty disk
                p.rmdir() if p.is_dir() else p.unlink()
        r = run_cli(*args)
        assert r.returncode == 0, r.stderr
        assert r.report["files_copied"] == 3, (wipe, r.report)
        assert tree(dst) == tree(src), wipe


def test_one_lost_file_of_a_small_replica_is_copied_again(tmp_path, run_cli):
    src, dst = tmp_path / "src", tmp_path / "dst"
    _sample(src)
    args = ["copy", str(src), str(dst), "--state", str(tmp_path / "s.db"), "--json"]
    assert run_cli(*args).returncode == 0
    (dst / "d" / "e" / "c.csv").unlink()
    r = run_cli(*args)
    assert r.returncode == 0 and r.report["files_copied"] == 1, r.report
    assert tree(dst) == tree(src)


# ---------------------------------------------------------------- 9: excluded paths keep their rows
def test_delete_with_exclude_keeps_manifest_rows_of_excluded_paths(tmp_path, run_cli):
    src, dst = tmp_path / "src", tmp_path / "dst"
    _sample(src)
    write(src / "keep.log", "log\n", T0)
    state = tmp_path / "s.db"
    assert run_cli("copy", str(src), str(dst), "--state", str(state)).returncode == 0
    r = run_cli("copy", str(src), str(dst), "--state", str(state), "--delete", "--exclude", "*.log")
    assert r.returncode == 0, r.stderr
    db = sqlite3.connect(state)
    paths = {p for (p,) in db.execute("SELECT path FROM files")}
    db.close()
    assert "keep.log" in paths
    assert (dst / "keep.log").exists()


# ---------------------------------------------------------------- one run per pair
def test_second_run_of_a_pair_through_a_symlinked_destination_is_refused(tmp_path, run_cli):
    src, dst = tmp_path / "src", tmp_path / "dst"
    _sample(src)
    dst.mkdir()
    (tmp_path / "dst-link").symlink_to(dst)
    paused, release = tmp_path / "paused", tmp_path / "release"
    # the first run holds the pair and stops just before its first publish, until released
    spec = {"src": str(src), "dst": str(dst), "paused": str(paused), "release": str(release),
            "crash": "replicator.engine:_Run._publish:pause:1",
            "options": {"state_path": str(tmp_path / "state.db")}}
    env = dict(os.environ, PYTHONPATH=str(REPO), REPLICATOR_HOME=str(tmp_path / "home"))
    first = subprocess.Popen([sys.executable, "-m", "tests.replicator.crashpoint", json.dumps(spec)],
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while not paused.exists():
            assert first.poll() is None and time.monotonic() < deadline, first.communicate()
            time.sleep(0.05)
        second = run_cli("copy", str(src), str(tmp_path / "dst-link"),
                         "--state", str(tmp_path / "state.db"))
        assert second.returncode == 1 and "another replicator run" in second.stderr, second.stderr
    finally:
        release.touch()
        _out, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    assert tree(dst) == tree(src)


# ---------------------------------------------------------------- '#', '?' and '%' in names
def test_a_local_destination_named_with_hash_or_query_marks_is_written_there_and_nowhere_else(
        tmp_path, run_cli):
    """Before: a plain path went through URI parsing, so ``out/run#1`` and ``out/a?b`` were
    copied into ``out/run`` and ``out/a`` (and ``--delete`` deleted there: another directory's
    files), and ``out/100%20done`` into ``out/100 done``. A plain path is taken as it is."""
    src = tmp_path / "src"
    _sample(src)
    neighbour = tmp_path / "out" / "run"
    write(neighbour / "keep.txt", "someone else's\n", T0)
    for name in ("run#1", "run?x", "100%20done"):
        dst = tmp_path / "out" / name
        r = run_cli("copy", str(src), str(dst), "--delete", "--max-delete", "100%",
                    "--state", str(tmp_path / "state.db"))
        assert r.returncode == 0, r.stderr
        assert tree(dst) == tree(src), name
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["100%20done", "run", "run#1",
                                                                    "run?x"]
    assert tree(neighbour) == {"keep.txt": b"someone else's\n"}


def test_a_uri_with_a_query_or_fragment_is_refused_and_percent_encoding_names_them(tmp_path, run_cli):
    """Before: ``file:///out/run#1`` copied into ``/out/run``, the fragment dropped; a query or
    fragment names no path, so it is a usage error; ``%23`` names a '#'."""
    src = tmp_path / "src"
    _sample(src)
    for uri in (f"file://{tmp_path}/out/run#1", f"file://{tmp_path}/out/run?x",
                "sftp://user:pa#ss@127.0.0.1:1/x"):
        r = run_cli("copy", str(src), uri, "--state", str(tmp_path / "state.db"))
        assert r.returncode == 2, r.stderr
        assert "write them as %3F and %23" in r.stderr, r.stderr
        assert "pa#ss" not in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "out").exists()
    r = run_cli("copy", str(src), f"file://{tmp_path}/out/run%231", "--state", str(tmp_path / "s.db"))
    assert r.returncode == 0, r.stderr
    assert tree(tmp_path / "out" / "run#1") == tree(src)
