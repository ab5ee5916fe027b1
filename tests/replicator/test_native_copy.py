"""The small-file loop in C (native/fastcopy.c ``copy_small``) against the pure-Python one
(``REPLICATOR_NATIVE=0``): the same outcomes, staged files and destination over a bin with
every unusual case, each bad file failing alone; and a whole CLI copy both ways."""

from __future__ import annotations

import os
import random
import sqlite3
from pathlib import Path

import pytest

from replicator import native
from replicator.filesystems.local import LocalFileSystem, text_path
from replicator.transfer import SMALL_FILE, StageContext, Task, stage_small_local

pytestmark = pytest.mark.skipif(native.built("fastcopy") is None,
                                reason="replicator._fastcopy not built (no compiler)")

BYTE_NAME = os.fsdecode(b"caf\xe9-latin1.txt")  # not UTF-8


def _tree(root: Path) -> list[Task]:
    """A source tree and the tasks a listing of it made, some of which the tree then
    changed under (deterministically: the file is not what the listing saw)."""
    src, dst = root / "src", root / "dst"
    src.mkdir()
    dst.mkdir()
    rng = random.Random(7)  # the same bytes in both trees
    files = {"a.txt": rng.randbytes(5000), "empty": b"", BYTE_NAME: b"latin",
             "grown": b"g" * 10, "fifo": b"f", "stale": b"s" * 300, "target": b"t" * 7,
             "z.bin": rng.randbytes(SMALL_FILE)}
    tasks = []
    for seq, (name, data) in enumerate(files.items()):
        (src / name).write_bytes(data)
        st = (src / name).stat()
        tasks.append(Task(seq, text_path(name), "copy", st.st_size, st.st_mtime_ns))
    (src / "link").symlink_to(src / "target")  # listed as a link, copied through with -L
    st = (src / "target").stat()
    tasks.append(Task(len(tasks), "link", "copy", st.st_size, st.st_mtime_ns))
    (src / "grown").write_bytes(b"g" * (SMALL_FILE + 10))  # past the small-file bound
    (src / "fifo").unlink()
    os.mkfifo(src / "fifo")  # replaced by a FIFO since the listing
    return tasks


def _run(root: Path, *, use_native: bool, copy_links: bool, self_publish: bool,
         monkeypatch: pytest.MonkeyPatch) -> tuple[list[tuple], dict[str, bytes]]:
    tasks = _tree(root)
    fs = LocalFileSystem()
    ctx = StageContext(fs, str(root / "src"), fs, str(root / "dst"), "run1", retries=0,
                       copy_links=copy_links, preserve=frozenset({"times", "perms"}))
    for t in tasks:
        t.self_publish = self_publish
    stale = Path(ctx.staged_path("stale"))
    stale.write_bytes(b"an earlier attempt's leftovers, longer than the file")
    monkeypatch.setenv(native.ENV, "1" if use_native else "0")
    outs = sorted(stage_small_local(tasks, ctx), key=lambda o: o.seq)
    rows = [(o.seq, o.rel, o.ok, o.size, o.mtime_ns, o.checksum, o.crc,
             o.tmp and Path(o.tmp).name, o.error and o.error.replace(str(root), "ROOT"),
             o.side, o.bytes_moved) for o in outs]
    found = {}
    for p in sorted((root / "dst").iterdir()):
        st = p.lstat()
        found[p.name] = (p.read_bytes(), st.st_mtime_ns, st.st_mode)
    return rows, found


@pytest.mark.parametrize("copy_links", [False, True], ids=["no-L", "copy-links"])
@pytest.mark.parametrize("self_publish", [False, True], ids=["staged", "self-publish"])
def test_native_and_python_loops_give_the_same_outcomes_and_files(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, copy_links: bool,
        self_publish: bool) -> None:
    (tmp_path / "py").mkdir()
    (tmp_path / "c").mkdir()
    py_rows, py_files = _run(tmp_path / "py", use_native=False, copy_links=copy_links,
                             self_publish=self_publish, monkeypatch=monkeypatch)
    c_rows, c_files = _run(tmp_path / "c", use_native=True, copy_links=copy_links,
                           self_publish=self_publish, monkeypatch=monkeypatch)
    # mtimes of the sources differ between the two trees: compare them to their own sources
    strip = [r[:4] + r[5:] for r in c_rows]
    assert strip == [r[:4] + r[5:] for r in py_rows]
    assert {k: (v[0], v[2]) for k, v in c_files.items()} == \
        {k: (v[0], v[2]) for k, v in py_files.items()}
    by_rel = {r[1]: r for r in c_rows}
    assert all(by_rel[n][2] for n in ("a.txt", "empty", text_path(BYTE_NAME), "stale", "z.bin"))
    assert not by_rel["fifo"][2] and "regular" in by_rel["fifo"][8]  # fails alone
    assert by_rel["link"][2] is copy_links  # without -L: refused, not followed
    src = tmp_path / "c" / "src"
    for rel, (data, mtime_ns, _) in c_files.items():
        name = rel.removeprefix(".rtmp-run1-")  # the general path leaves it staged
        assert data == (src / name).read_bytes()
        assert mtime_ns == (src / name).stat().st_mtime_ns
    assert c_files[".rtmp-run1-stale"][0] == b"s" * 300  # staged afresh by the general path


def test_a_whole_cli_copy_is_the_same_with_and_without_the_native_loop(
        tmp_path: Path, run_cli, monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    for i in range(300):
        (src / "d" / f"f{i:03}").write_bytes(os.urandom(i * 13))
    (src / os.fsdecode(b"\xff-name")).write_bytes(b"x")
    (src / "empty").write_bytes(b"")
    results = {}
    for flag in ("0", "1"):
        monkeypatch.setenv(native.ENV, flag)
        dst, state = tmp_path / f"dst{flag}", tmp_path / f"state{flag}.db"
        res = run_cli("copy", str(src), str(dst), "--state", str(state), "--json")
        assert res.returncode == 0, res.stderr
        report = {k: v for k, v in res.report.items()
                  if not any(w in k for w in ("time", "duration", "throughput", "run", "_s",
                                               "started", "finished", "state", "dst",
                                               "destination"))}
        with sqlite3.connect(state) as db:
            tables = [r[0] for r in db.execute("select name from sqlite_master where type='table'")]
            table = next(t for t in tables if "manifest" in t or "files" in t)
            cols = [r[1] for r in db.execute(f"pragma table_info({table})")]
            keep = [c for c in cols if c in ("path", "rel", "size", "mtime_ns", "checksum")]
            rows = sorted(db.execute(f"select {', '.join(keep)} from {table}"))
        tree = {p.relative_to(dst): p.read_bytes() for p in dst.rglob("*") if p.is_file()}
        results[flag] = (report, rows, tree)
    assert results["0"][1] and results["0"][2]
    assert results["0"] == results["1"]


def _flat(root: Path, n: int) -> list[tuple[str, str, str | None]]:
    (root / "src").mkdir(parents=True)
    (root / "dst").mkdir()
    items = []
    for i in range(n):
        (root / "src" / f"f{i}").write_bytes(bytes([i % 256]) * i)
        items.append((str(root / "src" / f"f{i}"), str(root / "dst" / f".t{i}"),
                      str(root / "dst" / f"f{i}") if i % 2 else None))
    return items


def test_copy_small_in_threads_copies_as_one_thread_does(tmp_path: Path) -> None:
    fast = native.built("fastcopy")
    one = fast.copy_small(_flat(tmp_path / "one", 41), False, True, False, SMALL_FILE)
    two = fast.copy_small(_flat(tmp_path / "two", 41), False, True, False, SMALL_FILE,
                          None, 3)
    strip = [(r[0], r[2]) for r in one]  # (size, crc): the mtimes are each tree's own
    assert strip == [(r[0], r[2]) for r in two] and len(strip) == 41
    names = sorted(p.name for p in (tmp_path / "two" / "dst").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "one" / "dst").iterdir())
    assert len(names) == 41


def test_copy_small_starts_nothing_past_the_deadline(tmp_path: Path) -> None:
    fast = native.built("fastcopy")
    for threads in (1, 2):
        items = _flat(tmp_path / f"t{threads}", 5)
        assert fast.copy_small(items, False, True, False, SMALL_FILE, 1.0, threads) == [False] * 5
        assert list((tmp_path / f"t{threads}" / "dst").iterdir()) == []
